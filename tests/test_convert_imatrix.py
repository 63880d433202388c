"""Importance-matrix quantization on a tiny Llama with hidden size 256, so K and IQ types really apply.

One conversion with the default ``--imatrix auto`` (Q4_K_M, IQ3_M, Q8_0, Q4_0) per module; its
Q4_K_M and Q4_0 are then compared tensor by tensor with llama.cpp's own ``llama-quantize --imatrix``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from jmed_edge.convert.llamacpp_tools import quantize_binary, tools_status
from jmed_edge.manifest import read_manifest, sha256_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp tools not set up (jmed-edge setup)"),
]


@pytest.fixture(scope="module")
def tiny256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.testing.tiny_models import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny256", "llama", hidden_size=256, intermediate_size=512
    )


@pytest.fixture(scope="module")
def converted(tiny256: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from jmed_edge.convert.gguf import convert_to_gguf

    # no imatrix argument: auto is the default for every type whose quantizer takes one
    return convert_to_gguf(tiny256, tmp_path_factory.mktemp("gguf") / "out", quants="q4_k_m,iq3_m,q8_0,q4_0")


def _file(folder: Path) -> Path:
    return folder / read_manifest(folder).details["file"]


def test_imatrix_is_recorded_for_the_types_that_use_it(converted: dict[str, Path]) -> None:
    imatrix_file = converted["F16"].parent / "imatrix-medical-ja-en.gguf"
    assert imatrix_file.is_file()
    for name in ("Q4_K_M", "IQ3_M", "Q4_0"):
        manifest = read_manifest(converted[name])
        assert manifest.config["imatrix"] == "auto" and manifest.details["imatrix_used"] is True
        record = manifest.details["imatrix"]
        assert record["mode"] == "auto" and record["sha256"] == sha256_file(imatrix_file)
        calibration = record["calibration"]
        assert calibration["languages"] == ["ja", "en"] and len(calibration["sha256"]) == 64
        assert (
            record["chunks"] >= 2 and calibration["chunks"] == record["chunks"] and calibration["tokens"] > 0
        )
    q8 = read_manifest(converted["Q8_0"])  # llama.cpp's Q8_0 quantizer ignores an imatrix
    assert q8.details["imatrix"] is None and q8.details["imatrix_used"] is False
    assert q8.config["imatrix"] is None


def test_the_table_says_which_types_used_it(converted: dict[str, Path]) -> None:
    from rich.console import Console

    from jmed_edge.convert.console import artifacts_table

    console = Console(width=200, record=True)
    console.print(artifacts_table(converted))
    rows = {line.split("│")[1].strip(): line.split("│")[4].strip() for line in console.export_text().splitlines()
            if line.count("│") > 4 and line.split("│")[1].strip() in converted}  # fmt: skip
    assert rows == {"F16": "-", "Q4_K_M": "auto", "IQ3_M": "auto", "Q8_0": "-", "Q4_0": "auto"}


def test_k_quants_apply_at_hidden_256(converted: dict[str, Path]) -> None:
    details = {n: read_manifest(f).details for n, f in converted.items()}
    # at hidden 64 every K/IQ tensor falls back to a wider type; at 256 they really are ~4 / ~3.7 bits
    assert details["Q4_K_M"]["bits_per_weight"] < 5.6
    assert details["IQ3_M"]["bits_per_weight"] < details["Q4_K_M"]["bits_per_weight"]
    for name in ("Q4_K_M", "IQ3_M", "Q8_0"):
        assert read_manifest(converted[name]).verification["passed"] is True


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q4_0"])
def test_bindings_quantize_exactly_like_llama_quantize(
    converted: dict[str, Path], tmp_path: Path, quant: str
) -> None:
    from gguf import GGUFReader

    f16 = _file(converted["F16"])
    ours = _file(converted[quant])
    theirs = tmp_path / "tool.gguf"
    imatrix = converted["F16"].parent / "imatrix-medical-ja-en.gguf"
    subprocess.run(
        [str(quantize_binary()), "--imatrix", str(imatrix), str(f16), str(theirs), quant, "2"],
        check=True,
        capture_output=True,
    )
    a, b = GGUFReader(ours), GGUFReader(theirs)
    tensors_b = {t.name: t for t in b.tensors}
    assert len(a.tensors) == len(tensors_b)
    for tensor in a.tensors:
        other = tensors_b[tensor.name]
        assert tensor.tensor_type == other.tensor_type, tensor.name
        assert np.array_equal(np.asarray(tensor.data), np.asarray(other.data)), tensor.name
    for key in (
        "quantize.imatrix.entries_count",
        "quantize.imatrix.chunks_count",
        "quantize.imatrix.dataset",
    ):
        assert a.get_field(key).contents() == b.get_field(key).contents()


def test_a_given_imatrix_file_is_reused(converted: dict[str, Path], tiny256: Path, tmp_path: Path) -> None:
    from jmed_edge.convert.gguf import convert_to_gguf

    imatrix = converted["F16"].parent / "imatrix-medical-ja-en.gguf"
    done = convert_to_gguf(tiny256, tmp_path / "again", quants="iq4_xs", imatrix=imatrix, verify=False)
    record = read_manifest(done["IQ4_XS"]).details["imatrix"]
    assert record["mode"] == "file" and record["sha256"] == sha256_file(imatrix)
    assert not (tmp_path / "again" / "imatrix-medical-ja-en.gguf").exists()


def test_imatrix_none_opts_out(converted: dict[str, Path], tiny256: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    from jmed_edge.convert.console import imatrix_cell
    from jmed_edge.convert.gguf import convert_to_gguf

    done = convert_to_gguf(tiny256, tmp_path / "plain", quants="q4_0", imatrix="none", verify=False)
    manifest = read_manifest(done["Q4_0"])
    assert manifest.config["imatrix"] is None and manifest.details["imatrix"] is None
    assert manifest.details["imatrix_used"] is False and imatrix_cell(manifest.details) == "none"
    assert not (tmp_path / "plain" / "imatrix-medical-ja-en.gguf").exists()
    # the imatrix changed the weights: the default Q4_0 is not the plain one
    plain = {t.name: np.asarray(t.data) for t in GGUFReader(_file(done["Q4_0"])).tensors}
    weighted = {t.name: np.asarray(t.data) for t in GGUFReader(_file(converted["Q4_0"])).tensors}
    changed = [
        n for n in plain if n.endswith("ffn_down.weight") and not np.array_equal(plain[n], weighted[n])
    ]
    assert changed
