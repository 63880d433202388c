"""What ``convert`` accepts as a source, checked before any work starts.

A Hugging Face model folder (merged or base), or the word ``default`` for the embedded default
model. Problems that would otherwise surface minutes into a conversion (not a model, an
adapter, an architecture llama.cpp cannot convert, a truncated safetensors file) fail at once
with one line.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from jmed_edge.artifacts import ArtifactInfo, describe
from jmed_edge.convert.llamacpp_convert import check_architecture
from jmed_edge.errors import ArtifactError, ModelError
from jmed_edge.manifest import Manifest

DEFAULT_WORD = "default"


@dataclass(frozen=True)
class HFSource:
    path: Path
    name: str
    architecture: str
    manifest: Manifest | None
    n_params: int  # from the safetensors headers
    weight_bytes: int

    @property
    def declared_pre_tokenizer(self) -> str | None:
        if self.manifest is None:
            return None
        value = self.manifest.details.get("pre_tokenizer")
        return value if isinstance(value, str) and value else None


def resolve_source(src: str | Path) -> Path:
    """``default`` -> the materialised embedded model; anything else is a path."""
    if str(src) == DEFAULT_WORD:
        from jmed_edge.models.default import materialise

        return materialise(progress=False)
    return Path(src).expanduser()


def _safetensors_params(path: Path) -> tuple[int, int]:
    """(element count, file size) of one safetensors file; ``ModelError`` when it is truncated."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path} is not a readable safetensors file ({exc}); re-save or re-download it"
        ) from exc
    end, count = 0, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        end = max(end, info["data_offsets"][1])
        n = 1
        for dim in info["shape"]:
            n *= dim
        count += n
    if 8 + header_len + end > size:
        raise ModelError(
            f"{path} is truncated ({size} bytes, its header needs {8 + header_len + end}); "
            "re-save or re-download the model"
        )
    return count, size


def check_hf_source(path: Path) -> HFSource:
    """A Hugging Face folder llama.cpp can convert, or a one-line error saying why not."""
    info: ArtifactInfo = describe(path)
    if info.format != "hf-safetensors":
        hint = {
            "peft-adapter": "convert it with --to gguf-lora, or merge it first (jmed-edge merge)",
            "gguf": "it is already a GGUF; quantize from the Hugging Face folder it came from",
        }.get(info.format, "pass a Hugging Face model folder (config.json + *.safetensors)")
        raise ArtifactError(f"{path} is a {info.format} artifact, not a Hugging Face model folder; {hint}")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    check_architecture(architectures[0] if architectures else None, path)
    n_params = weight_bytes = 0
    for file in sorted(path.glob("*.safetensors")):
        count, size = _safetensors_params(file)
        n_params += count
        weight_bytes += size
    if not n_params:  # pickled *.bin weights: no header to read; estimate from size and dtype
        weight_bytes = sum(f.stat().st_size for f in path.glob("*.bin"))
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
        n_params = weight_bytes // (4 if "32" in dtype else 2)
    return HFSource(path.resolve(), info.name, architectures[0], info.manifest, n_params, weight_bytes)
