"""The bench runner end to end on the tiny fixtures: outputs, resume after a kill, parity, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jmed_edge.bench import BenchSettings, load_benchmark, run_benchmark
from jmed_edge.bench.predictions import read_predictions
from jmed_edge.errors import ConfigError, DataError
from jmed_edge.manifest import read_manifest
from jmed_edge.testing.numerics import F16_VS_FP32_OPTION_ATOL, TORCH_LOGPROB_ATOL

FIVE = ["aspirin", "insulin", "metformin", "heparin", "warfarin"]
FIVE_JA = ["アスピリン", "インスリン", "メトホルミン", "ヘパリン", "ワルファリン"]


def _row(pid: str, text: str, choices: list[str], answer: list[str], points: str = "1") -> str:
    return json.dumps({"problem_id": pid, "problem_text": text, "choices": choices, "text_only": True,
                       "answer": answer, "points": points}, ensure_ascii=False)  # fmt: skip


def _en(pid: str, text: str, choices: list[str], answer: list[str]) -> str:
    return json.dumps({"problem_id": pid, "problem_text_en": text, "choices_en": choices, "answer": answer})


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven questions in ja + en: single, multi ("2つ選べ"), "a or d", points 3, one numeric."""
    folder = tmp_path_factory.mktemp("bench") / "mini"
    folder.mkdir()
    ja = [
        _row("M1", "抗血小板薬はどれか。", FIVE_JA, ["a"]),
        _row("M2", "血糖を下げる薬はどれか。2つ選べ。", FIVE_JA, ["b", "c"]),
        _row("M3", "抗凝固薬はどれか。", FIVE_JA, ["a or d"], "3"),
        _row("M4", "注射で使う薬はどれか。", FIVE_JA, ["b"]),
        _row("M5", "ビタミンK拮抗薬はどれか。", FIVE_JA, ["e"], "3"),
        _row("M6", "糖尿病の第一選択薬はどれか。", FIVE_JA, ["c"]),
        _row("M7", "体重60 kgで15 mg/kgなら何mgか。", [], ["900"]),
    ]
    en = [
        _en("M1", "Which is an antiplatelet drug?", FIVE, ["a"]),
        _en("M2", "Which lower blood glucose? Choose two.", FIVE, ["b", "c"]),
        _en("M3", "Which is an anticoagulant?", FIVE, ["a or d"]),
        _en("M4", "Which is given by injection?", FIVE, ["b"]),
        _en("M5", "Which is a vitamin K antagonist?", FIVE, ["e"]),
        _en("M6", "Which is first-line for diabetes?", FIVE, ["c"]),
        _en("M7", "At 15 mg/kg, how many mg for 60 kg?", [], ["900"]),
    ]
    (folder / "mini-A.jsonl").write_text("\n".join(ja) + "\n", encoding="utf-8")
    (folder / "mini-A_translate.jsonl").write_text("\n".join(en) + "\n", encoding="utf-8")
    dev = [_row("D1", "鎮痛薬はどれか。", FIVE_JA, ["a"]), _row("D2", "インスリンはどれか。", FIVE_JA, ["b"])]
    (folder / "dev-A.jsonl").write_text("\n".join(dev) + "\n", encoding="utf-8")
    dev_en = [_en("D1", "Which is an analgesic?", FIVE, ["a"]), _en("D2", "Which is insulin?", FIVE, ["b"])]
    (folder / "dev-A_translate.jsonl").write_text("\n".join(dev_en) + "\n", encoding="utf-8")
    return folder


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_writes_predictions_summary_and_manifest(
    tiny_llama: Path, small_bench: Path, tmp_path: Path
) -> None:
    settings = BenchSettings(batch_size=4, scoring="text")
    events = []
    summary = run_benchmark(tiny_llama, f"igakuqa:{small_bench}", tmp_path, settings, progress=events.append)
    folder = Path(summary.out_dir)
    assert folder == tmp_path / "tiny-llama-F32" / "igakuqa"
    rows = lines(folder / "predictions.jsonl")
    assert [(r["id"], r["lang"]) for r in rows][:2] == [("M1", "ja"), ("M2", "ja")]  # ja first, file order
    assert len(rows) == 12 and summary.skipped == {"numeric_in_loglik": 2}  # M7 needs generate mode
    m2 = next(r for r in rows if r["id"] == "M2")
    assert m2["k"] == 2 and m2["k_source"] == "question" and len(m2["pred"]) == 2
    assert len(m2["scores"]["letter"]) == len(m2["scores"]["text"]) == len(m2["scores"]["text_norm"]) == 5
    m3 = next(r for r in rows if r["id"] == "M3")
    assert m3["rule"] == "any-of" and m3["points"] == 3.0 and m3["gold"] == ["a", "d"]
    assert m3["correct"] == (m3["pred"] in (["a"], ["d"]))
    data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert data["n"] == 12 and data["n_correct"] == sum(r["correct"] for r in rows)
    assert data["points_possible"] == 2 * (1 + 1 + 3 + 1 + 3 + 1)
    assert set(data["by_lang"]) == {"ja", "en"} and data["by_lang"]["ja"]["n"] == 6
    assert (
        data["complete"]
        and len(data["question_set_hash"]) == 64
        and data["benchmark_version"].startswith("igakuqa:")
    )
    assert data["sha256"] and data["size_bytes"] > 0
    for key in ("load_seconds", "questions_per_second", "peak_rss_bytes"):
        assert data["timings"][key] > 0, key
    assert events[-1].done == 12 and events[-1].total == 12
    manifest = read_manifest(folder.parent)
    assert manifest.kind == "bench-run" and manifest.parent["sha256"] == data["sha256"]


def test_resume_after_kill_has_no_lost_or_duplicated_lines(
    tiny_llama: Path, small_bench: Path, tmp_path: Path
) -> None:
    settings = BenchSettings(batch_size=1)  # torch gets 8 prompts per call: batches of 8 lines
    reference = run_benchmark(tiny_llama, f"igakuqa:{small_bench}", tmp_path / "ref", settings)
    expected = {(r["id"], r["lang"]): r for r in lines(Path(reference.out_dir) / "predictions.jsonl")}

    calls = []
    partial = run_benchmark(tiny_llama, f"igakuqa:{small_bench}", tmp_path / "run", settings,
                            progress=calls.append, cancel=lambda: len(calls) >= 1)  # fmt: skip
    assert not partial.complete and partial.n == 8
    predictions = Path(partial.out_dir) / "predictions.jsonl"
    with open(predictions, "ab") as fh:  # the write a kill -9 interrupted
        fh.write(b'{"id":"M3","lang":"ja","gold":["a","d"],"pre')
    resumed = run_benchmark(tiny_llama, f"igakuqa:{small_bench}", tmp_path / "run", settings)
    rows = lines(predictions)
    keys = [(r["id"], r["lang"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12 and set(keys) == set(expected)
    assert resumed.complete and resumed.timings["scored_this_session"] == 4
    for row in rows:
        assert row["pred"] == expected[row["id"], row["lang"]]["pred"]
        assert row["scores"]["letter"] == pytest.approx(
            expected[row["id"], row["lang"]]["scores"]["letter"], abs=TORCH_LOGPROB_ATOL
        )
    assert resumed.n_correct == reference.n_correct


def test_resume_refuses_other_settings_and_force_restarts(
    tiny_llama: Path, small_bench: Path, tmp_path: Path
) -> None:
    spec = f"igakuqa:{small_bench}"
    first = run_benchmark(tiny_llama, spec, tmp_path, BenchSettings(limit=2))
    with pytest.raises(ConfigError, match=r"other settings \(.*template.*--force"):
        run_benchmark(tiny_llama, spec, tmp_path, BenchSettings(limit=2, template="alpaca"))
    summary = run_benchmark(tiny_llama, spec, tmp_path, BenchSettings(limit=2, template="alpaca"), force=True)
    assert summary.complete and summary.settings["template"] == "alpaca" and summary.n == first.n


def test_generate_mode_and_shots(tiny_llama: Path, small_bench: Path, tmp_path: Path) -> None:
    settings = BenchSettings(mode="generate", shots=2, max_new_tokens=6, template="chat", langs=("en",))
    summary = run_benchmark(tiny_llama, f"igakuqa:{small_bench}", tmp_path, settings)
    rows = lines(Path(summary.out_dir) / "predictions.jsonl")
    assert len(rows) == 7 and {r["lang"] for r in rows} == {"en"}
    assert all("response" in r and 0 <= r["gestalt"] <= 1 and "exact_match" in r for r in rows)
    numeric = next(r for r in rows if r["id"] == "M7")
    assert numeric["rule"] == "numeric" and numeric["gold"] == "900" and "gestalt_correct" not in numeric
    assert 0 <= summary.metrics["gestalt_accuracy"] <= 1 and summary.skipped == {}
    with pytest.raises(DataError, match="--shots 3 needs 3 dev questions"):
        run_benchmark(tiny_llama, f"igakuqa:{small_bench}", tmp_path / "x", BenchSettings(shots=3))


def test_limit_is_a_seeded_sample_of_paired_questions() -> None:
    from jmed_edge.bench.runner import select_items

    bench = load_benchmark("jmed-sample")
    a, _, langs = select_items(bench, BenchSettings(limit=5, seed=1))
    b, _, _ = select_items(bench, BenchSettings(limit=5, seed=1))
    c, _, _ = select_items(bench, BenchSettings(limit=5, seed=2))
    assert [q.id for q in a] == [q.id for q in b] and {q.id for q in a} != {q.id for q in c}
    assert langs == ["ja", "en"] and len(a) == 10
    assert [q.id for q in a if q.lang == "ja"] == [q.id for q in a if q.lang == "en"]


@pytest.mark.slow
def test_loglik_parity_hf_and_f16_gguf(tiny_llama: Path, tmp_path: Path) -> None:
    """The F16 GGUF of the tiny fixture picks the same option as the HF model on every question."""
    from jmed_edge.convert.gguf import convert_to_gguf

    gguf = convert_to_gguf(tiny_llama, tmp_path / "gguf", quants=(), verify=False)["F16"]
    settings = BenchSettings(limit=12, scoring="text", runtime_options={"n_threads": 1})
    picks = {}
    for artifact in (tiny_llama, gguf):
        summary = run_benchmark(artifact, "jmed-sample", tmp_path / "bench", settings)
        picks[summary.artifact_name] = {
            (r["id"], r["lang"]): r for r in lines(Path(summary.out_dir) / "predictions.jsonl")
        }
    hf, gg = picks.values()
    assert len(picks) == 2 and set(hf) == set(gg) and len(hf) == 24
    for key in hf:
        assert hf[key]["preds"] == gg[key]["preds"], key
        assert hf[key]["scores"]["letter"] == pytest.approx(
            gg[key]["scores"]["letter"], abs=F16_VS_FP32_OPTION_ATOL
        )


@pytest.mark.slow
def test_cli_resumes_after_kill_9(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jmed_edge", "bench", str(tiny_llama), "--out", str(out), "--batch-size", "1",
           "--limit", "12", "--no-probe"]  # fmt: skip
    predictions = out / "tiny-llama-F32" / "jmed-sample" / "predictions.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if predictions.exists() and predictions.read_bytes().count(b"\n") >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    killed_with = len(read_predictions(predictions))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    rows = lines(predictions)
    keys = [(r["id"], r["lang"]) for r in rows]
    assert len(keys) == len(set(keys)) == 24
    assert 3 <= killed_with < 24  # the first run really was cut short


def test_cli_bench_and_bad_input(run_cli, tiny_llama: Path, small_bench: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("bench", tiny_llama, "--benchmark", f"igakuqa:{small_bench}", "--limit", "2",
                             "--out", tmp_path / "cli")  # fmt: skip
    assert code == 0, err
    assert "accuracy" in out and (tmp_path / "cli" / "tiny-llama-F32" / "igakuqa" / "summary.json").exists()
    # The artifact's own speed and peak RAM, measured once for the report, reused on a rerun.
    perf_file = tmp_path / "cli" / "tiny-llama-F32" / "perf.json"
    perf = json.loads(perf_file.read_text())
    assert perf["peak_rss_bytes"] > 10 * 2**20 and perf["decode_tokens"] > 0 and perf["load_seconds"] > 0
    stamp = perf_file.stat().st_mtime_ns
    code, _, err = run_cli("bench", tiny_llama, "--benchmark", f"igakuqa:{small_bench}", "--limit", "2",
                           "--out", tmp_path / "cli")  # fmt: skip
    assert code == 0, err
    assert perf_file.stat().st_mtime_ns == stamp
    code, _, err = run_cli("bench", tmp_path / "missing-model", "--out", tmp_path / "cli")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(
        "bench", tiny_llama, "--benchmark", "igakuqa:/no/such/dir", "--out", tmp_path / "cli"
    )
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli("bench", tiny_llama, "--benchmark", f"igakuqa:{small_bench}", "--limit", "2",
                           "--mode", "generate", "--out", tmp_path / "cli")  # fmt: skip
    assert code == 2 and "--force" in err and "mode" in err
