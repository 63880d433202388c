"""The library calls the TUI makes, in one place.

The screens never score, convert or load anything themselves: they call these methods, which
are the same functions the CLI stages call. Tests swap in a subclass that replays fixed content,
so snapshots show no timings or temporary paths.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.artifacts import ArtifactInfo
from jmed_edge.fsutil import human_bytes
from jmed_edge.manifest import MANIFEST_NAME, read_manifest
from jmed_edge.runtimes.base import Runtime, SamplingParams

# Formats a runtime can open for chat and bench (a GGUF LoRA needs its base: chat it through the base).
RUNNABLE_FORMATS = ("hf-safetensors", "peft-adapter", "gguf", "onnx")
# Formats the GGUF converter takes as its source.
CONVERTIBLE_FORMATS = ("hf-safetensors",)


@dataclass(frozen=True)
class ArtifactView:
    """One artifact as the screens show it (strings ready for a table)."""

    info: ArtifactInfo
    name: str
    format: str
    quant: str
    size: str
    parent: str
    verified: str
    path: str  # relative to the root when below it

    @property
    def runnable(self) -> bool:
        return self.info.format in RUNNABLE_FORMATS

    @property
    def label(self) -> str:
        return (
            self.name if self.quant in ("", "-") or self.quant in self.name else f"{self.name} ({self.quant})"
        )


def quant_of(info: ArtifactInfo) -> str:
    """The quantization or precision an artifact's manifest records ("-" when none is recorded)."""
    details = info.manifest.details if info.manifest else {}
    for key in ("quant", "quant_type", "precision", "outtype", "dtype"):
        value = details.get(key)
        if value and details.get("mix") and details.get("bits_per_weight"):
            return f"{str(value).upper()} ({details['bits_per_weight']:.2f} bpw)"  # a budget, not bits
        if value:
            return str(value).upper() if info.format.startswith("gguf") else str(value)
    return "-"


def verification_status(info: ArtifactInfo) -> str:
    """'passed', 'FAILED', 'not verified' or 'no manifest', from the manifest's verification record."""
    if info.manifest is None:
        return "no manifest"
    record = info.manifest.verification or {}
    if not record:
        return "not verified"
    passed = record.get("passed", record.get("ok"))
    if passed is None and "status" in record:
        passed = str(record["status"]).lower() in ("passed", "ok", "pass")
    if passed is None:
        return "recorded"
    return "✓ passed" if passed else "✗ FAILED"


def _parent_name(info: ArtifactInfo) -> str:
    parent = (info.manifest.parent or {}) if info.manifest else {}
    path = parent.get("path")
    return Path(path).name if path else "-"


def view(info: ArtifactInfo, root: Path) -> ArtifactView:
    try:
        rel = str(info.path.resolve().relative_to(root.resolve()))
    except ValueError:
        rel = str(info.path)
    return ArtifactView(
        info=info, name=info.name, format=info.format, quant=quant_of(info),
        size=human_bytes(info.size_bytes), parent=_parent_name(info),
        verified=verification_status(info), path=rel,
    )  # fmt: skip


class Backend:
    """Thin wrappers over the jmed-edge library; every method may raise ``JmedError``."""

    # --- artifacts ------------------------------------------------------------------------

    def scan(self, root: Path) -> list[ArtifactView]:
        from jmed_edge.artifacts import scan

        root = Path(root)
        return [view(info, root) for info in scan(root)] if root.is_dir() else []

    def verify(self, artifact: Path) -> Any:
        """``jmed-edge verify``: check against the source, record the result in the manifest."""
        from jmed_edge.artifacts import describe

        if describe(Path(artifact)).format == "onnx":
            from jmed_edge.convert.onnx.verify import verify_onnx

            result = verify_onnx(Path(artifact), raise_on_failure=False, record=True)
            result.raise_if_failed()
            return result
        if describe(Path(artifact)).format == "gguf-lora":
            from jmed_edge.convert.lora_gguf import verify_lora

            result = verify_lora(Path(artifact), record=True)
        else:
            from jmed_edge.convert.verify import verify_artifact

            result = verify_artifact(Path(artifact), record=True)
        result.raise_for_failures()
        return result

    def convert_to_gguf(
        self, source: Path, out_dir: Path, quants: Sequence[str], progress: Any = None
    ) -> Any:
        """``jmed-edge convert SRC --to gguf --quant ...``: one verified folder per type."""
        from jmed_edge.convert.gguf import convert_to_gguf

        return convert_to_gguf(Path(source), Path(out_dir), quants=list(quants), progress=progress)

    # --- chat -----------------------------------------------------------------------------

    def open_runtime(self, artifact: Path) -> Runtime:
        from jmed_edge.chat.model import force_offline, open_model

        force_offline()
        return open_model(Path(artifact))

    def new_session(self, runtime: Runtime, system: str | None, params: SamplingParams):
        from jmed_edge.chat.session import ChatSession

        return ChatSession(runtime, system=system, params=params)

    def sampling(self, *, max_tokens: int, temperature: float) -> SamplingParams:
        """Validated sampling settings, with the chat command's own checks and messages."""
        from types import SimpleNamespace

        from jmed_edge.chat.cli import sampling_from_args

        args = SimpleNamespace(max_tokens=max_tokens, temperature=temperature, top_p=1.0, seed=0)
        return sampling_from_args(args)

    def template_prompt(self, template: str, lang: str, text: str) -> str:
        """A single-turn prompt in one of the benchmark prompt layouts (medpalm, alpaca)."""
        from jmed_edge.prompts import Example, get_template

        return get_template(template).render(Example(instruction=text), lang)

    def templates(self) -> list[str]:
        from jmed_edge.prompts import TEMPLATES

        return list(TEMPLATES)

    # --- bench ----------------------------------------------------------------------------

    def benchmarks(self) -> list[str]:
        """Names of the benchmarks bundled with jmed-edge (a spec of NAME alone)."""
        from jmed_edge.bench.registry import BUNDLED

        return list(BUNDLED)

    def run_benchmark(
        self,
        artifact: Path,
        spec: str,
        out_dir: Path,
        *,
        limit: int | None,
        progress: Callable[[Any], None],
        cancel: threading.Event,
    ) -> Any:
        """``jmed-edge bench`` with its default settings; resumes what an earlier run left."""
        from jmed_edge.bench import BenchSettings, run_benchmark

        return run_benchmark(
            Path(artifact), spec, Path(out_dir), BenchSettings(limit=limit), progress, cancel
        )

    # --- report ---------------------------------------------------------------------------

    def run_folders(self, root: Path) -> list[Path]:
        """Folders under ``root`` holding bench results (``<run>/<artifact>/<benchmark>/summary.json``)."""
        root = Path(root)
        if not root.is_dir():
            return []
        found = {p.parent.parent.parent for p in root.rglob("summary.json") if "/." not in p.as_posix()}
        return sorted(found)

    def report_folders(self, root: Path) -> list[Path]:
        """Report folders written by ``jmed-edge report`` under ``root``."""
        folders = []
        for path in sorted(Path(root).rglob(MANIFEST_NAME)) if Path(root).is_dir() else []:
            manifest = read_manifest(path.parent, required=False)
            if manifest is not None and manifest.kind == "report":
                folders.append(path.parent)
        return folders

    def report_inputs(self, report_dir: Path) -> tuple[list[Path], str]:
        """The run folders and reference a written report was built from (its manifest's record)."""
        manifest = read_manifest(report_dir)
        assert manifest is not None
        return [Path(p) for p in manifest.config.get("run_dirs", [])], str(
            manifest.details.get("reference", "")
        )

    def run_artifacts(self, run_dirs: Sequence[Path]) -> list[str]:
        """Artifact names present in bench run folders (the reference choices)."""
        from jmed_edge.report.build import find_runs

        return sorted({run.artifact for run in find_runs(run_dirs)})

    def build_report(
        self, run_dirs: Sequence[Path], reference: str, *, budget_bytes: int | None, max_loss: float, kl: bool
    ):
        from jmed_edge.report.build import build_report

        kl_cache = Path(run_dirs[0]).parent / f".{Path(run_dirs[0]).name}.kl-cache.json" if kl else None
        return build_report(list(run_dirs), reference, budget_bytes=budget_bytes, max_loss=max_loss, kl=kl,
                            kl_cache=kl_cache)  # fmt: skip

    def recommend(self, data: Any, budget_bytes: int | None, max_loss: float):
        """The recommendation for another RAM budget, without rereading the runs."""
        from jmed_edge.report.recommend import recommend

        return recommend(data.artifacts, data.cells, data.reference, budget_bytes, max_loss)
