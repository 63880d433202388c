"""Paired statistics for comparing an artifact's answers with the reference's, question by question.

Accuracy alone hides answer flips (quantized models can keep their accuracy while changing many
answers), so every comparison is paired: the same questions, right/wrong for both models. The
difference gets a 95% interval on the paired outcomes (Newcombe's hybrid score interval), and
the interval decides non-inferiority against the allowed loss: "not significant" is never read
as "no loss".
"""

from __future__ import annotations

import math
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


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson(successes: float, n: float, z: float = Z95) -> Interval:
    """Wilson's score interval for one proportion (Wilson 1927, JASA 22:209; no continuity correction)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def newcombe_paired(
    both_right: float, right_to_wrong: float, wrong_to_right: float, both_wrong: float, z: float = Z95
) -> Interval:
    """95% interval of candidate accuracy minus reference accuracy from the paired 2x2 table.

    Newcombe's hybrid score interval for paired proportions: Newcombe RG (1998), "Improved
    confidence intervals for the difference between binomial proportions based on paired data",
    Stat Med 17:2635-2650, method 10. The Wilson intervals of the two marginal accuracies are
    combined "square and add", allowing for their correlation phi, which uses Newcombe's
    correction (phi = 0 when 0 <= ad - bc <= n/2, ad - bc - n/2 above that). Counts may be
    fractional (the sample-size projection scales the observed table).
    """
    # Newcombe's e, f, g, h with the candidate as the first classification.
    e, f, g, h = both_right, wrong_to_right, right_to_wrong, both_wrong
    n = e + f + g + h
    if n <= 0:
        return Interval(float("nan"), float("nan"))
    p1, p2 = (e + f) / n, (e + g) / n
    w1, w2 = wilson(e + f, n, z), wilson(e + g, n, z)
    margins = (e + f) * (g + h) * (e + g) * (f + h)
    cross = e * h - f * g
    if margins <= 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > n / 2 else cross) / math.sqrt(margins)
    d1, u2 = p1 - w1.low, w2.high - p2
    u1, d2 = w1.high - p1, p2 - w2.low
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, d1 * d1 - 2 * phi * d1 * u2 + u2 * u2))
    high = diff + math.sqrt(max(0.0, u1 * u1 - 2 * phi * u1 * d2 + d2 * d2))
    return Interval(max(-1.0, low), min(1.0, high))


def noninferiority(ci_points: Interval, max_loss: float) -> bool | None:
    """True when the whole interval lies above -max_loss, False when it lies below, else None.

    The usual two-sided-95%-interval reading of a non-inferiority margin (CONSORT extension for
    non-inferiority trials, Piaggio et al. 2012, JAMA 308:2594, figure 1).
    """
    if math.isnan(ci_points.low) or math.isnan(ci_points.high):
        return None
    if ci_points.low >= -max_loss:
        return True
    if ci_points.high < -max_loss:
        return False
    return None


def questions_needed(
    both_right: int, right_to_wrong: int, wrong_to_right: int, both_wrong: int, max_loss: float,
    *, cap: int = 100_000,
) -> int | None:  # fmt: skip
    """Questions per cell after which the Newcombe interval would decide, if the observed rates held.

    The observed table is scaled to n questions (same discordance rate, same difference) and n is
    searched (doubling, then bisection) for the first size whose interval lies wholly above or
    below -max_loss. None when even ``cap`` questions would not decide (the difference sits on
    the margin) or nothing was observed.
    """
    counts = (both_right, right_to_wrong, wrong_to_right, both_wrong)
    n0 = sum(counts)
    if n0 == 0:
        return None

    def decided(n: int) -> bool:
        scaled = newcombe_paired(*(c * n / n0 for c in counts))
        return noninferiority(Interval(100 * scaled.low, 100 * scaled.high), max_loss) is not None

    if decided(n0):
        return n0
    low, high = n0, n0
    while not decided(high):
        low, high = high, high * 2
        if high > cap:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if decided(mid) else (mid, high)
    return high


def paired_bootstrap_delta(
    reference: Sequence[bool], candidate: Sequence[bool], weights: Sequence[float],
    *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> tuple[float, Interval]:  # fmt: skip
    """Points-weighted score difference (candidate minus reference) and its paired bootstrap interval.

    Questions are resampled with replacement, keeping both models' answers to a question together
    (the paired percentile bootstrap; Efron & Tibshirani 1993, An Introduction to the Bootstrap,
    ch. 13). Used for IgakuQA's points score, where a score interval for proportions does not apply.
    """
    ref = np.asarray(reference, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    w = np.asarray(weights, dtype=float)
    total = w.sum()
    if ref.size == 0 or total <= 0:
        return 0.0, Interval(float("nan"), float("nan"))
    delta = float(((cand - ref) * w).sum() / total)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ref.size, size=(n_resamples, ref.size))
    totals = w[idx].sum(axis=1)
    stats = np.divide(
        ((cand - ref) * w)[idx].sum(axis=1), totals, out=np.zeros(n_resamples), where=totals > 0
    )
    alpha = (1 - confidence) / 2
    return delta, Interval(float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)))


@dataclass(frozen=True)
class ExcludedDelta:
    """The paired difference recomputed without some questions (``n`` is what is left)."""

    n: int
    delta: float  # percentage points, candidate minus reference
    delta_ci: Interval


@dataclass(frozen=True)
class PairedComparison:
    """Candidate against reference on the same questions. ``delta`` and ``delta_ci`` are in
    percentage points (candidate minus reference); ``noninferior`` reads the interval against
    the report's allowed loss (None: undecided). ``points_*``: the same for the points score."""

    n: int
    both_right: int
    right_to_wrong: int  # reference right, candidate wrong
    wrong_to_right: int  # reference wrong, candidate right
    both_wrong: int
    p_value: float  # McNemar's exact test (two-sided) on the discordant pairs
    delta: float = 0.0
    delta_ci: Interval = Interval(float("nan"), float("nan"))
    noninferior: bool | None = None
    points_delta: float | None = None
    points_delta_ci: Interval | None = None
    points_noninferior: bool | None = None
    method: str = "newcombe-hybrid-score"
    # Questions either side tokenizes unlike the HF source (None: unknown for one side), and the
    # difference without them: what quantization costs apart from the conversion's tokenizer.
    tokenizer_divergent: int | None = None
    delta_excluding_divergent: ExcludedDelta | None = None

    def decision(self, max_loss: float) -> bool | None:
        """Non-inferiority at another allowed loss, from the stored intervals.

        Certified only when the accuracy interval and, where there is one, the points-score
        interval both clear the margin; inferior only by the accuracy (Newcombe) interval, since
        the percentile bootstrap is too narrow on few discordant answers to convict on its own.
        """
        accuracy = noninferiority(self.delta_ci, max_loss)
        if accuracy is not True or self.points_delta_ci is None:
            return accuracy
        return True if noninferiority(self.points_delta_ci, max_loss) is True else None

    def questions_needed(self, max_loss: float) -> int | None:
        return questions_needed(self.both_right, self.right_to_wrong, self.wrong_to_right,
                                self.both_wrong, max_loss)  # fmt: skip

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


def paired(
    reference: Sequence[bool], candidate: Sequence[bool], *, max_loss: float = 1.0,
    weights: Sequence[float] | None = None, seed: int = 0,
) -> PairedComparison:  # fmt: skip
    """Counts, McNemar's p, the Newcombe interval and the non-inferiority decision at ``max_loss``
    points. With ``weights`` that are not all equal (IgakuQA points), the points score gets a
    paired bootstrap interval too."""
    ref = np.asarray(reference, dtype=bool)
    cand = np.asarray(candidate, dtype=bool)
    if ref.shape != cand.shape:
        raise ValueError(f"paired comparison needs the same questions ({ref.size} vs {cand.size})")
    a = int(np.sum(ref & cand))
    b = int(np.sum(ref & ~cand))
    c = int(np.sum(~ref & cand))
    d = int(np.sum(~ref & ~cand))
    n = int(ref.size)
    ci = newcombe_paired(a, b, c, d)
    delta_ci = Interval(round(100 * ci.low, 4), round(100 * ci.high, 4))
    points_delta = points_ci = points_ni = None
    if weights is not None and len(set(weights)) > 1 and sum(weights) > 0:
        pd, pci = paired_bootstrap_delta(ref, cand, weights, seed=seed)
        points_delta = round(100 * pd, 4)
        points_ci = Interval(round(100 * pci.low, 4), round(100 * pci.high, 4))
        points_ni = noninferiority(points_ci, max_loss)
    return PairedComparison(
        n=n, both_right=a, right_to_wrong=b, wrong_to_right=c, both_wrong=d, p_value=mcnemar_exact(b, c),
        delta=round(100 * (c - b) / n, 4) if n else 0.0, delta_ci=delta_ci,
        noninferior=noninferiority(delta_ci, max_loss), points_delta=points_delta,
        points_delta_ci=points_ci, points_noninferior=points_ni,
    )  # fmt: skip


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
