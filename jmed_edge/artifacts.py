"""Recognise what a path holds (HF model, peft adapter, GGUF, GGUF LoRA, ONNX) and find artifacts.

Artifacts written by jmed-edge carry a manifest; a user's own model folder or GGUF does not,
and is recognised from its files so that every stage also accepts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jmed_edge.errors import ArtifactError
from jmed_edge.fsutil import dir_size
from jmed_edge.manifest import MANIFEST_NAME, Manifest, read_manifest


@dataclass
class ArtifactInfo:
    path: Path  # the folder (or the file for a bare GGUF)
    format: str  # hf-safetensors | peft-adapter | gguf | gguf-lora | onnx
    kind: str  # model | adapter | gguf | gguf-lora | onnx
    model_file: Path | None  # the .gguf or .onnx file, when there is one
    manifest: Manifest | None
    name: str

    @property
    def size_bytes(self) -> int:
        return (
            self.model_file.stat().st_size
            if self.model_file and self.format.startswith("gguf")
            else dir_size(self.path)
        )

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent


# GGUF metadata value types (gguf-py's GGUFValueType) -> struct format; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_general_type(path: Path) -> str:
    """'model' or 'adapter' from the GGUF header's ``general.type``.

    Reads key/value pairs only until that key, skipping values; gguf-py's GGUFReader would parse
    the whole file (seconds for a 150k-token vocabulary) to answer the same question.
    """
    import struct

    def read(fmt: str):
        size = struct.calcsize("<" + fmt)
        chunk = fh.read(size)
        if len(chunk) != size:
            raise EOFError
        return struct.unpack("<" + fmt, chunk)[0]

    def length() -> int:
        n = read("Q")
        if n > size:  # a corrupt header: never allocate or seek past the file
            raise ValueError("length beyond the end of the file")
        return n

    def skip_value(vtype: int) -> None:
        if vtype == 8:
            fh.seek(length(), 1)
        elif vtype == 9:
            item, count = read("I"), length()
            if item in _GGUF_SCALARS:
                fh.seek(struct.calcsize("<" + _GGUF_SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    skip_value(item)
        elif vtype in _GGUF_SCALARS:
            fh.seek(struct.calcsize("<" + _GGUF_SCALARS[vtype]), 1)
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ValueError("bad magic")
            read("I")  # version
            read("Q")  # tensor count
            for _ in range(length()):
                key = fh.read(length()).decode("utf-8", errors="replace")
                vtype = read("I")
                if key == "general.type" and vtype == 8:
                    return fh.read(length()).decode("utf-8", errors="replace")
                skip_value(vtype)
    except (EOFError, ValueError, OSError) as exc:
        raise ArtifactError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}); re-convert it"
        ) from exc
    return "model"


def _from_gguf_file(path: Path, manifest: Manifest | None) -> ArtifactInfo:
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ArtifactError(f"{path} is not a GGUF file (bad magic); re-convert it")
    lora = (manifest.kind == "gguf-lora") if manifest else gguf_general_type(path) == "adapter"
    fmt = "gguf-lora" if lora else "gguf"
    return ArtifactInfo(
        path, fmt, fmt, path, manifest, manifest.name if manifest and manifest.name else path.stem
    )


def describe(path: Path) -> ArtifactInfo:
    """What ``path`` is; a one-line ``ArtifactError`` when it is no model artifact at all."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    if path.is_file():
        if path.suffix == ".gguf":
            return _from_gguf_file(path, read_manifest(path.parent, required=False))
        if path.suffix == ".onnx":
            return describe(path.parent)
        raise ArtifactError(f"{path} is not a model: expected a folder, a .gguf or a .onnx file")
    manifest = read_manifest(path, required=False) if (path / MANIFEST_NAME).exists() else None
    name = manifest.name if manifest and manifest.name else path.name
    ggufs = sorted(path.glob("*.gguf"))
    if (manifest and manifest.format in ("gguf", "gguf-lora")) or (
        ggufs and not (path / "config.json").exists()
    ):
        if len(ggufs) != 1:
            raise ArtifactError(f"{path} holds {len(ggufs)} .gguf files; pass the one you mean")
        return _from_gguf_file(ggufs[0], manifest)
    onnx = sorted(path.glob("*.onnx"))
    if onnx:
        return ArtifactInfo(path, "onnx", "onnx", onnx[0], manifest, name)
    if (path / "adapter_config.json").exists():
        return ArtifactInfo(path, "peft-adapter", "adapter", None, manifest, name)
    if (path / "config.json").exists():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ArtifactError(
                f"{path / 'config.json'} is not valid JSON ({exc.msg}); re-save the model"
            ) from exc
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ArtifactError(
                f"{path} has config.json but no weights (*.safetensors); is the download complete?"
            )
        if "architectures" not in config and "model_type" not in config:
            raise ArtifactError(
                f"{path / 'config.json'} names no model_type; is this a Hugging Face model folder?"
            )
        return ArtifactInfo(path, "hf-safetensors", "model", None, manifest, name)
    raise ArtifactError(
        f"{path} is not a model: expected a Hugging Face folder (config.json + *.safetensors), "
        "a peft adapter, a .gguf file or an ONNX folder"
    )


def scan(root: Path, max_depth: int = 4) -> list[ArtifactInfo]:
    """Every artifact under ``root`` (folders with a manifest, and bare GGUF files)."""
    root = Path(root)
    found: list[ArtifactInfo] = []
    for manifest_file in sorted(root.rglob(MANIFEST_NAME)):
        if len(manifest_file.relative_to(root).parts) > max_depth + 1 or "/." in manifest_file.as_posix():
            continue
        try:
            found.append(describe(manifest_file.parent))
        except ArtifactError:
            continue
    return found
