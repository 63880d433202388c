"""The merge proof without holding a model: probe logits computed module by module from the files.

The model is built on the meta device; just before each module runs, its weights are read from
the safetensors files, and just after, they are dropped. One pass over the base runs the probe
batch twice: the first copy as the plain base, the second with each LoRA update added to its
module's output (``x @ A.T @ B.T * scaling``, peft's unmerged forward). A second pass runs the
merged model as written. The logits are never held whole (vocabulary x positions is hundreds of
MB for a 150k vocabulary): the output layer is applied a block of rows at a time and only the
maxima and arg-maxima the check needs are kept. Peak: the largest weight plus activations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jmed_edge.merge.parity import MIN_TOP1, PROBES, RELATIVE_TOLERANCE, ParityResult
from jmed_edge.merge.stream import Lora
from jmed_edge.merge.tensorfiles import Checkpoint, read_tensor

log = logging.getLogger(__name__)

# Architectures whose logits are exactly ``lm_head(last_hidden_state)`` of their decoder, with no
# scaling or soft-capping after it (transformers' modeling files for each).
PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3"}
HEAD_ROWS = 8192  # output-layer rows per block


def _skeleton(config_dir: Path, dtype: Any) -> Any:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


@contextmanager
def _weights_on_demand(
    modules: Any, ckpt: Checkpoint, dtype: Any, lora: Lora | None, half: int
) -> Iterator[None]:
    """Hooks that load each module's weights when it runs and drop them after; with ``lora``,
    rows ``half:`` of the batch get the LoRA update on the adapter's target modules."""
    import torch

    handles = []

    def pre(module: Any, _args: Any) -> None:
        for pname, key in module._jmed_keys:
            meta = module._parameters[pname]
            cast = dtype if meta.dtype.is_floating_point else None
            module._parameters[pname] = torch.nn.Parameter(ckpt.tensor(key, cast), requires_grad=False)

    def post(module: Any, args: Any, output: Any) -> Any:
        for pname, meta in module._jmed_meta.items():
            module._parameters[pname] = meta
        pair = module._jmed_lora
        if pair is not None:
            x = args[0][half:].float()
            update = (x @ pair[0].T) @ pair[1].T * lora.scaling  # type: ignore[union-attr]
            output[half:] = (output[half:].float() + update).to(output.dtype)
        return output

    for name, module in modules:
        params = dict(module.named_parameters(recurse=False))
        if not params:
            continue
        module._jmed_keys = [(p, f"{name}.{p}") for p in params]
        module._jmed_meta = params
        pair = lora.modules.get(name) if lora else None
        module._jmed_lora = (
            None
            if pair is None
            else (read_tensor(pair[0], torch.float32), read_tensor(pair[1], torch.float32))
        )
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _named_decoder(model: Any) -> tuple[str, Any]:
    prefix = model.base_model_prefix
    return prefix, getattr(model, prefix)


def missing_keys(config_dir: Path, ckpt: Checkpoint, dtype: Any) -> list[str]:
    """Decoder weights the checkpoint does not store under the model's own names."""
    model = _skeleton(config_dir, dtype)
    prefix, decoder = _named_decoder(model)
    return [f"{prefix}.{n}" for n, _ in decoder.named_parameters() if f"{prefix}.{n}" not in ckpt]


def hidden_states(
    config_dir: Path, ckpt: Checkpoint, dtype: Any, batch: dict[str, Any], lora: Lora | None = None
) -> Any:
    """The decoder's last hidden states at every real probe position; with ``lora`` the batch runs
    twice (base, then base + adapter) and both halves come back stacked."""
    import torch

    model = _skeleton(config_dir, dtype)
    prefix, decoder = _named_decoder(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if lora is not None:
        ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
    modules = [(f"{prefix}.{n}" if n else prefix, m) for n, m in decoder.named_modules()]
    with _weights_on_demand(modules, ckpt, dtype, lora, batch["input_ids"].shape[0]), torch.inference_mode():
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return hidden[mask.bool()]


def head_key(ckpt: Checkpoint, config: dict[str, Any]) -> str:
    if "lm_head.weight" in ckpt or not config.get("tie_word_embeddings"):
        return "lm_head.weight"
    return next(n for n in ckpt.refs if n.endswith("embed_tokens.weight"))


def parity(
    hidden_ref: Any, hidden_base: Any, hidden_merged: Any, base: Checkpoint, merged: Checkpoint,
    config: dict[str, Any], lora: Lora, merge_dtype: str, dtype: Any,
) -> ParityResult:  # fmt: skip
    """Compare the logits block by block: what ``parity.compare`` computes on whole tensors."""
    import torch
    import torch.nn.functional as F

    key_base, key_merged = head_key(base, config), head_key(merged, config)
    vocab = base.refs[key_base].shape[0]
    lora_head = lora.modules.get("lm_head")
    positions = hidden_ref.shape[0]
    best = {
        k: (torch.full((positions,), -torch.inf), torch.zeros(positions, dtype=torch.long))
        for k in ("ref", "merged")
    }
    diff = scale = effect = 0.0
    finite = True
    for start in range(0, vocab, HEAD_ROWS):
        stop = min(start + HEAD_ROWS, vocab)
        w_base = base.rows(key_base, start, stop).to(dtype)
        lb = F.linear(hidden_base, w_base).float()
        lr = F.linear(hidden_ref, w_base)
        if lora_head is not None:
            a, b = (
                read_tensor(lora_head[0], torch.float32),
                read_tensor(lora_head[1], torch.float32)[start:stop],
            )
            lr = (lr.float() + (hidden_ref.float() @ a.T) @ b.T * lora.scaling).to(dtype)
        lr = lr.float()
        lm = F.linear(hidden_merged, merged.rows(key_merged, start, stop).to(dtype)).float()
        finite &= bool(torch.isfinite(lm).all())
        diff = max(diff, (lm - lr).abs().max().item())
        scale = max(scale, lr.abs().max().item())
        effect = max(effect, (lr - lb).abs().max().item())
        for name, logits in (("ref", lr), ("merged", lm)):
            value, index = logits.max(-1)
            better = value > best[name][0]
            best[name][0][better], best[name][1][better] = value[better], index[better] + start
    tolerance = RELATIVE_TOLERANCE[merge_dtype] * max(scale, 1.0)
    top1 = (best["ref"][1] == best["merged"][1]).float().mean().item()
    result = ParityResult(
        probes=len(PROBES), positions=positions, max_abs_diff=diff, tolerance=tolerance, top1_agreement=top1,
        min_top1=MIN_TOP1[merge_dtype], adapter_effect_max_abs=effect, passed=False,
    )  # fmt: skip
    result.passed = finite and diff == diff and not result.failures()
    return result


def source_logits(folder: Path, sequences: list[list[int]]) -> tuple[list[Any], str] | None:
    """Full next-token logits (fp32 numpy, one array per sequence) of the model in ``folder``,
    computed module by module from its files, in its own dtype; None when its architecture's
    head is not a plain output layer (the caller then loads the model)."""
    import json

    import torch
    import torch.nn.functional as F

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") not in PLAIN_HEAD or not sequences:
        return None
    from jmed_edge.merge.merge import DTYPES as MERGE_DTYPES
    from jmed_edge.merge.merge import base_dtype

    dtype_name = MERGE_DTYPES[base_dtype(config)]
    dtype = getattr(torch, dtype_name)
    ckpt = Checkpoint(folder)
    if missing_keys(folder, ckpt, dtype):
        return None
    longest = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), longest), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
    hidden = hidden_states(folder, ckpt, dtype, {"input_ids": ids, "attention_mask": mask})
    key = head_key(ckpt, config)
    vocab = ckpt.refs[key].shape[0]
    logits = torch.empty((hidden.shape[0], vocab), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, vocab, HEAD_ROWS):
            stop = min(start + HEAD_ROWS, vocab)
            logits[:, start:stop] = F.linear(hidden, ckpt.rows(key, start, stop).to(dtype)).float()
    out, at = [], 0
    for seq in sequences:
        out.append(logits[at : at + len(seq)].numpy())
        at += len(seq)
    return out, dtype_name
