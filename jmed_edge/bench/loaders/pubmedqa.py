"""PubMedQA-L as published (github.com/pubmedqa/pubmedqa, ``data/ori_pqal.json``).

``ori_pqal.json`` is one JSON object keyed by PMID; each value has ``QUESTION``, ``CONTEXTS``
(list of abstract sections), ``final_decision`` (yes / no / maybe) and ``LONG_ANSWER``. When
``test_ground_truth.json`` (PMID -> label) sits beside it, only those PMIDs are scored (the
official 500-question test split) and the others serve as few-shot examples.

Each question becomes a three-choice item: a. yes, b. no, c. maybe; the abstract's sections
precede the question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jmed_edge.bench.records import BadRecord, Collector, LoadedSet, Question, require_str
from jmed_edge.errors import DataError

FILE = "ori_pqal.json"
TEST_IDS = "test_ground_truth.json"
CHOICES = ("yes", "no", "maybe")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc


def _record(pmid: str, item: Any, where: str, label: str | None) -> Question:
    if not isinstance(item, dict):
        raise BadRecord(f"expected an object, found {type(item).__name__}")
    question = require_str(item, "QUESTION")
    contexts = item.get("CONTEXTS")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise BadRecord('"CONTEXTS" is missing or not a list of texts')
    decision = (label or str(item.get("final_decision", ""))).strip().lower()
    if decision not in CHOICES:
        raise BadRecord(f'"final_decision" is {decision!r}; expected yes, no or maybe')
    text = "Context: " + " ".join(c.strip() for c in contexts) + "\n" + question.strip()
    answer = "abc"[CHOICES.index(decision)]
    meta = {"long_answer": item.get("LONG_ANSWER", "")}
    return Question(pmid, "en", text, CHOICES, (answer,), where=where, meta=meta)


def load_pubmedqa(path: Path, collector: Collector) -> LoadedSet:
    file = path / FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path} holds no {FILE}; pass the file or the folder holding it")
    data = _read_json(file)
    if not isinstance(data, dict):
        raise DataError(f"{file}: expected an object keyed by PMID, found {type(data).__name__}")
    truth_file = file.with_name(TEST_IDS)
    truth: dict[str, str] | None = None
    if truth_file.is_file():
        raw = _read_json(truth_file)
        if not isinstance(raw, dict):
            raise DataError(f"{truth_file}: expected an object PMID -> label")
        truth = {str(k): str(v) for k, v in raw.items()}
    records, dev = [], []
    for pmid, item in data.items():
        where = f"{file}:{pmid}"
        in_test = truth is None or pmid in truth
        try:
            q = _record(pmid, item, where, truth.get(pmid) if truth else None)
        except BadRecord as exc:
            if in_test:
                collector.bad(where, str(exc))
            continue
        (records if in_test else dev).append(q)
    if truth is not None:
        for pmid in sorted(set(truth) - set(data)):
            collector.bad(f"{truth_file}:{pmid}", f"PMID {pmid} is not in {FILE}")
    if not records and not collector.skipped:
        raise DataError(f"{file} holds no questions")
    files = [file] + ([truth_file] if truth is not None else [])
    return LoadedSet(records, dev, files)
