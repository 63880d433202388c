"""``bench --until-decided``: the stopping rule's error rate under repeated looks, and a run that
stops early and is reported as sequential."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_tui_support import ScriptedBackend, build_root

from jmed_edge.bench.sequential import UntilDecided, delta_sequence, first_decision
from jmed_edge.errors import DataError
from jmed_edge.report.stats import newcombe_paired


def _simulate(rng: np.random.Generator, runs: int, n: int, gain: float, loss: float) -> np.ndarray:
    """Paired differences (candidate right - reference right): +1 w.p. gain, -1 w.p. loss."""
    u = rng.random((runs, n))
    return np.where(u < gain, 1, np.where(u < gain + loss, -1, 0))


def test_error_rate_at_a_true_loss_of_exactly_the_margin_stays_under_5_percent():
    # 2,000 simulated candidates that truly lose 1 point (4.5% gained, 5.5% lost answers), each
    # looked at after every question up to 3,000: how many are wrongly declared non-inferior?
    rng = np.random.default_rng(1)
    diffs = _simulate(rng, 2000, 3000, 0.045, 0.055)
    low, _ = delta_sequence(diffs, horizon=3000)
    wrongly_certified = (low >= -1.0).any(axis=1).mean()
    assert wrongly_certified <= 0.05
    # The same looks with a fixed-size interval (Newcombe at every 100th question) err more often:
    # repeated looks are what the confidence sequence is for.
    peeking = 0
    for row in diffs[:400]:
        for n in range(100, 3001, 100):
            d = row[:n]
            ci = newcombe_paired(int(np.sum(d == 0)), int(np.sum(d == -1)), int(np.sum(d == 1)), 0)
            if 100 * ci.low >= -1.0:
                peeking += 1
                break
    assert peeking / 400 > wrongly_certified


def test_clear_cases_stop_early_and_the_right_way():
    rng = np.random.default_rng(2)
    # Nearly identical models (1% changed answers, no net loss) on a 3,000-question set: most are
    # certified within 1 point, typically after about half of the questions; none is called inferior.
    same = _simulate(rng, 200, 3000, 0.005, 0.005)
    decisions = [first_decision(row, 1.0, horizon=3000) for row in same]
    used = [n for n, ok in decisions if ok]
    assert len(used) >= 170 and np.median(used) < 2000
    assert not any(ok is False for _, ok in decisions)
    # A candidate that loses 10 points is declared inferior after a few hundred questions.
    worse = _simulate(rng, 200, 2000, 0.02, 0.12)
    decisions = [first_decision(row, 1.0, horizon=2000) for row in worse]
    assert all(ok is False for _, ok in decisions)
    assert np.median([n for n, _ in decisions]) < 500


def test_a_reference_without_the_candidates_questions_is_named(tmp_path: Path):
    rule = UntilDecided({("S001", "ja"): True}, reference_path="runs/bench/F16")
    with pytest.raises(
        DataError, match=r"did not answer 2 of the jmed-sample questions this run asks \(S002/ja, S003/en\)"
    ):
        rule.check([("S001", "ja"), ("S002", "ja"), ("S003", "en")], "jmed-sample")


def test_bench_until_decided_stops_early_and_the_report_marks_it_sequential(tmp_path: Path):
    from jmed_edge.bench import BenchSettings, run_benchmark
    from jmed_edge.bench.predictions import read_predictions
    from jmed_edge.report.build import build_report, write_report

    root = build_root(tmp_path)
    backend = ScriptedBackend()
    settings = BenchSettings(batch_size=4)
    ref_path, cand_path = root / "gguf" / "F16", root / "gguf" / "Q8_0"
    run_benchmark(ref_path, "jmed-sample", root / "bench", settings, runtime=backend.open_runtime(ref_path))
    ref_dir = root / "bench" / "medllm-F16"
    ref_answers = {
        (r["id"], r["lang"]): r["correct"]
        for r in read_predictions(ref_dir / "jmed-sample" / "predictions.jsonl")
    }
    # A generous margin that few questions can decide: the candidate stops well before 48 per language.
    rule = UntilDecided(ref_answers, max_loss=60.0, reference_path=str(ref_dir))
    summary = run_benchmark(cand_path, "jmed-sample", root / "bench", settings,
                            runtime=backend.open_runtime(cand_path), until_decided=rule)  # fmt: skip
    assert summary.complete
    for lang in ("ja", "en"):
        seq = summary.sequential[lang]
        assert seq["decided_at"] is not None and seq["n_used"] < 48 and seq["n_available"] == 48
    rows = read_predictions(root / "bench" / "medllm-Q8_0" / "jmed-sample" / "predictions.jsonl")
    assert len(rows) == summary.sequential["ja"]["n_used"] + summary.sequential["en"]["n_used"] < 96
    data = build_report([root / "bench"], "medllm-F16", kl=False, max_loss=60.0)
    cell = data.cell("medllm-Q8_0", "jmed-sample", "ja")
    assert cell.n == summary.sequential["ja"]["n_used"] and cell.sequential is not None
    assert cell.vs_reference.method == "confidence-sequence"
    assert cell.vs_reference.delta_ci.low == pytest.approx(summary.sequential["ja"]["delta_ci"]["low"])
    out = write_report(data, tmp_path / "report")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "(sequential)" in md
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert any(c["sequential"] for c in report["cells"])


def test_until_decided_bad_input_is_one_line_before_any_model_loads(tmp_path: Path, run_cli):
    model = tmp_path / "missing.gguf"
    code, _, err = run_cli("bench", model, "--out", tmp_path / "b", "--until-decided")
    assert code == 2 and "--until-decided needs --reference RUN_DIR/<reference-artifact>" in err
    (tmp_path / "ref").mkdir()
    code, _, err = run_cli("bench", model, "--out", tmp_path / "b", "--until-decided", "--reference",
                           tmp_path / "ref", "--max-loss", "-0.5")  # fmt: skip
    assert code == 2 and "--max-loss -0.5 is not an allowed loss" in err
    assert len(err.strip().splitlines()) == 1
