"""A readable, unique name for an artifact's results ("demo-Q4_K_M") and its content hash."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from jmed_edge.artifacts import ArtifactInfo

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
# config.json "dtype"/"torch_dtype" -> the label llama.cpp users know.
_HF_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_FTYPE_PREFIX = "MOSTLY_"


def _gguf_file_type(path: Path) -> str | None:
    """llama.cpp's name of the GGUF's file type ("Q4_K_M"), read from the header."""
    try:
        from gguf import GGUFReader, LlamaFileType

        field = GGUFReader(path).get_field("general.file_type")
        if field is None:
            return None
        return LlamaFileType(int(field.contents())).name.removeprefix(_FTYPE_PREFIX)
    except Exception:  # an unknown enum value or an unreadable header: name it without the type
        return None


def _variant(info: ArtifactInfo) -> str | None:
    manifest = info.manifest
    if manifest is not None:
        for table in (manifest.details, manifest.config):
            for key in ("quant_type", "quant", "precision"):
                if isinstance(table.get(key), str) and table[key]:
                    return table[key]
    if info.format in ("gguf", "gguf-lora") and info.model_file is not None:
        return _gguf_file_type(info.model_file)
    if info.format == "hf-safetensors":
        try:
            config = json.loads((info.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        dtype = config.get("dtype") or config.get("torch_dtype")
        return _HF_DTYPES.get(str(dtype))
    if info.format == "peft-adapter":
        return "LoRA"
    return None


def artifact_label(info: ArtifactInfo) -> str:
    """Manifest (or file) name plus its quant type or dtype, safe as a folder name."""
    base = info.name or info.path.stem
    variant = _variant(info)
    if variant and variant.lower() not in base.lower():
        base = f"{base}-{variant}"
    return _UNSAFE.sub("_", base).strip("._") or "model"


@lru_cache(maxsize=32)
def _hash_cached(path: str, size: int, mtime: float) -> str:
    from jmed_edge.manifest import parent_record

    return parent_record(Path(path))["sha256"]


def artifact_sha256(info: ArtifactInfo) -> str:
    """The manifest's content hash, or one computed over the files (cached per process)."""
    if info.manifest is not None and info.manifest.sha256:
        return info.manifest.sha256
    target = info.model_file if info.format in ("gguf", "gguf-lora") and info.model_file else info.path
    stat = target.stat()
    return _hash_cached(str(target.resolve()), stat.st_size, stat.st_mtime)
