"""``--budget-ram``: a peak-RAM budget at a context length, turned into a GGUF file-size budget.

    peak RAM = file size + measured overhead at that context

The overhead is measured, not guessed: the report's speed probe (``python -m
jmed_edge.report.probe``, run as a child process so convert does not import the report) opens
the F16 GGUF with ``n_ctx`` tokens of context, runs a bilingual prompt and a short decode, and
reports its peak RSS. llama.cpp maps the weights (all are read in a forward pass) and zeroes the
whole KV buffer when it creates the context (``ggml_backend_buffer_clear`` in
``src/llama-kv-cache.cpp``), so that peak minus the file size is everything but the weights:
interpreter, libraries, compute buffers and the full cache. The cache's size from the model's
shape is recorded beside it as a plausibility figure (F16 K and V, llama.cpp's default type).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jmed_edge.convert.ggufinfo import read_gguf
from jmed_edge.errors import ConfigError, ModelError
from jmed_edge.fsutil import human_bytes

DEFAULT_CONTEXT = 4096


def kv_cache_bytes(f16: Path, n_tokens: int) -> int:
    """F16 K and V cache for ``n_tokens`` positions, from the GGUF's attention shape."""
    info = read_gguf(f16)
    arch = info.get("general.architecture")
    layers = int(info.get(f"{arch}.block_count", 0))
    heads = int(info.get(f"{arch}.attention.head_count", 1))
    kv_heads = int(info.get(f"{arch}.attention.head_count_kv", heads))
    width = int(info.get(f"{arch}.embedding_length", 0))
    key_len = int(info.get(f"{arch}.attention.key_length", width // max(heads, 1)))
    value_len = int(info.get(f"{arch}.attention.value_length", key_len))
    return layers * max(n_tokens, 0) * kv_heads * (key_len + value_len) * 2


def measured_overhead(f16: Path, n_ctx: int, timeout: float = 900) -> dict[str, Any]:
    """Peak RSS of the speed probe on ``f16`` minus the file: what running it costs besides weights."""
    options = json.dumps({"n_ctx": n_ctx})
    cmd = [sys.executable, "-m", "jmed_edge.report.probe", str(f16), "--options", options]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        probe = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, ValueError) as exc:
        raise ModelError(f"the memory probe of {f16} gave no measurement ({exc.__class__.__name__})") from exc
    return {
        "peak_rss_bytes": int(probe["peak_rss_bytes"]),
        "overhead_bytes": int(probe["peak_rss_bytes"]) - f16.stat().st_size,
        "kv_cache_bytes": kv_cache_bytes(f16, n_ctx),
        "n_ctx": n_ctx,
    }


def file_budget(f16: Path, ram: int, n_ctx: int) -> tuple[int, dict[str, Any]]:
    """The largest GGUF file whose peak RAM at ``n_ctx`` stays within ``ram``, and how it was found."""
    m = measured_overhead(f16, n_ctx)
    budget = ram - m["overhead_bytes"]
    record = {"ram_budget_bytes": ram, **m, "file_budget_bytes": budget}
    if budget <= 0:
        raise ConfigError(
            f"--budget-ram {human_bytes(ram)} leaves nothing for the weights: running this model at "
            f"{n_ctx} tokens of context needs {human_bytes(m['overhead_bytes'])} "
            "besides them; raise --budget-ram or lower --ram-context"
        )
    return budget, record
