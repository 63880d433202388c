"""The report tells conversion loss from quantization loss: Δ without the questions a runtime
tokenizes unlike the Hugging Face source, on hand-built predictions with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jmed_edge.report.build import build_report, write_report
from jmed_edge.report.stats import newcombe_paired

GIB = 1024**3
# Ten questions. The reference gets S000-S007 right; the candidate loses S000, S001 (which it
# tokenizes unlike the source) and S007, and gains S008. The reference itself diverges on S009.
REF = [True] * 8 + [False] * 2
CAND = [False, False, True, True, True, True, True, False, True, False]


def _write(root: Path, name: str, correct: list[bool], divergent: list[str] | None, size: int) -> None:
    folder = root / name / "jmed-sample"
    folder.mkdir(parents=True)
    rows = [{"id": f"S{i:03d}", "lang": "ja", "gold": ["a"], "pred": ["a"] if ok else ["b"], "correct": ok,
             "points": 1.0} for i, ok in enumerate(correct)]  # fmt: skip
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"artifact": str(root / "missing" / name), "artifact_name": name, "benchmark": "jmed-sample",
               "benchmark_version": "1", "question_set_hash": "q", "sha256": f"sha-{name}", "size_bytes": size,
               "timings": {}, "tokenizer_divergent_ids": None if divergent is None else {"ja": divergent}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "bench"
    _write(root, "m-F16", REF, ["S009"], 2 * GIB)
    _write(root, "m-Q4_K_M", CAND, ["S000", "S001"], GIB)
    _write(root, "m-Q8_0", REF, None, GIB + 1)  # no source tokenizer when it was benched: unknown
    return root


def test_delta_without_divergent_questions_by_hand(runs: Path, tmp_path: Path) -> None:
    data = build_report([runs], "m-F16", kl=False)
    cmp = data.cell("m-Q4_K_M", "jmed-sample", "ja").vs_reference
    # All ten: 3 lost (S000, S001, S007), 1 gained (S008): (1 - 3) / 10 = -20 points.
    assert (cmp.right_to_wrong, cmp.wrong_to_right, cmp.delta) == (3, 1, -20.0)
    # Neither side diverges on S002-S008 (7 questions): S007 lost, S008 gained, 5 both right.
    assert cmp.tokenizer_divergent == 3
    rest = cmp.delta_excluding_divergent
    assert rest.n == 7 and rest.delta == 0.0
    expected = newcombe_paired(5, 1, 1, 0)  # both right, right->wrong, wrong->right, both wrong
    assert (rest.delta_ci.low, rest.delta_ci.high) == (
        round(100 * expected.low, 4), round(100 * expected.high, 4))  # fmt: skip
    assert rest.delta_ci.low == -rest.delta_ci.high < -20  # same accuracy, 7 questions: wide
    ref = data.cell("m-F16", "jmed-sample", "ja").vs_reference
    assert ref.tokenizer_divergent == 1 and ref.delta_excluding_divergent.delta_ci.high == 0.0
    unknown = data.cell("m-Q8_0", "jmed-sample", "ja").vs_reference
    assert unknown.tokenizer_divergent is None and unknown.delta_excluding_divergent is None

    out = write_report(data, tmp_path / "report")
    cell = next(
        c for c in json.loads((out / "report.json").read_text())["cells"] if c["artifact"] == "m-Q4_K_M"
    )
    vs = cell["vs_reference"]
    assert vs["tokenizer_divergent"] == 3 and vs["delta_excluding_divergent"]["delta"] == 0.0
    assert set(vs["delta_excluding_divergent"]["delta_ci"]) == {"low", "high"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| tokenized unlike source | Δ without them [95% CI] |" in md
    low, high = rest.delta_ci.low, rest.delta_ci.high
    assert (
        f"| -20.0 [{cmp.delta_ci.low:+.1f}, {cmp.delta_ci.high:+.1f}] | 3 | +0.0 [{low:+.1f}, {high:+.1f}] |"
        in md
    )
    assert "| m-Q8_0 | jmed-sample | ja | 10 |" in md and "| +0.0 [" in md
    assert "tokenized unlike source" in (out / "report.html").read_text(encoding="utf-8")


def test_terminal_names_divergence_only_when_there_is_some(runs: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from jmed_edge.report.terminal import print_summary

    console = Console(width=80, record=True, force_terminal=False)
    print_summary(build_report([runs], "m-F16", kl=False), console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    text = " ".join(" ".join(lines).split())
    assert "tokenized unlike the source: Q4_K_M jmed-sample ja 3/10 (Δ +0.0 [" in text
    assert "vs -20.0 with them)" in text

    quiet = tmp_path / "quiet"
    _write(quiet, "m-F16", REF, [], 2 * GIB)
    _write(quiet, "m-Q4_K_M", CAND, [], GIB)
    data = build_report([quiet], "m-F16", kl=False)
    assert data.cell("m-Q4_K_M", "jmed-sample", "ja").vs_reference.delta_excluding_divergent.delta == -20.0
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(data, console)
    assert "tokenized unlike" not in console.export_text()


def test_no_tokenizer_record_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "old"
    _write(root, "m-F16", REF, None, 2 * GIB)
    _write(root, "m-Q4_K_M", CAND, None, GIB)
    md = (write_report(build_report([root], "m-F16", kl=False), tmp_path / "r") / "report.md").read_text()
    assert "tokenized unlike source" not in md
