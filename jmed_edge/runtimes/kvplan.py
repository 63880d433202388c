"""Which decode calls evaluate a prompt, and how much of a held KV cache a new prompt may reuse.

llama.cpp's float sums depend on how a sequence is split into decode calls: on some CPUs and
weight types a token decoded alone gets other logits than the same token decoded inside a batch
(F16 on AVX-512: up to 0.03 in a logit, measured). Reusing whatever prefix the cache happens to
hold therefore made an answer depend on the requests before it. Here every prompt is evaluated
in the same calls whatever came before: blocks of ``block`` tokens at fixed positions
(0..block, block..2*block, ...) up to ``cut``, then the rest; and a held cache is reused only up
to a call boundary at which the held layout and the new prompt's layout agree call for call.
The kept prefix then holds exactly the numbers a fresh evaluation would write.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_chunks(n: int, cut: int, block: int, n_batch: int) -> list[int]:
    """End positions of the decode calls that evaluate ``n`` tokens.

    Blocks of ``block`` at fixed positions up to ``cut`` (the end of a scored context; ``n`` for
    a plain prompt), the remainder up to ``cut``, then pieces of ``n_batch`` from ``cut`` on.
    """
    if not 0 < block <= n_batch:
        raise ValueError(f"block {block} must be between 1 and n_batch {n_batch}")
    cut = max(0, min(cut, n))
    bounds = list(range(block, cut + 1, block))
    if cut and (not bounds or bounds[-1] != cut):
        bounds.append(cut)
    pos = cut
    while pos < n:
        pos = min(pos + n_batch, n)
        bounds.append(pos)
    return bounds


def reusable(held: Sequence[int], plan: Sequence[int], limit: int) -> int:
    """Tokens of the held cache to keep: the last call boundary, at most ``limit``, up to which
    the held calls and the planned calls are the same (``limit``: tokens known to agree, and no
    further than the first position whose logits are wanted)."""
    keep = 0
    for a, b in zip(held, plan, strict=False):
        if a != b or a > limit:
            break
        keep = a
    return keep


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
