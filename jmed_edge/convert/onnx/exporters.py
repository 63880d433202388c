"""The ONNX exporters jmed-edge can drive, by name, and the interface each one offers.

An exporter turns a Hugging Face folder into one ONNX decoder folder per precision that
onnxruntime-genai can load (``model.onnx`` + external data, ``genai_config.json``, tokenizer
files). ``convert_to_onnx`` does everything around it (checks, staging, verification,
manifests), so a new exporter only has to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jmed_edge.convert.onnx.options import OnnxOptions
from jmed_edge.convert.onnx.source import SourceModel
from jmed_edge.registry import Registry


@dataclass
class BuildJob:
    """One precision to build into ``out`` (an empty folder)."""

    precision: str
    out: Path
    options: OnnxOptions


@dataclass
class BuildOutcome:
    precision: str
    ok: bool
    error: str = ""  # one line, when not ok
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the exact builder options


class Exporter(Protocol):
    name: str

    def version(self) -> str:
        """Version of the underlying tool, recorded in manifests and fingerprints."""
        ...

    def source_problems(self, source: SourceModel) -> list[str]:
        """Why this exporter cannot export ``source`` (empty when it can)."""
        ...

    def build(
        self,
        source: SourceModel,
        jobs: list[BuildJob],
        target: str,
        *,
        workdir: Path,
        log_path: Path,
        progress: bool,
    ) -> list[BuildOutcome]:
        """Build every job; one failed precision does not stop the others."""
        ...


EXPORTERS: Registry[Any] = Registry("ONNX exporter")
EXPORTERS.add(
    "genai-builder",
    "jmed_edge.convert.onnx.genai_builder:GenAIBuilderExporter",
    "onnxruntime-genai model builder: fused GroupQueryAttention, MatMulNBits int4/int8, KV cache",
)


def get_exporter(name: str) -> Exporter:
    return EXPORTERS.get(name)()
