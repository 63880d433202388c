"""The manifest every artifact folder carries: what it is, where it came from, how it was made.

One small JSON file, ``jmed_manifest.json``. Later stages read it to pick a runtime, fill
defaults, and decide whether an artifact is up to date with its inputs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jmed_edge import __version__
from jmed_edge.errors import ArtifactError

MANIFEST_NAME = "jmed_manifest.json"
SCHEMA_VERSION = 1

# Artifact kinds the stages understand; ``format`` says how to load one.
KINDS = ("model", "adapter", "gguf", "gguf-lora", "onnx", "bench-run", "report")

_TRACKED_LIBRARIES = (
    "torch", "transformers", "peft", "accelerate", "bitsandbytes", "llama_cpp_python", "gguf",
    "onnx", "onnxruntime", "onnxruntime-genai", "tokenizers",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape an artifact (absent ones are skipped)."""
    found = {"jmed-edge": __version__, "python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file in ``folder`` except the manifest itself."""
    table = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST_NAME:
            continue
        table[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def content_hash(files: dict[str, dict[str, Any]]) -> str:
    """One hash for a folder: over the sorted (name, file hash) pairs."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return digest.hexdigest()


@dataclass
class Manifest:
    kind: str
    format: str
    name: str = ""
    parent: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    sha256: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f'unknown artifact kind "{self.kind}"; known: {", ".join(KINDS)}')

    def seal(self, folder: Path) -> Manifest:
        """Hash the folder's files and write the manifest into it (call last, in staging)."""
        self.files = file_table(folder)
        self.sha256 = content_hash(self.files)
        (Path(folder) / MANIFEST_NAME).write_text(self.to_json(), encoding="utf-8")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def manifest_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact / MANIFEST_NAME if artifact.is_dir() else artifact.parent / MANIFEST_NAME


def read_manifest(artifact: Path, *, required: bool = True) -> Manifest | None:
    """Read the manifest of an artifact folder (or of the folder holding an artifact file)."""
    path = manifest_path(artifact)
    if not path.exists():
        if required:
            raise ArtifactError(
                f"{artifact} has no {MANIFEST_NAME}; it was not written by jmed-edge or is incomplete"
            )
        return None
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a valid manifest ({exc}); re-create the artifact") from exc


def check_files(artifact: Path, manifest: Manifest, *, hashes: bool = False) -> list[str]:
    """Problems with the files a manifest lists: missing, wrong size, or (optionally) wrong hash."""
    folder = Path(artifact) if Path(artifact).is_dir() else Path(artifact).parent
    problems = []
    for name, info in manifest.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != info["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, manifest says {info['size']}")
        elif hashes and sha256_file(path) != info["sha256"]:
            problems.append(f"{name} does not match its sha256")
    return problems


def parent_record(parent: Path) -> dict[str, Any]:
    """How a child manifest names its parent: path, kind and content hash."""
    parent = Path(parent).resolve()
    manifest = read_manifest(parent, required=False)
    if manifest is not None and manifest.sha256:
        return {"path": str(parent), "kind": manifest.kind, "sha256": manifest.sha256}
    files = (
        file_table(parent)
        if parent.is_dir()
        else {parent.name: {"size": parent.stat().st_size, "sha256": sha256_file(parent)}}
    )
    return {"path": str(parent), "kind": "external", "sha256": content_hash(files)}
