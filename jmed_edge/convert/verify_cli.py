"""``jmed-edge verify``: check GGUF artifacts against their source, ✓/✗ per check, non-zero exit on any ✗."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = """\
examples:
  jmed-edge verify runs/gguf/F16                         (against the HF folder its manifest names)
  jmed-edge verify runs/gguf/Q4_K_M --against runs/merged
  jmed-edge verify runs/gguf                             (every GGUF artifact in the folder)
  jmed-edge verify runs/gguf-lora --base-gguf runs/gguf/F16
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("artifact", type=Path, help="GGUF artifact folder or .gguf file, or a folder of them")
    parser.add_argument(
        "--against", type=Path, metavar="SRC", help="Hugging Face source (default: from the manifest)"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="GGUF",
        help="F16/BF16 GGUF to measure a quantized type against (default: its manifest parent)",
    )
    parser.add_argument(
        "--base-gguf", type=Path, metavar="PATH", help="GGUF LoRA: the base GGUF to apply it to"
    )
    parser.add_argument(
        "--texts", action="append", default=[], metavar="NAME:PATH",
        help="also measure tokenizer parity on every question and choice of this benchmark (as bench takes it; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--try-pre-tokenizers", action="store_true",
        help="where the tokenizers diverge, try every pre-tokenizer llama.cpp knows and name the best",
    )  # fmt: skip
    parser.add_argument("--no-record", action="store_true", help="do not write the results into the manifest")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=_main)


def _targets(path: Path) -> list[Path]:
    """``path`` itself, or every GGUF artifact folder under it when it is a plain folder of them."""
    from jmed_edge.artifacts import gguf_general_type, scan
    from jmed_edge.errors import ArtifactError

    # a conversion's output folder also holds its importance matrix (a GGUF of type "imatrix")
    models = [g for g in path.glob("*.gguf") if gguf_general_type(g) != "imatrix"] if path.is_dir() else []
    if path.is_dir() and not models and not any(path.glob("*.onnx")) \
            and not (path / "config.json").exists():  # fmt: skip
        found = [a.folder for a in scan(path, max_depth=1) if a.format in ("gguf", "gguf-lora", "onnx")]
        if not found:
            raise ArtifactError(
                f"{path} holds no GGUF or ONNX artifact (no .gguf/.onnx file, no artifact folders with one)"
            )
        return found
    return [path]


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.artifacts import describe
    from jmed_edge.convert.console import RichProgress, print_checks
    from jmed_edge.convert.ggufinfo import read_gguf
    from jmed_edge.convert.lora_gguf import verify_lora
    from jmed_edge.convert.verify import verify_artifact
    from jmed_edge.errors import VerificationError

    console = Console()
    texts = {spec: benchmark_texts(spec) for spec in args.texts}
    results = []
    for target in _targets(args.artifact):
        if target.is_file():
            read_gguf(target)  # a one-line error for a truncated or corrupt file, before anything reads it
        info = describe(target)
        with RichProgress() as progress:
            progress.task(f"verifying {info.name}")
            if info.format == "onnx":
                from jmed_edge.convert.onnx import verify_onnx

                result = verify_onnx(target, args.against, raise_on_failure=False, record=not args.no_record)
            elif info.format == "gguf-lora":
                result = verify_lora(
                    target, base_gguf=args.base_gguf, record=not args.no_record, progress=progress
                )
            else:
                result = verify_artifact(
                    target, against=args.against, reference=args.reference, record=not args.no_record,
                    parity_texts=texts, try_pre_tokenizers=args.try_pre_tokenizers,
                )  # fmt: skip
        results.append(result)
        if not args.json:
            print_checks(console, info.name, result)
    if args.json:
        console.print_json(json.dumps([{"artifact": str(r.artifact), **r.to_dict()} for r in results]))
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0].failures[0]
        raise VerificationError(
            f"{len(failed)} of {len(results)} artifacts failed verification; {failed[0].artifact}: {first.name}: {first.detail}"
        )
    return 0


def benchmark_texts(spec: str) -> list[tuple[str | None, str]]:
    """Every question stem and choice of a benchmark, per language, as ``(lang, text)``."""
    from jmed_edge.bench import load_benchmark
    from jmed_edge.errors import DataError

    bench = load_benchmark(spec, skip_bad=True)
    texts = [(q.lang, t) for q in bench.records for t in (q.question, *q.choices) if t.strip()]
    if not texts:
        raise DataError(
            f"--texts {spec}: no readable questions there; check the path with: jmed-edge data check {spec}"
        )
    return texts
