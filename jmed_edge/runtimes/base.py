"""The runtime interface every stage uses to run a model artifact, whatever its format.

``bench`` scores continuations, ``convert``/``verify`` and ``report`` read full logits,
``chat``/``serve``/the TUI stream generations. The artifact's manifest picks the runtime;
the tokenizer and chat template always come from the artifact itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    "onnx": "onnx",
}
RUNTIMES.add("hf", "jmed_edge.runtimes.hf:HFRuntime", "Hugging Face model through torch")
RUNTIMES.add("llamacpp", "jmed_edge.runtimes.llamacpp:LlamaCppRuntime", "GGUF through llama.cpp")


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


@dataclass
class GenerationStats:
    """Filled in by ``generate`` as it streams; read after the iterator ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str = ""  # "stop", "length" or "cancelled"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decode_tokens_per_second(self) -> float:
        return self.completion_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

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

    def score_continuations(
        self, context: str, continuations: Sequence[str]
    ) -> list[ContinuationScore]:
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
    """Open ``artifact`` with the runtime its manifest names (or ``runtime`` to override)."""
    from jmed_edge.artifacts import describe

    info = describe(Path(artifact))
    name = runtime or FORMAT_TO_RUNTIME.get(info.format)
    if name is None:
        from jmed_edge.errors import ArtifactError

        raise ArtifactError(f"{artifact} has format {info.format!r}, which no runtime can run")
    cls = RUNTIMES.get(name)
    return cls(info, **options)
