"""Read a GGUF's header safely, and check that llama.cpp can load it without risking this process.

llama.cpp aborts the whole process (SIGABRT) on some malformed files, e.g. a vocabulary it
cannot make sense of. So a GGUF that was just written or comes from elsewhere is first parsed
with gguf-py's reader (header, metadata, tensor extents) and then loaded once by llama.cpp in a
child process; only then do the runtimes load it in-process.
"""

from __future__ import annotations

import signal
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

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.tensor_bytes / self.n_params if self.n_params else 0.0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


def read_gguf(path: Path) -> GGUFInfo:
    """Parse header, metadata and tensor table; one-line ``ArtifactError`` when truncated or corrupt."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ArtifactError(f"{path} is not a GGUF file (starts with {magic!r}); re-convert it")
    try:
        reader = GGUFReader(path)
        size = path.stat().st_size
        end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # gguf-py raises ValueError/IndexError/... on short or garbled files
        raise ArtifactError(
            f"{path} is truncated or corrupt (gguf reader: {type(exc).__name__}: {exc}); re-convert it"
        ) from exc
    if end > size:
        raise ArtifactError(f"{path} is truncated ({size} bytes, its tensors need {end}); re-convert it")
    metadata: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or len(field.data) > 1:
            continue  # header bookkeeping and arrays (token lists, merges)
        try:
            metadata[name] = field.contents()
        except Exception:
            continue
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    n_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    return GGUFInfo(path, metadata, len(reader.tensors), n_params, n_bytes)


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
