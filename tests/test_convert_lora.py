"""A peft LoRA adapter -> GGUF LoRA applied by llama.cpp on the base GGUF, checked against peft.

The adapter is built here with peft directly (random LoRA B weights, so it changes the model);
the base is converted to F16 once per module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jmed_edge.convert.llamacpp_tools import tools_status
from jmed_edge.convert.lora_gguf import KL_TOL
from jmed_edge.errors import ArtifactError
from jmed_edge.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp converter not set up (jmed-edge setup)"),
]


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():  # a fresh adapter has B = 0 (no effect); give it one
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    out = tmp_path_factory.mktemp("adapters") / "lora"
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base_f16(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.convert.gguf import convert_to_gguf

    return convert_to_gguf(tiny_llama, tmp_path_factory.mktemp("gguf") / "base", quants=(), verify=False)[
        "F16"
    ]


@pytest.fixture(scope="module")
def lora_gguf(adapter: Path, base_f16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.convert.lora_gguf import convert_lora

    return convert_lora(adapter, tmp_path_factory.mktemp("gguf") / "lora", base_gguf=base_f16)


def test_gguf_lora_matches_peft_and_the_check_is_meaningful(
    lora_gguf: Path, adapter: Path, base_f16: Path
) -> None:
    manifest = read_manifest(lora_gguf)
    assert manifest.kind == "gguf-lora" and manifest.format == "gguf-lora"
    assert manifest.parent["path"] == str(adapter.resolve())
    assert manifest.details["rank"] == 8 and manifest.details["lora_alpha"] == 16
    assert manifest.details["base_gguf"] == str(base_f16.resolve())
    checks = {c["name"]: c for c in manifest.verification["checks"]}
    parity, effect = checks["adapter parity"], checks["adapter effect"]
    assert parity["passed"] and parity["kl_mean"] < KL_TOL["float32"] and parity["top1"] > 0.95
    assert effect["kl_mean"] > 100 * parity["kl_mean"]  # the adapter really changes the model
    assert (lora_gguf / "adapter-F16.gguf").stat().st_size > 0


def test_the_runtime_applies_the_lora_from_the_manifest(lora_gguf: Path) -> None:
    from jmed_edge.runtimes import open_runtime

    runtime = open_runtime(lora_gguf, n_ctx=128)  # base GGUF found through details.base_gguf
    try:
        assert runtime.lora_path is not None and len(runtime.logits(runtime.tokenize("患者は65歳"))) > 0
    finally:
        runtime.close()


def test_verify_cli_reruns_the_adapter_check(run_cli, lora_gguf: Path) -> None:
    code, out, err = run_cli("verify", lora_gguf, "--no-record")
    assert code == 0, err
    assert (
        "✓ adapter parity: base GGUF + GGUF LoRA vs peft" in out
        and "adapter effect: peft vs its base: KL" in out
    )


def test_cli_without_base_gguf_checks_on_a_temporary_base(run_cli, adapter: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("convert", adapter, "--to", "gguf-lora", "--out", tmp_path / "lora")
    assert code == 0, err
    assert "temporary F16 GGUF" in err and "✓ adapter parity" in err
    assert read_manifest(tmp_path / "lora").details["base_gguf"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora"]  # the temporary base is gone


def test_a_model_is_not_an_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    from jmed_edge.convert.lora_gguf import convert_lora

    with pytest.raises(ArtifactError, match="not a peft LoRA adapter"):
        convert_lora(tiny_llama, tmp_path / "lora")
