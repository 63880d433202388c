"""Open an artifact for inference (chat and serve), offline, with one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from jmed_edge.artifacts import ArtifactInfo
from jmed_edge.errors import ConfigError
from jmed_edge.runtimes.base import Runtime

log = logging.getLogger(__name__)

# Set before any model library is imported: no hub lookups, no telemetry, no update checks.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def force_offline() -> None:
    """Make every library this process loads work offline (values are forced, not defaults)."""
    os.environ.update(OFFLINE_ENV)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``chat`` and ``serve`` for opening the model."""
    parser.add_argument("artifact", type=Path, metavar="ARTIFACT",
                        help="a .gguf file, an ONNX folder or a Hugging Face model folder")  # fmt: skip
    parser.add_argument("--lora", type=Path, metavar="ADAPTER",
                        help="a LoRA adapter converted to GGUF, applied to a GGUF ARTIFACT at run time")  # fmt: skip
    parser.add_argument("--ctx", type=int, metavar="N",
                        help="context length in tokens (default: the runtime's choice for the model)")  # fmt: skip
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads (default: the runtime's choice)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto | cpu | cuda: where the model runs (auto: a GPU when one is usable)",
    )
    parser.add_argument(
        "--runtime", metavar="NAME", help="override the runtime the artifact's format selects"
    )


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"device": args.device}
    # Each runtime names the device its own way and ignores the options that are not its own.
    options["provider"] = "cuda" if args.device.startswith("cuda") else args.device  # onnxruntime-genai
    if args.device == "cpu":
        options["n_gpu_layers"] = 0  # llama.cpp ("auto" offloads when the build can)
    if args.ctx is not None:
        if args.ctx < 16:
            raise ConfigError(f"--ctx {args.ctx} is too small; use at least 16 tokens (e.g. --ctx 4096)")
        options["n_ctx"] = args.ctx
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads} must be at least 1")
        options["n_threads"] = args.threads
    return options


def open_model(
    artifact: Path | ArtifactInfo, *, lora: Path | None = None, runtime: str | None = None, **options: Any
) -> Runtime:
    """Open ``artifact`` (a path, or what ``describe`` said of it) with its runtime.

    A path that is no model gives ``describe``'s one-line ``ArtifactError``. Describing a bare
    GGUF reads its header, which takes seconds for a large vocabulary: callers opening several
    instances describe once and pass the ``ArtifactInfo``.
    """
    from jmed_edge.artifacts import describe
    from jmed_edge.runtimes.base import open_runtime

    info = artifact if isinstance(artifact, ArtifactInfo) else describe(Path(artifact))
    artifact = info.path
    if info.format == "gguf-lora":
        raise ConfigError(
            f"{artifact} is a LoRA adapter, not a model; pass the base GGUF as ARTIFACT and this file as --lora"
        )
    if info.kind == "adapter" and lora is not None:
        raise ConfigError(
            "--lora applies a GGUF adapter to a GGUF model; a peft adapter folder is opened directly"
        )
    if lora is not None:
        lora_info = describe(Path(lora))
        if lora_info.format != "gguf-lora":
            raise ConfigError(
                f"--lora {lora} is a {lora_info.format} artifact; expected a LoRA adapter converted to GGUF "
                "(jmed-edge convert ADAPTER --to gguf)"
            )
        if info.format != "gguf":
            raise ConfigError(f"--lora needs a GGUF ARTIFACT; {artifact} is {info.format}")
        options["lora_path"] = lora_info.model_file
    return open_runtime(info, runtime=runtime, **options)
