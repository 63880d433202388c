"""``jmed-edge bench``: score artifacts on benchmarks, with live progress and a results table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  jmed-edge bench runs/gguf/Q4_K_M --benchmark jmed-sample --out runs/bench
  jmed-edge bench runs/merged runs/gguf/Q8_0 runs/gguf/Q4_K_M --benchmark igakuqa:~/IgakuQA/data \\
      --benchmark jmed-sample --lang ja,en --out runs/bench
  jmed-edge bench runs/gguf/Q4_K_M --benchmark medqa:test.jsonl --shots 3 --limit 200 --out runs/bench
  jmed-edge bench runs/merged --mode generate --template chat --out runs/bench-gen
  jmed-edge bench runs/gguf/Q4_K_M --benchmark igakuqa:~/IgakuQA/data --out runs/bench \\
      --until-decided --reference runs/bench/Qwen2-7B-jmed-F16 --max-loss 1.0

A killed run resumes when the same command is run again; --force starts over."""


def configure(parser: argparse.ArgumentParser) -> None:
    from jmed_edge.bench.settings import MODES, SCORINGS
    from jmed_edge.prompts import TEMPLATES

    parser.epilog = EXAMPLES
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="HF folder, adapter, GGUF or ONNX")
    parser.add_argument(
        "--benchmark",
        "-b",
        action="append",
        metavar="NAME[:PATH]",
        help="benchmark to run (repeatable; NAME alone for a bundled one); default jmed-sample",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="results folder")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="loglik",
        help="loglik: score every option; generate: answer, then read the letters",
    )
    parser.add_argument("--template", choices=list(TEMPLATES), default="medpalm", help="prompt format")
    parser.add_argument(
        "--shots", type=int, default=0, metavar="K", help="few-shot examples from the dev split"
    )
    parser.add_argument(
        "--lang", default="", metavar="ja,en", help="languages to score (default: all present)"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="a seeded sample of N questions")
    parser.add_argument("--seed", type=int, default=0, help="seed for --limit sampling and generation")
    parser.add_argument(
        "--scoring",
        choices=SCORINGS,
        default="letter",
        help="loglik pick: letter, option text (sum) or text-norm (per token)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="generate mode answer length")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count unreadable records")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (torch)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda[:N]")
    parser.add_argument("--n-threads", type=int, help="CPU threads for llama.cpp / torch")
    parser.add_argument("--n-ctx", type=int, help="llama.cpp context size (default min(model, 4096))")
    parser.add_argument("--lora", type=Path, metavar="GGUF", help="GGUF LoRA applied at run time (llama.cpp)")
    parser.add_argument("--base", type=Path, help="base model for an adapter artifact")
    parser.add_argument(
        "--force", action="store_true", help="discard earlier results in RUN_DIR and start over"
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="skip measuring load time, tokens/s and peak RAM of each artifact (for the report)",
    )
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    parser.add_argument(
        "--until-decided", action="store_true",
        help="ask questions in a seeded random order and stop once the loss against --reference is "
             "decided (an anytime-valid 95%% confidence sequence against --max-loss)",
    )  # fmt: skip
    parser.add_argument(
        "--reference", type=Path, metavar="RUN_DIR/ARTIFACT",
        help="with --until-decided: the reference's bench results (its folder under RUN_DIR)",
    )  # fmt: skip
    parser.add_argument(
        "--max-loss", type=float, default=1.0,
        help="with --until-decided: accuracy loss allowed, in points (default 1.0)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace):
    from jmed_edge.bench.settings import BenchSettings

    options: dict[str, Any] = {"device": args.device}
    for key, value in (("n_threads", args.n_threads), ("n_ctx", args.n_ctx), ("lora_path", args.lora),
                       ("base", args.base)):  # fmt: skip
        if value is not None:
            options[key] = str(value) if isinstance(value, Path) else value
    langs = tuple(part.strip() for part in args.lang.split(",") if part.strip())
    return BenchSettings(
        mode=args.mode, template=args.template, shots=args.shots, langs=langs, limit=args.limit,
        seed=args.seed, scoring=args.scoring, max_new_tokens=args.max_new_tokens, skip_bad=args.skip_bad,
        batch_size=args.batch_size, runtime_options=options,
    )  # fmt: skip


def _labels(benchmarks: list[Any]) -> None:
    """Two benchmarks of one format (two IgakuQA folders) get distinct result folders."""
    seen: dict[str, int] = {}
    for bench in benchmarks:
        count = seen.get(bench.label, 0)
        seen[bench.label] = count + 1
        if count:
            bench.label = f"{bench.label}-{bench.path.stem or count + 1}"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.artifacts import describe
    from jmed_edge.bench.registry import load_benchmark
    from jmed_edge.runtimes import open_runtime

    settings = _settings(args)
    settings.validate()
    _check_sequential(args)
    console = Console(stderr=True, highlight=False)
    # Everything a user can get wrong is checked before any model loads.
    artifacts = [describe(Path(a)) for a in args.artifacts]
    benchmarks = [
        load_benchmark(spec, skip_bad=args.skip_bad) for spec in (args.benchmark or ["jmed-sample"])
    ]
    _labels(benchmarks)
    for bench in benchmarks:
        if bench.skipped:
            console.print(f"[yellow]{bench.label}: skipped {len(bench.skipped)} unreadable records[/] "
                          f"(first: {bench.skipped[0].where}: {bench.skipped[0].reason})")  # fmt: skip
    from jmed_edge.bench.runner import plan_run

    # Resumability is checked for every pair before any model loads.
    plans = {(i, j): plan_run(info, bench, args.out, settings)
             for i, info in enumerate(artifacts) for j, bench in enumerate(benchmarks)}  # fmt: skip
    for plan in plans.values():
        plan.check(args.force)
    summaries = []
    for i, info in enumerate(artifacts):
        runtime = None
        try:
            for j, bench in enumerate(benchmarks):
                if runtime is None and (args.force or plans[i, j].remaining()):
                    with console.status(f"loading {info.path}"):
                        options = dict(settings.runtime_options)
                        if info.format in ("hf-safetensors", "peft-adapter"):
                            options["batch_size"] = settings.batch_size
                        runtime = open_runtime(info, **options)
                summaries.append(_run_one(info, bench, args, settings, runtime, console))
        finally:
            if runtime is not None:
                runtime.close()
        if not args.no_probe:
            _probe(info, args.out, console, options=settings.runtime_options)
    if args.json:
        print(json.dumps([s.to_dict() for s in summaries], ensure_ascii=False, indent=2))
    else:
        _print_table(summaries)
    return 0 if all(s.complete for s in summaries) else 1


def _run_one(info: Any, bench: Any, args: argparse.Namespace, settings: Any, runtime: Any, console: Any):
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jmed_edge.bench.runner import run_benchmark
    from jmed_edge.bench.tokenizer_check import note as tokenizer_note

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]:.3f}  {task.fields[qps]:.2f} q/s"), TimeRemainingColumn(),
        console=console, transient=False,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"{info.name} / {bench.label}", total=None, acc=0.0, qps=0.0)

        def report(p: Any) -> None:
            bar.update(task, completed=p.done, total=p.total, acc=p.accuracy, qps=p.questions_per_second)

        summary = run_benchmark(
            info, bench, args.out, settings, progress=report, runtime=runtime, force=args.force,
            until_decided=_stopping_rule(args, bench) if args.until_decided else None,
        )  # fmt: skip
        for lang, seq in (summary.sequential or {}).items():
            verdict = {True: "non-inferior", False: "inferior", None: "undecided"}[seq["noninferior"]]
            ci = seq["delta_ci"] or {"low": float("nan"), "high": float("nan")}
            console.print(f"{info.name} / {bench.label} / {lang}: {verdict} after {seq['n_used']} of "
                          f"{seq['n_available']} questions (Δ in [{ci['low']:+.1f}, {ci['high']:+.1f}] points)")  # fmt: skip
        if (line := tokenizer_note(summary)) is not None:
            console.print(f"[yellow]{escape(line)}[/]", highlight=False)
        bar.update(task, completed=summary.n, total=summary.n, acc=summary.accuracy,
                   qps=summary.timings.get("questions_per_second", 0.0))  # fmt: skip
    return summary


def _check_sequential(args: argparse.Namespace) -> None:
    """--until-decided needs a reference run and a positive margin; checked before any model loads."""
    from jmed_edge.errors import ConfigError

    if not args.until_decided:
        if args.reference is not None:
            raise ConfigError(
                "--reference is used with --until-decided; add --until-decided or drop --reference"
            )
        return
    if args.reference is None:
        raise ConfigError(
            "--until-decided needs --reference RUN_DIR/<reference-artifact>: bench the reference first, "
            "then point at its folder"
        )
    if not args.reference.is_dir():
        raise ConfigError(f"--reference {args.reference} is not a folder; give RUN_DIR/<reference-artifact>")
    from jmed_edge.report.recommend import check_max_loss

    check_max_loss(args.max_loss)


def _stopping_rule(args: argparse.Namespace, bench: Any):
    """The reference's answers on this benchmark, read from its bench folder."""
    from jmed_edge.bench.predictions import PREDICTIONS, read_predictions
    from jmed_edge.bench.sequential import UntilDecided
    from jmed_edge.errors import ConfigError

    path = args.reference / bench.label / PREDICTIONS
    if not path.exists():
        raise ConfigError(
            f"--reference {args.reference} has no {bench.label} results ({path} is missing); "
            f"bench the reference on {bench.label} first"
        )
    answers = {(str(r["id"]), str(r["lang"])): bool(r.get("correct")) for r in read_predictions(path)}
    return UntilDecided(answers, max_loss=args.max_loss, reference_path=str(args.reference))


def _probe(info: Any, out: Path, console: Any, *, options: dict[str, Any]) -> None:
    """Speed and peak RAM of the artifact alone, in a fresh process, for ``jmed-edge report``."""
    from jmed_edge.bench.artifact_id import artifact_label, artifact_sha256
    from jmed_edge.errors import JmedError
    from jmed_edge.report.probe import record_perf

    with console.status(f"measuring speed and memory of {info.path}"):
        try:
            perf, _ = record_perf(
                info.path, out / artifact_label(info), artifact_sha256(info), options=options
            )
        except JmedError as exc:  # the scores stand; the report falls back to a size-based RAM estimate
            console.print(f"[yellow]speed/memory probe skipped:[/] {exc}")
            return
    console.print(f"{artifact_label(info)}: peak RAM {perf['peak_rss_bytes'] / 2**20:.0f} MiB, "
                  f"prompt {perf['prompt_tokens_per_second']:.0f} tok/s, "
                  f"generation {perf['decode_tokens_per_second']:.1f} tok/s")  # fmt: skip


def _print_table(summaries: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for header in ("artifact", "benchmark", "lang", "n", "accuracy", "points", "q/s", "skipped"):
        table.add_column(header, overflow="fold")
    for s in summaries:
        skipped = ", ".join(f"{k} {v}" for k, v in s.skipped.items()) or "-"
        qps = f"{s.timings.get('questions_per_second', 0):.2f}"
        table.add_row(s.artifact_name, s.benchmark, "all", str(s.n), f"{s.accuracy:.3f}",
                      f"{s.points:g}/{s.points_possible:g}", qps, skipped)  # fmt: skip
        for lang, block in s.by_lang.items():
            table.add_row("", "", lang, str(block["n"]), f"{block['accuracy']:.3f}",
                          f"{block['points']:g}/{block['points_possible']:g}", "", "")  # fmt: skip
    Console().print(table)
    out = {Path(s.out_dir).parent.parent for s in summaries}
    Console().print(f"predictions and summaries under {', '.join(str(o) for o in sorted(out))}")
