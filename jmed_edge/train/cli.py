"""``jmed-edge train RECIPE [--set key=value ...] [--out DIR] [--resume] [--force]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EXAMPLES = """
more examples:
  jmed-edge train demo                                   # the shipped demo recipe, on CPU
  jmed-edge train my-recipe.yaml --set lora.r=16 --set train.lr=1e-4
  jmed-edge train my-recipe.yaml --resume                # continue from the last checkpoint
  accelerate launch --config_file recipes/accelerate/ddp.yaml -m jmed_edge train my-recipe.yaml
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (parser.epilog or "") + "\n" + EXAMPLES
    parser.add_argument(
        "recipe", help="recipe YAML file, or the name of a shipped recipe (jmed-edge recipes ls)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe setting, e.g. --set train.max_steps=20 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="adapter folder (default: the recipe's output.dir)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUT.checkpoints/"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing OUT and its checkpoints")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning
    # threads made training steps 2-3x slower (measured on 2 cores); set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console

    from jmed_edge.manifest import read_manifest
    from jmed_edge.train import TrainingInterrupted, run_training

    console = Console(stderr=True, highlight=False)
    try:
        out = run_training(
            args.recipe, out=args.out, overrides=args.overrides, resume=args.resume,
            force=args.force, progress=not args.quiet,
        )  # fmt: skip
    except TrainingInterrupted as stop:
        console.print(
            f"[yellow]interrupted at step {stop.step}/{stop.max_steps}[/]: adapter so far saved to {stop.adapter}; "
            f"continue with: jmed-edge train {args.recipe} --resume"
            + (f" --out {args.out}" if args.out else "")
        )
        return 130
    manifest = read_manifest(out, required=False)
    if manifest is not None:
        print(f"adapter written to {out}: {_summary(manifest.details)}")
    return 0


def _summary(d: dict) -> str:
    """Steps, loss trend (mean of the first and last few logged steps: single steps are noisy), eval loss."""
    parts = [f"{d['steps']} steps"]
    if d.get("loss_start") is not None:
        parts.append(f"loss {d['loss_start']:.3f} -> {d['loss_end']:.3f}")
    if d.get("eval_loss") is not None:
        start = f"{d['eval_loss_start']:.3f} -> " if d.get("eval_loss_start") is not None else ""
        parts.append(f"eval loss {start}{d['eval_loss']:.3f}")
    parts.append(f"{d['tokens_per_second']:,.0f} tok/s, {d['train_seconds']:.0f} s")
    return ", ".join(parts)
