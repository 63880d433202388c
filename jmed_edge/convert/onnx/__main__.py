"""``python -m jmed_edge.convert.onnx SRC --out DIR`` and ``... verify ARTIFACT [--against SRC]``."""

from __future__ import annotations

import argparse
import logging
import sys

from jmed_edge.convert.onnx.cli import add_onnx_arguments, run_onnx_from_args, run_verify_onnx_from_args
from jmed_edge.errors import JmedError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[:1] == ["verify"]:
        parser = argparse.ArgumentParser(prog="python -m jmed_edge.convert.onnx verify")
        parser.add_argument("artifact", help="an onnx-<precision> folder")
        parser.add_argument(
            "--against", default=None, help="source HF folder (default: the manifest's parent)"
        )
        run, args = run_verify_onnx_from_args, parser.parse_args(argv[1:])
    else:
        parser = argparse.ArgumentParser(prog="python -m jmed_edge.convert.onnx")
        parser.add_argument("src", help="Hugging Face model folder, or 'default' for the embedded model")
        parser.add_argument("--out", required=True, help="folder that receives onnx-<precision>/ folders")
        parser.add_argument("--force", action="store_true", help="rebuild folders that exist")
        parser.add_argument("--no-verify", action="store_true", help="skip verification against the source")
        add_onnx_arguments(parser)
        run, args = run_onnx_from_args, parser.parse_args(argv)
    try:
        return run(args)
    except JmedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
