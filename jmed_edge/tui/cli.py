"""``jmed-edge tui``: the terminal interface over the artifacts under a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """\
examples:
  jmed-edge tui                      the artifacts under ./runs
  jmed-edge tui --root runs/demo     after jmed-edge demo

Screens: 1 Artifacts, 2 Chat, 3 Bench, 4 Report. F1 or ? shows every key; Ctrl+Q quits."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("--root", type=Path, default=Path("runs"), metavar="DIR",
                        help="folder to find artifacts and bench runs in (default: runs)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jmed_edge.chat.model import force_offline
    from jmed_edge.errors import ConfigError

    if args.root.exists() and not args.root.is_dir():
        raise ConfigError(
            f"--root {args.root} is a file; give the folder that holds your artifacts (e.g. runs)"
        )
    force_offline()
    from jmed_edge.tui.app import run_tui

    return run_tui(args.root, debug=args.debug)
