"""int4/int8 weight quantization for the onnxruntime-genai builder, a slice of one weight at a time.

The exporter is onnxruntime-genai 0.18's model builder (fused GroupQueryAttention and
MatMulNBits, the fastest CPU runtime measured; see ``exporters.py``). Its ``to_nbits`` step
serializes the *whole* graph to one protobuf, every weight cast to fp32, before onnxruntime's
``MatMulNBitsQuantizer`` runs over it. Measured on a Qwen2-0.5B-shape bf16 model (0.99 GB; the
checkpoint is memory-mapped and read lazily, so building the graph costs 0.60 GB): that step
took the process to 4.61 GB (4.7x the model); at SmolLM2-1.7B's shape it gave 3.7x, ~56 GB at 7B.

``install(Model)`` replaces it. Each MatMul (and, for int4, Gather) node is rewritten at once
to its MatMulNBits / GatherBlockQuantized form, but the quantized tensors are lazy: they are
computed while ``ir.save`` writes them, one weight at a time, from the bf16 tensor the builder
was given, converted to fp32 a slice of columns (rows for Gather) at a time and quantized with
onnxruntime's own kernels (``DefaultWeightOnlyQuantizer.qbits_block_quant`` /
``quantize_ndarray``, which quantize each column or row on its own, so the slices join into
exactly the stock bytes; a test compares every node and initializer with the stock step's).
Nothing quantized is held after it is written, and the pages of the mapped checkpoint each
slice was read from are given back (``mapped_pages``). Measured at the 0.5B shape (builder
process alone): int4 4.61 GB -> 0.80 GB, int8 5.57 GB -> 1.16 GB, same files. Requests this
loop does not cover (QDQ format, rtn/k_quant, mixed precision, CUDA prepacking, exact
overrides, subgraphs, weights that are not 2-D) use the builder's own step, announced in the log.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from jmed_edge.convert.onnx.mapped_pages import release_mapped_files

CHUNK_BYTES = 64 * 1024**2  # fp32 bytes converted at once; 16-256 MiB made no difference in speed
_WEIGHT_INPUT = {"MatMul": 1, "Gather": 0}  # which input of each op holds the weight
_ORIGINAL = "_jmed_stock_to_nbits"


def stock_reason(builder: Any) -> str | None:
    """Why ``builder`` (a builder ``Model``) must use the stock whole-graph quantizer, or None."""
    qa = builder.quant_attrs
    if qa.get("use_qdq"):
        return "the QDQ format"
    if getattr(builder, "quantization_algo", "default") != "default":
        return f"algorithm {builder.quantization_algo}"
    if getattr(builder, "int4_customized_weight_config", None):
        return "mixed precision (matmul_mixed_precision)"
    if getattr(builder, "exact_quant_override_names", None) or getattr(
        builder, "exact_quant_overrides", None
    ):
        return "exact quantization overrides"
    if builder.ep == "cuda" and builder.matmul_attrs.get("weights_prepacked", 0) > 0:
        return "CUDA weight prepacking"
    for node in builder.model.graph:
        if any(attr.type.name in ("GRAPH", "GRAPHS") for attr in node.attributes.values()):
            return f"a subgraph in {node.name}"
        weight = _weight(node, qa)
        if weight is not None and len(weight.const_value.shape) != 2:
            return f"the {len(weight.const_value.shape)}-D weight of {node.name}"
    return None


def _weight(node: Any, qa: dict[str, Any]) -> Any:
    """The constant weight value ``node`` would be quantized through, or None."""
    if node.op_type not in _WEIGHT_INPUT or node.op_type not in qa["op_types_to_quantize"]:
        return None
    if node.name in qa["nodes_to_exclude"] or (node.op_type == "Gather" and qa["bits"] != 4):
        return None  # the stock quantizer quantizes Gather to 4 bits only
    index = _WEIGHT_INPUT[node.op_type]
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is None or not value.is_initializer() or value.const_value is None:
        return None
    return value


def _source(builder: Any, weight: Any) -> Any:
    """The torch tensor the builder cast ``weight`` from lazily, or the weight as an array."""
    source = builder._jmed_sources.pop(weight.name, None)
    return weight.const_value.numpy() if source is None else source


def _slices(source: Any, axis: int, dtype: np.dtype):
    """``source`` as ``dtype`` arrays of about CHUNK_BYTES each, cut along ``axis`` (0 or 1)."""
    import torch

    shape = tuple(source.shape)
    step = max(2, CHUNK_BYTES // (4 * shape[1 - axis]) // 2 * 2)  # even: int4 packs pairs
    for start in range(0, shape[axis], step):
        part = source[start : start + step] if axis == 0 else source[:, start : start + step]
        if isinstance(part, torch.Tensor):
            part = part.to(torch.float16 if dtype == np.float16 else torch.float32).numpy()
        yield np.ascontiguousarray(part, dtype=dtype)
        release_mapped_files()


def _float_dtype(weight: Any) -> tuple[np.dtype, Any]:
    """(dtype the kernels see, dtype the scales are stored in): bf16 is quantized from fp32."""
    stored = weight.const_value.dtype.numpy()
    return (np.dtype(np.float32), stored) if stored.name == "bfloat16" else (stored, stored)


class _Parts:
    """The quantized tensors of one weight, computed when the first of them is written and
    dropped (with the source weight) once every one has been taken."""

    def __init__(self, compute, count: int) -> None:
        self._compute, self._left, self._parts, self._lock = (
            compute,
            set(range(count)),
            None,
            threading.Lock(),
        )

    def take(self, index: int) -> Any:
        with self._lock:
            if self._compute is None:
                raise RuntimeError("a quantized weight was read twice; it is computed for one write only")
            if self._parts is None:
                self._parts = self._compute()
            part = self._parts[index]
            self._left.discard(index)
            if not self._left:
                self._parts = self._compute = None
            return part


def _lazy(parts: _Parts, index: int, name: str, dtype: Any, shape: tuple[int, ...]) -> tuple[str, Any]:
    import onnx_ir as ir

    return name, ir.LazyTensor(lambda: parts.take(index), dtype=dtype, shape=ir.Shape(list(shape)), name=name)


def _matmul(builder: Any, node: Any, weight: Any, quantizer: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """MatMul -> MatMulNBits, as DefaultWeightOnlyQuantizer.quantize_matmul (QOperator) builds it."""
    import onnx_ir as ir

    config = quantizer.config
    rows, cols = weight.const_value.shape
    dtype, scale_dtype = _float_dtype(weight)
    source = _source(builder, weight)

    def compute() -> tuple[Any, ...]:
        parts = [quantizer.qbits_block_quant(part) for part in _slices(source, 1, dtype)]
        packed, scales, zeros = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return ir.Tensor(packed), ir.Tensor(scales.astype(scale_dtype, copy=False)), ir.Tensor(zeros)

    kpack = 8 // config.bits
    k_blocks = -(-rows // config.block_size)
    parts = _Parts(compute, 2 if config.is_symmetric else 3)
    tensors = [_lazy(parts, 0, f"{weight.name}_Q{config.bits}", ir.DataType.UINT8,
                     (cols, k_blocks, -(-config.block_size // kpack))),
               _lazy(parts, 1, f"{weight.name}_scales", ir.DataType.from_numpy(scale_dtype), (cols, k_blocks))]  # fmt: skip
    if not config.is_symmetric:
        tensors.append(
            _lazy(parts, 2, f"{weight.name}_zero_points", ir.DataType.UINT8, (cols, -(-k_blocks // kpack)))
        )
    attributes = {"K": int(rows), "N": int(cols), "bits": config.bits, "block_size": config.block_size}
    if config.accuracy_level:
        attributes["accuracy_level"] = config.accuracy_level
    inputs = [node.inputs[0], *(builder.make_value(name) for name, _ in tensors)]
    return ir.node("MatMulNBits", inputs, attributes, domain="com.microsoft",
                   name=f"{node.name}_Q{config.bits}"), tensors  # fmt: skip


def _gather(builder: Any, node: Any, weight: Any, quantizer: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """Gather -> GatherBlockQuantized (int4), as DefaultWeightOnlyQuantizer.quantize_gather builds it."""
    import onnx_ir as ir

    config = quantizer.config
    shape = tuple(weight.const_value.shape)
    axis = config.quant_axes.get("Gather", 1) % 2
    dtype, _ = _float_dtype(weight)
    qtype = ir.DataType.INT4 if config.is_symmetric else ir.DataType.UINT4
    scales_shape = list(shape)
    scales_shape[axis] = -(-shape[axis] // config.block_size)
    source = _source(builder, weight)

    def compute() -> tuple[Any, ...]:
        parts = [quantizer.quantize_ndarray(part, axis, config.block_size, config.is_symmetric)
                 for part in _slices(source, 1 - axis, dtype)]  # fmt: skip
        out = [ir.PackedTensor(np.concatenate([p[0] for p in parts]), qtype, shape=shape),
               ir.Tensor(np.concatenate([p[1] for p in parts], axis=1 - axis))]  # fmt: skip
        if not config.is_symmetric:
            out.append(ir.PackedTensor(np.concatenate([p[2] for p in parts]), qtype, shape=scales_shape))
        return tuple(out)

    parts = _Parts(compute, 2 if config.is_symmetric else 3)
    tensors = [_lazy(parts, 0, f"{weight.name}_Q4", qtype, shape),
               _lazy(parts, 1, f"{weight.name}_scales", ir.DataType.from_numpy(dtype), tuple(scales_shape))]  # fmt: skip
    if not config.is_symmetric:
        tensors.append(_lazy(parts, 2, f"{weight.name}_zero_points", qtype, tuple(scales_shape)))
    gather_axis = node.attributes["axis"].value if "axis" in node.attributes else 0
    names = [name for name, _ in tensors]
    inputs = [builder.make_value(names[0]), node.inputs[1], *(builder.make_value(n) for n in names[1:])]
    attributes = {"gather_axis": gather_axis, "quantize_axis": axis, "block_size": config.block_size}
    return ir.node(
        "GatherBlockQuantized", inputs, attributes, domain="com.microsoft", name=f"{node.name}_Q4"
    ), tensors


def _cast_in_slices(source: Any, tensor: Any) -> Any:
    """A float weight the builder casts lazily (an untied embedding kept in fp32, a norm),
    cast a slice at a time instead, so the checkpoint's pages are given back as it goes: int8
    at the 0.5B shape peaked at 1.36 GB with the builder's whole-tensor cast."""
    import onnx_ir as ir
    import torch

    target = tensor.dtype.numpy()
    if not isinstance(source, torch.Tensor) or source.dim() != 2 or target not in (np.float32, np.float16):
        return tensor

    def evaluate() -> Any:
        out, row = np.empty(tuple(source.shape), dtype=target), 0
        for part in _slices(source, 0, target):
            out[row : row + len(part)] = part
            row += len(part)
        return ir.Tensor(out, name=tensor.name)

    return ir.LazyTensor(evaluate, dtype=tensor.dtype, shape=tensor.shape, name=tensor.name)


def quantize_graph(builder: Any) -> int:
    """Replace every eligible weight of ``builder.model`` by its quantized form, computed lazily
    while the model is written (one weight at a time); returns how many."""
    import onnx_ir as ir
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
        QuantFormat,
    )

    qa = builder.quant_attrs
    quantizer = DefaultWeightOnlyQuantizer(
        DefaultWeightOnlyQuantConfig(
            block_size=qa["matmul_block_size"], is_symmetric=qa["is_symmetric"],
            accuracy_level=qa["accuracy_level"], quant_format=QuantFormat.QOperator,
            op_types_to_quantize=tuple(qa["op_types_to_quantize"]), bits=qa["bits"],
        )
    )  # fmt: skip
    model, graph = builder.model, builder.model.graph
    # What MatMulNBitsQuantizer.process sets on the model before quantizing (QOperator format).
    model.opset_imports["com.microsoft"] = 1
    if "Gather" in qa["op_types_to_quantize"]:
        if model.opset_imports.get("", 21) < 21:
            model.opset_imports[""] = 21
        model.ir_version = max(model.ir_version or 10, 10)
    targets = [(node, weight) for node in graph if (weight := _weight(node, qa)) is not None]
    for node, weight in targets:
        make = _matmul if node.op_type == "MatMul" else _gather
        new, tensors = make(builder, node, weight, quantizer)
        for name, tensor in tensors:
            value = builder.make_value(name)
            value.const_value, value.dtype, value.shape = tensor, tensor.dtype, tensor.shape
            graph.register_initializer(value)
        ir.convenience.replace_nodes_and_values(graph, node, [node], [new], node.outputs, new.outputs)
        if not weight.uses():  # a weight shared by another node stays until its last user is done
            graph.initializers.pop(weight.name)
            weight.const_value = None
    for value in graph.initializers.values():
        source = builder._jmed_sources.get(value.name)
        if source is not None and isinstance(value.const_value, ir.LazyTensor):
            value.const_value = _cast_in_slices(source, value.const_value)
    builder._jmed_sources.clear()
    release_mapped_files()  # pages read while the graph was built
    print(f"Quantizing {len(targets)} weights as they are written", flush=True)
    return len(targets)


def _to_nbits(self: Any) -> Any:
    reason = stock_reason(self)
    if reason is not None:
        print(
            f"Quantizing with the builder's whole-graph step for {reason}: it holds every weight "
            "in fp32 at once (about 4x the model's bf16 size in RAM)",
            flush=True,
        )
        self._jmed_sources.clear()
        return getattr(type(self), _ORIGINAL)(self)
    quantize_graph(self)
    return self.model


def _make_initializer(self: Any, tensor: Any, /, name: str, *, to: Any = None, raw: bool = False) -> None:
    import torch

    type(self)._jmed_stock_make_initializer(self, tensor, name, to=to, raw=raw)
    if "_jmed_sources" not in vars(self):
        self._jmed_sources = {}
    if to is not None and not raw and isinstance(tensor, torch.Tensor):
        self._jmed_sources[name] = tensor  # the builder's lazy cast closes over the same tensor


def install(model_cls: type) -> None:
    """Make ``model_cls`` (onnxruntime-genai's builder ``Model``) quantize weight by weight."""
    if hasattr(model_cls, _ORIGINAL):
        return
    setattr(model_cls, _ORIGINAL, model_cls.to_nbits)
    model_cls._jmed_stock_make_initializer = model_cls.make_initializer
    model_cls.to_nbits = _to_nbits
    model_cls.make_initializer = _make_initializer
    model_cls._jmed_sources = {}  # replaced per instance on its first initializer
