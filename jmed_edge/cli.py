"""The ``jmed-edge`` command: a table of stages, each a thin wrapper over a library function.

Only the stage being run is imported, so ``jmed-edge --help`` answers instantly and a stage's
heavy libraries (torch, llama.cpp, onnxruntime) load only when needed. Each stage module has
``configure(parser)``, which adds its options and sets ``func`` to the function to call.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

from jmed_edge import __version__
from jmed_edge.errors import JmedError
from jmed_edge.libraries import route_library_output


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    help: str
    example: str


STAGES = (
    Stage("model", "jmed_edge.models.cli", "materialise or inspect the embedded default model",
          "jmed-edge model default"),
    Stage("doctor", "jmed_edge.doctor", "check Python, libraries, llama.cpp, GPU, RAM and disk",
          "jmed-edge doctor"),
    Stage("setup", "jmed_edge.setup_cli", "fetch llama.cpp's converter and build its imatrix and quantize tools (once)",
          "jmed-edge setup"),
    Stage("train", "jmed_edge.train.cli", "LoRA / QLoRA instruction tuning from a YAML recipe",
          "jmed-edge train recipes/demo.yaml --set train.max_steps=20 --out runs/adapter"),
    Stage("merge", "jmed_edge.merge.cli", "merge a LoRA adapter into its base and prove the merge",
          "jmed-edge merge runs/adapter --out runs/merged"),
    Stage("convert", "jmed_edge.convert.cli",
          "convert a model to GGUF (llama.cpp types) or ONNX (onnxruntime-genai), or a LoRA to a GGUF LoRA",
          "jmed-edge convert runs/merged --to gguf --quant q8_0,q4_k_m --out runs/gguf"),
    Stage("verify", "jmed_edge.convert.verify_cli", "check an artifact against its source (tokens, template, logits)",
          "jmed-edge verify runs/gguf/Q4_K_M --against runs/merged"),
    Stage("data", "jmed_edge.bench.data_cli", "load a benchmark without a model and show what was read",
          "jmed-edge data check igakuqa:benchmarks/data/jmed-sample"),
    Stage("bench", "jmed_edge.bench.cli", "run bilingual medical benchmarks on any artifact",
          "jmed-edge bench runs/gguf/Q4_K_M --benchmark jmed-sample --out runs/bench"),
    Stage("report", "jmed_edge.report.cli", "accuracy-loss report with statistics, plots and a recommendation",
          "jmed-edge report runs/demo/bench --reference demo-F16 --budget 8GB --out runs/demo/report"),
    Stage("run", "jmed_edge.pipeline.cli", "the whole pipeline from one recipe: train, merge, convert, bench, report",
          "jmed-edge run recipes/demo.yaml --out runs/demo"),
    Stage("demo", "jmed_edge.pipeline.demo_cli", "run the shipped demo recipe on the embedded default model, offline",
          "jmed-edge demo"),
    Stage("chat", "jmed_edge.chat.cli", "streaming terminal chat with any artifact (GGUF, ONNX, Hugging Face)",
          "jmed-edge chat runs/demo/gguf/Q4_K_M --prompt '高血圧の第一選択薬は?'"),
    Stage("serve", "jmed_edge.serve.cli", "local OpenAI-compatible server, loopback-only unless an API key is set",
          "jmed-edge serve runs/demo/gguf/Q4_K_M --port 8000"),
    Stage("tui", "jmed_edge.tui.cli", "terminal UI: artifacts, chat, benchmark runs with progress, reports",
          "jmed-edge tui --root runs"),
    Stage("recipes", "jmed_edge.recipes_cli", "list shipped recipes or copy one to edit",
          "jmed-edge recipes cp demo my-recipe.yaml"),
)  # fmt: skip

EPILOG = (
    "examples:\n"
    + "\n".join(f"  {s.example}" for s in STAGES)
    + (
        "\n\nThe embedded default model (SmolLM2-135M-Instruct) stands in for your own 7B model;\n"
        "point any stage at a local Hugging Face folder instead. Nothing is downloaded at run time."
    )
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jmed-edge",
        description="Fine-tune, convert, verify and benchmark Japanese medical LLMs on a local "
        "workstation, offline.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"jmed-edge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", title="stages")
    for stage in STAGES:
        stage_parser = sub.add_parser(
            stage.name,
            help=stage.help,
            description=stage.help[0].upper() + stage.help[1:] + ".",
            epilog=f"example:\n  {stage.example}",
            formatter_class=_Formatter,
        )
        stage_parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        if stage.name == selected:
            importlib.import_module(stage.module).configure(stage_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("JMED_EDGE_DEBUG") == "1"
    route_library_output(debug)
    names = {s.name for s in STAGES}
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in names else None)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a usage error already printed by argparse
            return int(exc.code or 0)
        if args.stage is None:
            parser.print_help()
            return 0
        func = getattr(args, "func", None)
        if func is None:
            parser.parse_args([args.stage, "--help"])
        result = func(args)
        return int(result or 0)
    except JmedError as exc:
        if debug:
            raise
        _print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so and point at --debug
        if debug:
            raise
        _print_error(
            f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
        )
        return 1


def _print_error(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {message}")
