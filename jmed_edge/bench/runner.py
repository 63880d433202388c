"""Run one benchmark on one artifact: resumable, batched, with progress and cancellation.

Layout of a run folder::

    RUN_DIR/<artifact-name>/jmed_manifest.json        kind "bench-run", sealed after each benchmark
    RUN_DIR/<artifact-name>/<benchmark>/run.json       the settings and inputs the run is bound to
    RUN_DIR/<artifact-name>/<benchmark>/predictions.jsonl   one line per (question, language)
    RUN_DIR/<artifact-name>/<benchmark>/summary.json

``run_benchmark`` is the library entry point the CLI and the TUI share.
"""

from __future__ import annotations

import json
import logging
import random
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge import __version__
from jmed_edge.artifacts import ArtifactInfo, describe
from jmed_edge.bench.artifact_id import artifact_label, artifact_sha256
from jmed_edge.bench.predictions import PREDICTIONS, PredictionLog, read_predictions
from jmed_edge.bench.records import Benchmark, Question
from jmed_edge.bench.registry import load_benchmark
from jmed_edge.bench.scoring import question_set_hash, summarize
from jmed_edge.bench.settings import BenchProgress, BenchSettings, Summary
from jmed_edge.bench.strategies import render_prompt, score_generate, score_loglik
from jmed_edge.bench.tokenizer_check import TokenizerCheck, check_artifact
from jmed_edge.errors import ConfigError, DataError
from jmed_edge.fsutil import write_text_atomic
from jmed_edge.manifest import Manifest

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
SUMMARY = "summary.json"
MAX_SKIPPED_LISTED = 200  # summary.json lists this many unreadable records by file:line


def select_items(bench: Benchmark, settings: BenchSettings) -> tuple[list[Question], Counter[str], list[str]]:
    """Questions to score in order (by language, then file order), what the mode skips, languages."""
    available = list(dict.fromkeys(q.lang for q in bench.records))  # the benchmark's own order: ja first
    langs = [lang for lang in (settings.langs or tuple(available)) if lang in available]
    if not langs:
        raise DataError(
            f"benchmark {bench.label} has no {'/'.join(settings.langs)} questions (it has "
            f"{', '.join(available)}); pick --lang {','.join(available)}"
        )
    records = [q for q in bench.records if q.lang in langs]
    if settings.limit is not None:
        ids = list(dict.fromkeys(q.id for q in records))
        if settings.limit < len(ids):
            chosen = set(random.Random(settings.seed).sample(ids, settings.limit))
            records = [q for q in records if q.id in chosen]
    skipped: Counter[str] = Counter()
    if settings.mode == "loglik":
        numeric = [q for q in records if q.numeric]
        if numeric:
            skipped["numeric_in_loglik"] = len(numeric)
            records = [q for q in records if not q.numeric]
    ordered = [q for lang in langs for q in records if q.lang == lang]
    return ordered, skipped, langs


@dataclass
class RunPlan:
    """Where a run goes, what it scores, and the identity it is bound to (no side effects)."""

    info: ArtifactInfo
    bench: Benchmark
    name: str
    folder: Path
    items: list[Question]
    mode_skipped: Counter[str]
    langs: list[str]
    question_set_hash: str
    sha256: str
    identity: dict[str, Any]
    shots: dict[str, list[Question]]

    def conflict(self) -> str | None:
        """Why the folder cannot be resumed with these settings, or None."""
        run_file = self.folder / RUN_FILE
        if run_file.exists():
            try:
                previous = json.loads(run_file.read_text(encoding="utf-8")).get("identity", {})
            except json.JSONDecodeError:
                return f"its {RUN_FILE} is damaged"
            changed = [
                k
                for k in sorted(set(previous) | set(self.identity))
                if previous.get(k) != self.identity.get(k)
            ]
            if changed:
                return (
                    "other settings ("
                    + ", ".join(f"{k}: {previous.get(k)!r} -> {self.identity.get(k)!r}" for k in changed[:4])
                    + ")"
                )
        elif (self.folder / PREDICTIONS).exists():
            return f"predictions but no {RUN_FILE}"
        return None

    def check(self, force: bool) -> None:
        reason = None if force else self.conflict()
        if reason:
            raise ConfigError(
                f"{self.folder} holds a run with {reason}; use a new --out, or --force to discard it and start over"
            )

    def remaining(self) -> int:
        done = {(r["id"], r["lang"]) for r in read_predictions(self.folder / PREDICTIONS)}
        return sum(1 for q in self.items if (q.id, q.lang) not in done)


def plan_run(
    artifact: Path | str | ArtifactInfo, bench: Benchmark, out_dir: Path | str, settings: BenchSettings
) -> RunPlan:
    info = artifact if isinstance(artifact, ArtifactInfo) else describe(Path(artifact))
    name = artifact_label(info)
    items, mode_skipped, langs = select_items(bench, settings)
    shots = {lang: _shots(bench, lang, settings.shots) for lang in langs}
    qhash = question_set_hash((q.id, q.lang) for q in items)
    sha = artifact_sha256(info)
    identity = {**settings.identity(), "langs": langs, "artifact_sha256": sha,
                "benchmark_version": bench.version, "question_set_hash": qhash}  # fmt: skip
    return RunPlan(info, bench, name, Path(out_dir) / name / bench.label, items, mode_skipped, langs, qhash,
                   sha, identity, shots)  # fmt: skip


def _bind_run(plan: RunPlan, force: bool) -> None:
    """Check (or start over with ``force``) and write ``run.json`` for a new run."""
    plan.check(force)
    if force and plan.folder.exists():
        shutil.rmtree(plan.folder)
    plan.folder.mkdir(parents=True, exist_ok=True)
    run_file = plan.folder / RUN_FILE
    if not run_file.exists():
        payload = {"identity": plan.identity, "jmed_edge": __version__}
        write_text_atomic(run_file, json.dumps(payload, indent=2) + "\n")


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _peak_memory() -> dict[str, int]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def _runtime_info(runtime: Any) -> dict[str, Any]:
    info = {"name": getattr(runtime, "name", type(runtime).__name__)}
    for key in ("device", "dtype", "n_threads", "n_gpu_layers", "context_length"):
        value = getattr(runtime, key, None)
        if value is not None:
            info[key] = value
    lora = getattr(runtime, "lora_path", None)
    if lora:
        info["lora_path"] = str(lora)
    return info


def run_benchmark(
    artifact: Path | str | ArtifactInfo,
    benchmark_spec: str | Benchmark,
    out_dir: Path | str,
    settings: BenchSettings | None = None,
    progress: Callable[[BenchProgress], None] | None = None,
    cancel: Any = None,
    *,
    runtime: Any = None,
    force: bool = False,
    until_decided: Any = None,
) -> Summary:
    """Score ``artifact`` on a benchmark; resume what an earlier run of the same settings did.

    ``progress`` is called after every batch; ``cancel`` (a ``threading.Event`` or a callable)
    stops the run after the current batch, leaving a resumable folder and a summary marked
    ``complete: false``. Pass an open ``runtime`` to score several benchmarks without reloading.
    ``until_decided`` (a ``sequential.UntilDecided``): answer in a seeded random order and stop
    each language once its non-inferiority against the reference is decided.
    """
    settings = settings or BenchSettings()
    settings.validate()
    bench = (
        benchmark_spec
        if isinstance(benchmark_spec, Benchmark)
        else load_benchmark(benchmark_spec, skip_bad=settings.skip_bad)
    )
    plan = plan_run(artifact, bench, out_dir, settings)
    _bind_run(plan, force)
    info, name, folder, items, langs = plan.info, plan.name, plan.folder, plan.items, plan.langs
    mode_skipped, qhash, sha = plan.mode_skipped, plan.question_set_hash, plan.sha256

    done_rows = read_predictions(folder / PREDICTIONS, repair=True)
    wanted = {(q.id, q.lang) for q in items}
    done_rows = [r for r in done_rows if (r["id"], r["lang"]) in wanted]
    done_keys = {(r["id"], r["lang"]) for r in done_rows}
    todo = [q for q in items if (q.id, q.lang) not in done_keys]
    shots = plan.shots
    if until_decided is not None:
        from jmed_edge.bench.sequential import seeded_order

        until_decided.check(((q.id, q.lang) for q in items), bench.label)
        rank = {qid: i for i, qid in enumerate(seeded_order((q.id for q in items), settings.seed))}
        todo.sort(key=lambda q: rank[q.id])
        until_decided.feed(sorted(done_rows, key=lambda r: rank[r["id"]]))

    own_runtime = runtime is None and bool(todo)
    load_seconds = 0.0
    if own_runtime:
        from jmed_edge.runtimes import open_runtime

        started = time.perf_counter()
        options = dict(settings.runtime_options)
        if info.format in ("hf-safetensors", "peft-adapter"):
            options.setdefault("batch_size", settings.batch_size)
        runtime = open_runtime(info, **options)
        load_seconds = getattr(runtime, "load_seconds", time.perf_counter() - started)
    elif runtime is not None:
        load_seconds = float(getattr(runtime, "load_seconds", 0.0))

    try:
        parity = _tokenizer_check(plan, settings, runtime)
    except Exception:
        if own_runtime:
            runtime.close()
        raise

    rows = list(done_rows)
    n_correct = sum(1 for r in rows if r["correct"])
    started = time.perf_counter()
    scored_now = 0
    cancelled = False
    score = score_loglik if settings.mode == "loglik" else score_generate
    # A runtime that batches gets several batches per call, so that it can group prompts of
    # similar length (less padding); the others are fed a batch at a time.
    chunk = (
        1
        if settings.mode == "generate"
        else settings.batch_size * (8 if hasattr(runtime, "score_batch") else 1)
    )
    try:
        with PredictionLog(folder / PREDICTIONS) as predictions:
            pending = list(todo)
            while pending:
                if _is_cancelled(cancel):
                    cancelled = True
                    break
                if until_decided is not None:  # a decided language asks no more questions
                    decided = {lang for lang in langs if until_decided.decided(lang)}
                    pending = [q for q in pending if q.lang not in decided]
                    if not pending:
                        break
                batch, pending = pending[:chunk], pending[chunk:]
                new = score(runtime, batch, settings, shots)
                if until_decided is not None:
                    until_decided.feed(new)
                predictions.write(new)
                rows.extend(new)
                scored_now += len(new)
                n_correct += sum(1 for r in new if r["correct"])
                if progress is not None:
                    elapsed = time.perf_counter() - started
                    progress(BenchProgress(name, bench.label, len(rows), len(items), n_correct, elapsed,
                                           scored_now / elapsed if elapsed > 0 else 0.0, batch[-1].id))  # fmt: skip
    finally:
        if own_runtime and runtime is not None:
            runtime_facts = _runtime_info(runtime)
            runtime.close()
        else:
            runtime_facts = _runtime_info(runtime) if runtime is not None else {}
    eval_seconds = time.perf_counter() - started

    order = {(q.id, q.lang): i for i, q in enumerate(items)}
    rows.sort(key=lambda r: order[(r["id"], r["lang"])])
    totals = summarize(rows)
    latency = sum(float(r.get("latency_s", 0.0)) for r in rows)
    if not runtime_facts:  # everything was already done: keep what the first session recorded
        previous = _read_summary(folder)
        runtime_facts = previous.get("runtime", {})
        load_seconds = previous.get("timings", {}).get("load_seconds", 0.0)
    skipped = Counter(mode_skipped)
    if bench.skipped:
        skipped["unreadable"] = len(bench.skipped)
    metrics = {
        k: totals[k] for k in ("exact_match", "gestalt", "gestalt_accuracy", "unparsed") if k in totals
    }
    sequential = until_decided.record() if until_decided is not None else None
    stopped_early = until_decided is not None and until_decided.decided()
    summary = Summary(
        artifact=str(info.path), artifact_name=name, benchmark=bench.label, benchmark_format=bench.name,
        benchmark_version=bench.version, benchmark_hash=bench.content_hash, question_set_hash=qhash,
        complete=not cancelled and (len(rows) == len(items) or stopped_early), n=totals["n"], n_correct=totals["n_correct"],
        accuracy=totals["accuracy"], points=totals["points"], points_possible=totals["points_possible"],
        points_score=totals["points_score"], by_lang=totals["by_lang"], by_rule=totals["by_rule"],
        skipped=dict(skipped),
        skipped_records=[{"where": s.where, "reason": s.reason} for s in bench.skipped[:MAX_SKIPPED_LISTED]],
        settings={**settings.to_dict(), "langs": langs}, runtime=runtime_facts,
        timings={
            "load_seconds": round(load_seconds, 3),
            "eval_seconds_this_session": round(eval_seconds, 3),
            "scored_this_session": scored_now,
            "latency_seconds_total": round(latency, 3),
            "questions_per_second": round(len(rows) / latency, 4) if latency > 0 else 0.0,
            **_peak_memory(),
        },
        sha256=sha, size_bytes=info.size_bytes, out_dir=str(folder), metrics=metrics, sequential=sequential,
        repaired=[{"where": q.where, "lang": q.lang, "repair": q.meta["repaired"]}
                  for q in bench.records if q.meta.get("repaired")][:MAX_SKIPPED_LISTED],
        tokenizer_divergent_ids=parity.scored(rows), tokenizer_check=parity.record(),
    )  # fmt: skip
    write_text_atomic(folder / SUMMARY, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if summary.complete:
        _seal_run_folder(folder.parent, info, name, sha)
    return summary


def _tokenizer_check(plan: RunPlan, settings: BenchSettings, runtime: Any) -> TokenizerCheck:
    """Which planned questions the artifact tokenizes unlike its source (cached in the run folder)."""

    def opened() -> tuple[Any, bool]:
        if runtime is not None:
            return runtime, False
        from jmed_edge.runtimes import open_runtime

        return open_runtime(plan.info, **settings.runtime_options), True

    return check_artifact(
        plan.info, plan.folder, plan.items, settings, plan.sha256, plan.bench.content_hash, opened,
        lambda rt, q: render_prompt(rt, q, settings, plan.shots),
    )  # fmt: skip


def _shots(bench: Benchmark, lang: str, k: int) -> list[Question]:
    from jmed_edge.bench.prompting import pick_shots

    shots = pick_shots(bench.dev, lang, k)
    if len(shots) < k:
        raise DataError(
            f"--shots {k} needs {k} dev questions in {lang}, but benchmark {bench.label} has {len(shots)}; "
            "use fewer shots or a benchmark with a dev split (dev-*.jsonl)"
        )
    return shots


def _read_summary(folder: Path) -> dict[str, Any]:
    path = folder / SUMMARY
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except json.JSONDecodeError:
        return {}


def _seal_run_folder(folder: Path, info: ArtifactInfo, name: str, sha: str) -> None:
    """The artifact's run folder describes itself: kind "bench-run", parent = the artifact."""
    benchmarks = sorted(p.parent.name for p in folder.glob(f"*/{SUMMARY}"))
    Manifest(
        kind="bench-run",
        format="bench-run",
        name=name,
        parent={"path": str(Path(info.path).resolve()), "kind": info.kind, "sha256": sha},
        config={"benchmarks": benchmarks},
        details={"artifact_format": info.format},
    ).seal(folder)
