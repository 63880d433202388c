"""``jmed-edge demo``: the shipped demo recipe on the embedded default model, offline, on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)"
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.pipeline.run import run_pipeline

    console = Console(stderr=True)
    console.print(
        "[bold]jmed-edge demo[/]: LoRA-tune the embedded default model (SmolLM2-135M-Instruct, a stand-in "
        "for your 7B) on the bundled bilingual medical sample, merge it, convert it to GGUF, benchmark every "
        "artifact in Japanese and English, and report what quantization cost. Offline, CPU only."
    )
    started = time.perf_counter()
    result = run_pipeline("demo", args.out, console=console)
    minutes = (time.perf_counter() - started) / 60
    ran = (
        ", ".join(f"{name} {result.seconds[name] / 60:.1f}" for name in result.ran)
        or "nothing (all up to date)"
    )
    console.print(f"done in {minutes:.1f} min; ran (min): {ran}")
    print(f"report: {result.report / 'report.html'}")
    return 0
