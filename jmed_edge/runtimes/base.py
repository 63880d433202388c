"""The runtime interface every stage uses to run a model artifact, whatever its format.

``bench`` scores continuations, ``convert``/``verify`` and ``report`` read full logits,
``chat``/``serve``/the TUI stream generations. The artifact's manifest picks the runtime;
the tokenizer and chat template always come from the artifact itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jmed_edge.registry import Registry

RUNTIMES: Registry[Any] = Registry("runtime")
# manifest ``format`` -> runtime name. Rows are added as runtimes land.
FORMAT_TO_RUNTIME = {
    "hf-safetensors": "hf",
    "peft-adapter": "hf",
    "gguf": "llamacpp",
    "gguf-lora": "llamacpp",  # needs base=PATH (or a manifest naming its base GGUF)
    "onnx": "onnx",
}
RUNTIMES.add("hf", "jmed_edge.runtimes.hf:HFRuntime", "Hugging Face model through torch")
RUNTIMES.add("llamacpp", "jmed_edge.runtimes.llamacpp:LlamaCppRuntime", "GGUF through llama.cpp")
RUNTIMES.add("onnx", "jmed_edge.runtimes.onnx:OnnxRuntime", "ONNX decoder through onnxruntime-genai")


@dataclass(frozen=True)
class ContinuationScore:
    """Log-probability of a continuation given a context, summed over its tokens."""

    logprob: float
    n_tokens: int
    is_greedy: bool = False  # every continuation token was the argmax

    def per_token(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repeat_penalty: float = 1.0
    seed: int = 0
    stop: Sequence[str] = ()
    # Record each generated token's log-probability and this many alternatives (0-20) in
    # ``GenerationStats.tokens``; None records nothing. Runtimes without it ignore the field.
    logprobs: int | None = None


@dataclass
class GenerationStats:
    """Filled in by ``generate`` as it streams; read after the iterator ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    # Forward passes timed in decode_seconds: the first token comes from the prompt pass, and an
    # end-of-generation token costs a pass without counting as a completion token.
    decode_steps: int = 0
    finish_reason: str = ""  # "stop", "length" or "cancelled"
    # ``logprobs.TokenLogprob`` per generated token, when ``SamplingParams.logprobs`` asks.
    tokens: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decode_tokens_per_second(self) -> float:
        steps = self.decode_steps or self.completion_tokens
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0


@runtime_checkable
class Runtime(Protocol):
    """What every runtime offers. Implementations load lazily and free memory in ``close``."""

    name: str
    artifact: Path
    context_length: int

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids as the artifact's own tokenizer produces them (special tokens parsed)."""
        ...

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The artifact's chat template applied to ``messages``."""
        ...

    def score_continuations(self, context: str, continuations: Sequence[str]) -> list[ContinuationScore]:
        """Log-likelihood of each continuation after ``context`` (shared prefix computed once)."""
        ...

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position, shape (len(token_ids), vocab), float32."""
        ...

    def generate(
        self, prompt: str, params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Stream text pieces of the completion of ``prompt`` (already templated)."""
        ...

    def close(self) -> None: ...


def open_runtime(artifact: Path, *, runtime: str | None = None, **options: Any) -> Runtime:
    """Open ``artifact`` with the runtime its manifest names (or ``runtime`` to override).

    ``artifact`` may also be an ``ArtifactInfo`` already produced by ``describe``. A runtime
    whose library is not installed fails with a one-line ``DependencyError``.
    """
    from jmed_edge.artifacts import ArtifactInfo, describe
    from jmed_edge.errors import ArtifactError, DependencyError

    info = artifact if isinstance(artifact, ArtifactInfo) else describe(Path(artifact))
    name = runtime or FORMAT_TO_RUNTIME.get(info.format)
    if name is None:
        raise ArtifactError(f"{info.path} has format {info.format!r}, which no runtime can run")
    try:
        cls = RUNTIMES.get(name)
    except ImportError as exc:
        raise DependencyError(
            f"{info.path} needs the {name} runtime, whose library is not installed ({exc.name or exc}); "
            "install it (see `jmed-edge doctor`) or pick another artifact"
        ) from exc
    return cls(info, **options)


# --- helpers shared by the runtimes -------------------------------------------------------


def split_continuation(
    tokenize: Callable[[str], list[int]], context_ids: list[int], context: str, continuation: str
) -> list[int]:
    """Token ids of ``continuation`` as they follow ``context`` when the two are tokenized together.

    Tokenizing the joined text keeps merges across the boundary (" A" after "Answer:"); when the
    joined tokens do not start with the context's own tokens, the continuation is tokenized alone.
    """
    whole = tokenize(context + continuation)
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        return whole[len(context_ids) :]
    return tokenize(continuation)


def continuation_scores(logprobs_rows: np.ndarray, continuation_ids: Sequence[int]) -> ContinuationScore:
    """Score from log-softmax rows: row ``i`` predicts ``continuation_ids[i]``."""
    ids = np.asarray(continuation_ids, dtype=np.int64)
    picked = logprobs_rows[np.arange(len(ids)), ids]
    greedy = bool(np.all(logprobs_rows.argmax(axis=-1) == ids))
    return ContinuationScore(float(picked.sum()), len(ids), greedy)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def score_batch(
    runtime: Runtime, items: Sequence[tuple[str, Sequence[str]]]
) -> list[list[ContinuationScore]]:
    """``score_continuations`` over many (context, continuations) pairs.

    A runtime that can batch across contexts offers ``score_batch`` itself (torch does); the
    others are called once per context.
    """
    batched = getattr(runtime, "score_batch", None)
    if batched is not None:
        return batched(items)
    return [runtime.score_continuations(context, conts) for context, conts in items]


def stream_generation(
    tokens: Iterator[int],
    decode: Callable[[int], str],
    is_end: Callable[[int], bool],
    params: SamplingParams,
    stats: GenerationStats,
    tail: Callable[[str], str] | None = None,
) -> Iterator[str]:
    """The generation loop every runtime shares, around its own token source.

    ``tokens`` computes the next token only when asked (the first one includes the prompt pass),
    ``decode`` turns a token into the text it adds ("" while a character is incomplete), and
    ``tail(finish_reason)`` returns what a stateful decoder still holds at the end. Times the
    prompt and the decode (not the caller's time between pieces), stops at an end-of-generation
    token, a stop string or ``max_tokens``, and never emits the start of a stop string it may
    still complete.
    """
    matcher = StopMatcher(params.stop)
    stats.finish_reason = "length"
    stats.completion_tokens = stats.decode_steps = 0
    stats.prompt_seconds = stats.decode_seconds = 0.0
    if params.max_tokens < 1:
        return
    first = True
    clock = time.perf_counter()
    try:
        for token in tokens:
            now = time.perf_counter()
            elapsed, clock = now - clock, now
            if first:
                stats.prompt_seconds, first = elapsed, False
            else:
                stats.decode_seconds += elapsed
                stats.decode_steps += 1
            if is_end(token):
                stats.finish_reason = "stop"
                break
            stats.completion_tokens += 1
            safe = matcher.feed(decode(token))
            if safe:
                paused = time.perf_counter()
                yield safe
                clock += time.perf_counter() - paused  # the caller's time is not decode time
            if matcher.stopped:
                stats.finish_reason = "stop"
                return
            if stats.completion_tokens >= params.max_tokens:
                break
    except GeneratorExit:
        stats.finish_reason = "cancelled"
        raise
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
    rest = matcher.feed(tail(stats.finish_reason) if tail else "") + matcher.flush()
    if rest:
        yield rest


class StopMatcher:
    """Streams text while holding back what could be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is safe to emit now; sets ``stopped`` once a stop string appears."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = max(
            (k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0
        )
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class ChatTemplateView:
    """The two members of a tokenizer that ``jmed_edge.prompts`` uses, served by a runtime.

    Lets the prompt templates render a GGUF's or an ONNX model's chat template exactly as they
    render a Hugging Face tokenizer's.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.chat_template = getattr(runtime, "chat_template", None)

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = True
    ) -> str:
        if tokenize:
            raise ValueError("ChatTemplateView renders text only; call runtime.tokenize on the result")
        return self.runtime.render_chat(messages, add_generation_prompt=add_generation_prompt)
