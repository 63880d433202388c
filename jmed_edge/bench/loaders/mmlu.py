"""MMLU and JMMLU: headerless CSV rows ``question,A,B,C,D,answer``, one file per subject.

- MMLU (github.com/hendrycks/test, ``data/test/{subject}_test.csv``, dev shots in
  ``data/dev/{subject}_dev.csv``).
- JMMLU (github.com/nlp-waseda/JMMLU, ``JMMLU/{subject}.csv``): UTF-8 with a BOM, option cells
  sometimes start with a space; no dev split.

PATH is one CSV file (that subject), or a folder, from which only the medical subjects below
are read (a ``test/`` subfolder is used when present, with ``dev/`` beside it for shots).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from jmed_edge.bench.records import LETTERS, BadRecord, Collector, LoadedSet, Question, guess_lang
from jmed_edge.errors import DataError

# The MMLU medical subset of MultiMedQA (Singhal et al., "Large language models encode clinical
# knowledge", Nature 2023): the six subjects Med-PaLM reports. JMMLU keeps the same file names.
MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
_SPLIT_SUFFIX = re.compile(r"_(test|dev|val)$")


def subject_of(path: Path) -> str:
    return _SPLIT_SUFFIX.sub("", path.stem)


def _read_csv(path: Path, collector: Collector, lang: str | None) -> list[Question]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # JMMLU files start with a BOM
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc
    subject = subject_of(path)
    out = []
    reader = csv.reader(io.StringIO(text))
    for index, row in enumerate(reader, start=1):
        where = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) != 6:
                raise BadRecord(f"expected 6 cells (question,A,B,C,D,answer), found {len(row)}")
            question, *options, answer = (cell.strip() for cell in row)
            answer = answer.upper()
            if answer not in ("A", "B", "C", "D"):
                raise BadRecord(f"answer {answer!r} is not one of A-D")
            if not question:
                raise BadRecord("the question cell is empty")
        except BadRecord as exc:
            collector.bad(where, str(exc))
            continue
        out.append(Question(
            id=f"{subject}-{index}", lang=lang or guess_lang(question), question=question,
            choices=tuple(options), answer=(LETTERS[ord(answer) - ord("A")],), where=where,
            meta={"subject": subject},
        ))  # fmt: skip
    return out


def _pick(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.csv") if subject_of(p) in MEDICAL_SUBJECTS)


def _load(path: Path, collector: Collector, lang: str | None) -> LoadedSet:
    if path.is_file():
        test = [path]
        dev_dir = path.parent.parent / "dev"
    else:
        base = path / "test" if (path / "test").is_dir() else path
        test = _pick(base)
        dev_dir = base.parent / "dev" if base.name == "test" else path / "dev"
        if not test:
            raise DataError(
                f"{path} has none of the medical subject files ({', '.join(MEDICAL_SUBJECTS)}; "
                "as SUBJECT.csv or SUBJECT_test.csv); pass a subject's CSV file to read another subject"
            )
    subjects = {subject_of(p) for p in test}
    dev_files = (
        sorted(p for p in dev_dir.glob("*.csv") if subject_of(p) in subjects) if dev_dir.is_dir() else []
    )
    records = [q for file in test for q in _read_csv(file, collector, lang)]
    dev = [q for file in dev_files for q in _read_csv(file, Collector(skip_bad=True), lang)]
    return LoadedSet(records, dev, test + dev_files)


def load_mmlu(path: Path, collector: Collector) -> LoadedSet:
    return _load(path, collector, lang="en")


def load_jmmlu(path: Path, collector: Collector) -> LoadedSet:
    return _load(path, collector, lang="ja")
