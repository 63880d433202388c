"""Collect bench runs into the report's data: align answers by question, compare with the reference.

Input layout (written by ``jmed-edge bench``): ``RUN_DIR/<artifact>/<benchmark>/summary.json`` and
``predictions.jsonl``. Runs of one benchmark must cover the same questions (same question-set
hash and benchmark version); otherwise the comparison is refused, naming the mismatch.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jmed_edge.errors import ArtifactError, ConfigError, DataError, did_you_mean
from jmed_edge.report.model import ArtifactRow, Cell, ReportData
from jmed_edge.report.recommend import recommend
from jmed_edge.report.stats import bootstrap_ci, paired

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One artifact on one benchmark: its summary and its answers keyed by (id, lang)."""

    artifact: str
    benchmark: str
    folder: Path
    summary: dict[str, Any]
    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _read_predictions(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    answers = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d is not JSON (a torn last line?); ignored", path, lineno)
                continue
            if rec.get("skipped"):
                continue
            answers[(str(rec["id"]), str(rec.get("lang", "")))] = rec
    return answers


def find_runs(run_dirs: Iterable[Path]) -> list[Run]:
    """Every (artifact, benchmark) run below the given folders."""
    runs = []
    for root in run_dirs:
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(f"run folder {root} does not exist; pass the --out folder of jmed-edge bench")
        found = sorted(root.rglob("summary.json"))
        if not found:
            raise ArtifactError(
                f"{root} holds no bench results (no */*/summary.json); run jmed-edge bench first"
            )
        for summary_path in found:
            folder = summary_path.parent
            preds = folder / "predictions.jsonl"
            if not preds.exists():
                raise ArtifactError(
                    f"{folder} has summary.json but no predictions.jsonl; rerun jmed-edge bench"
                )
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ArtifactError(
                    f"{summary_path} is not valid JSON ({exc.msg}); rerun jmed-edge bench"
                ) from exc
            artifact = str(summary.get("artifact_name") or folder.parent.name)
            benchmark = str(summary.get("benchmark") or folder.name)
            runs.append(Run(artifact, benchmark, folder, summary, _read_predictions(preds)))
    return runs


def _question_set(run: Run) -> tuple[Any, Any]:
    return run.summary.get("question_set_hash"), run.summary.get("benchmark_version")


def check_comparable(runs: list[Run]) -> None:
    by_bench: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_bench[run.benchmark].append(run)
    for bench, group in by_bench.items():
        first = group[0]
        for other in group[1:]:
            a, b = _question_set(first), _question_set(other)
            if a[1] != b[1]:
                raise DataError(
                    f"{bench}: {first.folder} uses benchmark version {a[1]} but {other.folder} uses {b[1]}; "
                    "rerun both with the same jmed-edge version"
                )
            if a[0] != b[0]:
                raise DataError(
                    f"{bench}: {first.folder} and {other.folder} were run on different questions "
                    "(question-set hashes differ: another --limit, --lang or data file?); rerun with the same settings"
                )
    seen: dict[tuple[str, str], Path] = {}
    for run in runs:
        key = (run.artifact, run.benchmark)
        if key in seen:
            raise DataError(
                f"{run.artifact}/{run.benchmark} appears twice ({seen[key]} and {run.folder}); pass one"
            )
        seen[key] = run.folder


def _format_and_quant(path: str) -> tuple[str, str]:
    """Read from the artifact's manifest when it is still on disk (the run records only its path)."""
    from jmed_edge.artifacts import describe

    try:
        info = describe(Path(path))
    except Exception:  # moved or deleted since the bench: the report still works without it
        return "", "-"
    details = info.manifest.details if info.manifest else {}
    config = info.manifest.config if info.manifest else {}
    quant = details.get("quant") or details.get("precision") or config.get("dtype") or "-"
    return info.format, str(quant)


def _artifact_row(run: Run) -> ArtifactRow:
    s = run.summary
    timings = s.get("timings", {})
    perf_file = run.folder.parent / "perf.json"
    perf = json.loads(perf_file.read_text(encoding="utf-8")) if perf_file.exists() else {}
    if perf.get("sha256") != s.get("sha256"):
        perf = {}  # measured on another version of the artifact
    fmt, quant = _format_and_quant(str(s.get("artifact", "")))
    return ArtifactRow(
        name=run.artifact,
        format=fmt,
        quant=quant,
        path=str(s.get("artifact", "")),
        sha256=str(s.get("sha256", "")),
        size_bytes=int(s.get("size_bytes") or 0),
        # Only the per-artifact probe's peak RSS is the artifact's own; a bench process may have
        # loaded several artifacts, so its peak is not used here.
        peak_rss_bytes=perf.get("peak_rss_bytes"),
        load_seconds=perf.get("load_seconds") or timings.get("load_seconds"),
        prompt_tokens_per_second=perf.get("prompt_tokens_per_second"),
        decode_tokens_per_second=perf.get("decode_tokens_per_second"),
        questions_per_second=timings.get("questions_per_second"),
    )


def _cells(runs: list[Run], reference: str, seed: int) -> list[Cell]:
    ref_runs = {r.benchmark: r for r in runs if r.artifact == reference}
    cells = []
    for run in runs:
        ref = ref_runs.get(run.benchmark)
        for lang in sorted({lang for _, lang in run.answers}):
            keys = sorted(k for k in run.answers if k[1] == lang)
            correct = [bool(run.answers[k].get("correct")) for k in keys]
            weights = [float(run.answers[k].get("points") or 0) for k in keys]
            points = (
                sum(w for w, c in zip(weights, correct, strict=True) if c) / sum(weights)
                if sum(weights)
                else None
            )
            cmp = None
            if ref is not None:
                shared = [k for k in keys if k in ref.answers]
                if len(shared) != len(keys) or len(shared) != sum(1 for k in ref.answers if k[1] == lang):
                    raise DataError(
                        f"{run.artifact} and the reference {reference} answered different {run.benchmark}/{lang} "
                        f"questions ({len(keys)} vs {sum(1 for k in ref.answers if k[1] == lang)}); is one run unfinished?"
                    )
                cmp = paired([bool(ref.answers[k].get("correct")) for k in shared], correct)
            # Generation runs carry the JMedLoRA metrics per answer (report name: prediction key).
            gen = {name: sum(float(run.answers[k][key]) for k in keys) / len(keys)
                   for name, key in (("exact_match", "exact_match"), ("gestalt_score", "gestalt"),
                                     ("gestalt_nearest_accuracy", "gestalt_correct"))
                   if keys and all(key in run.answers[k] for k in keys)}  # fmt: skip
            cells.append(Cell(
                artifact=run.artifact, benchmark=run.benchmark, lang=lang, n=len(keys),
                n_correct=sum(correct), accuracy=sum(correct) / len(keys) if keys else 0.0,
                ci=bootstrap_ci(correct, seed=seed), points=points, vs_reference=cmp, generation=gen,
            ))  # fmt: skip
    return cells


def build_report(
    run_dirs: Iterable[Path],
    reference: str,
    *,
    budget_bytes: int | None = None,
    max_loss: float = 1.0,
    kl: bool = True,
    kl_cache: Path | None = None,
    seed: int = 0,
) -> ReportData:
    """Read bench runs and compare every artifact with ``reference`` (an artifact name among them)."""
    run_dirs = list(run_dirs)
    runs = find_runs(run_dirs)
    names = sorted({r.artifact for r in runs})
    if reference not in names:
        raise ConfigError(
            f'reference "{reference}" is not among the runs{did_you_mean(reference, names)}; '
            f"artifacts found: {', '.join(names)}"
        )
    check_comparable(runs)
    rows: dict[str, ArtifactRow] = {}
    for run in runs:
        rows.setdefault(run.artifact, _artifact_row(run))
    artifacts = sorted(rows.values(), key=lambda a: (a.name != reference, -a.size_bytes, a.name))
    if kl:
        from jmed_edge.report.divergence import attach_kl

        attach_kl(artifacts, reference, cache=kl_cache)
    cells = _cells(runs, reference, seed)
    benchmarks = {}
    for run in runs:
        qhash, version = _question_set(run)
        benchmarks.setdefault(run.benchmark, {"question_set_hash": qhash, "version": version})
    return ReportData(
        reference=reference,
        artifacts=artifacts,
        cells=cells,
        recommendation=recommend(artifacts, cells, reference, budget_bytes, max_loss),
        benchmarks=benchmarks,
        settings={
            "budget_bytes": budget_bytes,
            "max_loss_points": max_loss,
            "bootstrap_seed": seed,
            "significance": 0.05,
            "run_dirs": [str(Path(d)) for d in run_dirs],
        },
    )


def write_report(data: ReportData, out: Path, *, force: bool = True) -> Path:
    """Write report.md, report.html, report.json and the PNG figures into ``out`` (atomically)."""
    from jmed_edge.fsutil import staging_dir
    from jmed_edge.manifest import Manifest
    from jmed_edge.report.plots import draw_all
    from jmed_edge.report.render import write_html, write_json, write_markdown

    with staging_dir(Path(out), force=force) as tmp:
        figures = draw_all(data, tmp)
        write_markdown(data, figures, tmp / "report.md")
        write_html(data, figures, tmp / "report.html")
        write_json(data, tmp / "report.json")
        Manifest(kind="report", format="report", name="report", config=data.settings,
                 details={"reference": data.reference, "recommended": data.recommendation.chosen}).seal(tmp)  # fmt: skip
    return Path(out)
