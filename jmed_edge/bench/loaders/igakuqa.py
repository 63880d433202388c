"""IgakuQA (Japanese national medical licensing exam) and sets in the same record layout.

Published layout (github.com/jungokasai/IgakuQA, ``data/{year}/``):

- ``{exam}-{block}.jsonl`` (``116-A.jsonl``): ``problem_id`` ("116A1"), ``problem_text``,
  ``choices`` (usually 5 texts, sometimes 6 or 8; empty for numeric-entry questions),
  ``text_only``, ``answer`` (list of lowercase letters; the digits for numeric questions),
  ``points`` ("1", "3" or "0").
- ``{exam}-{block}_translate.jsonl``: ``problem_id``, ``problem_text_en``, ``choices_en``,
  ``answer``: the same questions in English.
- ``{exam}-{block}_metadata.jsonl``: ``category``, ``kinki`` (contraindicated choices),
  ``human_accuracy``, ...

Answer forms found in the published data and how they are scored:

- ``["c"]``, ``["b", "e"]``, ``["a", "c", "e"]``: the predicted set must equal this set;
- ``["a or d"]`` (112B30): exactly one of the letters, either one;
- ``["325"]`` with empty ``choices`` (116C75): a numeric entry, compared as a number;
- 116A71 was dropped from scoring by the exam board; IgakuQA's ``scripts/evaluate_main.py``
  counts it correct for everyone, and so does this reader (``ALWAYS_CORRECT``).

``dev-*.jsonl`` files (and their ``_translate`` twins) are a dev split used for few-shot
examples, never scored. A single JSONL file in this layout (JJSimQA; ``points`` may be an int)
is read the same way.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from jmed_edge.bench.records import (
    LETTERS,
    BadRecord,
    Collector,
    LoadedSet,
    Question,
    Skipped,
    clean_choices,
    parse_points,
    read_jsonl,
    require_str,
)
from jmed_edge.errors import DataError

# Questions the exam board excluded from scoring; IgakuQA's evaluate_main.py counts them correct.
ALWAYS_CORRECT = frozenset({"116A71"})
SUFFIX_TRANSLATE = "_translate"
SUFFIX_METADATA = "_metadata"
_ANY_OF = re.compile(r"^([a-z])(\s+or\s+[a-z])+$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


# A lone separator between letters in a published answer list (JJSIMQA 107_888-26: ["d", ",", "e"]).
_SEPARATORS = frozenset({",", "、", ";", "/", "・", "&", "and"})


def _drop_separators(items: list[str]) -> tuple[list[str], str | None]:
    """Letters with lone separator elements between them removed, and a note when any was.

    Only between two one-letter items: a separator first, last or beside another separator is
    ambiguous and left for the letter check to refuse.
    """
    kept, dropped = [], []
    for i, item in enumerate(items):
        between = 0 < i < len(items) - 1 and len(items[i - 1]) == 1 and len(items[i + 1]) == 1
        if (
            item in _SEPARATORS
            and between
            and items[i - 1] not in _SEPARATORS
            and items[i + 1] not in _SEPARATORS
        ):
            dropped.append(item)
        else:
            kept.append(item)
    return kept, (
        f"answer separator {', '.join(map(repr, dropped))} read as a separator" if dropped else None
    )


def _parse_answer(raw: Any, n_choices: int) -> tuple[tuple[str, ...], bool, str | None]:
    """(answer, accept_any, repair note) from the published ``answer`` field."""
    items = [raw] if isinstance(raw, str | int) else raw
    if not isinstance(items, list) or not items or not all(isinstance(a, str | int) for a in items):
        raise BadRecord(f'"answer" is {raw!r}; expected a list of letters such as ["c"]')
    items = [unicodedata.normalize("NFKC", str(a)).strip().lower() for a in items]
    items, repaired = _drop_separators(items) if n_choices else (items, None)
    if n_choices == 0:
        number = "".join(items)
        if not _NUMBER.match(number):
            raise BadRecord(
                f'numeric question (no choices) has answer {raw!r}; expected digits such as ["325"]'
            )
        return (number,), False, None
    accept_any = len(items) == 1 and bool(_ANY_OF.match(items[0]))
    letters = re.split(r"\s+or\s+", items[0]) if accept_any else items
    for letter in letters:
        if len(letter) != 1 or letter not in LETTERS:
            raise BadRecord(f'answer {letter!r} is not a choice letter (write ["c"] or ["a or d"])')
        if LETTERS.index(letter) >= n_choices:
            raise BadRecord(
                f"answer {letter!r} is beyond the {n_choices} choices (a-{LETTERS[n_choices - 1]})"
            )
    return tuple(sorted(set(letters))), accept_any, repaired


def _question(obj: dict[str, Any], where: str, lang: str, text_key: str, choices_key: str) -> Question:
    qid = require_str(obj, "problem_id").strip()
    text = require_str(obj, text_key)
    raw_choices = obj.get(choices_key, [])
    if not isinstance(raw_choices, list) or not all(isinstance(c, str) for c in raw_choices):
        raise BadRecord(f'"{choices_key}" is not a list of texts')
    if len(raw_choices) == 1 or len(raw_choices) > len(LETTERS):
        raise BadRecord(f'"{choices_key}" has {len(raw_choices)} entries')
    answer, accept_any, repaired = _parse_answer(obj.get("answer"), len(raw_choices))
    return Question(
        id=qid,
        lang=lang,
        question=text.strip(),
        choices=clean_choices(raw_choices),
        answer=answer,
        points=parse_points(obj.get("points")),
        accept_any=accept_any,
        always_correct=qid in ALWAYS_CORRECT,
        where=where,
        meta={
            **({"text_only": obj["text_only"]} if "text_only" in obj else {}),
            **({"repaired": repaired} if repaired else {}),
        },
    )


def _read_block(path: Path, collector: Collector, seen: dict[str, str]) -> list[Question]:
    """The Japanese questions of one block file plus its translation and metadata twins."""
    japanese: dict[str, Question] = {}
    for line, obj in read_jsonl(path, collector):
        where = f"{path}:{line}"
        try:
            q = _question(obj, where, "ja", "problem_text", "choices")
        except BadRecord as exc:
            collector.bad(where, str(exc))
            continue
        if q.id in seen:
            collector.bad(where, f"problem_id {q.id} appears twice (also at {seen[q.id]})")
            continue
        seen[q.id] = where
        japanese[q.id] = q
    meta_file = path.with_name(path.stem + SUFFIX_METADATA + ".jsonl")
    if meta_file.exists():
        for line, obj in read_jsonl(meta_file, collector):
            qid = str(obj.get("problem_id", ""))
            if qid in japanese:
                extra = {k: v for k, v in obj.items() if k != "problem_id"}
                try:
                    extra["kinki"] = _parse_kinki(extra.get("kinki"), len(japanese[qid].choices), qid)
                except BadRecord as exc:
                    collector.bad(f"{meta_file}:{line}", str(exc))
                    continue
                japanese[qid] = _with_meta(japanese[qid], extra)
            else:
                collector.bad(f"{meta_file}:{line}", f"metadata for unknown problem_id {qid!r}")
    english = _read_translation(path.with_name(path.stem + SUFFIX_TRANSLATE + ".jsonl"), japanese, collector)
    return list(japanese.values()) + english


def _parse_kinki(raw: Any, n_choices: int, qid: str) -> list[str]:
    """The contraindicated (禁忌肢) letters of a metadata record, each one of the question's choices."""
    if raw in (None, ""):
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise BadRecord(f'"kinki" of {qid} is {raw!r}; expected a list of choice letters such as ["d"]')
    letters = [unicodedata.normalize("NFKC", x).strip().lower() for x in items]
    for letter in letters:
        if len(letter) != 1 or letter not in LETTERS[:n_choices]:
            span = f"a-{LETTERS[n_choices - 1]}" if n_choices else "none: a numeric question"
            raise BadRecord(
                f'"kinki" of {qid} names {letter!r}, beyond its {n_choices} choices ({span}); '
                "fix the metadata line"
            )
    return sorted(set(letters))


def _with_meta(q: Question, extra: dict[str, Any]) -> Question:
    from dataclasses import replace

    return replace(q, meta={**q.meta, **extra})


def _read_translation(path: Path, japanese: dict[str, Question], collector: Collector) -> list[Question]:
    if not path.exists():
        return []
    out = []
    for line, obj in read_jsonl(path, collector):
        where = f"{path}:{line}"
        known = japanese.get(str(obj.get("problem_id", "")).strip())
        if "answer" not in obj and known is not None:  # the answer is the Japanese question's
            obj = {**obj, "answer": [" or ".join(known.answer)] if known.accept_any else list(known.answer)}
        try:
            en = _question(obj, where, "en", "problem_text_en", "choices_en")
        except BadRecord as exc:
            collector.bad(where, str(exc))
            continue
        ja = japanese.get(en.id)
        if ja is None:
            collector.bad(where, f"translation of problem_id {en.id}, which the Japanese file lacks")
            continue
        if len(en.choices) != len(ja.choices) or (en.answer, en.accept_any) != (ja.answer, ja.accept_any):
            collector.bad(
                where, f"translation of {en.id} differs from the Japanese question in choices or answer"
            )
            continue
        out.append(Question(en.id, "en", en.question, en.choices, ja.answer, ja.points, ja.accept_any,
                            ja.always_correct, where, ja.meta))  # fmt: skip
    return out


def _is_twin(path: Path) -> bool:
    return path.stem.endswith((SUFFIX_TRANSLATE, SUFFIX_METADATA))


def load_igakuqa(path: Path, collector: Collector) -> LoadedSet:
    """A folder of ``{exam}-{block}.jsonl`` files (searched recursively) or one such file."""
    if path.is_file():
        mains, devs = [path], []
    else:
        files = sorted(p for p in path.rglob("*.jsonl") if not any(part.startswith(".") for part in p.parts))
        mains = [p for p in files if not _is_twin(p) and not p.name.startswith("dev")]
        devs = [p for p in files if not _is_twin(p) and p.name.startswith("dev")]
    if not mains:
        raise DataError(
            f"{path} has no IgakuQA question files; expected {{exam}}-{{block}}.jsonl files such as 116-A.jsonl"
        )
    seen: dict[str, str] = {}
    records = [q for main in mains for q in _read_block(main, collector, seen)]
    dev_collector = Collector(skip_bad=collector.skip_bad)
    dev = [q for d in devs for q in _read_block(d, dev_collector, {})]
    collector.skipped.extend(Skipped(s.where, f"dev split: {s.reason}") for s in dev_collector.skipped)
    files = [p for main in mains + devs for p in _block_files(main)]
    return LoadedSet(records, dev, files)


def _block_files(main: Path) -> list[Path]:
    twins = [main.with_name(main.stem + s + ".jsonl") for s in (SUFFIX_TRANSLATE, SUFFIX_METADATA)]
    return [main, *(t for t in twins if t.exists())]
