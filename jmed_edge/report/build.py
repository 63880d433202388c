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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jmed_edge.errors import ArtifactError, ConfigError, DataError, did_you_mean
from jmed_edge.fsutil import human_bytes
from jmed_edge.report.model import ArtifactRow, Cell, ReportData
from jmed_edge.report.recommend import check_max_loss, check_prefer, recommend
from jmed_edge.report.stats import Interval, bootstrap_ci, noninferiority, paired
from jmed_edge.report.tokenization import exclude_divergent

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


def id_difference(first: Run, other: Run, lang: str | None = None, shown: int = 5) -> str:
    """Which question ids one run has and the other lacks ("only in A: S003, S007; only in B: ...")."""

    def ids(run: Run) -> set[str]:
        return {f"{qid}/{lg}" if lang is None else qid for qid, lg in run.answers if lang in (None, lg)}

    a, b = ids(first), ids(other)
    parts = []
    for run, extra in ((first, sorted(a - b)), (other, sorted(b - a))):
        if extra:
            more = f" (+{len(extra) - shown} more)" if len(extra) > shown else ""
            parts.append(f"only in {run.artifact}: {', '.join(extra[:shown])}{more}")
    return "; ".join(parts) or "the same ids, other languages or settings"


def check_comparable(runs: list[Run], reference: str | None = None) -> None:
    by_bench: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_bench[run.benchmark].append(run)
    for bench, group in by_bench.items():
        group = sorted(group, key=lambda r: r.artifact != reference)  # compare with the reference first
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
                    f"{bench}: {first.artifact} and {other.artifact} were run on different questions "
                    f"({id_difference(first, other)}); another --limit, --lang or data file? "
                    "Rerun with the same settings"
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
    if details.get("mix") and details.get("bits_per_weight"):  # a budget's name says nothing of its bits
        quant = f"{quant} ({details['bits_per_weight']:.2f} bpw)"
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


def _category(rec: dict[str, Any]) -> str | None:
    value = rec.get("category")
    return str(value) if value not in (None, "") else None


def _cells(
    runs: list[Run], reference: str, seed: int, max_loss: float
) -> tuple[list[Cell], list[dict[str, Any]]]:
    """One cell per artifact x benchmark x language, and the paired rows per category."""
    ref_runs = {r.benchmark: r for r in runs if r.artifact == reference}
    cells, by_category = [], []
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
                ref_keys = {k for k in ref.answers if k[1] == lang}
                seq = _sequential(run, lang) if run.artifact != reference else None
                # A sequential run stopped early: it answered a subset of the reference's questions.
                if (set(keys) - ref_keys) if seq else (set(keys) != ref_keys):
                    raise DataError(
                        f"{run.artifact} and the reference {reference} answered different {run.benchmark}/{lang} "
                        f"questions ({len(keys)} vs {len(ref_keys)}: {id_difference(ref, run, lang)}); "
                        "is one run unfinished? Finish it (rerun jmed-edge bench resumes) or rerun both on the same questions"
                    )
                ref_correct = [bool(ref.answers[k].get("correct")) for k in keys]
                cmp = paired(ref_correct, correct, max_loss=max_loss, weights=weights, seed=seed)
                if seq and seq.get("delta_ci"):  # the stopping rule's anytime-valid interval
                    ci = Interval(float(seq["delta_ci"]["low"]), float(seq["delta_ci"]["high"]))
                    cmp = replace(cmp, delta_ci=ci, noninferior=noninferiority(ci, max_loss),
                                  method="confidence-sequence")  # fmt: skip
                if run.artifact == reference:  # the same answers by construction: no uncertainty
                    cmp = replace(cmp, delta_ci=Interval(0.0, 0.0), noninferior=True,
                                  points_delta_ci=cmp.points_delta_ci and Interval(0.0, 0.0),
                                  points_noninferior=cmp.points_noninferior and True)  # fmt: skip
                else:
                    by_category += _category_rows(run, ref, keys, lang, max_loss)
                cmp = exclude_divergent(cmp, keys, lang, (run.summary, run.answers), (ref.summary, ref.answers),
                                        is_reference=run.artifact == reference, max_loss=max_loss)  # fmt: skip
            # Generation runs carry the JMedLoRA metrics per answer (report name: prediction key).
            gen = {name: sum(float(run.answers[k][key]) for k in keys) / len(keys)
                   for name, key in (("exact_match", "exact_match"), ("gestalt_score", "gestalt"),
                                     ("gestalt_nearest_accuracy", "gestalt_correct"))
                   if keys and all(key in run.answers[k] for k in keys)}  # fmt: skip
            cells.append(Cell(
                artifact=run.artifact, benchmark=run.benchmark, lang=lang, n=len(keys),
                n_correct=sum(correct), accuracy=sum(correct) / len(keys) if keys else 0.0,
                ci=bootstrap_ci(correct, seed=seed), points=points, vs_reference=cmp, generation=gen,
                sequential=_sequential(run, lang),
            ))  # fmt: skip
    return cells, by_category


def _sequential(run: Run, lang: str) -> dict[str, Any] | None:
    """What ``bench --until-decided`` recorded for this language, if it ran that way."""
    seq = run.summary.get("sequential")
    return seq.get(lang) if isinstance(seq, dict) and isinstance(seq.get(lang), dict) else None


def _category_rows(
    run: Run, ref: Run, keys: list[tuple[str, str]], lang: str, max_loss: float
) -> list[dict[str, Any]]:
    """Paired rows per category (IgakuQA specialty, MMLU subject) for one artifact x benchmark x language."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for k in keys:
        cat = _category(ref.answers[k]) or _category(run.answers[k])
        if cat is not None:
            groups[cat].append(k)
    rows = []
    for cat, ks in sorted(groups.items()):
        cmp = paired([bool(ref.answers[k].get("correct")) for k in ks],
                     [bool(run.answers[k].get("correct")) for k in ks], max_loss=max_loss)  # fmt: skip
        rows.append({"artifact": run.artifact, "benchmark": run.benchmark, "lang": lang, "category": cat,
                     "n": cmp.n, "delta": cmp.delta, "delta_ci": {"low": cmp.delta_ci.low, "high": cmp.delta_ci.high},
                     "noninferior": cmp.noninferior, "p_value": cmp.p_value,
                     "right_to_wrong": cmp.right_to_wrong, "wrong_to_right": cmp.wrong_to_right})  # fmt: skip
    return rows


def build_report(
    run_dirs: Iterable[Path],
    reference: str,
    *,
    budget_bytes: int | None = None,
    max_loss: float = 1.0,
    kl: bool = True,
    kl_cache: Path | None = None,
    seed: int = 0,
    prefer: str = "smallest",
    refuse_unfit_budget: bool = False,
) -> ReportData:
    """Read bench runs and compare every artifact with ``reference`` (an artifact name among them).

    ``refuse_unfit_budget``: a budget smaller than every artifact is a ``ConfigError`` raised
    before the KL divergence loads any model (the CLI's choice; the TUI shows it as the
    recommendation instead).
    """
    check_max_loss(max_loss)
    check_prefer(prefer)
    run_dirs = list(run_dirs)
    runs = find_runs(run_dirs)
    names = sorted({r.artifact for r in runs})
    if reference not in names:
        raise ConfigError(
            f'reference "{reference}" is not among the runs{did_you_mean(reference, names)}; '
            f"artifacts found: {', '.join(names)}"
        )
    check_comparable(runs, reference)
    rows: dict[str, ArtifactRow] = {}
    for run in runs:
        rows.setdefault(run.artifact, _artifact_row(run))
    artifacts = sorted(rows.values(), key=lambda a: (a.name != reference, -a.size_bytes, a.name))
    if (
        refuse_unfit_budget
        and budget_bytes is not None
        and all(a.ram_estimate_bytes > budget_bytes for a in artifacts)
    ):
        smallest = min(artifacts, key=lambda a: a.ram_estimate_bytes)
        raise ConfigError(
            f"--budget {human_bytes(budget_bytes)} is smaller than every artifact: the smallest, {smallest.name}, "
            f"needs about {human_bytes(smallest.ram_estimate_bytes)} of RAM; raise --budget or quantize further"
        )
    if kl:
        from jmed_edge.report.divergence import attach_kl

        attach_kl(artifacts, reference, cache=kl_cache)
    cells, by_category = _cells(runs, reference, seed, max_loss)
    from jmed_edge.report.exam import exam_results, new_kinki_picks

    exams = exam_results(runs)
    new_kinki = new_kinki_picks(runs, reference)
    benchmarks = {}
    for run in runs:
        qhash, version = _question_set(run)
        benchmarks.setdefault(run.benchmark, {"question_set_hash": qhash, "version": version})
    return ReportData(
        reference=reference,
        artifacts=artifacts,
        cells=cells,
        recommendation=recommend(artifacts, cells, reference, budget_bytes, max_loss, prefer=prefer),
        benchmarks=benchmarks,
        settings={
            "budget_bytes": budget_bytes,
            "max_loss_points": max_loss,
            "bootstrap_seed": seed,
            "significance": 0.05,
            "prefer": prefer,
            "interval": "Newcombe 1998 hybrid score (method 10), 95%; points score: paired bootstrap",
            "run_dirs": [str(Path(d)) for d in run_dirs],
        },
        by_category=by_category,
        exams=exams,
        new_kinki=new_kinki,
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
