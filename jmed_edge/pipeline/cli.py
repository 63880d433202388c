"""``jmed-edge run``: the whole pipeline from one recipe."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe file or shipped recipe name (see: jmed-edge recipes ls)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the recipe's output.dir)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe setting, e.g. --set convert.gguf.quants=[q8_0] (repeatable)")  # fmt: skip
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from jmed_edge.pipeline.run import run_pipeline

    result = run_pipeline(args.recipe, args.out, args.overrides)
    print(f"report: {result.report / 'report.html'}")
    return 0
