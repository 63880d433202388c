"""The embedded default model (SmolLM2-135M-Instruct) -> F16, Q8_0, Q4_K_M, verified (~2-4 min)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jmed_edge.convert.llamacpp_tools import tools_status
from jmed_edge.manifest import read_manifest
from jmed_edge.testing.numerics import F16_VS_FP32_KL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp converter not set up (jmed-edge setup)"),
]


@pytest.fixture(scope="module")
def converted(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    from jmed_edge.cli import main

    out = tmp_path_factory.mktemp("gguf") / "default"
    code = main(["convert", "default", "--to", "gguf", "--quant", "q8_0,q4_k_m", "--out", str(out)])
    return code, out


def test_default_model_converts_and_verifies(converted) -> None:
    code, out = converted
    assert code == 0
    for name in ("F16", "Q8_0", "Q4_K_M"):
        manifest = read_manifest(out / name)
        assert manifest.verification["passed"] is True, manifest.verification
        assert manifest.details["pre_tokenizer"] == "smollm"  # recognised by llama.cpp's hash table
    assert read_manifest(out / "F16").details["pre_tokenizer_source"] == "llama.cpp hash lookup"


def test_japanese_tokenizer_and_logits_match(converted) -> None:
    _, out = converted
    checks = {c["name"]: c for c in read_manifest(out / "F16").verification["checks"]}
    tokenizer = checks["tokenizer parity"]
    assert tokenizer["passed"] and tokenizer["matching"] == tokenizer["probes"]
    assert checks["chat template"]["passed"] and checks["chat template"]["bos_id"] == 1
    logits = checks["logit parity"]
    assert logits["passed"] and logits["kl_mean"] < F16_VS_FP32_KL and logits["top1"] > 0.97


def test_quantization_loss_grows_as_bits_shrink(converted) -> None:
    _, out = converted
    loss = {}
    for name in ("Q8_0", "Q4_K_M"):
        check = next(c for c in read_manifest(out / name).verification["checks"] if c.get("kl"))
        loss[name] = check["kl"]
        for lang in ("ja", "en"):
            assert check["kl"][lang]["positions"] >= 200
    for lang in ("ja", "en"):
        assert loss["Q8_0"][lang]["kl_mean"] < loss["Q4_K_M"][lang]["kl_mean"]
        assert loss["Q8_0"][lang]["top1"] > 0.85


def test_files_carry_the_model_name_and_general_metadata(converted) -> None:
    from gguf import GGUFReader

    _, out = converted
    for name in ("F16", "Q8_0", "Q4_K_M"):
        files = sorted(p.name for p in (out / name).glob("*.gguf"))
        assert files == [f"SmolLM2-135M-Instruct-{name}.gguf"]
    reader = GGUFReader(out / "Q4_K_M" / "SmolLM2-135M-Instruct-Q4_K_M.gguf")
    meta = {k: reader.get_field(k).contents() for k in ("general.name", "general.basename", "general.size_label",
            "general.finetune", "general.license", "general.quantized_by")}  # fmt: skip
    assert meta == {"general.name": "SmolLM2-135M-Instruct", "general.basename": "SmolLM2",
                    "general.size_label": "135M", "general.finetune": "Instruct",
                    "general.license": "apache-2.0", "general.quantized_by": "jmed-edge"}  # fmt: skip


def test_q4_k_m_used_the_bilingual_imatrix_without_being_asked(converted) -> None:
    _, out = converted
    q4 = read_manifest(out / "Q4_K_M")
    assert q4.config["imatrix"] == "auto" and q4.details["imatrix"]["calibration"]["languages"] == [
        "ja",
        "en",
    ]
    assert read_manifest(out / "Q8_0").details["imatrix_used"] is False


def test_the_modelfile_renders_like_the_embedded_chat_template(converted) -> None:
    from test_convert_modelfile import EXTRA, ollama_render, parse_modelfile

    from jmed_edge.convert.ggufinfo import read_gguf
    from jmed_edge.convert.modelfile import PROBES, render_jinja

    _, out = converted
    folder = out / "Q4_K_M"
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    commands = parse_modelfile(text)
    assert commands[0] == ("FROM", "./SmolLM2-135M-Instruct-Q4_K_M.gguf")
    assert ("SYSTEM", "You are a helpful AI assistant named SmolLM, trained by Hugging Face") in commands
    assert read_manifest(folder).details["modelfile"]["template"] == "chatml"
    template = read_gguf(folder / "SmolLM2-135M-Instruct-Q4_K_M.gguf").get("tokenizer.chat_template")
    for messages in [*map(list, PROBES), EXTRA]:
        assert ollama_render(text, messages) == render_jinja(template, messages)
