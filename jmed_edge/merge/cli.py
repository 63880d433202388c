"""``jmed-edge merge ADAPTER [--base PATH] [--dtype bf16|fp16|fp32] --out DIR [--force]``."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """
more examples:
  jmed-edge merge runs/adapter --dtype fp32 --out runs/merged     # fp32 weights from a bf16 base (twice the disk)
  jmed-edge merge runs/adapter --base /models/Qwen2-7B-Instruct --out runs/merged
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (parser.epilog or "") + "\n" + EXAMPLES
    parser.add_argument(
        "adapter", type=Path, help="LoRA adapter folder (written by jmed-edge train, or any peft adapter)"
    )
    parser.add_argument(
        "--base", help="base model folder (default: the base named in the adapter's manifest)"
    )
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), default=None,
        help="precision of the merged weights (default: the base's own, e.g. bf16 for Qwen2-7B)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged model")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from jmed_edge.manifest import read_manifest
    from jmed_edge.merge import merge_adapter

    console = Console(stderr=True, highlight=False)
    with console.status(f"merging {args.adapter} ({args.dtype or 'base dtype'}) and checking the merge"):
        out = merge_adapter(args.adapter, args.out, base=args.base, dtype=args.dtype, force=args.force)
    manifest = read_manifest(out)
    v = manifest.verification
    table = Table(
        title=f"merge check: reloaded {out.name} vs base + adapter ({v['positions']} probe positions)"
    )
    for column in ("check", "value", "limit", ""):
        table.add_column(column)
    table.add_row("max |logit diff|", f"{v['max_abs_diff']:.3g}", f"<= {v['tolerance']:.3g}", "[green]✓[/]")
    table.add_row("top-1 agreement", f"{v['top1_agreement']:.1%}", f">= {v['min_top1']:.0%}", "[green]✓[/]")
    table.add_row("adapter effect (max |diff| vs base)", f"{v['adapter_effect_max_abs']:.3g}", "", "")
    Console(highlight=False).print(table)
    print(f"{manifest.details['note']} Merged model written to {out}")
    return 0
