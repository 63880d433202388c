"""``jmed-edge setup``: prepare everything that later runs offline (converter, imatrix tool)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="fetch and rebuild even if present")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: all CPUs)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.convert.llamacpp_tools import setup_tools, tools_status

    console = Console(stderr=True)
    ready, detail = tools_status()
    if ready and not args.force:
        console.print(f"[green]✓[/] {detail}")
        return 0
    with console.status(
        "fetching llama.cpp's converter and building llama-imatrix and llama-quantize (once, ~5 min)"
    ):
        setup_tools(force=args.force, jobs=args.jobs)
    console.print(f"[green]✓[/] {tools_status()[1]}")
    return 0
