"""``jmed-edge model``: materialise the embedded default model, or describe a model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_cmd", metavar="COMMAND", required=True)
    default = sub.add_parser(
        "default",
        help="print the path of the default model's Hugging Face folder, creating it once",
        epilog="example:\n  jmed-edge model default",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default.add_argument("--force", action="store_true", help="rebuild the cached folder")
    default.set_defaults(func=_default)
    info = sub.add_parser(
        "info",
        help="show an artifact's manifest (kind, format, parent, verification)",
        epilog="example:\n  jmed-edge model info runs/demo/gguf/Q4_K_M",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("artifact", type=Path)
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=_info)


def _default(args: argparse.Namespace) -> int:
    from jmed_edge.models.default import materialise

    print(materialise(force=args.force))
    return 0


def _info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from jmed_edge.errors import ArtifactError
    from jmed_edge.manifest import check_files, read_manifest

    if not args.artifact.exists():
        raise ArtifactError(f"{args.artifact} does not exist")
    manifest = read_manifest(args.artifact)
    if args.json:
        print(json.dumps(asdict(manifest), indent=2, ensure_ascii=False))
        return 0
    table = Table(title=str(args.artifact), show_header=False)
    table.add_row("kind / format", f"{manifest.kind} / {manifest.format}")
    table.add_row("name", manifest.name)
    table.add_row("parent", json.dumps(manifest.parent, ensure_ascii=False) if manifest.parent else "-")
    table.add_row("licence", manifest.license)
    table.add_row("created", manifest.created)
    table.add_row(
        "files", f"{len(manifest.files)} ({', '.join(check_files(args.artifact, manifest)) or 'all present'})"
    )
    for key, value in manifest.verification.items():
        table.add_row(f"verify: {key}", json.dumps(value, ensure_ascii=False)[:100])
    Console().print(table)
    return 0
