"""MedQA and MedMCQA, as their JSONL files are published.

- MedQA (github.com/jind11/MedQA, ``data_clean/questions/US/*.jsonl``): ``question``,
  ``options`` (object "A".."D" or "A".."E"), ``answer_idx`` (letter), ``answer`` (text),
  optional ``meta_info``. No id field: a record is named ``{file stem}-{line}``.
- MedMCQA (github.com/medmcdataset/medmcqa, ``train.json``/``dev.json``, one object per line):
  ``question``, ``opa``..``opd``, ``cop`` (1-based: 1 = opa), ``choice_type``,
  ``subject_name``, ``id``. The published test split has no ``cop``: score ``dev.json``.
  The MedQA form (``options`` + ``answer_idx``) is accepted too.

PATH is one file, or a folder: files with "test" in their name are scored (all non-dev,
non-train files when none has), files with "dev" in their name give few-shot examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jmed_edge.bench.records import (
    LETTERS,
    BadRecord,
    Collector,
    LoadedSet,
    Question,
    guess_lang,
    read_jsonl,
    require_str,
)
from jmed_edge.errors import DataError

_SUFFIXES = (".jsonl", ".json")


def _from_options(obj: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    options = obj.get("options")
    if not isinstance(options, dict) or len(options) < 2:
        raise BadRecord('"options" is missing or not an object of lettered choices')
    keys = sorted(str(k).strip().upper() for k in options)
    if keys != [c.upper() for c in LETTERS[: len(keys)]]:
        raise BadRecord(f'"options" keys are {keys}; expected consecutive letters from A')
    by_key = {str(k).strip().upper(): v for k, v in options.items()}
    choices = tuple(str(by_key[k]).strip() for k in keys)
    answer = require_str(obj, "answer_idx").strip().lower()
    if len(answer) != 1 or answer not in LETTERS:
        raise BadRecord(f'"answer_idx" is {obj.get("answer_idx")!r}, not a letter')
    if LETTERS.index(answer) >= len(choices):
        raise BadRecord(f'"answer_idx" {answer.upper()} is beyond the {len(choices)} options')
    return choices, answer


def _from_medmcqa(obj: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    choices = tuple(require_str(obj, key, allow_empty=True).strip() for key in ("opa", "opb", "opc", "opd"))
    cop = obj.get("cop")
    if cop is None or cop == "" or cop == -1:
        raise BadRecord(
            'no answer ("cop"); the published MedMCQA test split has none, score dev.json instead'
        )
    try:
        index = int(cop) - 1
    except (TypeError, ValueError):
        raise BadRecord(f'"cop" is {cop!r}, not a number 1-4') from None
    if not 0 <= index < len(choices):
        raise BadRecord(f'"cop" {cop} is beyond the {len(choices)} options (1-4)')
    return choices, LETTERS[index]


def _record(obj: dict[str, Any], path: Path, line: int, medmcqa: bool) -> Question:
    question = require_str(obj, "question")
    if "options" in obj or not medmcqa:
        choices, answer = _from_options(obj)
        meta = {k: obj[k] for k in ("meta_info", "answer") if k in obj}
    else:
        choices, answer = _from_medmcqa(obj)
        meta = {k: obj[k] for k in ("choice_type", "subject_name", "topic_name") if k in obj}
    qid = str(obj.get("id") or f"{path.stem}-{line}")
    lang = str(obj.get("lang") or guess_lang(question))
    return Question(qid, lang, question.strip(), choices, (answer,), where=f"{path}:{line}", meta=meta)


def _split(path: Path) -> tuple[list[Path], list[Path]]:
    if path.is_file():
        return [path], []
    files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
    dev = [p for p in files if "dev" in p.stem.lower()]
    test = [p for p in files if "test" in p.stem.lower()] or [
        p for p in files if p not in dev and "train" not in p.stem.lower()
    ]
    return test, dev


def _load(path: Path, collector: Collector, medmcqa: bool) -> LoadedSet:
    test, dev_files = _split(path)
    if not test:
        raise DataError(f"{path} has no question files (*.jsonl); pass the file or a folder holding it")
    seen: dict[str, str] = {}

    def read(files: list[Path], sink: Collector) -> list[Question]:
        out = []
        for file in files:
            for line, obj in read_jsonl(file, sink):
                where = f"{file}:{line}"
                try:
                    q = _record(obj, file, line, medmcqa)
                except BadRecord as exc:
                    sink.bad(where, str(exc))
                    continue
                if q.id in seen and sink is collector:
                    sink.bad(where, f"id {q.id} appears twice (also at {seen[q.id]})")
                    continue
                seen.setdefault(q.id, where)
                out.append(q)
        return out

    records = read(test, collector)
    dev = read(dev_files, Collector(skip_bad=True))  # a bad dev line only costs a shot candidate
    return LoadedSet(records, dev, test + dev_files)


def load_medqa(path: Path, collector: Collector) -> LoadedSet:
    return _load(path, collector, medmcqa=False)


def load_medmcqa(path: Path, collector: Collector) -> LoadedSet:
    return _load(path, collector, medmcqa=True)
