"""Read and write safetensors one tensor at a time, with plain reads and writes.

``safe_open`` maps a whole shard into the process: every page a merge reads stays resident (and
counted in its RSS) until the file is closed, so reading a 4 GB shard through it costs 4 GB. Here
each tensor is read with ``os.pread`` into a buffer of its own, and an output shard's header is
written first (every shape and dtype is known before any value is), so each merged tensor goes
to disk as soon as it exists. The format: 8-byte little-endian header length, a JSON header
(``{name: {dtype, shape, data_offsets}}``, offsets relative to the end of the header), the data.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from jmed_edge.errors import ModelError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# safetensors dtype names -> torch dtype names and element sizes (safetensors' own table).
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}  # fmt: skip
TORCH_TO_ST = {torch_name: st for st, (torch_name, _) in DTYPES.items()}
COPY_CHUNK = 64 * 1024**2  # bytes per read when a tensor is copied through unchanged


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie."""

    name: str
    path: Path
    dtype: str  # safetensors name, e.g. BF16
    shape: tuple[int, ...]
    start: int  # absolute file offsets
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def torch_dtype(self) -> str:
        return DTYPES[self.dtype][0]


def read_header(path: Path) -> list[TensorRef]:
    """The tensors of one safetensors file, in file order."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path} is not a readable safetensors file ({exc}); is the download complete?"
        ) from exc
    base = 8 + length
    refs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ModelError(
                f"{path.name}: tensor {name} has dtype {info['dtype']}, which a streaming merge does not read"
            )
        begin, end = info["data_offsets"]
        refs.append(TensorRef(name, path, info["dtype"], tuple(info["shape"]), base + begin, base + end))
    return sorted(refs, key=lambda r: r.start)


def shard_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, in index order; a missing shard is named."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ModelError(f"cannot read {index} ({exc}); is the download complete?") from exc
        names = list(dict.fromkeys(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ModelError(
                f"{folder} is missing shard {', '.join(missing)} (listed in {INDEX_NAME}, {len(names)} shards in all); "
                "download it again or copy the complete folder"
            )
        return [folder / n for n in names]
    if (folder / SINGLE_NAME).is_file():
        return [folder / SINGLE_NAME]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise ModelError(f"{folder} has no *.safetensors weights; a streaming merge reads safetensors only")
    return found


class Checkpoint:
    """Every tensor of a model folder by name, read on demand."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = shard_files(folder)
        self.refs: dict[str, TensorRef] = {}
        for path in self.files:
            for ref in read_header(path):
                self.refs[ref.name] = ref

    def __contains__(self, name: str) -> bool:
        return name in self.refs

    def tensor(self, name: str, dtype: Any = None) -> Any:
        """A fresh tensor (owning its memory) for ``name``, optionally cast to ``dtype``."""
        return read_tensor(self.refs[name], dtype)

    def rows(self, name: str, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of a 2-D tensor (rows are contiguous on disk)."""
        import torch

        ref = self.refs[name]
        row = ref.nbytes // ref.shape[0]
        buf = _pread(ref.path, ref.start + start * row, (stop - start) * row)
        return torch.frombuffer(buf, dtype=getattr(torch, ref.torch_dtype)).reshape(
            stop - start, *ref.shape[1:]
        )


def _pread(path: Path, offset: int, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < size:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise ModelError(
                    f"{path} ends early (truncated at byte {offset + done}); is the download complete?"
                )
            done += got
    finally:
        os.close(fd)
    return buf


def read_tensor(ref: TensorRef, dtype: Any = None) -> Any:
    import torch

    if ref.nbytes == 0:
        tensor = torch.empty(ref.shape, dtype=getattr(torch, ref.torch_dtype))
    else:
        tensor = torch.frombuffer(
            _pread(ref.path, ref.start, ref.nbytes), dtype=getattr(torch, ref.torch_dtype)
        )
        tensor = tensor.reshape(ref.shape)
    return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)


class ShardWriter:
    """One output safetensors file whose header is fixed up front; tensors are written in order."""

    def __init__(self, path: Path, layout: list[tuple[str, str, tuple[int, ...]]]) -> None:
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        self.order = []
        for name, st_dtype, shape in layout:
            size = DTYPES[st_dtype][1]
            for dim in shape:
                size *= dim
            header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            self.order.append((name, size))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
        self.path = path
        self.total = offset
        self._next = 0
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._fh.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, tensor: Any) -> None:
        expected, size = self.order[self._next]
        if name != expected or tensor.numel() * tensor.element_size() != size:
            raise AssertionError(f"{self.path.name}: wrote {name} where {expected} ({size} bytes) belongs")
        self._write_bytes(tensor)
        self._next += 1

    def copy(self, ref: TensorRef, dtype: Any = None) -> None:
        """Copy ``ref`` through (cast to ``dtype`` if given), a chunk at a time."""
        import torch

        expected, _ = self.order[self._next]
        if expected != ref.name:
            raise AssertionError(f"{self.path.name}: copied {ref.name} where {expected} belongs")
        item = DTYPES[ref.dtype][1]
        chunk = max(item, COPY_CHUNK // item * item)
        for offset in range(ref.start, ref.end, chunk):
            buf = _pread(ref.path, offset, min(chunk, ref.end - offset))
            if dtype is None:
                self._fh.write(buf)
            else:
                self._write_bytes(torch.frombuffer(buf, dtype=getattr(torch, ref.torch_dtype)).to(dtype))
        self._next += 1

    def _write_bytes(self, tensor: Any) -> None:
        import torch

        flat = tensor.contiguous().reshape(-1)
        if flat.numel():
            self._fh.write(memoryview(flat.view(torch.uint8).numpy()))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._fh.close()
        if exc_type is None and self._next != len(self.order):
            raise AssertionError(f"{self.path.name}: {len(self.order) - self._next} tensors never written")
