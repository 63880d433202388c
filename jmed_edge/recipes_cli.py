"""``jmed-edge recipes``: list the shipped recipes, or copy one to edit (like ``tune cp``)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from jmed_edge.errors import ConfigError, did_you_mean
from jmed_edge.resources import shipped


def shipped_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(shipped("recipes").glob("*.yaml"))}


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe path, or the name of a shipped recipe ("demo" -> recipes/demo.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipes = shipped_recipes()
    if str(name_or_path) in recipes:
        return recipes[str(name_or_path)]
    raise ConfigError(
        f'recipe "{name_or_path}" is neither a file nor a shipped recipe'
        f"{did_you_mean(str(name_or_path), recipes)}; see: jmed-edge recipes ls"
    )


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and line.strip("# ").strip():
            return line.strip("# ").strip()
    return ""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="recipes_cmd", metavar="COMMAND", required=True)
    ls = sub.add_parser("ls", help="list shipped recipes")
    ls.set_defaults(func=_ls)
    cp = sub.add_parser("cp", help="copy a shipped recipe to a file you can edit")
    cp.add_argument("name")
    cp.add_argument("dest", type=Path)
    cp.add_argument("--force", action="store_true", help="overwrite DEST")
    cp.set_defaults(func=_cp)


def _ls(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="shipped recipes (copy one: jmed-edge recipes cp NAME FILE)")
    table.add_column("name")
    table.add_column("what")
    for name, path in shipped_recipes().items():
        table.add_row(name, _first_comment(path))
    Console().print(table)
    return 0


def _cp(args: argparse.Namespace) -> int:
    source = resolve_recipe(args.name)
    if args.dest.exists() and not args.force:
        raise ConfigError(f"{args.dest} already exists; pass --force to overwrite it")
    shutil.copyfile(source, args.dest)
    print(f"copied {source.name} to {args.dest}")
    return 0
