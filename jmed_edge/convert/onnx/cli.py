"""Command-line glue for ONNX conversion and verification (rich output lives here only).

``add_onnx_arguments(parser)`` adds the ``--onnx-*`` options to a parser that already has the
source, ``--out``, ``--force`` and ``--no-verify``; ``run_onnx_from_args(args)`` runs the
conversion and prints a table. ``python -m jmed_edge.convert.onnx`` uses both on its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jmed_edge.errors import ConfigError, did_you_mean

PRESET_KEYS = ("description", "precisions", "target", "options")


def add_onnx_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ONNX (--to onnx)")
    group.add_argument(
        "--onnx-precision",
        default=None,
        metavar="LIST",
        help="alias of --quant for --to onnx: comma-separated precisions fp32,int8,int4 (default), "
        "fp16 on cuda/dml",
    )
    group.add_argument(
        "--onnx-target",
        default=None,
        choices=("cpu", "cuda", "dml"),
        help="execution provider the model is built for (default cpu)",
    )
    group.add_argument(
        "--onnx-exporter",
        default="genai-builder",
        metavar="NAME",
        help="exporter (default genai-builder: onnxruntime-genai's model builder)",
    )
    group.add_argument(
        "--onnx-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="block_size=16|32|64|128|256, symmetric=true|false, accuracy_level=0..4, "
        "lm_head=same|fp32|int8|int4, shared_embeddings=true|false, "
        "algorithm=default|rtn|k_quant, builder.KEY=VALUE (raw builder option)",
    )
    group.add_argument("--onnx-preset", default=None, metavar="NAME|FILE",
                       help="a shipped preset (convert/onnx/NAME.yaml) or a YAML file with "
                       "precisions, target, options; --onnx-* flags override it")  # fmt: skip


def load_preset(name: str) -> dict[str, Any]:
    """A preset YAML by shipped name or path; unknown keys are an error listing the known ones."""
    import yaml

    from jmed_edge.resources import shipped, shipped_root

    path = Path(name)
    if not path.is_file():
        folder = shipped_root() / "convert" / "onnx"
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        if name not in known:
            raise ConfigError(
                f'unknown ONNX preset "{name}"{did_you_mean(name, known)}; known: {", ".join(known)}'
            )
        path = shipped(f"convert/onnx/{name}.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc})") from exc
    unknown = [k for k in data if k not in PRESET_KEYS]
    if not isinstance(data, dict) or unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; a preset has {', '.join(PRESET_KEYS)}"
        )
    return data


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """precisions, target, exporter and options from a preset plus the --onnx-* flags."""
    from jmed_edge.convert.onnx.options import parse_option_pairs

    preset = load_preset(args.onnx_preset) if getattr(args, "onnx_preset", None) else {}
    options = dict(preset.get("options") or {})
    flags = parse_option_pairs(list(getattr(args, "onnx_option", []) or []))
    builder = {**options.get("builder_options", {}), **flags.pop("builder_options", {})}
    options.update(flags)
    if builder:
        options["builder_options"] = builder
    precisions = _requested_precisions(args) or preset.get("precisions") or "fp32,int8,int4"
    if isinstance(precisions, list):
        precisions = ",".join(precisions)
    return {"precisions": precisions, "target": args.onnx_target or preset.get("target") or "cpu",
            "exporter": args.onnx_exporter, "options": options}  # fmt: skip


def _names(spec: str | None) -> list[str]:
    return [part.strip().lower() for part in (spec or "").split(",") if part.strip()]


def _requested_precisions(args: argparse.Namespace) -> str | None:
    """``--quant`` (the one flag for every target) or its alias ``--onnx-precision``; GGUF type
    names get a line saying they belong to ``--to gguf``."""
    from jmed_edge.convert.onnx.options import PRECISIONS
    from jmed_edge.convert.quant_types import QUANT_TYPES

    quant, alias = getattr(args, "quant", None), getattr(args, "onnx_precision", None)
    if quant and alias and _names(quant) != _names(alias):
        raise ConfigError(
            f"--quant {quant} and --onnx-precision {alias} disagree; --onnx-precision is an alias of "
            "--quant for --to onnx: pass one of them"
        )
    names = _names(quant or alias)
    gguf = [n for n in names if n not in PRECISIONS and n.upper() in QUANT_TYPES]
    if gguf:
        raise ConfigError(
            f"{', '.join(gguf)} {'is a GGUF type' if len(gguf) == 1 else 'are GGUF types'} (--to gguf); "
            f"--to onnx takes the precisions {', '.join(PRECISIONS)}, e.g. --quant int8,int4"
        )
    return ",".join(names) or None


def run_onnx_from_args(args: argparse.Namespace) -> int:
    """Convert as the arguments say and print one table row per precision. Returns 0."""
    from rich.console import Console

    to_onnx(args, Console())
    return 0


def to_onnx(args: argparse.Namespace, console) -> dict[str, Path]:
    """``jmed-edge convert --to onnx``: the conversion target function (prints its own table)."""
    from jmed_edge.convert.onnx.convert import convert_to_onnx

    if not getattr(args, "src", None) or not getattr(args, "out", None):
        raise ConfigError(
            "convert needs SRC and --out, e.g.: jmed-edge convert runs/merged --to onnx --out runs/onnx"
        )
    if getattr(args, "name", None):
        raise ConfigError(
            "--name applies to --to gguf (GGUF file names and metadata); ONNX folders are onnx-<precision>"
        )
    request = request_from_args(args)
    written = convert_to_onnx(args.src, args.out, request["precisions"], target=request["target"],
                              exporter=request["exporter"], options=request["options"],
                              force=bool(getattr(args, "force", False)),
                              verify=not getattr(args, "no_verify", False))  # fmt: skip
    print_results(written, console)
    return {f"onnx-{precision}": folder for precision, folder in written.items()}


def print_results(written: dict[str, Path], console) -> None:
    from rich.table import Table

    from jmed_edge.manifest import read_manifest

    folders = sorted({str(folder.parent) for folder in written.values()})
    table = Table(title=f"ONNX artifacts in {', '.join(folders)}", title_justify="left")
    for column in (
        "folder",
        "size",
        "build s",
        "fp32 max|Δ|",
        "KL ja mean/p99",
        "KL en mean/p99",
        "top-1 ja/en",
        "ok",
    ):
        table.add_column(column, justify="left" if column == "folder" else "right")
    for precision, folder in written.items():
        manifest = read_manifest(folder)
        assert manifest is not None
        langs = manifest.verification.get("metrics", {}).get("languages", {})
        ja, en = langs.get("ja", {}), langs.get("en", {})
        diff = max((s.get("max_abs_logit_diff", 0.0) for s in langs.values()), default=None)
        table.add_row(
            folder.name,
            manifest.details.get("size", "?"),
            str(manifest.details.get("build_seconds", "")),
            f"{diff:.1e}" if diff is not None and precision in ("fp32", "fp16") else "",
            f"{ja['kl_mean']:.4f}/{ja['kl_p99']:.3f}" if ja else "",
            f"{en['kl_mean']:.4f}/{en['kl_p99']:.3f}" if en else "",
            f"{ja.get('top1', 0):.0%}/{en.get('top1', 0):.0%}" if ja and en else "",
            {True: "✓", False: "✗"}.get(manifest.verification.get("passed"), "-"),
        )
    console.print(table)
    for precision, folder in written.items():
        manifest = read_manifest(folder)
        for check in manifest.verification.get("checks", []) if manifest else []:
            mark = {True: "✓", False: "✗", None: "·"}[check["ok"]]
            limit = f" ({check['limit']})" if check["limit"] else ""
            console.print(
                f"  onnx-{precision} {mark} {check['name']}: {check['value']}{limit}", highlight=False
            )


def run_verify_onnx_from_args(args: argparse.Namespace) -> int:
    """``verify ARTIFACT [--against SRC]`` for an ONNX folder: prints ✓/✗ lines, records them."""
    from rich.console import Console

    from jmed_edge.convert.onnx.verify import verify_onnx

    artifact = args.artifact
    record = not getattr(args, "no_record", False)
    result = verify_onnx(
        Path(artifact), getattr(args, "against", None), raise_on_failure=False, record=record
    )
    console = Console()
    for line in result.lines():
        console.print(line, highlight=False)
    result.raise_if_failed()
    return 0
