"""The report's statistics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jmed_edge.report.stats import bootstrap_ci, mcnemar_exact, paired, pareto_front


def test_mcnemar_exact_on_a_small_table():
    # b=1, c=6: two-sided exact p = 2 * P(X <= 1 | n=7, p=1/2) = 2 * (1 + 7) / 128 = 0.125
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    # b=0, c=5: 2 * 1/32 = 0.0625
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # b=c: p = 1; no discordant pairs: p = 1
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_counts_flips_both_ways():
    ref = [True, True, True, False, False, True]
    cand = [True, False, False, True, False, True]
    cmp = paired(ref, cand)
    assert (cmp.both_right, cmp.right_to_wrong, cmp.wrong_to_right, cmp.both_wrong) == (2, 2, 1, 1)
    assert cmp.flips == 3
    assert cmp.difference == pytest.approx((1 - 2) / 6)
    # b=2, c=1: 2 * P(X <= 1 | n=3) = 2 * 4/8 = 1.0
    assert cmp.p_value == pytest.approx(1.0)


def test_paired_refuses_different_question_counts():
    with pytest.raises(ValueError, match="same questions"):
        paired([True], [True, False])


def test_bootstrap_interval_is_reproducible_and_brackets_the_accuracy():
    correct = [True] * 30 + [False] * 20
    a = bootstrap_ci(correct, seed=7)
    b = bootstrap_ci(correct, seed=7)
    assert a == b
    assert a.low < 0.6 < a.high
    # normal approximation: 0.6 +- 1.96 * sqrt(0.24 / 50) = 0.6 +- 0.136
    assert a.low == pytest.approx(0.6 - 0.136, abs=0.04)
    assert a.high == pytest.approx(0.6 + 0.136, abs=0.04)


def test_bootstrap_degenerate_cases():
    assert bootstrap_ci([True] * 10).low == 1.0
    empty = bootstrap_ci([])
    assert math.isnan(empty.low) and math.isnan(empty.high)


def test_weighted_bootstrap_uses_points():
    # one 3-point question right, one 1-point question wrong: weighted accuracy 0.75
    ci = bootstrap_ci([True, False], weights=[3, 1], n_resamples=4000, seed=1)
    assert 0.0 <= ci.low <= 0.75 <= ci.high <= 1.0
    assert np.isfinite(ci.low)


def test_pareto_front_keeps_only_undominated_artifacts():
    # (size, accuracy): the third is bigger and worse than the second
    points = [(1.0, 0.50), (2.0, 0.60), (3.0, 0.55), (4.0, 0.70)]
    assert pareto_front(points) == [0, 1, 3]
