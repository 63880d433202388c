"""``bench --until-decided``: stop asking questions once non-inferiority (or inferiority) is decided.

The candidate answers questions in a seeded random order; after every batch, each language's
paired differences D = candidate right - reference right (in {-1, 0, 1}) update an anytime-valid
confidence sequence for the mean difference, and a language is decided once the sequence lies
wholly above or below ``-max_loss`` points. Because the sequence holds at every question count
simultaneously (with probability 1 - alpha), looking after every batch and stopping at the first
decision keeps the error rate at alpha: the repeated looks that invalidate a fixed-size interval
are what it is built for.

Method: the predictable plug-in empirical-Bernstein confidence sequence of Waudby-Smith I &
Ramdas A (2024), "Estimating means of bounded random variables by betting", JRSS-B 86(1):1-27,
Theorem 2 and eq. (13) (PrPl-EB), on X = (D + 1) / 2 in [0, 1]. It adapts to the variance, which
matters here: most questions get the same answer from both models, so D is mostly 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jmed_edge.errors import DataError

METHOD = "confidence sequence: predictable plug-in empirical Bernstein (Waudby-Smith & Ramdas 2024)"
LAMBDA_CAP = 0.75  # c in eq. (13), the paper's larger choice; any predictable lambda in [0, 1) keeps it valid


def confidence_sequence(
    x: np.ndarray, alpha: float = 0.05, horizon: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Running (low, high) bounds on the mean of ``x`` (values in [0, 1]) along the last axis.

    Valid simultaneously for every prefix length with probability >= 1 - alpha (two-sided: alpha/2
    per side, hence log(2/alpha)). The bounds are intersected over time, which keeps validity.
    ``horizon``: the number of questions available, fixed before the first look; the bets are
    tuned to be tightest there (t log(1 + t) in eq. (13) is replaced by it, as the paper's
    section 3 allows for a target sample size), which decides sooner on a finite benchmark.
    """
    x = np.asarray(x, dtype=float)
    t = np.arange(1, x.shape[-1] + 1, dtype=float)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)  # mu_hat_t, after t observations
    var = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)  # sigma_hat^2_t
    # Predictable: the t-th step uses the estimates after t-1 observations (mu_0 = 1/2, var_0 = 1/4).
    mu_prev = np.concatenate([np.full((*x.shape[:-1], 1), 0.5), mu[..., :-1]], axis=-1)
    var_prev = np.concatenate([np.full((*x.shape[:-1], 1), 0.25), var[..., :-1]], axis=-1)
    log_term = math.log(2 / alpha)
    spread = t * np.log1p(t) if horizon is None else float(horizon)
    lam = np.minimum(np.sqrt(2 * log_term / (var_prev * spread)), LAMBDA_CAP)
    v = 4 * (x - mu_prev) ** 2
    psi = (-np.log1p(-lam) - lam) / 4
    lam_sum = np.cumsum(lam, axis=-1)
    centre = np.cumsum(lam * x, axis=-1) / lam_sum
    half = (log_term + np.cumsum(v * psi, axis=-1)) / lam_sum
    low = np.maximum.accumulate(np.clip(centre - half, 0, 1), axis=-1)
    high = np.minimum.accumulate(np.clip(centre + half, 0, 1), axis=-1)
    return low, high


def delta_sequence(
    diffs: Sequence[int] | np.ndarray, alpha: float = 0.05, horizon: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the mean paired difference, in percentage points, after each question."""
    low, high = confidence_sequence((np.asarray(diffs, dtype=float) + 1) / 2, alpha, horizon)
    return 100 * (2 * low - 1), 100 * (2 * high - 1)


def first_decision(
    diffs: Sequence[int] | np.ndarray, max_loss: float, alpha: float = 0.05, horizon: int | None = None
) -> tuple[int | None, bool | None]:
    """(questions used, non-inferior?) at the first look where the sequence clears or falls below
    ``-max_loss``; (None, None) when no prefix decides."""
    if len(diffs) == 0:
        return None, None
    low, high = delta_sequence(diffs, alpha, horizon)
    decided = (low >= -max_loss) | (high < -max_loss)
    if not decided.any():
        return None, None
    i = int(np.argmax(decided))
    return i + 1, bool(low[i] >= -max_loss)


def seeded_order(ids: Iterable[str], seed: int) -> list[str]:
    """The question ids in the seeded random order the candidate answers them."""
    order = sorted(set(ids))
    random.Random(f"until-decided:{seed}").shuffle(order)
    return order


@dataclass
class UntilDecided:
    """The stopping rule for one artifact x benchmark, fed the candidate's rows as they come."""

    reference: dict[tuple[str, str], bool]  # (id, lang) -> the reference answered correctly
    max_loss: float = 1.0
    alpha: float = 0.05
    reference_path: str = ""
    _diffs: dict[str, list[int]] = field(default_factory=dict)
    _planned: dict[str, int] = field(default_factory=dict)  # questions available per language
    _cache: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def check(self, keys: Iterable[tuple[str, str]], where: str) -> None:
        """Every planned question must be one the reference answered (else: which ids differ)."""
        keys = list(keys)
        missing = sorted({f"{qid}/{lang}" for qid, lang in keys if (qid, lang) not in self.reference})
        if missing:
            more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
            raise DataError(
                f"--reference {self.reference_path} did not answer {len(missing)} of the {where} questions "
                f"this run asks ({', '.join(missing[:5])}{more}); bench the reference on the same "
                "benchmark, --lang and --limit first"
            )
        self._planned = {}
        for _, lang in keys:
            self._planned[lang] = self._planned.get(lang, 0) + 1

    def feed(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            key = (str(row["id"]), str(row["lang"]))
            self._diffs.setdefault(key[1], []).append(int(bool(row["correct"])) - int(self.reference[key]))

    def state(self, lang: str) -> dict[str, Any]:
        diffs = self._diffs.get(lang, [])
        cached = self._cache.get(lang)
        if cached is not None and cached[0] == len(diffs):
            return cached[1]
        record = self._state(lang, diffs)
        self._cache[lang] = (len(diffs), record)
        return record

    def _state(self, lang: str, diffs: list[int]) -> dict[str, Any]:
        horizon = self._planned.get(lang)
        record: dict[str, Any] = {"method": METHOD, "alpha": self.alpha, "max_loss_points": self.max_loss,
                                  "n_used": len(diffs), "n_available": horizon, "decided_at": None,
                                  "noninferior": None, "delta_ci": None}  # fmt: skip
        if diffs:
            low, high = delta_sequence(diffs, self.alpha, horizon)
            record["delta_ci"] = {"low": round(float(low[-1]), 4), "high": round(float(high[-1]), 4)}
            at, verdict = first_decision(diffs, self.max_loss, self.alpha, horizon)
            record["decided_at"], record["noninferior"] = at, verdict
        return record

    def decided(self, lang: str | None = None) -> bool:
        langs = [lang] if lang else list(self._planned)
        return bool(langs) and all(self.state(lg)["decided_at"] for lg in langs)

    def record(self) -> dict[str, dict[str, Any]]:
        return {lang: self.state(lang) for lang in sorted(self._planned)}
