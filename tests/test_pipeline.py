"""``jmed-edge run``: every stage from one recipe, skipped on rerun, redone when its input changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _recipe(tmp_path: Path, model: Path, r: int = 4) -> Path:
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": "高血圧の第一選択薬を一つ挙げてください。", "input": "", "output": "ACE阻害薬です。"},
            {"instruction": "Name a first-line drug for hypertension.", "input": "", "output": "An ACE inhibitor."}] * 4  # fmt: skip
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recipe = {
        "model": {"path": str(model)},
        "data": {"files": [str(data)], "format": "alpaca", "template": "medpalm"},
        "lora": {"r": r, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 2, "batch_size": 2, "max_length": 64, "seed": 1},
        "output": {"dir": str(tmp_path / "run" / "adapter")},
        "convert": {"gguf": {"quants": ["q8_0"]}},
        "bench": {"benchmarks": ["jmed-sample"], "limit": 4, "langs": ["ja", "en"]},
        "report": {"reference": "F16", "budget": "1GB", "kl": True},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def test_run_skips_finished_stages_and_redoes_changed_ones(tmp_path: Path, tiny_llama: Path):
    from jmed_edge.pipeline.run import run_pipeline

    recipe = _recipe(tmp_path, tiny_llama)
    first = run_pipeline(recipe)
    assert first.ran == ["train", "merge", "convert gguf", "bench", "report"]
    report = json.loads((first.report / "report.json").read_text(encoding="utf-8"))
    assert {c["lang"] for c in report["cells"]} == {"ja", "en"}
    assert {a["name"].rsplit("-", 1)[-1] for a in report["artifacts"]} >= {"F16", "Q8_0"}
    kl = next(a for a in report["artifacts"] if a["name"].endswith("Q8_0"))["kl"]
    assert set(kl) == {"ja", "en"} and kl["ja"]["mean_kl"] >= 0

    again = run_pipeline(recipe)
    assert again.skipped == ["train", "merge", "convert gguf"]
    again_report = json.loads((again.report / "report.json").read_text(encoding="utf-8"))
    report.pop("timings"), again_report.pop("timings")
    assert again_report == report  # same recipe and seed: same numbers

    # A changed bench setting redoes the bench (no "--force" advice the recipe cannot follow).
    more = run_pipeline(recipe, overrides=["bench.limit=6"])
    assert more.skipped == ["train", "merge", "convert gguf"]
    more_report = json.loads((more.report / "report.json").read_text(encoding="utf-8"))
    assert {c["n"] for c in more_report["cells"]} == {6}

    changed = run_pipeline(_recipe(tmp_path, tiny_llama, r=8))
    assert changed.ran[:3] == ["train", "merge", "convert gguf"]
