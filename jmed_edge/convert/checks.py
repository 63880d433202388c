"""What a verification produced: named checks with their numbers, and where an artifact came from.

Shared by every verifier (GGUF models, GGUF LoRA adapters) and by what renders their results,
so none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jmed_edge.artifacts import describe
from jmed_edge.convert.ggufinfo import KEY_FILE_TYPE, read_gguf
from jmed_edge.errors import VerificationError
from jmed_edge.manifest import read_manifest

# GGUF general.file_type of the float types (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_BF16).
FLOAT_FILE_TYPES = {0: "F32", 1: "F16", 32: "BF16"}


@dataclass
class Check:
    name: str
    passed: bool | None  # None: measured and recorded, not pass/fail
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "•"}[self.passed]


@dataclass
class VerifyResult:
    artifact: Path
    against: Path | None
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "against": str(self.against) if self.against else None,
            "seconds": round(self.seconds, 2),
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail, **c.values} for c in self.checks
            ],
        }

    def raise_for_failures(self) -> None:
        if self.passed:
            return
        first = self.failures[0]
        error = VerificationError(
            f"{self.artifact} failed verification against {self.against}: {first.name}: {first.detail}"
            + (f" (and {len(self.failures) - 1} more failed checks)" if len(self.failures) > 1 else "")
        )
        error.result = self  # type: ignore[attr-defined]  # the CLI prints every check
        raise error


def parent_path(artifact: Path) -> tuple[Path | None, str | None]:
    manifest = read_manifest(artifact, required=False)
    if manifest is None or not manifest.parent:
        return None, None
    return Path(manifest.parent.get("path", "")), manifest.parent.get("kind")


def float_parent(artifact: Path) -> Path | None:
    """The F16/BF16/F32 GGUF artifact a quantized artifact was made from, if still there."""
    parent, kind = parent_path(artifact)
    if parent is None or kind != "gguf" or not parent.exists():
        return None
    info = describe(parent)
    file_type = read_gguf(info.model_file).get(KEY_FILE_TYPE)  # type: ignore[arg-type]
    return parent if file_type in FLOAT_FILE_TYPES else None
