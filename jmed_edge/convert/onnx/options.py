"""What an ONNX conversion may be asked for, checked before anything is built.

Every problem with a request is collected and reported at once, in one line each: a wrong
block size and an unloadable lm_head choice are both shown, not one per run. Combinations that
the builder accepts but that produce a model onnxruntime refuses to load are rejected here, up
front, with the setting to use instead.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from jmed_edge.errors import ConfigError, DependencyError, did_you_mean

PRECISIONS = ("fp32", "fp16", "int8", "int4")
TARGETS = ("cpu", "cuda", "dml")
# The (precision, execution provider) pairs onnxruntime-genai 0.18's builder lists as valid
# (printed by builder.py's get_args), restricted to the targets offered here.
VALID_COMBINATIONS = {
    ("fp32", "cpu"), ("int8", "cpu"), ("int4", "cpu"),
    ("fp32", "cuda"), ("fp16", "cuda"), ("int8", "cuda"), ("int4", "cuda"),
    ("fp16", "dml"), ("int4", "dml"),
}  # fmt: skip
QUANTIZED = ("int8", "int4")
# MatMulNBits block sizes the builder accepts (builder.py: block_size = 16/32/64/128/256).
BLOCK_SIZES = (16, 32, 64, 128, 256)
# MatMulNBits accuracy_level: the lowest precision the kernel may compute activations in.
# 0 = unset (the kernel picks), 1 = fp32, 2 = fp16, 3 = bf16, 4 = int8 (activations quantized
# to int8: fastest on CPU, and the builder's CPU default; loses accuracy when activations have
# outliers). See convert/onnx/README.md for the measured trade-off.
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
LM_HEAD_CHOICES = ("same", "fp32", "int8", "int4")
ALGORITHMS = ("default", "rtn", "k_quant")  # builder option algo_config


@dataclass
class OnnxOptions:
    """Settings of a builder export; ``None`` means the builder's own default (recorded resolved).

    Attributes:
        block_size: weights per quantization block (int8/int4). Smaller: closer to the source,
            slightly larger and slower.
        symmetric: symmetric (int) or asymmetric (uint + zero point) weight quantization.
        accuracy_level: MatMulNBits compute precision (see ``ACCURACY_LEVELS``).
        lm_head: precision of the output projection: "same" as the body, or "fp32" (kept
            unquantized: the setting that most improves int4 top-1 agreement on small models).
        shared_embeddings: one matrix for embeddings and lm_head (only for tied models);
            ``None`` follows the model's ``tie_word_embeddings``.
        algorithm: weight quantization algorithm: default (round to nearest), rtn, k_quant.
        builder_options: raw KEY=VALUE builder options for anything not named above; they are
            passed through unchecked and recorded in the manifest.
    """

    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None
    lm_head: str = "same"
    shared_embeddings: bool | None = None
    algorithm: str = "default"
    builder_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OnnxOptions:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(
                "unknown ONNX option(s) "
                + ", ".join(f'"{k}"{did_you_mean(k, known)}' for k in unknown)
                + f"; known: {', '.join(sorted(known))} (raw builder options go in builder_options)"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, target: str, tied: bool) -> dict[str, Any]:
        """The options with builder defaults filled in, as recorded in a manifest."""
        out = self.to_dict()
        if out["accuracy_level"] is None:
            out["accuracy_level"] = 4 if target == "cpu" else 0  # builder.py's documented default
        if out["shared_embeddings"] is None:
            out["shared_embeddings"] = tied
        return out


def _parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def parse_option_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["block_size=64", "lm_head=fp32", "builder.fuse_qkv=false"]`` -> options dict."""
    out: dict[str, Any] = {}
    builder: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f'ONNX option "{pair}" is not KEY=VALUE; e.g. block_size=64 or lm_head=fp32')
        if key.startswith("builder."):
            builder[key.removeprefix("builder.")] = value
        elif key in ("block_size", "accuracy_level"):
            try:
                out[key] = int(value)
            except ValueError:
                raise ConfigError(f'ONNX option {key} must be a whole number, not "{value}"') from None
        elif key in ("symmetric", "shared_embeddings"):
            parsed = _parse_bool(value)
            if parsed is None:
                raise ConfigError(f'ONNX option {key} must be true or false, not "{value}"')
            out[key] = parsed
        else:
            out[key] = value
    if builder:
        out["builder_options"] = builder
    return out


def option_problems(options: OnnxOptions, precision: str, target: str, tied: bool) -> list[str]:
    """Everything wrong with exporting at ``precision`` for ``target`` with ``options``."""
    problems: list[str] = []
    if precision not in PRECISIONS:
        problems.append(
            f'unknown precision "{precision}"{did_you_mean(precision, PRECISIONS)}; '
            f"known: {', '.join(PRECISIONS)}"
        )
    if target not in TARGETS:
        problems.append(
            f'unknown target "{target}"{did_you_mean(target, TARGETS)}; known: {", ".join(TARGETS)}'
        )
    if problems:
        return problems
    if (precision, target) not in VALID_COMBINATIONS:
        fits = sorted(p for p, t in VALID_COMBINATIONS if t == target)
        problems.append(
            f"precision {precision} cannot run on target {target}; {target} runs {', '.join(fits)}"
        )
    if options.block_size not in BLOCK_SIZES:
        problems.append(f"block_size {options.block_size} is not one of {', '.join(map(str, BLOCK_SIZES))}")
    if options.accuracy_level is not None and options.accuracy_level not in ACCURACY_LEVELS:
        problems.append(
            f"accuracy_level {options.accuracy_level} is not one of "
            f"{', '.join(map(str, ACCURACY_LEVELS))} (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)"
        )
    if options.algorithm not in ALGORITHMS:
        problems.append(
            f'unknown algorithm "{options.algorithm}"{did_you_mean(options.algorithm, ALGORITHMS)}; '
            f"known: {', '.join(ALGORITHMS)}"
        )
    if options.lm_head not in LM_HEAD_CHOICES:
        problems.append(f'lm_head "{options.lm_head}" is not one of {", ".join(LM_HEAD_CHOICES)}')
    elif precision not in QUANTIZED and options.lm_head not in ("same", "fp32"):
        problems.append(
            f"lm_head {options.lm_head} needs a quantized precision (int8 or int4), not {precision}"
        )
    shared = tied if options.shared_embeddings is None else options.shared_embeddings
    if options.shared_embeddings and not tied:
        problems.append(
            "shared_embeddings=true needs a model with tied embeddings, and this model's "
            "config has tie_word_embeddings=false; leave shared_embeddings unset"
        )
    # Measured with onnxruntime-genai 0.18 + onnxruntime 1.32 on tied Qwen2 and SmolLM2 models:
    # the builder writes these models without error, and onnxruntime then refuses to load them.
    if shared and precision == "int4" and not options.symmetric:
        problems.append(
            "symmetric=false with int4 and shared embeddings builds a model onnxruntime cannot "
            "load (its uint4 embedding table feeds a float Reshape); use symmetric=true, or "
            "shared_embeddings=false to store embeddings and lm_head separately (larger)"
        )
    if shared and precision in QUANTIZED and options.lm_head in QUANTIZED and options.lm_head != precision:
        problems.append(
            f"lm_head={options.lm_head} with {precision} and shared embeddings builds a model "
            "onnxruntime cannot load (the lm_head weight it names is never written); use "
            "lm_head=fp32 or lm_head=same, or shared_embeddings=false"
        )
    return problems


def check_target_available(target: str) -> None:
    """Fail with one line when this machine cannot run models built for ``target``."""
    import onnxruntime_genai as og

    if target == "cuda" and not og.is_cuda_available():
        raise DependencyError(
            "target cuda needs onnxruntime-genai's CUDA execution provider and an NVIDIA GPU, and this "
            "installation has neither (the CPU package is installed); use --onnx-target cpu, or install "
            "onnxruntime-genai-cuda on a machine with a GPU"
        )
    if target == "dml" and (platform.system() != "Windows" or not og.is_dml_available()):
        raise DependencyError(
            f"target dml (DirectML) runs only on Windows with onnxruntime-genai-directml installed; this is "
            f"{platform.system()}; use --onnx-target cpu (or cuda on an NVIDIA GPU)"
        )


def check_request(options: OnnxOptions, precisions: tuple[str, ...], target: str, tied: bool) -> None:
    """Raise one ``ConfigError`` listing every problem with the request, or return."""
    if not precisions:
        raise ConfigError(f"no precision asked for; pick from {', '.join(PRECISIONS)}")
    problems: list[str] = []
    for precision in dict.fromkeys(precisions):
        for problem in option_problems(options, precision, target, tied):
            if problem not in problems:
                problems.append(problem)
    if problems:
        raise ConfigError("; ".join(problems))
