"""What a benchmark is once read: questions (one per language), its dev split, and what was skipped.

Every loader turns its published file format into ``Question`` records. A record that cannot be
read is either a one-line ``DataError`` naming ``file:line`` (the default) or, with
``--skip-bad``, a ``Skipped`` entry that is counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jmed_edge.errors import DataError

LETTERS = "abcdefghijklmnopqrstuvwxyz"

# "a. text", "a．text", "(a) text", "ａ．text": a choice that already carries its letter.
_CHOICE_PREFIX = re.compile(r"^\s*[(（]?([a-zA-Zａ-ｚＡ-Ｚ])\s*[.．)）:：]\s*")
_KANA_KANJI = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@dataclass(frozen=True)
class Question:
    """One question in one language.

    ``answer`` holds sorted lowercase letters, or a single string of digits for a numeric-entry
    question (``choices`` empty). ``accept_any``: the published answer was "a or d", and exactly
    one of those letters is correct. ``always_correct``: the exam board dropped the question
    from scoring, and every answer earns its points.
    """

    id: str
    lang: str
    question: str
    choices: tuple[str, ...]
    answer: tuple[str, ...]
    points: float = 1.0
    accept_any: bool = False
    always_correct: bool = False
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def numeric(self) -> bool:
        return not self.choices

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]

    @property
    def n_answers(self) -> int:
        return 1 if self.accept_any or self.numeric else len(self.answer)

    def choice_text(self, letter: str) -> str:
        return self.choices[LETTERS.index(letter)]


@dataclass(frozen=True)
class Skipped:
    """A record that was not used, where it is (``file:line``) and why."""

    where: str
    reason: str


@dataclass
class LoadedSet:
    """What a loader returns: test questions, dev questions (for shots) and the files read."""

    records: list[Question]
    dev: list[Question]
    files: list[Path]


@dataclass
class Benchmark:
    name: str  # the format in the registry (igakuqa, medqa, ...)
    label: str  # the name results are filed under
    path: Path
    records: list[Question]
    dev: list[Question]
    skipped: list[Skipped]
    files: list[Path]
    content_hash: str

    @property
    def version(self) -> str:
        """Format and content: two runs compare only when this is equal."""
        return f"{self.name}:{self.content_hash[:16]}"

    def by_lang(self) -> dict[str, int]:
        return dict(sorted(Counter(q.lang for q in self.records).items()))

    def languages(self) -> list[str]:
        return list(self.by_lang())


class Collector:
    """Collects unreadable records: raises on the first one unless ``skip_bad``."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[Skipped] = []

    def bad(self, where: str, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{where}: {reason}; fix the record or pass --skip-bad to skip and count it")
        self.skipped.append(Skipped(where, reason))


class BadRecord(ValueError):
    """Raised by record parsers; the loader turns it into a ``Collector.bad`` call."""


def read_jsonl(path: Path, collector: Collector) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every readable line; blank lines are ignored, a BOM tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            collector.bad(f"{path}:{number}", f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            collector.bad(f"{path}:{number}", f"expected a JSON object, found {type(obj).__name__}")
            continue
        yield number, obj


def require_str(obj: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadRecord(f'field "{key}" is missing or not text')
    if not allow_empty and not value.strip():
        raise BadRecord(f'field "{key}" is empty')
    return value


def clean_choices(choices: list[str]) -> tuple[str, ...]:
    """Choice texts without their "a. " labels, when every choice carries its own letter.

    All-or-nothing, so that a lone choice such as "E. coli infection" keeps its text.
    """
    matches = [_CHOICE_PREFIX.match(text) for text in choices]
    if choices and all(
        m and unicodedata.normalize("NFKC", m.group(1)).lower() == LETTERS[i] for i, m in enumerate(matches)
    ):
        return tuple(text[m.end() :].strip() for text, m in zip(choices, matches, strict=True) if m)
    return tuple(text.strip() for text in choices)


def parse_points(value: Any) -> float:
    if value is None or value == "":
        return 1.0
    try:
        points = float(value)
    except (TypeError, ValueError):
        raise BadRecord(f'"points" is {value!r}, not a number') from None
    if points < 0:
        raise BadRecord(f'"points" is {points}, below zero')
    return points


def guess_lang(text: str) -> str:
    """ "ja" when the text has kana or kanji, else "en" (for formats that do not say)."""
    return "ja" if _KANA_KANJI.search(text) else "en"


def hash_files(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return digest.hexdigest()
