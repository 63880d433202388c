"""llama.cpp runtime: a GGUF (optionally with a GGUF LoRA applied at run time) via llama-cpp-python.

Log-likelihoods are computed from llama.cpp's raw logits, not from llama-cpp-python's
``echo=True`` logprobs, which 0.3.36 shifts by one token. The runtime keeps track of what the
KV cache holds and evaluates only the part of a prompt it has not seen: a question's prompt is
evaluated once and each option is scored from there (the KV cache is truncated back to the
prompt between options), and prefixes shared with the previous prompt (few-shot examples, a
system prompt, the context of lm-eval's choices) are reused.

Reuse never changes a number: prompts are decoded in blocks of ``kv_block`` tokens at fixed
positions and only whole blocks evaluated the same way are kept (``kvplan``), so a score or a
temperature-0 answer is the same whatever the instance evaluated before.
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
from jmed_edge.runtimes.kvplan import common_prefix, plan_chunks, reusable
from jmed_edge.runtimes.logprobs import Row, TokenLogprob, prompt_token_logprobs, summarise_rows

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
    # Tokens per fixed-position decode call (see kvplan): the granularity at which a prompt
    # reuses a prefix already in the KV cache. Cost against one call per prompt, cold, on the
    # default model (benchmarks/perf/kv_block_cost.py, 1 thread, a loaded 2-core machine):
    # 64 tokens +3%, 190 tokens -2%, 500 tokens -16%, i.e. within the noise of that machine.
    kv_block = 64
    accepts_token_prompts = True  # generate() takes token ids as well as text
    reports_logprobs = True  # generate() fills GenerationStats.tokens when asked

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
        use_mmap: bool | str = "auto",
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
            header = _header(self.model_path)  # read once: both choices below come from it
            ctx = -(-(n_ctx or _default_ctx(header)) // 256) * 256
            if use_mmap == "auto":
                use_mmap = _mmap_pays(header, int(n_gpu_layers))
            self.use_mmap = bool(use_mmap)
            self.llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=ctx,
                n_batch=n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=int(n_gpu_layers),
                lora_path=str(lora_path) if lora_path else None,
                lora_scale=lora_scale,
                use_mmap=self.use_mmap,
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
        # What the KV cache (sequence 0) holds: its tokens, the end of each decode call that wrote
        # it (see kvplan), a logprobs Row per position where one was computed, and whether the
        # context's logits buffer ends with the row of the last held position.
        self._kv: list[int] = []
        self._bounds: list[int] = []
        self._rows: list[Row | None] = []
        self._ends: dict[int, np.ndarray] = {}  # last logits row of each call that computed Rows
        self._logits_at: int | None = None
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

    def _eval(self, ids: Sequence[int], logits_from: int, *, cut: int | None = None) -> np.ndarray:
        """Make the KV cache hold ``ids``; return logits of positions ``logits_from..len(ids)-1``.

        ``cut`` ends the context whose continuation is being scored (default: all of ``ids``);
        see ``kvplan`` for the calls the tokens are decoded in and what of the cache is kept.
        """
        _, logits = self._decode(ids, logits_from, cut=cut)
        return logits

    def _decode(
        self, ids: Sequence[int], logits_from: int, *, cut: int | None = None, rows: bool = False
    ) -> tuple[int, np.ndarray]:
        """Evaluate ``ids`` by ``kvplan``'s calls; returns (first position decoded, its logits on).

        Logits come back from ``logits_from`` on, or, with ``rows``, from wherever decoding
        starts: the positions before it already have a ``Row`` in ``self._rows``.
        """
        ids = [int(t) for t in ids]
        n = len(ids)
        if n > self.llm.n_ctx():
            raise ConfigError(
                f"a prompt of {n} tokens does not fit the context of {self.llm.n_ctx()}; "
                "use fewer shots or a larger n_ctx"
            )
        n_batch = self.llm.n_batch
        plan = plan_chunks(n, n if cut is None else cut, min(self.kv_block, n_batch), n_batch)
        common = common_prefix(self._kv, ids)
        if rows:
            keep = self._reusable_rows(ids, plan, common)
        else:
            keep = reusable(self._bounds, plan, max(min(common, logits_from), 0))
        ctx = self.llm._ctx
        if not ctx.kv_cache_seq_rm(-1, keep, -1):  # a model whose cache cannot be truncated
            ctx.kv_cache_clear()
            keep = 0
        self._kv, self._rows = self._kv[:keep], self._rows[:keep]
        self._bounds = [b for b in self._bounds if b <= keep]
        self._ends = {b: row for b, row in self._ends.items() if b <= keep}
        if rows and keep and keep < n and self._rows[keep - 1].next_id != ids[keep]:
            # The kept prefix ends where this prompt departs: its last Row is re-read for the new
            # next token from that call's saved last logits (see _reusable_rows).
            [self._rows[keep - 1]] = summarise_rows(self._ends[keep][None, :], [ids[keep]])
        self._logits_at = None
        want_from = keep if rows else logits_from
        batch = self.llm._batch.batch
        out: list[np.ndarray] = []
        start = keep
        for end in (b for b in plan if b > keep):
            chunk = ids[start:end]
            n_out = 0
            for i, token in enumerate(chunk):
                pos = start + i
                want = pos >= want_from
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
                self.forget_cache()
                raise ModelError(f"llama.cpp failed to evaluate the prompt: {exc}") from exc
            self._kv.extend(chunk)
            self._bounds.append(end)
            if n_out:
                ptr = ctx.get_logits()
                flat = np.ctypeslib.as_array(
                    ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_out * self.n_vocab,)
                )
                block = flat.reshape(n_out, self.n_vocab).copy()
                out.append(block)
                if rows:
                    nxt = [ids[p + 1] if p + 1 < n else None for p in range(start, end)]
                    self._rows.extend(summarise_rows(block, nxt))
                    self._ends[end] = block[-1].copy()  # not a view: the block is let go
            if not rows or not n_out:
                self._rows.extend([None] * len(chunk))
            start = end
        if out and start == n:
            self._logits_at = n - 1  # the context's logits buffer ends with the last position's row
        logits = (
            np.concatenate(out)
            if len(out) > 1
            else out[0]
            if out
            else np.zeros((0, self.n_vocab), np.float32)
        )
        return keep, logits

    def _reusable_rows(self, ids: list[int], plan: list[int], common: int) -> int:
        """Tokens of the held cache a prompt scored token by token may keep.

        Every kept position needs its Row, and a Row holds the log-probability of the token that
        followed it then: positions before ``common - 1`` predict the same token now. The Row at
        ``common - 1`` predicts a different one (the prompts depart there, as the choices of one
        question do after their shared context); it can be re-read when a decode call ended
        exactly there, since the last logits of each call are kept (one vocabulary-sized row
        per call).
        """
        n = len(ids)
        have = next((i for i, row in enumerate(self._rows) if row is None), len(self._rows))
        keep = reusable(self._bounds, plan, max(min(common, have, n - 1), 0))
        if keep and keep < n and self._rows[keep - 1].next_id != ids[keep] and keep not in self._ends:
            keep = reusable(self._bounds, plan, max(min(common - 1, have, n - 1), 0))
        return keep

    def forget_cache(self) -> None:
        """Drop the KV cache, so the next call evaluates its prompt from the first token."""
        self._kv, self._bounds, self._rows, self._ends = [], [], [], {}
        self._logits_at = None
        self.llm._ctx.kv_cache_clear()

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        self.forget_cache()
        return self._eval(token_ids, 0).astype(np.float32, copy=False)

    def prompt_logprobs(self, token_ids: Sequence[int], top: int = 0) -> list[TokenLogprob]:
        """Each prompt token's log-probability given the tokens before it (the first: None),
        with the ``top`` most likely tokens at each position. A prefix this instance already
        scored in the same decode calls is not computed again."""
        ids = [int(t) for t in token_ids]
        if len(ids) > 1:
            # The last token in a call of its own: prompts that differ only there (the choices
            # of a question) share every call before it.
            self._decode(ids, 0, cut=len(ids) - 1, rows=True)
        return prompt_token_logprobs(ids, self._rows[: len(ids) - 1], top)

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
            # Only the continuation is decoded, in one call after the context's own calls.
            tail = log_softmax(self._eval(ctx_ids + cont[:-1], len(ctx_ids), cut=len(ctx_ids)))
            scores.append(continuation_scores(np.concatenate([last, tail]), cont))
        return scores

    # --- generation ----------------------------------------------------------------------

    def generate(
        self, prompt: str | Sequence[int], params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Stream the completion of ``prompt`` (text, or token ids used as they are).

        The prompt is evaluated by ``kvplan``'s calls and each answer token in a call of its
        own, so at temperature 0 (or a fixed seed) the answer does not depend on what this
        instance evaluated before.
        """
        import llama_cpp

        stats = stats if stats is not None else GenerationStats()
        if isinstance(prompt, str):
            prompt_ids = self.tokenize(prompt, add_special=True)
        else:
            prompt_ids = [int(t) for t in prompt]
        if not prompt_ids:
            raise ConfigError("cannot generate from an empty prompt on a model without BOS")
        if len(prompt_ids) + params.max_tokens > self.llm.n_ctx():
            raise ConfigError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceed the context "
                f"of {self.llm.n_ctx()}; shorten the prompt or open the model with a larger n_ctx"
            )
        stats.prompt_tokens = len(prompt_ids)
        stats.tokens = []
        self.llm.set_seed(params.seed)
        vocab = self.llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n_prompt = len(prompt_ids)

        def tokens() -> Iterator[int]:
            if params.max_tokens < 1:
                return
            if not (self._kv == prompt_ids and self._logits_at == n_prompt - 1):
                self._eval(prompt_ids, n_prompt - 1)
            # llama-cpp-python samples from the logits the last decode left in the context.
            self.llm.input_ids[:n_prompt] = prompt_ids
            self.llm.n_tokens = n_prompt
            self.llm._requires_eval = False
            generated = self.llm.generate(
                [],
                reset=False,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=0.0,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
            )
            try:
                for token in generated:
                    if params.logprobs is not None:
                        stats.tokens.append(self._sampled_logprob(int(token), params.logprobs))
                    yield token
            finally:
                generated.close()
                # Record what the KV cache holds as soon as generation stops, before the last piece:
                # each answer token was decoded in a call of its own.
                held = self.llm.n_tokens
                self._kv = [int(t) for t in self.llm.input_ids[:held]]
                self._bounds += list(range(n_prompt + 1, held + 1))
                self._rows += [None] * (held - len(self._rows))
                self._logits_at = None

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

    def _sampled_logprob(self, token: int, top: int) -> TokenLogprob:
        """The raw-logit log-probability of a token just sampled from the context's last row."""
        ptr = self.llm._ctx.get_logits_ith(-1)
        row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        [summary] = summarise_rows(row[None, :].copy(), [token], max(top, 1))
        return TokenLogprob(token, summary.logprob, summary.top[:top])

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token adds to a text (special tokens spelled out)."""
        return self.llm.detokenize([int(token)], special=True)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]


def _header(model_path: Path) -> dict[str, Any]:
    """The GGUF's metadata, or {} where it cannot be read (llama.cpp then says what is wrong)."""
    from jmed_edge.convert.ggufinfo import read_gguf

    try:
        return dict(read_gguf(model_path).metadata)
    except ArtifactError:
        return {}


def _mmap_pays(header: dict[str, Any], n_gpu_layers: int) -> bool:
    """Whether to map the GGUF (``header``: its metadata) rather than read it into memory.

    On a CPU, llama.cpp repacks quantized weights (Q4_0, Q4_K, Q5_K, Q6_K, Q2_K, Q8_0, IQ4_NL:
    ``ggml-cpu/repack.cpp``) into an interleaved copy for its matmul kernels. With the file mapped,
    the pages it read stay resident beside that copy: a 7B Q4_K_M (4.68 GB) measured 7.69 GB RSS
    (3.14 GB repacked + 4.55 GB mapped) against 4.69 GB read without mmap. A float file
    (F16/BF16/F32) is not repacked and a mapped one is shared and loads at once; offloaded layers
    live on the GPU, so mapping is kept there too, as it is for a header that cannot be read."""
    if n_gpu_layers != 0 or not header:
        return True
    from jmed_edge.convert.checks import FLOAT_FILE_TYPES
    from jmed_edge.convert.ggufinfo import KEY_FILE_TYPE

    return header.get(KEY_FILE_TYPE) in FLOAT_FILE_TYPES


def _default_ctx(header: dict[str, Any]) -> int:
    """min(training context, DEFAULT_N_CTX), from the GGUF header (``header``) before a context
    exists.

    A context longer than the model was trained for costs KV-cache memory for positions the
    model cannot use (and llama.cpp warns about it on stderr).
    """
    arch = header.get("general.architecture", "")
    train_ctx = header.get(f"{arch}.context_length")
    return (
        min(int(train_ctx), DEFAULT_N_CTX) if isinstance(train_ctx, int) and train_ctx > 0 else DEFAULT_N_CTX
    )
