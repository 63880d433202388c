"""Peak memory at the shape of Qwen2-0.5B (random bf16 weights, 0.99 GB), measured from outside
the process the way ``benchmarks/perf/scale.py`` measures every size up to 7B."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from jmed_edge.manifest import read_manifest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _scale():
    spec = importlib.util.spec_from_file_location("scale_bench", REPO / "benchmarks/perf/scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def shape_05b(tmp_path_factory) -> tuple[Path, Path, int]:
    from jmed_edge.testing.random_models import build_random_model, random_adapter

    root = tmp_path_factory.mktemp("scale")
    model = build_random_model(root / "model", "0.5b")
    adapter = random_adapter(model, root / "adapter", r=8)
    return model, adapter, sum(p.stat().st_size for p in model.glob("*.safetensors"))


def test_merge_peak_rss_is_at_most_1_3x_the_model(shape_05b, tmp_path):
    model, adapter, model_bytes = shape_05b
    out = tmp_path / "merged"
    cmd = [sys.executable, "-m", "jmed_edge", "merge", str(adapter), "--base", str(model), "--out", str(out)]
    _, tree, hwm = _scale().measure(cmd, tmp_path / "merge.log")
    ratio = max(tree, hwm) / model_bytes
    manifest = read_manifest(out)
    assert manifest.details["streamed"] and manifest.config["dtype"] == "bf16"
    assert manifest.verification["passed"] and manifest.verification["top1_agreement"] >= 0.99
    # Measured 0.92-1.05x (0.5B shape, 2-core CPU); peft's in-memory merge took 3.0x (bf16) and 3.8x (fp32).
    assert ratio <= 1.3, f"merge peak {max(tree, hwm) / 1e9:.2f} GB = {ratio:.2f}x the model"


def test_the_scale_benchmark_runs_its_gguf_stages_at_the_smallest_shape(tmp_path):
    """The benchmark's own stages (merge, convert, imatrix, quantize through its worker) at 135M, so a
    change in the converter's functions shows here and not in the middle of a 7B run."""
    stages = ["merge", "convert_f16", "imatrix", "quantize_q8_0", "quantize_q4_k_m"]
    rows = _scale().run(["135m"], stages, tmp_path, imatrix_chunks=1, save_disk=True)
    assert [r["stage"] for r in rows] == stages
    assert all(r["seconds"] > 0 and r["peak_rss_bytes"] > 0 for r in rows)
    q8 = next(r for r in rows if r["stage"] == "quantize_q8_0")
    assert q8["artifact_deleted"] and q8["artifact_bytes"] > 0  # --save-disk: measured, then removed
    assert not (tmp_path / "runs/135m/gguf/Q8_0").exists() and (tmp_path / "runs/135m/merged").is_symlink()
    assert list((tmp_path / "runs/135m/gguf/Q4_K_M").glob("*-Q4_K_M.gguf"))


@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_onnx_export_peak_rss_is_at_most_1_5x_the_model(shape_05b, tmp_path, precision):
    model, _, model_bytes = shape_05b
    cmd = [sys.executable, "-m", "jmed_edge", "convert", str(model), "--to", "onnx", "--quant", precision,
           "--out", str(tmp_path), "--no-verify"]  # fmt: skip
    _, tree, hwm = _scale().measure(cmd, tmp_path / "onnx.log")
    ratio = max(tree, hwm) / model_bytes
    manifest = read_manifest(tmp_path / f"onnx-{precision}")
    assert manifest.details["precision"] == precision and manifest.details["size_bytes"] > 0
    # Measured (0.5B shape, 2-core CPU, whole process tree): int4 0.85x, int8 1.24x (the int8
    # folder keeps the 151,936 x 896 embedding table in fp32). The builder's own whole-graph
    # quantization step took the same exports to 4.7x and 5.6x.
    assert ratio <= 1.5, f"onnx {precision} peak {max(tree, hwm) / 1e9:.2f} GB = {ratio:.2f}x the model"
