"""The ONNX export's weight-by-weight quantizer writes exactly what the builder's own step writes.

The builder is run twice on the same source in the same way (``_builder_worker``): once with its
stock whole-graph ``to_nbits`` and once with ``streaming.install``; every node, initializer
byte, opset and IR version must match. Covered: tied embeddings (the embedding lookup reads the
lm_head's quantized tensors by name), an untied bf16 checkpoint (its embedding table stays
float, or becomes a GatherBlockQuantized when asked), int8, and asymmetric int4 (zero points).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jmed_edge.convert.onnx.genai_builder import builder_extra_options
from jmed_edge.convert.onnx.options import OnnxOptions

pytestmark = pytest.mark.slow

BUILDS = {  # out folder -> (precision, options)
    "int4": ("int4", OnnxOptions()),
    "int8": ("int8", OnnxOptions()),
    "int4-asym": ("int4", OnnxOptions(symmetric=False)),
    # the embedding table quantized too (GatherBlockQuantized); by default an untied one stays float
    "int4-gather": ("int4", OnnxOptions(builder_options={"op_types_to_quantize": "MatMul/Gather"})),
}


def _bf16_copy(src: Path, dest: Path) -> Path:
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(dest)
    for item in src.iterdir():
        if item.name.startswith("tokenizer") or item.name.endswith((".jinja", ".txt", "vocab.json")):
            shutil.copy2(item, dest / item.name)
    return dest


def _build(source: Path, root: Path, streaming: bool) -> Path:
    root.mkdir(parents=True)
    jobs = [
        {"precision": precision, "out": str(root / name),
         "extra_options": builder_extra_options(options, precision)}
        for name, (precision, options) in BUILDS.items()
    ]  # fmt: skip
    job = {"source": str(source), "target": "cpu", "cache_dir": str(root / "cache"), "jobs": jobs,
           "streaming": streaming}  # fmt: skip
    (root / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "jmed_edge.convert.onnx._builder_worker", str(root / "job.json")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert ("as they are written" in done.stdout) == streaming
    return root


def _contents(model_file: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_file))
    nodes = sorted(
        (n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output),
         tuple(sorted(onnx.helper.printable_attribute(a) for a in n.attribute)))
        for n in model.graph.node
    )  # fmt: skip
    tensors = {
        t.name: (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
        for t in model.graph.initializer
    }
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    io = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    return {"nodes": nodes, "tensors": tensors, "opsets": opsets, "ir_version": model.ir_version, "io": io}


@pytest.fixture(scope="module")
def untied_bf16(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bf16_copy(tiny_llama, tmp_path_factory.mktemp("bf16") / "tiny-llama-bf16")


@pytest.mark.parametrize("model", ["tiny_qwen2", "untied_bf16"])
def test_streamed_quantization_writes_the_builders_own_bytes(model: str, request, tmp_path: Path) -> None:
    source = request.getfixturevalue(model)
    stock = _build(source, tmp_path / "stock", streaming=False)
    streamed = _build(source, tmp_path / "streamed", streaming=True)
    for name in BUILDS:
        expected, got = _contents(stock / name / "model.onnx"), _contents(streamed / name / "model.onnx")
        assert got["nodes"] == expected["nodes"], name
        assert got["tensors"].keys() == expected["tensors"].keys(), name
        differing = [k for k, v in expected["tensors"].items() if got["tensors"][k] != v]
        assert not differing, f"{name}: {differing[:5]}"
        assert (got["opsets"], got["ir_version"], got["io"]) == (
            expected["opsets"], expected["ir_version"], expected["io"],
        ), name  # fmt: skip
    ops = {node[1] for node in _contents(streamed / "int4" / "model.onnx")["nodes"]}
    assert "MatMulNBits" in ops and "MatMul" not in ops
    # tied: the lookup reads the quantized lm_head; untied: the table is quantized when asked
    gathered = {node[1] for node in _contents(streamed / "int4-gather" / "model.onnx")["nodes"]}
    assert "GatherBlockQuantized" in (ops if model == "tiny_qwen2" else gathered)
