"""Quantize an F16/BF16 GGUF with llama.cpp's own quantizer through the bindings.

``llama_cpp.llama_model_quantize`` is the function behind ``llama-quantize``. An importance
matrix is passed the way ``tools/quantize/quantize.cpp`` passes it: a null-terminated array of
``llama_model_imatrix_data`` (tensor name, values, count), plus the ``quantize.imatrix.*``
metadata keys it writes into the output. The result matches ``llama-quantize --imatrix``
tensor for tensor (tests/test_convert_imatrix.py checks this).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from jmed_edge.convert.imatrix import ImatrixData, load_imatrix
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


def _tensor_overrides(llama_cpp, text: str):
    """``tt_overrides`` from ``--tensor-type-file`` text, parsed as ``quantize.cpp`` parses it:
    whitespace-separated ``pattern=type``, pattern lower-cased, type a ggml type name."""
    rows = []
    for item in text.split():
        pattern, _, type_name = item.partition("=")
        rows.append((pattern.lower().encode(), getattr(llama_cpp, f"GGML_TYPE_{type_name.upper()}")))
    array = (llama_cpp.llama_model_tensor_override * (len(rows) + 1))()
    for i, (pattern, type_id) in enumerate(rows):
        array[i].pattern = pattern
        array[i].type = type_id
    array[len(rows)].pattern = None  # terminator
    array[len(rows)].type = llama_cpp.GGML_TYPE_COUNT
    return array, [p for p, _ in rows]


def _quantize_here(
    source: Path,
    dest: Path,
    ftype: int,
    imatrix: ImatrixData | None,
    threads: int,
    report: Callable[[str], None],
    tensor_types: str = "",
) -> int:
    """Call the quantizer in this process; llama.cpp's log lines go to ``report``."""
    import llama_cpp
    import llama_cpp._logger as llama_logger

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        report(text.decode("utf-8", errors="replace"))

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    keep: list[object] = []
    if imatrix is not None:
        array, names = _imatrix_array(llama_cpp, imatrix)
        overrides = _kv_overrides(llama_cpp, imatrix)
        keep += [array, names, overrides]
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    if tensor_types.strip():
        overrides_array, patterns = _tensor_overrides(llama_cpp, tensor_types)
        keep += [overrides_array, patterns]
        params.tt_overrides = ctypes.cast(
            overrides_array, ctypes.POINTER(llama_cpp.llama_model_tensor_override)
        )
    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        return llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_gguf(
    source: Path,
    dest: Path,
    qtype: QuantType,
    *,
    imatrix: ImatrixData | None = None,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    tensor_types: Path | None = None,
) -> list[str]:
    """Write ``dest`` = ``source`` quantized to ``qtype``; returns llama.cpp's warning lines.

    ``tensor_types``: a file in llama-quantize's ``--tensor-type-file`` format; its per-tensor
    types override the type's own mix (``tt_overrides``).

    Runs in a child process: the quantizer is the first llama.cpp code to read a freshly
    converted GGUF, and a malformed file aborts the process that reads it.
    """
    cmd = [
        sys.executable,
        "-m",
        "jmed_edge.convert.quantize",
        str(source),
        str(dest),
        str(qtype.ftype),
        str(imatrix.path) if imatrix else "",
        str(threads or os.cpu_count() or 2),
        str(tensor_types) if tensor_types else "",
    ]
    lines: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_progress and (m := _TENSOR_LINE.search(line)):
                on_progress(int(m.group(1)), int(m.group(2)))
    text = "".join(lines)
    log.debug("llama.cpp quantize log:\n%s", text)
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise ModelError(
            f"llama.cpp crashed ({sig}) quantizing {source} to {qtype.name}: the file is corrupt; re-convert it"
        )
    if proc.returncode != 0:
        tail = text.strip().splitlines() or ["no output"]
        reason = next((ln for ln in reversed(tail) if "failed to quantize" in ln), "")
        reason = reason.split("failed to quantize:", 1)[-1].strip() or tail[-1]
        raise ModelError(f"llama.cpp could not quantize {source} to {qtype.name}: {reason}")
    return [ln.strip() for ln in lines if "WARNING" in ln or "fallback" in ln]


def _child() -> int:
    source, dest, ftype, imatrix_path, threads, types_path = sys.argv[1:7]
    imatrix = load_imatrix(Path(imatrix_path)) if imatrix_path else None
    tensor_types = Path(types_path).read_text(encoding="utf-8") if types_path else ""

    def report(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    return _quantize_here(Path(source), Path(dest), int(ftype), imatrix, int(threads), report, tensor_types)


if __name__ == "__main__":
    sys.exit(_child())
