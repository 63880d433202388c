"""Merge a LoRA adapter into its base one tensor at a time, never holding the model.

The base's shards are read tensor by tensor; a weight the adapter targets gets
``W + (B @ A) * scaling`` (the delta computed in fp32 for that tensor only, then cast to the
weight's dtype and added there, exactly as peft's ``merge_and_unload`` does on CPU), every other
tensor is copied through in chunks. Output shards are written as the tensors come, so the peak
is about one tensor and its fp32 delta, whatever the model's size.

Plain LoRA only; what this does not reproduce (DoRA, per-module ranks, trained biases or
embeddings, saved full modules, tied weights as targets) is reported by ``unsupported`` and left
to peft's in-memory merge.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.errors import ModelError
from jmed_edge.merge.tensorfiles import (
    INDEX_NAME,
    SINGLE_NAME,
    TORCH_TO_ST,
    Checkpoint,
    ShardWriter,
    TensorRef,
    read_header,
    read_tensor,
)

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
MAX_SHARD_BYTES = 2 * 1024**3  # output shard size; the peak does not depend on it (headers come first)
_FLOATS = ("float64", "float32", "float16", "bfloat16")


@dataclass
class Lora:
    """A plain LoRA adapter: per target module its A (r x in) and B (out x r) on disk."""

    scaling: float
    fan_in_fan_out: bool
    modules: dict[str, tuple[TensorRef, TensorRef]]

    def delta(self, module: str) -> Any:
        """``(B @ A) * scaling`` in fp32 (transposed for fan-in-fan-out layers), as peft computes it."""
        a_ref, b_ref = self.modules[module]
        import torch

        delta = read_tensor(b_ref, torch.float32) @ read_tensor(a_ref, torch.float32)
        if self.fan_in_fan_out:
            delta = delta.T
        return delta * self.scaling


def unsupported(adapter: Path) -> str | None:
    """Why a streaming merge cannot reproduce this adapter, or None when it can."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    checks = (
        (config.get("peft_type", "LORA") != "LORA", f"it is a {config.get('peft_type')} adapter, not LoRA"),
        (bool(config.get("use_dora")), "it uses DoRA (use_dora)"),
        (bool(config.get("rank_pattern") or config.get("alpha_pattern")), "it sets per-module ranks (rank_pattern/alpha_pattern)"),
        (bool(config.get("modules_to_save")), f"it saves whole modules ({config.get('modules_to_save')})"),
        (config.get("bias", "none") != "none" or bool(config.get("lora_bias")), "it trains biases"),
        (not (adapter / ADAPTER_WEIGHTS).is_file(), f"its weights are not in {ADAPTER_WEIGHTS}"),
    )  # fmt: skip
    for failed, why in checks:
        if failed:
            return why
    for ref in read_header(adapter / ADAPTER_WEIGHTS):
        if not ref.name.endswith((".lora_A.weight", ".lora_B.weight")):
            return f"it holds tensors other than lora_A/lora_B ({ref.name})"
    return None


def read_lora(adapter: Path) -> Lora:
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    r, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    pairs: dict[str, dict[str, TensorRef]] = {}
    for ref in read_header(adapter / ADAPTER_WEIGHTS):
        module, _, part = ref.name.removeprefix(PREFIX).rpartition(".lora_")
        pairs.setdefault(module, {})[part[0]] = ref
    incomplete = sorted(m for m, p in pairs.items() if set(p) != {"A", "B"})
    if incomplete:
        raise ModelError(
            f"{adapter / ADAPTER_WEIGHTS} lacks lora_A or lora_B for {incomplete[0]}; is the adapter complete?"
        )
    return Lora(scaling, bool(config.get("fan_in_fan_out")), {m: (p["A"], p["B"]) for m, p in pairs.items()})


def fit_problems(base: Checkpoint, lora: Lora) -> tuple[list[str], str | None]:
    """(shape mismatches, reason to leave the merge to peft) for this adapter on this base.

    A target the base stores no tensor for is either a tied output layer (its weight is the
    embedding's) or a checkpoint whose names differ from the model's modules: peft's merge, on
    the loaded model, handles both or names the mismatch."""
    problems: list[str] = []
    for module, (a, b) in lora.modules.items():
        key = f"{module}.weight"
        if key not in base:
            return problems, f"the base stores no tensor {key} (a tied weight, or other names on disk)"
        out_f, in_f = base.refs[key].shape[::-1] if lora.fan_in_fan_out else base.refs[key].shape
        if a.shape[1] != in_f:
            problems.append(f"{module} takes {in_f} inputs, the adapter {a.shape[1]}")
        if b.shape[0] != out_f:
            problems.append(f"{module} gives {out_f} outputs, the adapter {b.shape[0]}")
    return problems, None


def fold_delta(weight: Any, delta: Any) -> Any:
    """``weight + delta`` in the weight's dtype (peft's safe merge: delta cast first, then added)."""
    merged = weight + delta.to(weight.dtype)
    if not merged.isfinite().all():
        raise ModelError("the merged weights contain NaN or inf; the adapter is broken")
    return merged


def _plan(base: Checkpoint, dtype: Any, max_shard: int) -> list[list[tuple[TensorRef, str]]]:
    """Base tensors grouped into output shards, each with the dtype it is written in."""
    shards: list[list[tuple[TensorRef, str]]] = [[]]
    size = 0
    for path in base.files:
        for ref in read_header(path):
            st = TORCH_TO_ST[str(dtype).removeprefix("torch.")] if ref.torch_dtype in _FLOATS else ref.dtype
            nbytes = ref.nbytes // _itemsize(ref.dtype) * _itemsize(st)
            if shards[-1] and size + nbytes > max_shard:
                shards.append([])
                size = 0
            shards[-1].append((ref, st))
            size += nbytes
    return shards


def _itemsize(st: str) -> int:
    from jmed_edge.merge.tensorfiles import DTYPES

    return DTYPES[st][1]


def write_merged(base: Checkpoint, lora: Lora, out: Path, dtype: Any, max_shard: int | None = None) -> int:
    """Write base + adapter into ``out`` (weights and index only); returns how many weights were merged."""
    targets = {f"{module}.weight": module for module in lora.modules}
    shards = _plan(base, dtype, max_shard or MAX_SHARD_BYTES)
    names = [SINGLE_NAME] if len(shards) == 1 else [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
    ]  # fmt: skip
    weight_map, total, merged = {}, 0, 0
    for name, shard in zip(names, shards, strict=True):
        writer = ShardWriter(out / name, [(ref.name, st, ref.shape) for ref, st in shard])
        with writer:
            for ref, _ in shard:
                weight_map[ref.name] = name
                cast = (
                    dtype
                    if ref.torch_dtype in _FLOATS and ref.torch_dtype != str(dtype).removeprefix("torch.")
                    else None
                )
                if ref.name in targets:
                    weight = read_tensor(ref, dtype)
                    writer.write(ref.name, fold_delta(weight, lora.delta(targets[ref.name])))
                    merged += 1
                    del weight
                else:
                    writer.copy(ref, cast)
        total += writer.total
        log.info("wrote %s (%d tensors)", name, len(shard))
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return merged
