"""Per-token log-probabilities read off raw logits: what ``serve`` reports as ``logprobs``.

Every number is the log-softmax of the model's raw logits (no temperature, no penalties), as
``bench`` computes its continuation scores; the normaliser is summed in float64 from float32
exponentials (3.5e-8 from ``bench``'s all-float64 arithmetic on 49,152-token rows, measured), so a
continuation's summed ``token_logprobs`` from the server and its ``bench`` score differ only by
llama.cpp's own batch-split spread (``jmed_edge.testing.numerics.LLAMACPP_CONTINUATION_ATOL``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# OpenAI's limit on top_logprobs (chat) and logprobs (legacy completions).
TOP_MAX = 20


@dataclass(frozen=True)
class Row:
    """What one position's next-token distribution says: the log-probability of the token that
    actually followed (``None`` when none did) and the ``TOP_MAX`` most likely tokens."""

    next_id: int | None
    logprob: float | None
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class TokenLogprob:
    """One token of a prompt or an answer: its log-probability given everything before it
    (``None`` for the first prompt token, which nothing predicts) and the most likely
    alternatives at its position, best first."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


def summarise_rows(logits: np.ndarray, next_ids: Sequence[int | None], k: int = TOP_MAX) -> list[Row]:
    """``Row`` per logits row; ``next_ids[i]`` is the token that followed row ``i`` (or None).

    ``log_softmax`` row by row without a float64 copy of the whole block: the normaliser in
    float64 (the same value ``log_softmax`` subtracts), the top ``k`` found on the raw logits,
    since log-softmax keeps their order. An echo of a 190-token prompt spends this on every
    position, so it is kept to one pass over each row.
    """
    if len(logits) == 0:
        return []
    logits = np.asarray(logits, dtype=np.float32)
    k = min(k, logits.shape[-1])
    peak = logits.max(axis=-1, keepdims=True)
    norm = peak[:, 0].astype(np.float64) + np.log(np.exp(logits - peak).sum(axis=-1, dtype=np.float64))
    part = np.argpartition(logits, logits.shape[-1] - k, axis=-1)[:, -k:]
    rows = []
    for i, nxt in enumerate(next_ids):
        ids = part[i][np.argsort(-logits[i, part[i]], kind="stable")]
        top = tuple((int(t), float(logits[i, t]) - norm[i]) for t in ids)
        rows.append(Row(nxt, None if nxt is None else float(logits[i, nxt]) - norm[i], top))
    return rows


def prompt_token_logprobs(ids: Sequence[int], rows: Sequence[Row], top: int) -> list[TokenLogprob]:
    """The prompt's tokens with their log-probabilities: row ``i`` predicts token ``i + 1``."""
    out = [TokenLogprob(int(ids[0]), None, ())] if ids else []
    for token, row in zip(ids[1:], rows, strict=False):
        out.append(TokenLogprob(int(token), row.logprob, row.top[:top]))
    return out


def prompt_logprobs(runtime: Any, ids: Sequence[int], top: int) -> list[TokenLogprob]:
    """``runtime.prompt_logprobs`` when it has one (llama.cpp caches), else from ``logits``."""
    own = getattr(runtime, "prompt_logprobs", None)
    if own is not None:
        return own(ids, top)
    ids = list(ids)
    rows = summarise_rows(runtime.logits(ids)[:-1], ids[1:], max(top, 1)) if len(ids) > 1 else []
    return prompt_token_logprobs(ids, rows, top)
