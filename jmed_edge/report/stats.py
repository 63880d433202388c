"""Paired statistics for comparing an artifact's answers with the reference's, question by question.

Accuracy alone hides answer flips (quantized models can keep their accuracy while changing many
answers), so every comparison is paired: the same questions, right/wrong for both models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_ci(
    correct: Sequence[bool] | np.ndarray,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of (weighted) accuracy, resampling questions with replacement."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return Interval(float("nan"), float("nan"))
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    totals = w[idx].sum(axis=1)
    stats = np.divide((values * w)[idx].sum(axis=1), totals, out=np.zeros(n_resamples), where=totals > 0)
    alpha = (1 - confidence) / 2
    return Interval(float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)))


@dataclass(frozen=True)
class PairedComparison:
    n: int
    both_right: int
    right_to_wrong: int  # reference right, candidate wrong
    wrong_to_right: int  # reference wrong, candidate right
    both_wrong: int
    p_value: float  # McNemar's exact test (two-sided) on the discordant pairs

    @property
    def difference(self) -> float:
        """Candidate accuracy minus reference accuracy, as a fraction."""
        return (self.wrong_to_right - self.right_to_wrong) / self.n if self.n else 0.0

    @property
    def flips(self) -> int:
        return self.right_to_wrong + self.wrong_to_right


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of b vs c with p = 1/2."""
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(right_to_wrong, wrong_to_right), discordant, 0.5).pvalue)


def paired(reference: Sequence[bool], candidate: Sequence[bool]) -> PairedComparison:
    ref = np.asarray(reference, dtype=bool)
    cand = np.asarray(candidate, dtype=bool)
    if ref.shape != cand.shape:
        raise ValueError(f"paired comparison needs the same questions ({ref.size} vs {cand.size})")
    b = int(np.sum(ref & ~cand))
    c = int(np.sum(~ref & cand))
    return PairedComparison(
        n=int(ref.size),
        both_right=int(np.sum(ref & cand)),
        right_to_wrong=b,
        wrong_to_right=c,
        both_wrong=int(np.sum(~ref & ~cand)),
        p_value=mcnemar_exact(b, c),
    )


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when smaller x (size) and larger y (accuracy) are better."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front
