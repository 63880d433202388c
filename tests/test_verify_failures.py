"""Broken tokenizers and templates fail conversion with the right message and leave no artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jmed_edge.convert.gguf import convert_to_gguf
from jmed_edge.convert.llamacpp_tools import tools_status
from jmed_edge.errors import ModelError, VerificationError
from jmed_edge.manifest import MANIFEST_NAME, read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp converter not set up (jmed-edge setup)"),
]


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_wrong_declared_pre_tokenizer_fails_on_digit_runs(tmp_path: Path, tiny_llama: Path) -> None:
    # Llama 3 groups digits in threes, Qwen2 splits them one by one: plain words still match.
    src = _copy(tiny_llama, tmp_path / "wrong-pre")
    manifest = json.loads((src / MANIFEST_NAME).read_text())
    manifest["details"]["pre_tokenizer"] = "qwen2"
    (src / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(VerificationError) as err:
        convert_to_gguf(src, tmp_path / "out", quants=())
    message = str(err.value)
    assert "tokenizer parity" in message and "pre-tokenizer qwen2" in message and "--pre-tokenizer" in message
    result = err.value.result  # type: ignore[attr-defined]
    failing = result.check("tokenizer parity").values["failing_probes"]
    assert any(any(c.isdigit() for c in probe) for probe in failing)
    assert "Community-acquired pneumonia presents with fever, cough and dyspnea." not in failing
    assert not (tmp_path / "out" / "F16").exists() and not list((tmp_path / "out").glob(".*"))


def test_missing_chat_template_fails(tmp_path: Path, tiny_qwen2: Path) -> None:
    src = _copy(tiny_qwen2, tmp_path / "no-template")
    config = json.loads((src / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (src / "tokenizer_config.json").write_text(json.dumps(config))
    (src / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(VerificationError, match=r"chat template: the GGUF has no tokenizer\.chat_template"):
        convert_to_gguf(src, tmp_path / "out", quants=())
    assert not (tmp_path / "out" / "F16").exists()


def test_unrecognised_pre_tokenizer_asks_for_the_option(tmp_path: Path, tiny_llama: Path, run_cli) -> None:
    src = _copy(tiny_llama, tmp_path / "undeclared")
    (src / MANIFEST_NAME).unlink()  # no declared pre-tokenizer: llama.cpp's hash lookup must fail
    with pytest.raises(ModelError) as err:
        convert_to_gguf(src, tmp_path / "out", quants=())
    message = str(err.value)
    assert "BPE pre-tokenizer was not recognized" in message and "pass --pre-tokenizer NAME" in message
    assert "llama-bpe" in message and "qwen2" in message and "\n" not in message
    assert not (tmp_path / "out" / "F16").exists()

    code, _, err_text = run_cli(
        "convert",
        src,
        "--to",
        "gguf",
        "--quant",
        "f16",
        "--pre-tokenizer",
        "llama-bpe",
        "--out",
        tmp_path / "out",
    )
    assert code == 0, err_text
    assert "pre-tokenizer 'llama-bpe' (--pre-tokenizer) overrides" in err_text
    manifest = read_manifest(tmp_path / "out" / "F16")
    assert manifest.details["pre_tokenizer"] == "llama-bpe"
    assert (
        manifest.details["pre_tokenizer_source"] == "--pre-tokenizer"
        and manifest.config["pre_tokenizer"] == "llama-bpe"
    )
    assert manifest.verification["passed"] and manifest.parent["kind"] == "external"
