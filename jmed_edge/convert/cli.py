"""``jmed-edge convert``: a Hugging Face model to GGUF (llama.cpp types), or a peft LoRA to a GGUF LoRA."""

from __future__ import annotations

import argparse
from pathlib import Path

from jmed_edge.registry import Registry

# --to NAME -> function(args, console) -> {artifact name: folder}; each prints its own results.
TARGETS: Registry = Registry("conversion target")
TARGETS.add("gguf", "jmed_edge.convert.cli:to_gguf", "F16/BF16 GGUF and quantized GGUFs (llama.cpp)")
TARGETS.add("gguf-lora", "jmed_edge.convert.cli:to_gguf_lora", "a peft LoRA adapter as a GGUF LoRA")
TARGETS.add("onnx", "jmed_edge.convert.onnx.cli:to_onnx", "ONNX for onnxruntime(-genai): fp32, int8, int4")

EXAMPLES = """\
examples:
  jmed-edge convert runs/merged --to gguf --quant q8_0,q4_k_m --out runs/gguf
  jmed-edge convert default --to gguf --quant q8_0,q6_k,q5_k_m,q4_k_m,q4_0,q3_k_m,q2_k --out runs/gguf
  jmed-edge convert runs/merged --to gguf --preset cpu-8gb --out runs/gguf      (imatrix from ja/en medical text)
  jmed-edge convert runs/merged --to gguf --quant iq3_m,iq2_xs --imatrix auto --out runs/gguf
  jmed-edge convert runs/adapter --to gguf-lora --base-gguf runs/gguf/F16 --out runs/gguf-lora
  jmed-edge convert runs/merged --to onnx --onnx-precision int8,int4 --out runs/onnx
  jmed-edge convert --list-presets
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument(
        "src", nargs="?", help="Hugging Face model folder, peft adapter (--to gguf-lora), or 'default'"
    )
    parser.add_argument(
        "--to", default="gguf", metavar="TARGET", help=f"one of: {', '.join(TARGETS.names())} (default gguf)"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder; each type gets its own artifact folder inside"
    )
    parser.add_argument(
        "--quant",
        metavar="LIST",
        help="comma-separated llama.cpp types, e.g. q8_0,q4_k_m (default: q8_0,q4_k_m)",
    )
    parser.add_argument(
        "--preset", metavar="NAME", help="target-machine preset (see --list-presets) or a preset YAML file"
    )
    parser.add_argument(
        "--imatrix",
        metavar="auto|FILE|none",
        help="importance matrix for low-bit types: 'auto' computes one from bundled ja/en medical text",
    )
    parser.add_argument(
        "--outtype", choices=("f16", "bf16"), help="16-bit type of the base GGUF (default f16)"
    )
    parser.add_argument(
        "--pre-tokenizer",
        metavar="NAME",
        help="llama.cpp BPE pre-tokenizer name, overriding its hash lookup (recorded in the manifest)",
    )
    parser.add_argument(
        "--base-gguf",
        type=Path,
        metavar="PATH",
        help="gguf-lora: the base model's F16 GGUF to check the adapter on (else a temporary one)",
    )
    parser.add_argument("--force", action="store_true", help="replace existing artifact folders")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the checks against the source (not recommended)"
    )
    parser.add_argument("--list-presets", action="store_true", help="list target-machine presets and exit")
    parser.add_argument("--list-quants", action="store_true", help="list quantization types and exit")
    from jmed_edge.convert.onnx.cli import add_onnx_arguments

    add_onnx_arguments(parser)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.errors import ConfigError

    console = Console()
    if args.list_presets:
        return _list_presets(console)
    if args.list_quants:
        return _list_quants(console)
    if not args.src or not args.out:
        raise ConfigError(
            "convert needs SRC and --out, e.g.: jmed-edge convert runs/merged --to gguf --out runs/gguf"
        )
    target = TARGETS.get(args.to)
    target(args, console)
    return 0


def to_gguf(args: argparse.Namespace, console) -> dict[str, Path]:
    from jmed_edge.convert.console import RichProgress, artifacts_table
    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.convert.quant_types import DEFAULT_QUANTS

    quants, imatrix, outtype = args.quant, args.imatrix, args.outtype
    with RichProgress() as progress:
        if args.preset:
            from jmed_edge.convert.presets import load_preset

            preset = load_preset(args.preset)
            quants = quants or ",".join(preset.quants)
            imatrix = imatrix or preset.imatrix
            outtype = outtype or preset.outtype
            progress.note(f"preset {preset.name}: {preset.description}; types {quants}, imatrix {imatrix}")
        folders = convert_to_gguf(
            args.src,
            args.out,
            quants=quants if quants is not None else DEFAULT_QUANTS,
            imatrix=imatrix,
            outtype=outtype or "f16",
            force=args.force,
            verify=not args.no_verify,
            pre_tokenizer=args.pre_tokenizer,
            progress=progress,
        )
    console.print(artifacts_table(folders))
    return folders


def to_gguf_lora(args: argparse.Namespace, console) -> dict[str, Path]:
    from jmed_edge.convert.console import RichProgress
    from jmed_edge.convert.lora_gguf import convert_lora

    with RichProgress() as progress:
        out = convert_lora(
            Path(args.src),
            args.out,
            base_gguf=args.base_gguf,
            force=args.force,
            verify=not args.no_verify,
            progress=progress,
        )
    console.print(f"[green]✓[/] GGUF LoRA: {out}")
    return {"LoRA": out}


def _list_presets(console) -> int:
    from rich.table import Table

    from jmed_edge.convert.presets import load_preset, shipped_presets

    table = Table(title="conversion presets (jmed-edge convert SRC --to gguf --preset NAME --out DIR)")
    for column in ("preset", "device", "memory", "types", "imatrix", "description"):
        table.add_column(column)
    for name in shipped_presets():
        p = load_preset(name)
        table.add_row(
            name, p.device, p.memory, ", ".join(q.lower() for q in p.quants), p.imatrix, p.description
        )
    console.print(table)
    return 0


def _list_quants(console) -> int:
    from rich.table import Table

    from jmed_edge.convert.quant_types import QUANT_TYPES

    table = Table(title="llama.cpp quantization types (nominal bits/weight; llama.cpp's note)")
    for column in ("type", "bits/w", "imatrix", "note"):
        table.add_column(column)
    for q in QUANT_TYPES.values():
        table.add_row(q.name.lower(), f"{q.bpw:g}", q.imatrix, q.note)
    console.print(table)
    return 0
