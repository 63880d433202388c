"""``jmed-edge convert``: a Hugging Face model to GGUF (llama.cpp types) or ONNX (onnxruntime-genai),
or a peft LoRA to a GGUF LoRA. ``--quant`` names what to make for either format: llama.cpp types
for GGUF, precisions for ONNX (``--onnx-precision`` is its older spelling for ONNX)."""

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
  jmed-edge convert runs/merged --name Llama-3-ELYZA-JP-8B-med --out runs/gguf   (…-Q4_K_M.gguf)
  jmed-edge convert default --to gguf --quant q8_0,q6_k,q5_k_m,q4_k_m,q4_0,q3_k_m,q2_k --out runs/gguf
  jmed-edge convert runs/merged --to gguf --preset cpu-8gb --out runs/gguf      (imatrix from ja/en medical text)
  jmed-edge convert runs/merged --to gguf --quant iq3_m,iq2_xs --out runs/gguf
  jmed-edge convert runs/merged --to gguf --budget 4.5GB --lang-weight ja=0.7,en=0.3 --out runs/gguf
      (MIX-4.5GB: per-tensor types from measured ja/en sensitivity; tensor-types.txt beside it)
  jmed-edge convert runs/merged --to gguf --quant q4_0 --imatrix none --out runs/gguf   (opt out)
  jmed-edge convert runs/adapter --to gguf-lora --base-gguf runs/gguf/F16 --out runs/gguf-lora
  jmed-edge convert runs/merged --to onnx --quant int8,int4 --out runs/onnx
  jmed-edge convert --list-presets | --list-quants
"""


def _targets_text() -> str:
    rows = [f"  {e.name:<10} {e.help}" for e in TARGETS.entries()]
    return "targets (--to):\n" + "\n".join(rows) + "\n\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _targets_text() + EXAMPLES
    parser.add_argument(
        "src", nargs="?", help="Hugging Face model folder, peft adapter (--to gguf-lora), or 'default'"
    )
    parser.add_argument(
        "--to",
        default="gguf",
        metavar="TARGET",
        help=f"one of: {', '.join(TARGETS.names())} (default gguf; see below)",
    )
    parser.add_argument(
        "--out", type=Path, help="output folder; each type gets its own artifact folder inside"
    )
    parser.add_argument(
        "--quant",
        metavar="LIST",
        help="what to make, comma-separated: llama.cpp types for --to gguf, e.g. q8_0,q4_k_m "
        "(default q8_0,q4_k_m); precisions for --to onnx: fp32,fp16,int8,int4 (default fp32,int8,int4); "
        "--list-quants shows both",
    )
    parser.add_argument(
        "--budget",
        metavar="SIZE[,SIZE]",
        help="gguf: also make a mixed-precision GGUF per size (e.g. 5.5GB) whose per-tensor types are "
        "chosen from measured ja/en sensitivity to fit it (artifact MIX-5.5GB); same as --quant mix:5.5GB",
    )
    parser.add_argument(
        "--budget-ram",
        metavar="SIZE",
        help="gguf: like --budget, for a peak RAM at --ram-context tokens (the runtime's overhead is "
        "measured on the F16 GGUF); artifact MIX-RAM<SIZE>",
    )
    parser.add_argument(
        "--ram-context",
        type=int,
        metavar="N",
        help="--budget-ram: the context length the RAM must hold (default 4096)",
    )
    parser.add_argument(
        "--mix",
        choices=("auto",),
        default="auto",
        help="how --budget chooses types: auto measures each tensor group's KL per type (default)",
    )
    parser.add_argument(
        "--lang-weight",
        metavar="ja=W,en=W",
        help="--budget: weight of each language's KL in the search (default ja=0.5,en=0.5)",
    )
    parser.add_argument(
        "--mix-types",
        metavar="LIST",
        help="--budget: ggml types to choose from per tensor (default q2_k,q3_k,q4_k,q5_k,q6_k,q8_0,f16)",
    )
    parser.add_argument(
        "--mix-bands",
        type=int,
        metavar="N",
        help="--budget: layer bands per tensor role (default 2; more = finer choice, more probes)",
    )
    parser.add_argument(
        "--preset", metavar="NAME", help="target-machine preset (see --list-presets) or a preset YAML file"
    )
    parser.add_argument(
        "--imatrix",
        metavar="auto|FILE|none",
        help="importance matrix for every type whose quantizer takes one (K-quants, IQ types, "
        "Q4_0/Q4_1/Q5_0/Q5_1): 'auto' (default) computes one from bundled ja/en medical text, "
        "FILE uses yours, 'none' opts out",
    )
    parser.add_argument(
        "--outtype", choices=("f16", "bf16"), help="16-bit type of the base GGUF (default f16)"
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        help="gguf: model name for the files (NAME-Q4_K_M.gguf) and general.name (default: the "
        "source's manifest name); Japanese is kept in the metadata, the file name keeps A-Z a-z 0-9 . _ -",
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
    parser.add_argument(
        "--list-quants", action="store_true", help="list GGUF quantization types and ONNX precisions and exit"
    )
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
    if args.to != "gguf":
        _refuse_gguf_mix(args)
    target(args, console)
    return 0


def _refuse_gguf_mix(args: argparse.Namespace) -> None:
    """A budget (per-tensor llama.cpp types) given to another target: one line, before any work."""
    from jmed_edge.errors import ConfigError

    mixes = [n for n in (args.quant or "").split(",") if n.strip().lower().startswith("mix:")]
    given = [flag for flag, value in (("--budget", args.budget), ("--budget-ram", args.budget_ram)) if value]
    if given or mixes:
        raise ConfigError(
            f"{(given or mixes)[0]} chooses llama.cpp types per tensor and applies to --to gguf; "
            f"for --to {args.to} pick a precision with --quant (e.g. --quant int8,int4)"
        )


def to_gguf(args: argparse.Namespace, console) -> dict[str, Path]:
    from jmed_edge.convert.console import RichProgress, artifacts_table
    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.convert.mix import mix_spec, split_mix
    from jmed_edge.convert.quant_types import DEFAULT_QUANTS

    _refuse_onnx_names(args)
    quants, imatrix, outtype = args.quant, args.imatrix, args.outtype
    budgets = [b for b in (args.budget or "").replace(" ", "").split(",") if b]
    with RichProgress() as progress:
        if args.preset:
            from jmed_edge.convert.presets import load_preset

            preset = load_preset(args.preset)
            if quants is None:
                quants = ",".join(preset.quants)
                budgets += preset.budgets
            imatrix = imatrix or preset.imatrix
            outtype = outtype or preset.outtype
            what = ", ".join([*preset.quants, *(f"mix:{b}" for b in preset.budgets)])
            progress.note(f"preset {preset.name}: {preset.description}; types {what}, imatrix {imatrix}")
        types, in_quant = split_mix(quants)
        budgets += in_quant
        mixes = [
            mix_spec(b, args.lang_weight, args.mix_types, args.mix_bands) for b in dict.fromkeys(budgets)
        ]
        if args.budget_ram:
            mixes.append(
                mix_spec(
                    args.budget_ram,
                    args.lang_weight,
                    args.mix_types,
                    args.mix_bands,
                    ram=True,
                    n_ctx=args.ram_context,
                )
            )
        folders = convert_to_gguf(
            args.src,
            args.out,
            # --budget alone makes the mixed GGUF, not the default types too
            quants=types if quants is not None or mixes else DEFAULT_QUANTS,
            mixes=mixes,
            imatrix=imatrix,
            outtype=outtype or "f16",
            force=args.force,
            verify=not args.no_verify,
            pre_tokenizer=args.pre_tokenizer,
            name=args.name,
            progress=progress,
        )
    console.print(artifacts_table(folders))
    return folders


def _refuse_onnx_names(args: argparse.Namespace) -> None:
    """ONNX precisions given to a GGUF conversion: say which target takes them."""
    from jmed_edge.convert.onnx.options import PRECISIONS
    from jmed_edge.errors import ConfigError

    if getattr(args, "onnx_precision", None):
        raise ConfigError(
            f"--onnx-precision {args.onnx_precision} applies to --to onnx; for --to {args.to} "
            "pass llama.cpp types with --quant, e.g. --quant q8_0,q4_k_m"
        )
    names = [n.strip().lower() for n in (args.quant or "").split(",") if n.strip()]
    onnx = [n for n in names if n in PRECISIONS]
    if onnx:
        raise ConfigError(
            f"{', '.join(onnx)} {'is an ONNX precision' if len(onnx) == 1 else 'are ONNX precisions'}; "
            f"use --to onnx --quant {','.join(onnx)}, or llama.cpp types for --to gguf "
            "(e.g. f16 via --outtype, q8_0, q4_k_m; --list-quants shows them)"
        )


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
        types = [q.lower() for q in p.quants] + [f"mix:{b}" for b in p.budgets]
        table.add_row(name, p.device, p.memory, ", ".join(types), p.imatrix, p.description)
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
    onnx = Table(title="ONNX precisions (--to onnx --quant LIST; onnxruntime-genai's model builder)")
    for column in ("precision", "targets", "note"):
        onnx.add_column(column)
    for name, targets, note in ONNX_PRECISION_NOTES:
        onnx.add_row(name, targets, note)
    console.print(onnx)
    return 0


# From convert/onnx/options.py's VALID_COMBINATIONS and the table in FINDINGS (135M, CPU).
ONNX_PRECISION_NOTES = (
    ("fp32", "cpu, cuda", "unquantized; the reference"),
    ("fp16", "cuda, dml", "half precision; GPU only"),
    ("int8", "cpu, cuda", "weight-only int8 (MatMulNBits), near-lossless"),
    ("int4", "cpu, cuda, dml", "weight-only int4 (MatMulNBits, block 32), the smallest and fastest"),
)
