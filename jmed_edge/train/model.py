"""Load the base model (plain or 4-bit NF4 for QLoRA) and wrap it with a peft LoRA adapter."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.errors import ConfigError, DependencyError, ModelError

log = logging.getLogger(__name__)

# torch dtype names by recipe precision.
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class Hardware:
    device: str  # "cuda" or "cpu"
    precision: str  # resolved: fp32 | bf16 | fp16
    local_rank: int


def resolve_hardware(precision: str) -> Hardware:
    """Pick the device and a precision it supports (auto: bf16 on a bf16 GPU, fp16 on older GPUs, fp32 on CPU)."""
    import torch
    from accelerate import PartialState

    cuda = torch.cuda.is_available()
    # cpu=True lets several CPU processes (torchrun / accelerate launch) form a gloo group; the
    # state is a singleton the Trainer shares, so it must be created right the first time.
    state = PartialState(cpu=not cuda)
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if not cuda and precision == "fp16":
        raise ConfigError('train.precision: fp16 needs a CUDA GPU, found none; use "auto", "fp32" or "bf16"')
    return Hardware("cuda" if cuda else "cpu", precision, state.local_process_index)


def resolve_base_path(path: str) -> Path:
    """The base model folder; ``default`` is the embedded default model, materialised on first use."""
    if path == "default":
        from jmed_edge.models.default import materialise

        return materialise()
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelError(
            f"base model {folder} not found; set model.path in the recipe (or --set model.path=FOLDER) "
            'to a local Hugging Face folder, or "default" for the embedded model'
        )
    if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
        raise ModelError(
            f"{folder} is a LoRA adapter, not a base model; point model.path at a full model folder"
        )
    if not (folder / "config.json").exists():
        raise ModelError(f"{folder} has no config.json; model.path must be a Hugging Face model folder")
    return folder.resolve()


def base_summary(folder: Path) -> dict[str, Any]:
    """What the adapter's manifest records about its base, to check a base at merge time."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return {
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "hidden_size": config.get("hidden_size"),
        "num_hidden_layers": config.get("num_hidden_layers"),
        "vocab_size": config.get("vocab_size"),
    }


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # tokenizers raise many kinds on a broken folder
        raise ModelError(f"cannot load the tokenizer of {folder} ({type(exc).__name__}: {exc})") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked, so any id works
    tokenizer.padding_side = "right"
    return tokenizer


def load_base(folder: Path, quantization: str, hardware: Hardware) -> Any:
    """The base in the training precision, or in 4-bit NF4 (double quant) for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": getattr(torch, DTYPES[hardware.precision])}
    if quantization == "nf4":
        kwargs.update(_nf4_kwargs(hardware))
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {folder} as a causal LM ({type(exc).__name__}: {exc})") from exc
    model.config.use_cache = False  # the KV cache only costs memory in training
    return model


def _nf4_kwargs(hardware: Hardware) -> dict[str, Any]:
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise DependencyError(
            "quantization: nf4 needs bitsandbytes; pip install bitsandbytes, or set model.quantization: none"
        ) from exc
    compute = torch.float16 if hardware.precision == "fp16" else torch.bfloat16
    if hardware.device == "cpu":
        log.warning(
            "QLoRA on CPU: bitsandbytes' CPU backend trains NF4 about 2-3x slower than plain LoRA "
            "(quantization: none); use it to try a recipe, a CUDA GPU to train one"
        )
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        ),
        "device_map": {"": hardware.local_rank if hardware.device == "cuda" else "cpu"},
    }


def linear_module_names(model: Any) -> list[str]:
    """Short names of the model's linear layers that LoRA can target (the output head excluded)."""
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        kinds += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, kinds) and module is not head
    }
    return sorted(names)


def check_target_modules(model: Any, target: list[str] | str) -> list[str]:
    """The module names LoRA will wrap; fail naming what the model has when a target is absent."""
    available = linear_module_names(model)
    if target == "all-linear":
        return available
    missing = [name for name in target if name not in available]
    if missing:
        raise ConfigError(
            f"lora.target_modules: this {model.config.model_type} model has no {', '.join(missing)}; "
            f"its linear layers are {', '.join(available)} (or use all-linear)"
        )
    return list(target)


def add_lora(model: Any, lora: Any, targets: list[str], quantized: bool, gradient_checkpointing: bool) -> Any:
    """Freeze the base and add a trainable LoRA adapter on ``targets``."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    checkpointing_kwargs = {"use_reentrant": False}
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
        model.enable_input_require_grads()
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with quiet_peft():
        return get_peft_model(model, config)


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 asks transformers 5 a deprecated question on every wrap; nothing for a user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
