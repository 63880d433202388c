"""Hugging Face runtime: a model folder (or a peft adapter over its base) run by torch.

Scoring batches many contexts per forward pass (left-padded, logits only where needed), so a
benchmark of short multiple-choice prompts runs at the speed of batched inference rather than
one prompt at a time. Generation is a plain token loop over the KV cache, which streams, times
prompt and decode separately and stops the moment the caller stops reading.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.artifacts import ArtifactInfo
from jmed_edge.errors import ArtifactError, ConfigError, DependencyError, ModelError
from jmed_edge.runtimes.base import (
    ContinuationScore,
    GenerationStats,
    SamplingParams,
    continuation_scores,
    split_continuation,
    stream_generation,
)

log = logging.getLogger(__name__)

_DTYPES = ("auto", "float32", "bfloat16", "float16")
# Below this many shared tokens, running the shared prefix separately is not worth a pass.
MIN_SHARED_PREFIX = 8


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every sequence shares, leaving at least one token of each."""
    shortest = min(len(seq) for seq in sequences)
    first = sequences[0]
    n = 0
    while n < shortest - 1 and all(seq[n] == first[n] for seq in sequences):
        n += 1
    return n


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DependencyError(f"device {device!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


def _adapter_base(info: ArtifactInfo) -> Path:
    """The base model folder a peft adapter was trained on (must be a local folder: offline)."""
    config = json.loads((info.path / "adapter_config.json").read_text(encoding="utf-8"))
    candidates = [config.get("base_model_name_or_path") or ""]
    if info.manifest and info.manifest.parent:
        candidates.insert(0, info.manifest.parent.get("path", ""))
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").exists():
            return Path(candidate)
    raise ArtifactError(
        f"{info.path} is a LoRA adapter whose base model ({candidates[-1] or 'unnamed'}) is not a local "
        "folder; pass base=PATH to the runtime or merge the adapter first (jmed-edge merge)"
    )


class HFRuntime:
    """Runtime over ``transformers`` + torch. ``device``: auto | cpu | cuda[:N]."""

    name = "hf"

    def __init__(
        self,
        info: ArtifactInfo,
        *,
        device: str = "auto",
        dtype: str = "auto",
        base: Path | str | None = None,
        batch_size: int = 8,
        max_batch_tokens: int = 8192,
        n_threads: int | None = None,
        **unused: Any,
    ) -> None:
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise DependencyError(f"the Hugging Face runtime needs torch and transformers ({exc})") from exc
        if dtype not in _DTYPES:
            raise ConfigError(f'unknown dtype "{dtype}"; use one of {", ".join(_DTYPES)}')
        if unused:
            log.debug("hf runtime ignores options %s", sorted(unused))
        if n_threads:
            torch.set_num_threads(n_threads)
        self.info = info
        self.artifact = info.path
        self.device = _resolve_device(device)
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens
        started = time.perf_counter()
        self.model, self.tokenizer = self._load(info, dtype, Path(base) if base else None)
        self.load_seconds = time.perf_counter() - started
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.chat_template = getattr(self.tokenizer, "chat_template", None)
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        bos = self.tokenizer.bos_token
        self._bos_text = bos if isinstance(bos, str) and bos else None
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id or 0

    # --- loading -----------------------------------------------------------------------

    def _load(self, info: ArtifactInfo, dtype: str, base: Path | None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
        adapter = info.format == "peft-adapter"
        model_dir = (base or _adapter_base(info)) if adapter else info.path
        tokenizer_dir = info.path if adapter and (info.path / "tokenizer_config.json").exists() else model_dir
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"cannot load {model_dir} with transformers ({type(exc).__name__}: {exc})"
            ) from exc
        if adapter:
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise DependencyError("loading a LoRA adapter needs peft; pip install peft") from exc
            model = PeftModel.from_pretrained(model, info.path)
        model.to(self.device)
        model.eval()
        return model, tokenizer

    # --- tokens and templates ------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        # A rendered chat template already starts with BOS (Llama 3): never add a second one.
        if add_special and self._bos_text and text.startswith(self._bos_text):
            add_special = False
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ConfigError(
                f"{self.artifact} has no chat template; use a plain prompt format (medpalm or alpaca)"
            )
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    # --- scoring -------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        import torch

        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=False)
        return out.logits[0].float().cpu().numpy()

    def score_continuations(self, context: str, continuations: Sequence[str]) -> list[ContinuationScore]:
        return self.score_batch([(context, continuations)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[ContinuationScore]]:
        """Log-likelihoods for many (context, continuations) pairs.

        Contexts whose continuations are all one token (answer letters) are batched together:
        one forward pass per batch, logits at the last position only. A context with longer
        continuations (option texts) is run once; its KV cache is then shared by all its
        continuations, which go through the model together as one batch.
        """
        encoded = []
        for context, continuations in items:
            ctx_ids = self.tokenize(context, add_special=True)
            if not ctx_ids:
                raise ConfigError("cannot score a continuation of an empty context on a model without BOS")
            conts = [
                split_continuation(lambda t: self.tokenize(t, add_special=True), ctx_ids, context, c)
                for c in continuations
            ]
            encoded.append((ctx_ids, conts))
        single = [i for i, (_, conts) in enumerate(encoded) if all(len(c) == 1 for c in conts)]
        last_rows = self._last_logprobs([tuple(encoded[i][0]) for i in single]) if single else []
        results: list[list[ContinuationScore]] = [[] for _ in encoded]
        for i, row in zip(single, last_rows, strict=True):
            results[i] = [continuation_scores(row[None, :], cont) for cont in encoded[i][1]]
        batched = set(single)
        for i, (ctx_ids, conts) in enumerate(encoded):
            if i not in batched:
                results[i] = self._score_with_cache(ctx_ids, conts)
        return results

    def _last_logprobs(self, sequences: list[tuple[int, ...]]) -> list[np.ndarray]:
        """Log-softmax at the last position of every sequence.

        The prefix all sequences share (the instruction, few-shot examples) is run once and its
        KV cache reused; the rest is run in left-padded batches of similar length, with logits
        at the last position only.
        """
        import copy

        import torch

        shared = _common_prefix(sequences)
        prefix_cache = None
        if shared >= MIN_SHARED_PREFIX:
            with torch.inference_mode():
                prefix_cache = self.model(
                    input_ids=torch.tensor([sequences[0][:shared]], device=self.device),
                    use_cache=True,
                    logits_to_keep=1,
                ).cache
        else:
            shared = 0
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out: list[np.ndarray] = [np.empty(0)] * len(sequences)
        start = 0
        while start < len(order):
            end = start + 1
            # Grow the batch while it fits both limits (sorted: the last one is the longest).
            while (
                end < len(order)
                and end - start < self.batch_size
                and (len(sequences[order[end]]) - shared) * (end - start + 1) <= self.max_batch_tokens
            ):
                end += 1
            batch = order[start:end]
            tails = [sequences[i][shared:] for i in batch]
            width = max(len(t) for t in tails)
            ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for r, tail in enumerate(tails):  # left padding: every sequence ends at the last column
                ids[r, width - len(tail) :] = torch.tensor(tail)
                mask[r, shared + width - len(tail) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    cache=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                ).logits
                logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu().numpy()
            for r, i in enumerate(batch):
                out[i] = logprobs[r]
            start = end
        return out

    def _score_with_cache(self, ctx_ids: list[int], conts: list[list[int]]) -> list[ContinuationScore]:
        import torch

        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([ctx_ids], device=self.device), use_cache=True, logits_to_keep=1
            )
            first = torch.log_softmax(out.logits[0, -1].float(), -1).cpu().numpy()
            multi = [c for c in conts if len(c) > 1]
            tails: dict[int, np.ndarray] = {}
            if multi:
                cache = out.cache
                cache.batch_repeat_interleave(len(multi))
                width = max(len(c) - 1 for c in multi)
                # Right padding needs no mask: causal attention never lets a real token see a pad.
                batch = torch.full((len(multi), width), self._pad_id, dtype=torch.long)
                for r, c in enumerate(multi):
                    batch[r, : len(c) - 1] = torch.tensor(c[:-1])
                logits = self.model(input_ids=batch.to(self.device), cache=cache, use_cache=True).logits
                logprobs = torch.log_softmax(logits.float(), -1).cpu().numpy()
                for r, c in enumerate(multi):
                    tails[id(c)] = logprobs[r, : len(c) - 1]
        scores = []
        for c in conts:
            rows = first[None, :] if len(c) == 1 else np.concatenate([first[None, :], tails[id(c)]])
            scores.append(continuation_scores(rows, c))
        return scores

    # --- generation ----------------------------------------------------------------------

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

    def generate(
        self, prompt: str, params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        import torch

        stats = stats if stats is not None else GenerationStats()
        prompt_ids = self.tokenize(prompt, add_special=True)
        stats.prompt_tokens = len(prompt_ids)
        generator = torch.Generator(device="cpu").manual_seed(params.seed)

        @torch.inference_mode()  # on a generator, torch enters and leaves the mode around each step
        def tokens() -> Iterator[int]:
            history = list(prompt_ids)  # for the repetition penalty
            ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
            past = None
            while True:
                out = self.model(input_ids=ids, cache=past, use_cache=True, logits_to_keep=1)
                past = out.cache
                token = self._sample(out.logits[0, -1].float(), history, params, generator)
                history.append(token)
                ids = torch.tensor([[token]], device=self.device)
                yield token

        generated: list[int] = []
        emitted = ""

        def decode(token: int) -> str:
            # Decode the whole completion so multi-byte characters and merged pieces come out right.
            nonlocal emitted
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return ""
            piece, emitted = text[len(emitted) :], text
            return piece

        yield from stream_generation(tokens(), decode, self._eos_ids().__contains__, params, stats)

    @staticmethod
    def _sample(logits, history: list[int], params: SamplingParams, generator) -> int:
        import torch

        if params.repeat_penalty != 1.0 and history:
            seen = torch.tensor(sorted(set(history)), device=logits.device)
            values = logits[seen]
            logits[seen] = torch.where(
                values > 0, values / params.repeat_penalty, values * params.repeat_penalty
            )
        if params.temperature <= 0:
            return int(logits.argmax())
        logits = logits / params.temperature
        if params.top_k > 0:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits[logits < kth] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            drop = sorted_probs.cumsum(0) - sorted_probs > params.top_p
            sorted_probs[drop] = 0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs.cpu(), 1, generator=generator))

    def close(self) -> None:
        import gc

        self.model = None  # type: ignore[assignment]
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
