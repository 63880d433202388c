"""What a GGUF is called: its file name (``<model>-<TYPE>.gguf``) and its ``general.*`` metadata.

llama.cpp's naming convention (``docs`` of gguf-py, ``gguf.naming_convention``) is
``<BaseName>-<SizeLabel>-<FineTune>-<Version>-<Encoding>.gguf``, and Ollama and llama.cpp users
copy files from several models into one folder: every file must carry its model's name. The name
is the user's ``--name`` when given, else the source's manifest name (which each stage derives
from its parent's: ``SmolLM2-135M-Instruct`` -> ``...-lora`` -> ``...-merged``), else its folder.

A name may be Japanese: ``general.name`` keeps it as it is (GGUF strings are UTF-8), while the
file name keeps only ``A-Z a-z 0-9 . _ -`` so that it is safe in every shell, on every file
system and in an Ollama ``FROM`` line; the change is announced.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from jmed_edge.errors import ConfigError

# A size label as llama.cpp's ``Metadata.get_model_id_components`` recognises one: 135M, 7B,
# 0.5B, 8x7B, 1.5T (a number with a K/M/B/T scale, optionally "<experts>x").
_SIZE_LABEL = re.compile(r"^(?:\d+x)?\d+(?:\.\d+)?[KMBT]$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120  # characters; leaves room for "-IQ3_XXS.gguf" under the common 255-byte limit
QUANTIZED_BY = "jmed-edge"


@dataclass(frozen=True)
class ModelName:
    name: str  # general.name: as given, Japanese allowed
    stem: str  # the file name part: ASCII letters, digits, ".", "_", "-"
    basename: str  # general.basename: the name without its size label and fine-tune suffix
    size_label: str | None  # general.size_label, when the name carries one (else llama.cpp's count)
    finetune: str | None  # general.finetune: what follows the size label

    def file_name(self, quant: str) -> str:
        return f"{self.stem}-{quant.upper()}.gguf"


def check_name(name: str, what: str = "--name") -> str:
    """A model name, stripped; one-line ``ConfigError`` for what cannot be a name at all."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise ConfigError(f"{what} is empty; pass a model name such as Llama-3-ELYZA-JP-8B-med")
    if "/" in name or "\\" in name:
        raise ConfigError(
            f'{what} "{name}" contains a path separator; a model name is one word such as '
            "Llama-3-ELYZA-JP-8B-med (choose the folder with --out)"
        )
    if name in (".", "..") or any(unicodedata.category(c) == "Cc" for c in name):
        raise ConfigError(
            f"{what} {name!r} is not a usable model name; use letters, digits, '.', '_' and '-'"
        )
    if len(name) > MAX_NAME:
        raise ConfigError(f"{what} is {len(name)} characters long; keep it under {MAX_NAME}")
    return name


def file_stem(name: str) -> str:
    """``name`` with every run of characters outside ``A-Za-z0-9._-`` replaced by one "-"."""
    ascii_name = unicodedata.normalize("NFKC", name)  # full-width letters/digits -> ASCII
    return _UNSAFE.sub("-", ascii_name).strip("-.")


def model_name(name: str, fallback: str = "model") -> ModelName:
    """Split ``name`` the way llama.cpp's converter would, and derive its file-name stem.

    A name with characters that are not ASCII even after NFKC (``医療モデル-7B``) keeps them in
    ``name``; its stem is ``fallback``'s (the source's own name, when ASCII) followed by what
    is left of ``name`` (``SmolLM2-135M-Instruct-merged-7B``), so the file still says which
    model it is.
    """
    name = check_name(name)
    stem = file_stem(name)
    if not unicodedata.normalize("NFKC", name).isascii():
        base = file_stem(fallback) if unicodedata.normalize("NFKC", fallback).isascii() else ""
        stem = "-".join(part for part in (base or "model", stem) if part)
    parts = name.split("-")
    at = next((i for i, part in enumerate(parts) if i > 0 and _SIZE_LABEL.match(part)), None)
    if at is None:
        return ModelName(name, stem, name, None, None)
    finetune = "-".join(parts[at + 1 :]) or None
    label = parts[at][:-1] + parts[at][-1].upper()  # 135m -> 135M, 8x7b -> 8x7B
    return ModelName(name, stem, "-".join(parts[:at]), label, finetune)


def metadata_overrides(model: ModelName, license: str | None) -> dict[str, str]:
    """The ``--metadata`` file given to llama.cpp's converter: ``general.*`` keys it writes as-is.

    ``general.size_label`` is left to the converter when the name carries none: it then counts
    the parameters itself (``gguf.size_label``), as it does for any model.
    """
    keys = {
        "general.name": model.name,
        "general.basename": model.basename,
        "general.quantized_by": QUANTIZED_BY,
    }
    if model.size_label:
        keys["general.size_label"] = model.size_label
    if model.finetune:
        keys["general.finetune"] = model.finetune
    if license and license != "unknown":
        keys["general.license"] = license
    return keys
