"""Importance matrices: compute one with llama.cpp's ``llama-imatrix``, load one for the quantizer.

``llama-imatrix`` runs the F16 GGUF over the bilingual medical calibration text and records,
per weight matrix, the mean squared activation of each input column; low-bit quantizers then
spend their precision where the activations are large. The file it writes (GGUF format, or
the legacy ``.dat`` format older tools wrote) is read here exactly as llama.cpp's own
``common_imatrix_load`` + ``tools/quantize`` read it (sums divided by counts per expert), so
that ``llama_model_quantize`` can take it through the bindings.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.convert.llamacpp_tools import require_imatrix
from jmed_edge.errors import ConfigError, DataError, ModelError
from jmed_edge.manifest import sha256_file

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 512  # llama-imatrix's default context per chunk
MIN_CHUNK = 64
# The text file llama-imatrix reads; its name is what the imatrix (and the quantized GGUF) record.
DATASET_NAME = "jmed-edge-medical-ja-en.txt"


@dataclass
class ImatrixData:
    path: Path
    entries: dict[str, np.ndarray]  # tensor name -> per-column importance (float32)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False

    def record(self) -> dict[str, Any]:
        """What a manifest says about this imatrix."""
        return {
            "file": self.path.name,
            "sha256": sha256_file(self.path),
            "format": "dat" if self.legacy else "gguf",
            "entries": len(self.entries),
            "chunks": self.chunk_count,
            "chunk_size": self.chunk_size,
            "datasets": self.datasets,
        }


def load_imatrix(path: Path) -> ImatrixData:
    """Read a GGUF or legacy ``.dat`` imatrix; one-line ``ConfigError`` when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"imatrix file {path} does not exist; pass --imatrix auto to compute one")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    try:
        data = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    except (ValueError, KeyError, struct.error, IndexError) as exc:
        raise ConfigError(f"{path} is not a readable importance matrix ({exc}); pass --imatrix auto") from exc
    if not data.entries:
        raise ConfigError(f"{path} holds no importance-matrix entries; pass --imatrix auto")
    return data


def _load_gguf(path: Path) -> ImatrixData:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        if tensor.name.endswith(".in_sum2"):
            sums[tensor.name.removesuffix(".in_sum2")] = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        elif tensor.name.endswith(".counts"):
            counts[tensor.name.removesuffix(".counts")] = np.asarray(tensor.data, dtype=np.float32).reshape(
                -1
            )
    kind = reader.get_field("general.type")
    if kind is not None and kind.contents() != "imatrix":
        raise ValueError(f"it is a GGUF {kind.contents()}, not an importance matrix")
    entries = {}
    for name, total in sums.items():
        n = np.rint(counts[name])  # llama.cpp rounds counts to integers (std::lround)
        per_expert = total.reshape(n.size, -1)
        values = np.where(n[:, None] > 0, per_expert / np.where(n > 0, n, 1)[:, None], 1.0)
        entries[name] = np.ascontiguousarray(values.reshape(-1), dtype=np.float32)

    def scalar(key: str) -> int:
        f = reader.get_field(key)
        return int(f.contents()) if f is not None else 0

    datasets_field = reader.get_field("imatrix.datasets")
    datasets = list(datasets_field.contents()) if datasets_field is not None else []
    return ImatrixData(path, entries, datasets, scalar("imatrix.chunk_count"), scalar("imatrix.chunk_size"))


def _load_legacy(path: Path) -> ImatrixData:
    raw = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, raw, pos)
        pos += struct.calcsize(fmt)
        return values

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise ValueError(f"entry count {n_entries}")
    entries = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        name = raw[pos : pos + length].decode("utf-8")
        pos += length
        ncall, nval = take("<ii")
        values = np.frombuffer(raw, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        entries[name] = values / ncall if ncall > 0 else values.copy()
    chunks, datasets = 0, []
    if pos + 4 <= len(raw):
        (chunks,) = take("<i")
        if pos + 4 <= len(raw):
            (length,) = take("<i")
            if length > 0:
                datasets = [raw[pos : pos + length].decode("utf-8", errors="replace")]
    return ImatrixData(path, entries, datasets, chunks, 0, legacy=True)


def choose_chunk(n_tokens: int, n_ctx_train: int) -> int:
    """Largest power-of-two chunk <= 512 that leaves at least two chunks of calibration text."""
    chunk = min(DEFAULT_CHUNK, n_ctx_train or DEFAULT_CHUNK)
    while chunk > MIN_CHUNK and 2 * chunk > n_tokens:
        chunk //= 2
    if 2 * chunk > n_tokens:
        raise DataError(
            f"the calibration text is {n_tokens} tokens; an importance matrix needs at least {2 * MIN_CHUNK}"
        )
    return chunk


def compute_imatrix(
    f16_gguf: Path,
    corpus: str,
    out_file: Path,
    *,
    n_tokens: int,
    n_ctx_train: int,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImatrixData:
    """Run ``llama-imatrix`` on ``f16_gguf`` over ``corpus`` and write ``out_file`` (GGUF format)."""
    tool = require_imatrix()
    chunk = choose_chunk(n_tokens, n_ctx_train)
    with tempfile.TemporaryDirectory(prefix="jmed-imatrix-") as work:
        (Path(work) / DATASET_NAME).write_text(corpus, encoding="utf-8")
        cmd = [
            str(tool),
            "-m",
            str(Path(f16_gguf).resolve()),
            "-f",
            DATASET_NAME,
            "-o",
            str(Path(out_file).resolve()),
            "-c",
            str(chunk),
            "--no-ppl",
            "-t",
            str(threads or os.cpu_count() or 2),
        ]
        log.debug("running %s", " ".join(cmd))
        output = _run_with_progress(cmd, Path(work), on_progress)
    if not out_file.is_file():
        tail = [ln for ln in output.splitlines() if ln.strip()][-1:] or ["no output"]
        raise ModelError(f"llama-imatrix failed on {f16_gguf}: {tail[0].strip()}")
    return load_imatrix(out_file)


def _run_with_progress(cmd: list[str], work: Path, on_progress) -> str:
    """Run the tool in ``work``; estimate chunks done from its "N chunks ... n_seq=S" and "T seconds per pass" lines."""
    log_path = work / "log.txt"
    with open(log_path, "w+b") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work)
        total = per_pass = n_seq = 0.0
        first_pass_start = time.monotonic()
        while proc.poll() is None:
            time.sleep(0.5)
            text = log_path.read_text(encoding="utf-8", errors="replace")
            if not total and (m := re.search(r"computing over (\d+) chunks.*n_seq=(\d+)", text)):
                total, n_seq = float(m.group(1)), float(m.group(2))
                first_pass_start = time.monotonic()
            if not per_pass and (m := re.search(r"([\d.]+) seconds per pass", text)):
                per_pass = float(m.group(1))
            if on_progress and total:
                passes = (time.monotonic() - first_pass_start) / per_pass if per_pass else 0
                on_progress(int(min(total - 1, passes * n_seq)), int(total))
        text = log_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        errors = [
            ln for ln in text.splitlines() if " E " in ln or "error" in ln.lower()
        ] or text.splitlines()[-1:]
        raise ModelError(
            f"llama-imatrix failed (exit {proc.returncode}): {(errors or ['no output'])[-1].strip()}"
        )
    if on_progress and total:
        on_progress(int(total), int(total))
    return text
