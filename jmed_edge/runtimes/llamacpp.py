"""llama.cpp runtime: a GGUF (optionally with a GGUF LoRA applied at run time) via llama-cpp-python.

Log-likelihoods are computed from llama.cpp's raw logits, not from llama-cpp-python's
``echo=True`` logprobs, which 0.3.36 shifts by one token. The runtime keeps track of what the
KV cache holds and evaluates only the part of a prompt it has not seen: a question's prompt is
evaluated once and each option is scored from there (the KV cache is truncated back to the
prompt between options), and few-shot prefixes shared by consecutive questions are reused.
"""

from __future__ import annotations

import codecs
import ctypes
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
    log_softmax,
    split_continuation,
    stream_generation,
)

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 4096


def _gguf_lora_base(info: ArtifactInfo, base: Path | str | None) -> Path:
    """The base GGUF for a GGUF LoRA artifact: the ``base`` option, else what its manifest names."""
    candidates = [str(base)] if base else []
    if info.manifest:
        for key in ("base_gguf", "base"):
            for table in (info.manifest.details, info.manifest.config):
                if isinstance(table.get(key), str):
                    candidates.append(table[key])
    for candidate in candidates:
        path = Path(candidate)
        if path.is_dir():
            found = sorted(path.glob("*.gguf"))
            path = found[0] if len(found) == 1 else path
        if path.is_file():
            return path
    raise ArtifactError(
        f"{info.path} is a GGUF LoRA adapter; name the base GGUF it applies to (base=PATH or --base)"
    )


class LlamaCppRuntime:
    """Runtime over ``llama_cpp.Llama``.

    Options: ``n_ctx`` (default min(training context, 4096)), ``n_threads``, ``n_gpu_layers``
    ("auto": all layers when this llama.cpp build can offload to a GPU, else 0), ``lora_path``
    (a GGUF LoRA applied at run time), ``lora_scale``, ``base`` (for a GGUF LoRA artifact).
    """

    name = "llamacpp"

    def __init__(
        self,
        info: ArtifactInfo,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int | str = "auto",
        n_batch: int = 512,
        lora_path: Path | str | None = None,
        lora_scale: float = 1.0,
        base: Path | str | None = None,
        seed: int = 0,
        verbose: bool = False,
        **unused: Any,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise DependencyError(
                f"the llama.cpp runtime needs llama-cpp-python ({exc}); pip install llama-cpp-python==0.3.36"
            ) from exc
        if unused:
            log.debug("llama.cpp runtime ignores options %s", sorted(unused))
        model_path = info.model_file
        if info.format == "gguf-lora":
            lora_path = lora_path or info.model_file
            model_path = _gguf_lora_base(info, base)
        if model_path is None or not Path(model_path).is_file():
            raise ArtifactError(f"{info.path} holds no GGUF model file")
        if lora_path is not None and not Path(lora_path).is_file():
            raise ArtifactError(f"LoRA file {lora_path} does not exist")
        if n_gpu_layers == "auto":
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.info = info
        self.artifact = info.path
        self.model_path = Path(model_path)
        self.lora_path = Path(lora_path) if lora_path else None
        started = time.perf_counter()
        try:
            # llama.cpp rounds the context up to a multiple of 256 but llama-cpp-python sizes its
            # token buffer to the number asked for: ask for the rounded size so both agree.
            ctx = -(-(n_ctx or _default_ctx(self.model_path)) // 256) * 256
            self.llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=ctx,
                n_batch=n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=int(n_gpu_layers),
                lora_path=str(lora_path) if lora_path else None,
                lora_scale=lora_scale,
                logits_all=False,  # logits are read per decode call below, only where needed
                seed=seed,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {model_path}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        train_ctx = self.llm._model.n_ctx_train()
        self.context_length = self.llm.n_ctx() if n_ctx else min(self.llm.n_ctx(), train_ctx or DEFAULT_N_CTX)
        self.n_vocab = self.llm.n_vocab()
        self.n_gpu_layers = int(n_gpu_layers)
        self.n_threads = self.llm.context_params.n_threads
        self.metadata: dict[str, str] = dict(self.llm.metadata)
        self.chat_template: str | None = self.metadata.get("tokenizer.chat_template")
        bos = self.llm.token_bos()
        eos = self.llm.token_eos()
        self._bos_id = bos if bos >= 0 else None
        self._bos_text = self._token_text(bos)
        self._eos_text = self._token_text(eos)
        self._kv: list[int] = []  # tokens currently held in the KV cache (sequence 0)
        self._formatter: dict[bool, Any] = {}

    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        return self.llm._model.token_get_text(token)

    # --- tokens and templates ------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        # Special tokens are parsed (ChatML tokenizes as HF does only that way); a text that
        # already starts with BOS (a rendered Llama 3 template) does not get a second one.
        if add_special and self._bos_text and text.startswith(self._bos_text):
            add_special = False
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ConfigError(
                f"{self.artifact} has no chat template in its GGUF metadata; use a plain prompt format "
                "(medpalm or alpaca) or re-convert from a tokenizer with a chat_template"
            )
        if add_generation_prompt not in self._formatter:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            # The same Jinja environment llama-cpp-python (and transformers) render templates in.
            self._formatter[add_generation_prompt] = Jinja2ChatFormatter(
                template=self.chat_template,
                eos_token=self._eos_text,
                bos_token=self._bos_text,
                add_generation_prompt=add_generation_prompt,
            )
        return self._formatter[add_generation_prompt](messages=list(messages)).prompt

    # --- evaluation over the KV cache ----------------------------------------------------

    def _eval(self, ids: Sequence[int], logits_from: int) -> np.ndarray:
        """Make the KV cache hold ``ids``; return logits of positions ``logits_from..len(ids)-1``.

        Positions already in the cache before ``logits_from`` are reused; everything from
        there on is (re)decoded in batches of ``n_batch``.
        """
        ids = list(ids)
        if len(ids) > self.llm.n_ctx():
            raise ConfigError(
                f"a prompt of {len(ids)} tokens does not fit the context of {self.llm.n_ctx()}; "
                "use fewer shots or a larger n_ctx"
            )
        common = 0
        for a, b in zip(self._kv, ids, strict=False):
            if a != b or common >= logits_from:
                break
            common += 1
        ctx = self.llm._ctx
        if not ctx.kv_cache_seq_rm(-1, common, -1):  # a model whose cache cannot be truncated
            ctx.kv_cache_clear()
            common = 0
        self._kv = ids[:common]
        batch = self.llm._batch.batch
        n_batch = self.llm.n_batch
        rows: list[np.ndarray] = []
        for start in range(common, len(ids), n_batch):
            chunk = ids[start : start + n_batch]
            n_out = 0
            for i, token in enumerate(chunk):
                pos = start + i
                want = pos >= logits_from
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = want
                n_out += want
            batch.n_tokens = len(chunk)
            try:
                ctx.decode(self.llm._batch)
            except RuntimeError as exc:
                self._kv = []
                ctx.kv_cache_clear()
                raise ModelError(f"llama.cpp failed to evaluate the prompt: {exc}") from exc
            self._kv.extend(chunk)
            if n_out:
                ptr = ctx.get_logits()
                flat = np.ctypeslib.as_array(
                    ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_out * self.n_vocab,)
                )
                rows.append(flat.reshape(n_out, self.n_vocab).copy())
        if not rows:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        return np.concatenate(rows) if len(rows) > 1 else rows[0]

    def forget_cache(self) -> None:
        """Drop the KV cache, so the next call evaluates its prompt from the first token."""
        self._kv = []
        self.llm._ctx.kv_cache_clear()

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        self.forget_cache()
        return self._eval(token_ids, 0).astype(np.float32, copy=False)

    def score_continuations(self, context: str, continuations: Sequence[str]) -> list[ContinuationScore]:
        ctx_ids = self.tokenize(context, add_special=True)
        if not ctx_ids:
            raise ConfigError("cannot score a continuation of an empty context on a model without BOS")
        last = log_softmax(self._eval(ctx_ids, len(ctx_ids) - 1))[-1:]  # predicts the first token
        scores = []
        for continuation in continuations:
            cont = split_continuation(
                lambda t: self.tokenize(t, add_special=True), ctx_ids, context, continuation
            )
            if len(cont) == 1:
                scores.append(continuation_scores(last, cont))
                continue
            # Only the continuation is decoded: the context stays in the KV cache.
            tail = log_softmax(self._eval(ctx_ids + cont[:-1], len(ctx_ids)))
            scores.append(continuation_scores(np.concatenate([last, tail]), cont))
        return scores

    # --- generation ----------------------------------------------------------------------

    def generate(
        self, prompt: str, params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        import llama_cpp

        stats = stats if stats is not None else GenerationStats()
        prompt_ids = self.tokenize(prompt, add_special=True)
        if len(prompt_ids) + params.max_tokens > self.llm.n_ctx():
            raise ConfigError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceed the context "
                f"of {self.llm.n_ctx()}; shorten the prompt or open the model with a larger n_ctx"
            )
        stats.prompt_tokens = len(prompt_ids)
        # Hand llama-cpp-python our view of the KV cache so it reuses the shared prefix.
        self.llm.input_ids[: len(self._kv)] = self._kv
        self.llm.n_tokens = len(self._kv)
        self.llm._requires_eval = True  # the cached logits may belong to another sequence
        self.llm.set_seed(params.seed)
        vocab = self.llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def tokens() -> Iterator[int]:
            generated = self.llm.generate(
                prompt_ids,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=0.0,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
            )
            try:
                yield from generated
            finally:
                generated.close()
                # Record what the KV cache holds as soon as generation stops, before the last piece.
                self._kv = [int(t) for t in self.llm.input_ids[: self.llm.n_tokens]]

        def tail(finish_reason: str) -> str:
            # Cut off by max_tokens mid-character: drop the partial bytes rather than print U+FFFD.
            return decoder.decode(b"", final=finish_reason != "length")

        yield from stream_generation(
            tokens(),
            lambda token: decoder.decode(self.llm.detokenize([token])),
            lambda token: llama_cpp.llama_vocab_is_eog(vocab, token),
            params,
            stats,
            tail,
        )

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]


def _default_ctx(model_path: Path) -> int:
    """min(training context, DEFAULT_N_CTX), read from the GGUF header before a context exists.

    A context longer than the model was trained for costs KV-cache memory for positions the
    model cannot use (and llama.cpp warns about it on stderr).
    """
    from jmed_edge.convert.ggufinfo import read_gguf

    try:
        metadata = read_gguf(model_path).metadata
    except ArtifactError:  # llama.cpp itself says what is wrong with the file
        return DEFAULT_N_CTX
    arch = metadata.get("general.architecture", "")
    train_ctx = metadata.get(f"{arch}.context_length")
    return (
        min(int(train_ctx), DEFAULT_N_CTX) if isinstance(train_ctx, int) and train_ctx > 0 else DEFAULT_N_CTX
    )
