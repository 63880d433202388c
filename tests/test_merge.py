"""Merging adapters: the merged model reproduces base + adapter, and every mismatch fails cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jmed_edge.errors import ArtifactError, ModelError, VerificationError
from jmed_edge.manifest import MANIFEST_NAME, read_manifest
from jmed_edge.merge import merge_adapter
from jmed_edge.train import run_training


def _train(folder: Path, base: Path, steps: int = 8, **model: str) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": "高血圧の治療は?", "output": "降圧薬と減塩です。"},
            {"instruction": "What lowers blood sugar?", "output": "Insulin and metformin."}] * 8  # fmt: skip
    (folder / "data.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    recipe = {
        "model": {"path": str(base), **model},
        "data": {"files": ["data.jsonl"], "template": "medpalm"},
        "lora": {"r": 8, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": steps, "lr": 2e-2, "batch_size": 4, "max_length": 96},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return run_training(folder / "recipe.yaml", out=folder / "adapter", progress=False)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama) -> Path:
    return _train(tmp_path_factory.mktemp("merge"), tiny_llama)


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory) -> Path:
    return merge_adapter(adapter, tmp_path_factory.mktemp("merged") / "model")


def test_merge_parity_is_proven_and_recorded(merged, adapter, tiny_llama):
    manifest = read_manifest(merged)
    assert (manifest.kind, manifest.format) == ("model", "hf-safetensors")
    assert manifest.parent["sha256"] == read_manifest(adapter).sha256 and manifest.parent["kind"] == "adapter"
    v = manifest.verification
    assert v["passed"] and v["top1_agreement"] == 1.0
    assert v["max_abs_diff"] <= v["tolerance"] < 1e-2
    assert v["adapter_effect_max_abs"] > 100 * v["tolerance"]  # the check could have failed
    assert manifest.license == "apache-2.0"
    assert manifest.details["base"]["path"] == str(tiny_llama.resolve())


def test_merged_folder_is_a_complete_model_with_a_card(merged, adapter, tiny_llama):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "README.md"):
        assert (merged / name).is_file(), name
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert str(tiny_llama.resolve()) in card and str(adapter) in card
    assert "data.jsonl" in card and "apache-2.0" in card and "top-1 agreement 100.0%" in card


def test_merged_model_matches_peft_model_independently(merged, adapter, tiny_llama):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    batch = AutoTokenizer.from_pretrained(merged)(
        ["アスピリン100 mgを内服。", "Metformin 500 mg"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter)(
            **batch
        ).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(**batch).logits
    # torch against torch: the merge check measures 1.1e-5 here; fp32 rounding of W + BA only.
    assert torch.allclose(got, expected, atol=1e-4)


def test_bf16_merge_passes_its_own_tolerance(adapter, tmp_path):
    out = merge_adapter(adapter, tmp_path / "bf16", dtype="bf16")
    v = read_manifest(out).verification
    assert v["passed"] and v["max_abs_diff"] <= v["tolerance"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_corrupted_merge_fails_and_writes_nothing(adapter, tmp_path, monkeypatch):
    import jmed_edge.merge.stream as stream

    real = stream.fold_delta
    first = []

    def corrupt(weight, delta):  # the first merged weight (layer 0's first projection) off by 50%
        merged = real(weight, delta)
        first.append(1)
        return merged * 1.5 if len(first) == 1 else merged

    monkeypatch.setattr(stream, "fold_delta", corrupt)
    with pytest.raises(
        VerificationError, match="does not reproduce base \\+ adapter: max \\|logit difference\\|"
    ):
        merge_adapter(adapter, tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))


def test_base_of_another_architecture_is_refused(adapter, tiny_qwen2, tmp_path):
    with pytest.raises(ModelError, match=r"trained on another model.*model_type llama vs qwen2"):
        merge_adapter(adapter, tmp_path / "x", base=tiny_qwen2)
    assert not (tmp_path / "x").exists()


def test_base_of_another_hidden_size_is_refused_even_without_a_manifest(adapter, tmp_path):
    from jmed_edge.testing.tiny_models import build_tiny_model

    wide = build_tiny_model(tmp_path / "wide", "llama", hidden_size=128)
    with pytest.raises(ModelError, match="hidden_size 64 vs 128"):
        merge_adapter(adapter, tmp_path / "x", base=wide)
    bare = tmp_path / "bare-adapter"  # a plain peft adapter: only the weight shapes can tell
    shutil.copytree(adapter, bare)
    (bare / MANIFEST_NAME).unlink()
    with pytest.raises(ModelError, match=r"does not fit this base: .*takes 128 inputs, the adapter 64"):
        merge_adapter(bare, tmp_path / "x", base=wide)
    assert not (tmp_path / "x").exists()


def test_base_defaults_to_adapter_config_for_a_bare_peft_adapter(adapter, tiny_llama, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(adapter, bare)
    (bare / MANIFEST_NAME).unlink()
    config = json.loads((bare / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_llama)
    (bare / "adapter_config.json").write_text(json.dumps(config))
    out = merge_adapter(bare, tmp_path / "m")
    assert read_manifest(out).details["base"]["path"] == str(tiny_llama.resolve())
    config["base_model_name_or_path"] = "some-org/some-hub-model"
    (bare / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"cannot find the base model.*pass --base"):
        merge_adapter(bare, tmp_path / "m2")


def test_qlora_adapter_is_merged_into_full_precision_weights(tmp_path, tiny_llama):
    adapter = _train(tmp_path / "q", tiny_llama, steps=3, quantization="nf4")
    out = merge_adapter(adapter, tmp_path / "merged", dtype="fp32")
    manifest = read_manifest(out)
    assert manifest.details["merged_from_qlora"] and "not into 4-bit weights" in manifest.details["note"]
    assert manifest.verification["passed"]
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"


def test_not_an_adapter_and_existing_output(adapter, merged, tiny_llama, tmp_path):
    with pytest.raises(ArtifactError, match="is not a LoRA adapter"):
        merge_adapter(tiny_llama, tmp_path / "x")
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        merge_adapter(adapter, merged)
    # --force onto the adapter (or the base) would destroy the input it merges.
    with pytest.raises(ArtifactError, match="overlaps the adapter"):
        merge_adapter(adapter, adapter, force=True)
    assert (adapter / "adapter_model.safetensors").exists()
    with pytest.raises(ModelError, match=r"--base .*nowhere not found"):
        merge_adapter(adapter, tmp_path / "x", base=tmp_path / "nowhere")
    assert not (tmp_path / "x").exists()


def test_cli_prints_the_checks(adapter, tmp_path, run_cli):
    code, out, err = run_cli("merge", adapter, "--out", tmp_path / "m", "--dtype", "fp32")
    assert code == 0, err
    assert "max |logit diff|" in out and "top-1 agreement" in out and "Merged model written to" in out
    code, _, err = run_cli("merge", adapter, "--out", tmp_path / "m")
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
