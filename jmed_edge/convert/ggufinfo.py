"""Read a GGUF's header safely, and check that llama.cpp can load it without risking this process.

llama.cpp aborts the whole process (SIGABRT) on some malformed files, e.g. a vocabulary it
cannot make sense of. So a GGUF that was just written or comes from elsewhere is first parsed
with gguf-py's reader (header, metadata, tensor extents) and then loaded once by llama.cpp in a
child process; only then do the runtimes load it in-process.
"""

from __future__ import annotations

import math
import mmap
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.errors import ArtifactError, ModelError

# Metadata keys the checks read (gguf-py constants.Keys).
KEY_PRE = "tokenizer.ggml.pre"
KEY_MODEL = "tokenizer.ggml.model"
KEY_BOS = "tokenizer.ggml.bos_token_id"
KEY_EOS = "tokenizer.ggml.eos_token_id"
KEY_ADD_BOS = "tokenizer.ggml.add_bos_token"
KEY_TEMPLATE = "tokenizer.chat_template"
KEY_ARCH = "general.architecture"
KEY_FILE_TYPE = "general.file_type"
KEY_TYPE = "general.type"


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    metadata: dict[str, Any]  # scalar and string fields (token lists are left out)
    n_tensors: int
    n_params: int
    tensor_bytes: int
    tensors: tuple[tuple[str, tuple[int, ...], int], ...] = ()  # (name, dims in ggml order, ggml type id)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.tensor_bytes / self.n_params if self.n_params else 0.0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


# struct formats of GGUF's scalar value types (gguf-py constants.GGUFValueType ids)
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


class _Header:
    """Walks a GGUF header (spec: ggml/docs/gguf.md) without materialising token arrays.

    gguf-py's ``GGUFReader`` builds numpy views of every array element, which takes tens of
    seconds for a 50k-150k token vocabulary; checks only need scalars and the tensor table.
    """

    def __init__(self, buf) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError(f"string of {n} bytes at offset {self.pos} runs past the end")
        text = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown GGUF value type {vtype}")
        etype, count = self.take("<I"), self.take("<Q")
        if etype in _SCALARS:  # numeric arrays: skip in one step
            self.pos += struct.calcsize(_SCALARS[etype]) * count
        elif etype == _STRING:  # token lists and merges: hop over each length-prefixed string
            buf, pos, unpack = self.buf, self.pos, _U64.unpack_from
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
            if pos > len(buf):
                raise ValueError("string array runs past the end")
            self.pos = pos
        else:
            for _ in range(count):
                self.value(etype)
        return None


def read_gguf(path: Path) -> GGUFInfo:
    """Parse header, metadata and tensor table; one-line ``ArtifactError`` when truncated or corrupt."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
        if magic != b"GGUF":
            raise ArtifactError(f"{path} is not a GGUF file (starts with {magic!r}); re-convert it")
        if size < 24:
            raise ArtifactError(f"{path} is truncated ({size} bytes); re-convert it")
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _Header(buf)
                header.pos = 4
                version, n_tensors, n_kv = header.take("<I"), header.take("<Q"), header.take("<Q")
                if version not in (2, 3):
                    raise ValueError(f"GGUF version {version}")
                metadata: dict[str, Any] = {}
                for _ in range(n_kv):
                    key = header.string()
                    value = header.value(header.take("<I"))
                    if value is not None:
                        metadata[key] = value
                tensors = []
                for _ in range(n_tensors):
                    name = header.string()
                    dims = [header.take("<Q") for _ in range(header.take("<I"))]
                    ttype, offset = header.take("<I"), header.take("<Q")
                    tensors.append((name, dims, ttype, offset))
                align = int(metadata.get("general.alignment", 32))
                data_start = -(-header.pos // align) * align
        except (struct.error, ValueError, OverflowError) as exc:
            raise ArtifactError(f"{path} is truncated or corrupt ({exc}); re-convert it") from exc
    n_params = n_bytes = end = 0
    for name, dims, ttype, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise ArtifactError(f"{path}: tensor {name} has unknown type {ttype}; corrupt file") from None
        count = math.prod(dims)
        n_params += count
        nbytes = count // block * type_size
        n_bytes += nbytes
        end = max(end, data_start + offset + nbytes)
    if end > size:
        raise ArtifactError(f"{path} is truncated ({size} bytes, its tensors need {end}); re-convert it")
    table = tuple((name, tuple(dims), ttype) for name, dims, ttype, _ in tensors)
    return GGUFInfo(path, metadata, len(tensors), n_params, n_bytes, table)


def write_vocab_only(src: Path, dst: Path, overrides: dict[str, str]) -> Path:
    """Copy ``src``'s metadata (no tensors) to ``dst``, string fields in ``overrides`` replaced.

    What llama.cpp's ``vocab_only`` load reads (its own ggml-vocab-*.gguf test files have this
    shape): a few kilobytes to megabytes, so trying a tokenizer setting costs no model load.
    """
    with open(src, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        header = _Header(buf)
        header.pos = 4
        version, _n_tensors, n_kv = header.take("<I"), header.take("<Q"), header.take("<Q")
        out = bytearray(b"GGUF" + struct.pack("<IQQ", version, 0, n_kv))
        for _ in range(n_kv):
            start = header.pos
            key = header.string()
            vtype = header.take("<I")
            header.value(vtype)
            if key in overrides and vtype == _STRING:
                raw_key, new = key.encode(), overrides[key].encode()
                out += (
                    _U64.pack(len(raw_key)) + raw_key + struct.pack("<I", _STRING) + _U64.pack(len(new)) + new
                )
            else:
                out += buf[start : header.pos]
    dst.write_bytes(bytes(out))
    return dst


_PROBE = """
import sys, llama_cpp
kw = dict(model_path=sys.argv[1], n_ctx=64, n_batch=64, verbose=False)
if len(sys.argv) > 2:
    kw["lora_path"] = sys.argv[2]
llm = llama_cpp.Llama(**kw)
ids = llm.tokenize("probe 確認 123".encode(), add_bos=True, special=True)
llm.eval(ids[:8])
print(llm.n_vocab())
"""


def probe_load(path: Path, lora: Path | None = None, timeout: float = 600) -> None:
    """Load ``path`` (with ``lora`` applied) in a child process and evaluate a few tokens.

    Raises ``ModelError`` with one line when llama.cpp refuses the file or the child dies.
    """
    cmd = [sys.executable, "-c", _PROBE, str(path), *([str(lora)] if lora else [])]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    what = f"{path}" + (f" with LoRA {lora}" if lora else "")
    if result.returncode < 0:
        sig = signal.Signals(-result.returncode).name
        raise ModelError(
            f"llama.cpp crashed ({sig}) loading {what}: the file is corrupt or its tokenizer is "
            "broken; re-convert it"
        )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()
        reason = tail[-1] if tail else f"exit code {result.returncode}"
        raise ModelError(f"llama.cpp cannot load {what} ({reason}); re-convert it")
