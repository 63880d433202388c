"""Bench results in lm-evaluation-harness's output shape, for dashboards that read lm-eval's files.

lm-eval 0.4's ``EvaluationTracker`` writes, per model, ``OUT/<model_name_sanitized>/results_<date>.json``
(``results.<task>.<metric>,<filter>``, ``groups``, ``group_subtasks``, ``configs``, ``versions``,
``n-shot``, ``higher_is_better``, ``n-samples``, ``config``, ``task_hashes`` and the run's
metadata) and, with ``--log_samples``, ``samples_<task>_<date>.jsonl`` (one line per document:
``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``, ``filter``,
``metrics``, the three hashes and the metric values). This module writes the same files from a
bench run folder: each benchmark × language is a task (``jmed-sample_ja``) in a group named
after the benchmark, scored with lm-eval's ``acc`` (mean, with its standard error) and, where the
benchmark has points (IgakuQA), ``points``. Letter log-likelihoods are the ``resps``, as lm-eval's
``multiple_choice`` tasks log them; generate-mode runs log the generated text. The prompt
(``arguments.gen_args_N.arg_0``) is the one the bench scored, as ``predictions.jsonl`` keeps it;
runs made before predictions kept prompts leave it empty (``doc`` still holds the question id,
language, gold and jmed-edge's pick).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jmed_edge import __version__
from jmed_edge.errors import ArtifactError

FILTER = "none"  # lm-eval's name for "no filter applied"


def sanitize_model_name(name: str) -> str:
    """lm-eval's ``utils.sanitize_model_name``: the results folder of a model."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _hash(text: str) -> str:  # lm-eval's utils.hash_string
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stderr(values: list[float]) -> float:
    """lm-eval's ``mean_stderr``: sample standard deviation / sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def _task(benchmark: str, lang: str) -> str:
    return f"{re.sub(r'[^0-9A-Za-z-]+', '_', benchmark)}_{lang}"


def _sample(i: int, row: dict[str, Any], mode: str) -> dict[str, Any]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    gold = row["gold"] if isinstance(row["gold"], str) else ",".join(row["gold"])
    pred = row.get("pred")
    doc = {k: row[k] for k in ("id", "lang", "gold", "category", "points") if k in row}
    doc["prediction"] = pred if isinstance(pred, str) else ",".join(pred or [])  # what jmed-edge read
    prompt = str(row.get("prompt", ""))
    if mode == "loglik":
        scores = row.get("scores", {}).get("letter", [])
        best = max(scores) if scores else None
        arguments = {
            f"gen_args_{j}": {"arg_0": prompt, "arg_1": f" {letters[j].upper()}"} for j in range(len(scores))
        }
        resps = [[[str(s), str(s == best)]] for s in scores]
        filtered = [[str(s), str(s == best)] for s in scores]
    else:
        arguments = {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": [], "do_sample": False}}}
        resps = [[row.get("response", "")]]
        filtered = [row.get("response", "")]
    sample = {
        "doc_id": i,
        "doc": doc,
        "target": gold,
        "arguments": arguments,
        "resps": resps,
        "filtered_resps": filtered,
        "filter": FILTER,
        "metrics": ["acc"],
        "doc_hash": _hash(json.dumps(doc, sort_keys=True, ensure_ascii=False)),
        "prompt_hash": _hash(prompt or f"{row['id']}:{row['lang']}"),
        "target_hash": _hash(gold),
        "acc": 1.0 if row.get("correct") else 0.0,
    }
    return sample


def _benchmark_folders(artifact_dir: Path) -> list[Path]:
    return sorted(p for p in artifact_dir.iterdir() if p.is_dir() and (p / "summary.json").is_file())


def export_artifact(
    artifact_dir: Path, out: Path, *, log_samples: bool = True, date_id: str | None = None
) -> Path:
    """Write one artifact's bench results (every benchmark in ``artifact_dir``) as lm-eval files.

    Returns the ``results_<date>.json`` written under ``out/<model_name_sanitized>/``.
    """
    from jmed_edge.bench.predictions import read_predictions

    folders = _benchmark_folders(artifact_dir)
    if not folders:
        raise ArtifactError(
            f"{artifact_dir} holds no benchmark results (no */summary.json); run jmed-edge bench"
        )
    date_id = date_id or datetime.now().isoformat().replace(":", "-")
    results: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    out_doc: dict[str, Any] = {k: {} for k in ("group_subtasks", "configs", "versions", "n-shot",
                                               "higher_is_better", "n-samples", "task_hashes")}  # fmt: skip
    samples_by_task: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, Any] = {}
    seconds = 0.0
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        first = first or summary
        settings = summary.get("settings", {})
        mode = settings.get("mode", "loglik")
        rows = read_predictions(folder / "predictions.jsonl")
        bench = summary["benchmark"]
        group = re.sub(r"[^0-9A-Za-z-]+", "_", bench)
        seconds += float(summary.get("timings", {}).get("latency_seconds_total", 0.0))
        subtasks = []
        all_acc: list[float] = []
        for lang in settings.get("langs") or sorted({r["lang"] for r in rows}):
            lang_rows = [r for r in rows if r["lang"] == lang]
            if not lang_rows:
                continue
            task = _task(bench, lang)
            subtasks.append(task)
            acc = [1.0 if r.get("correct") else 0.0 for r in lang_rows]
            all_acc += acc
            entry: dict[str, Any] = {"name": task, "alias": f" - {task}", "sample_len": len(acc),
                                     f"acc,{FILTER}": sum(acc) / len(acc), f"acc_stderr,{FILTER}": _stderr(acc)}  # fmt: skip
            by_lang = summary.get("by_lang", {}).get(lang, {})
            if summary.get("points_possible") and "points_score" in by_lang:
                entry[f"points,{FILTER}"] = float(by_lang["points_score"])
            results[task] = entry
            metric_list = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
            out_doc["configs"][task] = {
                "task": task,
                "tag": [group],
                "dataset_path": summary.get("benchmark_format", bench),
                "dataset_name": lang,
                "test_split": "test",
                "output_type": "multiple_choice" if mode == "loglik" else "generate_until",
                "num_fewshot": settings.get("shots", 0),
                "metric_list": metric_list,
                "repeats": 1,
                "should_decontaminate": False,
                "metadata": {"version": summary.get("benchmark_version") or 1.0, "jmed_edge": {
                    "benchmark": bench, "question_set_hash": summary.get("question_set_hash"),
                    "template": settings.get("template"), "scoring": settings.get("scoring"),
                    "complete": summary.get("complete")}},
            }  # fmt: skip
            out_doc["versions"][task] = summary.get("benchmark_version") or 1.0
            out_doc["n-shot"][task] = settings.get("shots", 0)
            out_doc["higher_is_better"][task] = {"acc": True}
            out_doc["n-samples"][task] = {"original": len(lang_rows), "effective": len(lang_rows)}
            samples = [_sample(i, r, mode) for i, r in enumerate(lang_rows)]
            samples_by_task[task] = samples
            out_doc["task_hashes"][task] = _hash(
                "".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples)
            )
        out_doc["group_subtasks"][group] = subtasks
        groups[group] = {"name": group, "alias": group, "sample_len": len(all_acc),
                         f"acc,{FILTER}": sum(all_acc) / len(all_acc) if all_acc else 0.0,
                         f"acc_stderr,{FILTER}": _stderr(all_acc)}  # fmt: skip
        out_doc["higher_is_better"][group] = {"acc": True}
        out_doc["versions"][group] = None
    for group, entry in groups.items():
        results[group] = entry
    model_name = first.get("artifact_name") or artifact_dir.name
    runtime = first.get("runtime", {})
    settings0 = first.get("settings", {})
    doc = {
        "results": results,
        "groups": groups,
        **out_doc,
        "config": {
            "model": f"jmed-edge-{runtime.get('name', 'runtime')}",
            "model_args": f"pretrained={first.get('artifact', '')}",
            "batch_size": str(settings0.get("batch_size", 1)),
            "batch_sizes": [],
            "device": "cpu",
            "limit": settings0.get("limit"),
            "bootstrap_iters": 0,
            "gen_kwargs": None,
            "random_seed": int(settings0.get("seed", 0)),
            "fewshot_seed": int(settings0.get("seed", 0)),
        },
        "date": datetime.now().timestamp(),
        "jmed_edge_version": __version__,
        "model_source": "jmed-edge",
        "model_name": model_name,
        "model_name_sanitized": sanitize_model_name(model_name),
        "system_instruction": None,
        "chat_template": None,
        "fewshot_as_multiturn": False,
        "start_time": 0.0,
        "end_time": seconds,
        "total_evaluation_time_seconds": str(seconds),
    }
    folder = Path(out) / sanitize_model_name(model_name)
    folder.mkdir(parents=True, exist_ok=True)
    results_file = folder / f"results_{date_id}.json"
    results_file.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    if log_samples:
        for task, samples in samples_by_task.items():
            with open(folder / f"samples_{task}_{date_id}.jsonl", "w", encoding="utf-8") as fh:
                for sample in samples:
                    fh.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return results_file


def export_run_dirs(run_dirs: list[Path], out: Path, *, log_samples: bool = True) -> list[Path]:
    """Every artifact folder with results in ``run_dirs`` -> lm-eval results files under ``out``."""
    date_id = datetime.now().isoformat().replace(":", "-")
    written = []
    for run_dir in run_dirs:
        if not Path(run_dir).is_dir():
            raise ArtifactError(f"{run_dir} is not a folder; pass the --out folder of jmed-edge bench")
        for artifact_dir in sorted(p for p in Path(run_dir).iterdir() if p.is_dir()):
            if _benchmark_folders(artifact_dir):
                written.append(export_artifact(artifact_dir, out, log_samples=log_samples, date_id=date_id))
    if not written:
        raise ArtifactError(
            f"no benchmark results under {', '.join(map(str, run_dirs))}; run jmed-edge bench"
        )
    return written
