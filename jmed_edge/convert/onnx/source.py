"""The Hugging Face folder an ONNX export starts from: what it is and whether it is complete.

Everything here reads small files only (config, tokenizer config, safetensors headers), so a
7B source is checked in milliseconds before any exporter is started.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from jmed_edge.errors import ArtifactError, ModelError

# Bytes per element of the safetensors dtypes a causal LM checkpoint uses.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
TOKENIZER_MODELS = ("tokenizer.json", "tokenizer.model")
# Files that carry the tokenizer and chat template; an ONNX folder gets every one the source has.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json",
                   "merges.txt")  # fmt: skip


@dataclass
class SourceModel:
    path: Path
    config: dict[str, Any]
    n_params: int
    weight_bytes: int
    largest: int = 0  # elements of the largest tensor (an embedding table or lm_head)
    dtypes: tuple[str, ...] = ()  # safetensors dtypes of the tensors with two or more dimensions

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [""]
        return archs[0]

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_hidden_layers", 0))

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size", 0))

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size", 0))

    def summary(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "n_params": self.n_params,
                "tie_word_embeddings": self.tied, "num_hidden_layers": self.num_layers}  # fmt: skip


def resolve_source(src: Path | str) -> Path:
    """``default`` -> the materialised embedded model; anything else must be an HF folder."""
    if str(src) == "default":
        from jmed_edge.models.default import materialise

        return materialise()
    from jmed_edge.artifacts import describe

    info = describe(Path(src))
    if info.format != "hf-safetensors":
        hint = {
            "peft-adapter": "merge it into its base first (jmed-edge merge)",
            "gguf": "convert from the Hugging Face folder the GGUF was made from",
            "onnx": "it is already ONNX; convert from its Hugging Face source",
        }.get(info.format, "pass a Hugging Face model folder")
        raise ArtifactError(f"{src} is a {info.format} artifact, not a Hugging Face model folder; {hint}")
    return info.path


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            return json.loads(fh.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc}); re-save the model") from exc


def count_parameters(folder: Path) -> tuple[int, int]:
    """(parameters, bytes on disk) of the folder's safetensors weights, from headers only."""
    stats = weight_stats(folder)
    return stats[0], stats[1]


def weight_stats(folder: Path) -> tuple[int, int, int, tuple[str, ...]]:
    """(parameters, bytes on disk, elements of the largest tensor, dtypes of the matrices) of the
    folder's safetensors weights, from headers only."""
    n_params = n_bytes = largest = 0
    dtypes: set[str] = set()
    for path in sorted(folder.glob("*.safetensors")):
        for name, entry in _safetensors_header(path).items():
            if name == "__metadata__":
                continue
            numel = prod(entry["shape"])
            n_params += numel
            n_bytes += numel * _DTYPE_BYTES.get(entry["dtype"], 4)
            largest = max(largest, numel)
            if len(entry["shape"]) >= 2:
                dtypes.add(entry["dtype"])
    return n_params, n_bytes, largest, tuple(sorted(dtypes))


def load_source(src: Path | str) -> SourceModel:
    """Resolve and inspect ``src``; one-line errors for a folder the export cannot start from."""
    folder = resolve_source(src)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {folder / 'config.json'} ({exc}); re-save the model") from exc
    missing = [name for name in ("tokenizer_config.json",) if not (folder / name).exists()]
    if not any((folder / name).exists() for name in TOKENIZER_MODELS):
        missing.insert(0, " or ".join(TOKENIZER_MODELS))
    if missing:
        raise ModelError(
            f"{folder} has no {', '.join(missing)}: the tokenizer files are missing; copy them from the "
            "base model (an ONNX model needs its tokenizer beside it)"
        )
    n_params, n_bytes, largest, dtypes = weight_stats(folder)
    if n_params == 0:
        raise ModelError(
            f"{folder} has no *.safetensors weights; save the model with safe_serialization=True"
        )
    return SourceModel(folder, config, n_params, n_bytes, largest, dtypes)
