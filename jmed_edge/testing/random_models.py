"""Random-weight models of real shapes (Qwen2 0.5B-7B), written without holding them in RAM.

Memory and time of every stage depend on a model's shapes, not on what its weights learned, so
a random model of Qwen2-7B's shape shows what a 7B costs without downloading one. The model is
laid out on the meta device (names and shapes, no storage); each tensor is then drawn, written
to its bf16 safetensors shard and dropped. The tokenizer is the embedded default model's
(SmolLM2, 49,152 tokens) with the larger embedding of the real shape: token ids stay below the
tokenizer's vocabulary, the rows above it are never looked up, and the GGUF converter pads the
vocabulary with ``[PAD]`` entries up to the embedding size. Beside a qwen2 config, transformers 5
loads that tokenizer as a Qwen2Tokenizer (Qwen2's split regex); the manifest tells the
converter so (``PRE_TOKENIZERS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jmed_edge.manifest import Manifest

# Shapes from each model's published config.json on the Hugging Face hub (Qwen/Qwen2-0.5B,
# Qwen/Qwen2-1.5B, Qwen/Qwen2.5-3B, Qwen/Qwen2-7B; HuggingFaceTB/SmolLM2-135M for 135m).
# max_position_embeddings is set to 32768 throughout: it sizes no weight.
SHAPES: dict[str, dict[str, Any]] = {
    "135m": {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
             "tie_word_embeddings": True, "rope_theta": 100000.0, "rms_norm_eps": 1e-5},
    "0.5b": {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
             "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
    "1.5b": {"model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
             "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
    "3b": {"model_type": "qwen2", "hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16,
           "num_key_value_heads": 2, "intermediate_size": 11008, "vocab_size": 151936,
           "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
    "7b": {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
           "tie_word_embeddings": False, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
}  # fmt: skip
SOURCES = {
    "135m": "SmolLM2-135M",
    "0.5b": "Qwen2-0.5B",
    "1.5b": "Qwen2-1.5B",
    "3b": "Qwen2.5-3B",
    "7b": "Qwen2-7B",
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SHARD_BYTES = 4 * 1024**3  # the published Qwen2-7B is four shards of about 4 GB
_STD = 0.02  # the configs' initializer_range
_EMBED_STD = 0.25


# The class each model_type's published checkpoints name in config.json "architectures".
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# llama.cpp's pre-tokenizer for the default tokenizer under each model_type: transformers 5 loads
# it as Qwen2Tokenizer beside a qwen2 config (Qwen2's split regex, not SmolLM2's), so the GGUF
# must split the same way; under llama it stays as written and llama.cpp recognises it itself.
PRE_TOKENIZERS = {"llama": None, "qwen2": "qwen2"}


def _config(size: str, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    shape = dict(SHAPES[size])
    kind = shape.pop("model_type")
    return AutoConfig.for_model(
        kind, architectures=[ARCHITECTURES[kind]],
        **shape, max_position_embeddings=32768, hidden_act="silu", dtype="bfloat16",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def _layout(config: Any) -> list[tuple[str, tuple[int, ...]]]:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]  # tied weights once


def _draw(name: str, shape: tuple[int, ...], seed: int, layers: int) -> Any:
    """N(0, 0.02), with the projections back into the residual stream scaled by 1/sqrt(2 x layers)
    (GPT-2's init) and N(0, 0.25) embeddings so that the token's own embedding dominates the
    residual stream: a plain N(0, 0.02) stack of 24+ random layers has nearly flat logits, and
    bf16 rounding alone then flips a tenth of the top-1 tokens, which no trained model does."""
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    std = _STD / (2 * layers) ** 0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else _STD
    # An untied output layer (7B) is drawn equal to the embedding: a random one gives nearly flat
    # logits whose top-1 flips under bf16 rounding alone. It is still its own tensor on disk.
    std = _EMBED_STD if name.endswith(("embed_tokens.weight", "lm_head.weight")) else std
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * std).to(torch.bfloat16)


def build_random_model(out: Path, size: str, seed: int = 0) -> Path:
    """Write a random bf16 model of ``size``'s shape (see ``SHAPES``) to ``out``; returns ``out``.

    Peak memory is one tensor in fp32 (the 7B's embedding: 2.2 GB)."""
    from transformers import AutoTokenizer

    from jmed_edge.fsutil import staging_dir
    from jmed_edge.merge.tensorfiles import INDEX_NAME, ShardWriter
    from jmed_edge.models.default import materialise

    if size not in SHAPES:
        from jmed_edge.errors import ConfigError, did_you_mean

        raise ConfigError(f'unknown size "{size}"{did_you_mean(size, SHAPES)}; known: {", ".join(SHAPES)}')
    default = materialise(progress=False)
    tokenizer = AutoTokenizer.from_pretrained(default)
    config = _config(size, tokenizer)
    layout = _layout(config)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in layout:
        nbytes = 2 * _numel(shape)
        if shards[-1] and used + nbytes > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += nbytes
    with staging_dir(Path(out), force=True) as tmp:
        weight_map, total, seed_of = {}, 0, {name: seed * 100_003 + i for i, (name, _) in enumerate(layout)}
        if "lm_head.weight" in seed_of:
            seed_of["lm_head.weight"] = next(
                v for k, v in seed_of.items() if k.endswith("embed_tokens.weight")
            )
        for i, shard in enumerate(shards, 1):
            file = (
                "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            )
            with ShardWriter(tmp / file, [(n, "BF16", s) for n, s in shard]) as writer:
                for name, shape in shard:
                    writer.write(name, _draw(name, shape, seed_of[name], config.num_hidden_layers))
                    weight_map[name] = file
            total += writer.total
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        Manifest(
            kind="model",
            format="hf-safetensors",
            name=f"random-{SOURCES[size]}-shape",
            config={"size": size, "shape_of": SOURCES[size], "seed": seed, **SHAPES[size]},
            license="apache-2.0",
            details={
                "role": "memory and time measurements (random weights)",
                "parameters": sum(_numel(s) for _, s in layout),
                "tokenizer": "the embedded default model's (SmolLM2, 49152 tokens); embedding rows above it unused",
                "pre_tokenizer": PRE_TOKENIZERS[SHAPES[size]["model_type"]],
            },
        ).seal(tmp)
    return Path(out)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def random_adapter(model: Path, out: Path, r: int = 16, seed: int = 0) -> Path:
    """A LoRA adapter (rank ``r``, every attention and MLP projection) with random A and B, as
    peft saves one: what a merge costs does not depend on training."""
    import torch

    from jmed_edge.merge.tensorfiles import Checkpoint, ShardWriter

    base = Checkpoint(Path(model))
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for name, ref in base.refs.items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module.rsplit(".", 1)[-1] in LORA_TARGETS:
            out_f, in_f = ref.shape
            tensors.append((f"base_model.model.{module}.lora_A.weight", (r, in_f)))
            tensors.append((f"base_model.model.{module}.lora_B.weight", (out_f, r)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ShardWriter(out / "adapter_model.safetensors", [(n, "F32", s) for n, s in tensors]) as writer:
        for name, shape in tensors:
            # A as peft initialises it (kaiming-uniform: std 1/sqrt(3 x in)); B as a short training
            # leaves it. A larger update on random weights makes the 28-layer 7B chaotic, and bf16
            # rounding alone then moves its logits by a fifth, which no trained adapter does.
            std = 0.01 if "lora_B" in name else (3 * shape[1]) ** -0.5
            writer.write(name, torch.randn(shape, generator=generator) * std)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(Path(model).resolve()),
        "r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0, "target_modules": list(LORA_TARGETS),
        "fan_in_fan_out": False, "bias": "none", "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "inference_mode": True,
    }  # fmt: skip
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
