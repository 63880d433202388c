"""``jmed-edge report``: the accuracy-loss report over one or more bench run folders."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="--out folders of jmed-edge bench"
    )
    parser.add_argument(
        "--reference", help="artifact name to compare against (e.g. demo-F16); required by --format report"
    )
    parser.add_argument(
        "--format", choices=("report", "lm-eval"), default="report",
        help="report (default): report.html/.md/.json; lm-eval: lm-evaluation-harness's results_<date>.json "
             "and samples_<task>_<date>.jsonl per artifact under OUT/<model>/, for tools that read lm-eval's output",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="report folder to write")
    parser.add_argument("--budget", default=None, help="RAM budget for the recommendation, e.g. 8GB")
    parser.add_argument(
        "--max-loss", type=float, default=1.0,
        help="accuracy loss allowed, in points (default 1.0): the non-inferiority margin every "
             "benchmark/language's 95%% interval must clear",
    )  # fmt: skip
    parser.add_argument(
        "--prefer", choices=("smallest", "fastest", "accurate"), default="smallest",
        help="which certified artifact to recommend (default smallest); ties go to the lower KL divergence",
    )  # fmt: skip
    parser.add_argument(
        "--no-kl", action="store_true", help="skip KL divergence (needs the artifacts on disk)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.fsutil import parse_bytes, refuse_overlap
    from jmed_edge.report.build import build_report, write_report
    from jmed_edge.report.recommend import check_max_loss
    from jmed_edge.report.terminal import print_summary

    if args.format == "lm-eval":
        return _lm_eval(args)
    if not args.reference:
        from jmed_edge.errors import ConfigError

        raise ConfigError(
            "report needs --reference NAME (the artifact to compare against), e.g. --reference demo-F16"
        )
    check_max_loss(args.max_loss)  # before anything is read
    refuse_overlap(args.out, {f"run folder {i + 1}": d for i, d in enumerate(args.run_dirs)})
    budget = parse_bytes(args.budget) if args.budget else None
    data = build_report(
        args.run_dirs, args.reference, budget_bytes=budget, max_loss=args.max_loss, kl=not args.no_kl,
        kl_cache=args.out.parent / f".{args.out.name}.kl-cache.json", seed=args.seed, prefer=args.prefer,
        refuse_unfit_budget=True,
    )  # fmt: skip
    out = write_report(data, args.out)
    console = Console()
    print_summary(data, console)
    console.print(f"report: {out / 'report.html'} (also report.md, report.json)")
    return 0


def _lm_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.fsutil import refuse_overlap
    from jmed_edge.report.lmeval import export_run_dirs

    refuse_overlap(args.out, {f"run folder {i + 1}": d for i, d in enumerate(args.run_dirs)})
    written = export_run_dirs(list(args.run_dirs), args.out)
    console = Console()
    for path in written:
        console.print(f"lm-eval results: {path} (samples_*.jsonl beside it)", highlight=False)
    return 0
