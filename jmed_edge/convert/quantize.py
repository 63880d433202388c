"""Quantize an F16/BF16 GGUF with llama.cpp's own quantizer through the bindings.

``llama_cpp.llama_model_quantize`` is the function behind ``llama-quantize``. An importance
matrix is passed the way ``tools/quantize/quantize.cpp`` passes it: a null-terminated array of
``llama_model_imatrix_data`` (tensor name, values, count), plus the ``quantize.imatrix.*``
metadata keys it writes into the output. The result matches ``llama-quantize --imatrix``
tensor for tensor (tests/test_convert_quant.py checks this).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from jmed_edge.convert.imatrix import ImatrixData
from jmed_edge.convert.quant_types import QuantType
from jmed_edge.errors import ModelError

log = logging.getLogger(__name__)

_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")
# Keys llama-quantize writes when it uses an imatrix (LLM_KV_QUANTIZE_IMATRIX_* in quantize.cpp).
KV_IMATRIX_FILE = "quantize.imatrix.file"
KV_IMATRIX_DATASET = "quantize.imatrix.dataset"
KV_IMATRIX_ENTRIES = "quantize.imatrix.entries_count"
KV_IMATRIX_CHUNKS = "quantize.imatrix.chunks_count"


def _imatrix_array(llama_cpp, data: ImatrixData):
    """The C array llama.cpp reads, and the Python objects that must outlive the call."""
    items = list(data.entries.items())
    array = (llama_cpp.llama_model_imatrix_data * (len(items) + 1))()
    keep = []
    for i, (name, values) in enumerate(items):
        encoded = name.encode("utf-8")
        keep.append(encoded)
        array[i].name = encoded
        array[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        array[i].size = values.size
    array[len(items)].name = None  # terminator
    return array, keep


def _kv_overrides(llama_cpp, data: ImatrixData):
    """Record the imatrix in the output's metadata, as llama-quantize does."""
    rows: list[tuple[str, object]] = [(KV_IMATRIX_FILE, data.path.name)]
    if data.datasets:
        rows.append((KV_IMATRIX_DATASET, data.datasets[0]))
    rows.append((KV_IMATRIX_ENTRIES, len(data.entries)))
    if data.chunk_count > 0:
        rows.append((KV_IMATRIX_CHUNKS, data.chunk_count))
    array = (llama_cpp.llama_model_kv_override * (len(rows) + 1))()
    for i, (key, value) in enumerate(rows):
        array[i].key = key.encode()
        if isinstance(value, str):
            array[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            array[i].value.val_str = value.encode("utf-8")[:127]
        else:
            array[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            array[i].value.val_i64 = int(value)  # type: ignore[call-overload]
    array[len(rows)].key = b""  # terminator: an empty key
    return array


def quantize_gguf(
    source: Path,
    dest: Path,
    qtype: QuantType,
    *,
    imatrix: ImatrixData | None = None,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Write ``dest`` = ``source`` quantized to ``qtype``; returns llama.cpp's warning lines.

    ``source`` must be a GGUF llama.cpp has loaded before (see ``ggufinfo.probe_load``).
    """
    import llama_cpp
    import llama_cpp._logger as llama_logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace")
        lines.append(line)
        if on_progress and (m := _TENSOR_LINE.search(line)):
            on_progress(int(m.group(1)), int(m.group(2)))

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = qtype.ftype
    params.nthread = threads or os.cpu_count() or 2
    keep: list[object] = []
    if imatrix is not None:
        array, names = _imatrix_array(llama_cpp, imatrix)
        overrides = _kv_overrides(llama_cpp, imatrix)
        keep += [array, names, overrides]
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    text = "".join(lines)
    log.debug("llama.cpp quantize log:\n%s", text)
    if rc != 0:
        reason = next((ln for ln in reversed(text.splitlines()) if "failed to quantize" in ln), "")
        reason = reason.split("failed to quantize:", 1)[-1].strip() or f"return code {rc}"
        raise ModelError(f"llama.cpp could not quantize {source} to {qtype.name}: {reason}")
    return [ln.strip() for ln in text.splitlines() if "WARNING" in ln or "fallback" in ln]
