"""``jmed-edge run``: train -> merge -> convert -> bench -> report from one recipe.

Each stage writes an artifact folder under the output folder and is skipped when that folder's
manifest already matches the stage's inputs, so a rerun after a failure continues where it
stopped and a changed input redoes exactly the stages downstream of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from jmed_edge.manifest import read_manifest
from jmed_edge.pipeline.recipe import PipelineSections, load_sections
from jmed_edge.recipes_cli import resolve_recipe

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    out: Path
    artifacts: dict[str, Path] = field(default_factory=dict)  # label -> artifact folder
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class _Stages:
    """Small bookkeeping helper: announce, time and record each stage."""

    def __init__(self, result: PipelineResult, console: Console) -> None:
        self.result, self.console = result, console

    def skip(self, name: str, why: str) -> None:
        self.result.skipped.append(name)
        self.console.print(f"[dim]✓ {name}: up to date ({why}), skipped[/]")

    def start(self, name: str) -> float:
        self.console.rule(f"[bold]{name}")
        return time.perf_counter()

    def done(self, name: str, started: float) -> None:
        self.result.ran.append(name)
        self.result.seconds[name] = round(time.perf_counter() - started, 1)


def _manifest_details(folder: Path) -> dict[str, Any] | None:
    manifest = read_manifest(folder, required=False) if folder.is_dir() else None
    return None if manifest is None else {"sha256": manifest.sha256, "parent": manifest.parent or {},
                                          "details": manifest.details, "config": manifest.config}  # fmt: skip


def _train(recipe: Any, adapter: Path, stages: _Stages) -> Path:
    from jmed_edge.train import adapter_matches, run_training

    if adapter_matches(adapter, recipe):
        stages.skip("train", "adapter fingerprint matches the recipe and data")
        return adapter
    started = stages.start("train")
    run_training(recipe, out=adapter, force=True)
    stages.done("train", started)
    return adapter


def _merge(adapter: Path, out: Path, dtype: str, stages: _Stages) -> Path:
    from jmed_edge.merge import merge_adapter

    merged = out / "merged"
    info, adapter_info = _manifest_details(merged), _manifest_details(adapter)
    if info and adapter_info and info["parent"].get("sha256") == adapter_info["sha256"] \
            and info["config"].get("dtype") == dtype:  # fmt: skip
        stages.skip("merge", "merged from this exact adapter")
        return merged
    started = stages.start("merge")
    merge_adapter(adapter, merged, dtype=dtype, force=True)
    stages.done("merge", started)
    return merged


def _gguf_fresh(
    merged: Path, folder: Path, quants: list[str], imatrix: str | None, outtype: str
) -> dict[str, Path]:
    """The existing GGUF artifacts when all were made from this merged model with these settings."""
    from jmed_edge.convert.gguf import imatrix_mode_for
    from jmed_edge.convert.mix import mix_settings, mix_spec, split_mix
    from jmed_edge.convert.quant_types import parse_quants, quant_type

    merged_info = _manifest_details(merged)
    base = folder / quant_type(outtype).name
    base_info = _manifest_details(base)
    if not merged_info or not base_info or base_info["parent"].get("sha256") != merged_info["sha256"] \
            or base_info["config"].get("outtype") != outtype:  # fmt: skip
        return {}
    found = {base.name: base}
    types, budgets = split_mix(quants)
    for budget in budgets:  # a mix is fresh when made from this base with the same settings
        spec = mix_spec(budget)
        info = _manifest_details(folder / spec.label)
        made_for = info and info["config"].get("mix")
        if not info or info["parent"].get("sha256") != base_info["sha256"] or made_for != mix_settings(spec):
            return {}
        found[spec.label] = folder / spec.label
    for q in parse_quants(types):
        if q.is_float:
            continue
        info = _manifest_details(folder / q.name)
        used = info and info["config"].get("imatrix")
        wanted = imatrix_mode_for(imatrix, q)
        if not info or info["parent"].get("sha256") != base_info["sha256"] or used != wanted:
            return {}
        found[q.name] = folder / q.name
    return found


def _convert_gguf(merged: Path, out: Path, sections: PipelineSections, stages: _Stages) -> dict[str, Path]:
    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.convert.mix import mix_spec, split_mix

    cfg = sections.convert.gguf
    if not cfg.enabled:
        return {}
    folder = out / "gguf"
    fresh = _gguf_fresh(merged, folder, cfg.quants, cfg.imatrix, cfg.outtype)
    if fresh:
        stages.skip("convert gguf", "every GGUF was made from this merged model with these settings")
        return fresh
    started = stages.start("convert gguf")
    types, budgets = split_mix(cfg.quants)
    made = convert_to_gguf(
        merged,
        folder,
        quants=types,
        imatrix=cfg.imatrix,
        outtype=cfg.outtype,
        force=True,
        mixes=[mix_spec(b) for b in budgets],
    )
    stages.done("convert gguf", started)
    return made


def _convert_onnx(merged: Path, out: Path, sections: PipelineSections, stages: _Stages) -> dict[str, Path]:
    cfg = sections.convert.onnx
    if not cfg.enabled:
        return {}
    from jmed_edge.convert.onnx import convert_to_onnx, onnx_fingerprint

    folder = out / "onnx"
    fresh = {}
    for precision in cfg.precisions:
        info = _manifest_details(folder / f"onnx-{precision}")
        if info and info["details"].get("fingerprint") == onnx_fingerprint(
            merged, precision, target=cfg.target
        ):
            fresh[f"onnx-{precision}"] = folder / f"onnx-{precision}"
    if len(fresh) == len(cfg.precisions):
        stages.skip("convert onnx", "every ONNX artifact was made from this merged model with these settings")
        return fresh
    started = stages.start("convert onnx")
    made = convert_to_onnx(merged, folder, precisions=cfg.precisions, target=cfg.target, force=True)
    stages.done("convert onnx", started)
    return {f"onnx-{precision}": path for precision, path in made.items()}


def bench_label(artifact: Path) -> str:
    """The name ``jmed-edge bench`` files an artifact's results under."""
    from jmed_edge.artifacts import describe
    from jmed_edge.bench.artifact_id import artifact_label

    return artifact_label(describe(artifact))


def _bench_is_stale(folder: Path, artifact: Path) -> bool:
    from jmed_edge.artifacts import describe
    from jmed_edge.bench.artifact_id import artifact_sha256

    sha = artifact_sha256(describe(artifact))
    for summary in folder.glob("*/summary.json"):
        if json.loads(summary.read_text(encoding="utf-8")).get("sha256") != sha:
            return True
    return False


def _bench(artifacts: dict[str, Path], out: Path, sections: PipelineSections, stages: _Stages) -> Path:
    from jmed_edge.artifacts import describe
    from jmed_edge.bench import BenchSettings, run_benchmark
    from jmed_edge.bench.artifact_id import artifact_sha256
    from jmed_edge.bench.registry import load_benchmark
    from jmed_edge.bench.runner import plan_run
    from jmed_edge.errors import JmedError
    from jmed_edge.report.probe import record_perf

    cfg = sections.bench
    run_dir = out / "bench"
    settings = BenchSettings(mode=cfg.mode, template=cfg.template, shots=cfg.shots, langs=tuple(cfg.langs),
                             limit=cfg.limit, seed=cfg.seed)  # fmt: skip
    benchmarks = {spec: load_benchmark(spec) for spec in cfg.benchmarks}  # read and hashed once
    started = stages.start("bench")
    for label, artifact in artifacts.items():
        # A run folder of an earlier version of this artifact is stale: start it over.
        stale = _bench_is_stale(run_dir / bench_label(artifact), artifact)
        for spec, bench in benchmarks.items():
            # The recipe's bench settings changed since the last run (limit, shots, ...): the recipe
            # is the user's intent, so the earlier results are redone rather than refused.
            redo = stale or plan_run(artifact, bench, run_dir, settings).conflict() is not None
            with _bench_bar(stages.console, f"{label} / {spec.split(':')[0]}") as bar:
                bar.finish(run_benchmark(artifact, bench, run_dir, settings, progress=bar, force=redo))
        with stages.console.status(f"measuring speed and memory of {label}"):
            try:
                record_perf(artifact, run_dir / bench_label(artifact), artifact_sha256(describe(artifact)))
            except JmedError as exc:  # the scores stand; the report estimates RAM from the file size
                stages.console.print(f"[yellow]speed/memory probe skipped:[/] {exc}")
    stages.done("bench", started)
    return run_dir


class _BenchBar:
    """Feeds one progress bar from ``run_benchmark``'s progress reports and its final summary."""

    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def __call__(self, p: Any) -> None:
        self.bar.update(self.task, completed=p.done, total=p.total, acc=p.n_correct / max(p.done, 1),
                        qps=p.questions_per_second)  # fmt: skip

    def finish(self, summary: Any) -> None:
        # A run that was already complete reports no progress: show its result all the same.
        self.bar.update(self.task, completed=summary.n, total=summary.n, acc=summary.accuracy,
                        qps=summary.timings.get("questions_per_second", 0.0))  # fmt: skip


@contextmanager
def _bench_bar(console: Console, description: str) -> Iterator[_BenchBar]:
    """A progress bar per artifact and benchmark: questions done, running accuracy, speed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("  {task.description:<22}"), BarColumn(bar_width=20), MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]:.1%}  {task.fields[qps]:.1f} q/s"), TimeRemainingColumn(),
        console=console,
    ) as bar:  # fmt: skip
        yield _BenchBar(bar, bar.add_task(description, total=None, acc=0.0, qps=0.0))


def run_pipeline(
    recipe_ref: str | Path,
    out: Path | None = None,
    overrides: Iterable[str] = (),
    *,
    console: Console | None = None,
) -> PipelineResult:
    """Run every stage of the recipe into ``out`` (default: the recipe's output folder)."""
    from jmed_edge.fsutil import parse_bytes
    from jmed_edge.report.build import build_report, write_report
    from jmed_edge.report.terminal import print_summary
    from jmed_edge.train import load_recipe

    console = console or Console(stderr=True)
    overrides = list(overrides)
    path = resolve_recipe(recipe_ref)
    recipe = load_recipe(
        path, [o for o in overrides if o.split(".", 1)[0] not in ("convert", "bench", "report")]
    )
    sections = load_sections(path, overrides)
    # Without --out, every artifact goes beside the recipe's adapter folder (runs/demo/adapter ->
    # runs/demo/{merged,gguf,bench,report}); with --out, the adapter goes to OUT/adapter too.
    adapter_dir = Path(out) / "adapter" if out else Path(recipe.output.dir)
    out = Path(out) if out else adapter_dir.parent
    out.mkdir(parents=True, exist_ok=True)
    result = PipelineResult(out)
    stages = _Stages(result, console)

    adapter = _train(recipe, adapter_dir, stages)
    merged = _merge(adapter, out, "fp32", stages)
    result.artifacts["merged"] = merged
    result.artifacts.update(_convert_gguf(merged, out, sections, stages))
    result.artifacts.update(_convert_onnx(merged, out, sections, stages))
    benched = {k: v for k, v in result.artifacts.items() if k != "merged" or sections.bench.include_merged}
    run_dir = _bench(benched, out, sections, stages)

    started = stages.start("report")
    rep = sections.report
    reference = (
        bench_label(result.artifacts[rep.reference]) if rep.reference in result.artifacts else rep.reference
    )
    data = build_report([run_dir], reference, budget_bytes=parse_bytes(rep.budget) if rep.budget else None,
                        max_loss=rep.max_loss, kl=rep.kl, kl_cache=out / "kl-cache.json", seed=sections.bench.seed,
                        prefer=rep.prefer)  # fmt: skip
    result.report = write_report(data, out / "report")
    stages.done("report", started)
    print_summary(data, Console())
    return result
