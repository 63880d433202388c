"""Pick the artifact to deploy by a non-inferiority decision, never by a maximum of noisy accuracies.

An artifact is *certified* when, on every benchmark and language, the 95% interval of its paired
difference against the reference lies above ``-max_loss`` points (``stats.noninferiority``). Among
the certified artifacts that fit the RAM budget, ``prefer`` picks one (smallest by default, which
is what a deployment wants); ties go to the lower KL divergence. When nothing is certified the
report says so, names the artifact closest to the reference by KL (among those smaller than the
reference, when any is) as a *provisional* choice, and states how many questions would decide it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from jmed_edge.errors import ConfigError, did_you_mean
from jmed_edge.fsutil import human_bytes
from jmed_edge.report.model import ArtifactRow, Cell, Recommendation

SIGNIFICANCE = 0.05


def _mean_kl(a: ArtifactRow) -> float:
    values = [kl["mean_kl"] for kl in a.kl.values() if kl.get("mean_kl") is not None]
    return sum(values) / len(values) if values else math.inf


def _speed(a: ArtifactRow) -> float:
    return a.decode_tokens_per_second or a.questions_per_second or 0.0


def _mean_delta(cells: list[Cell], name: str) -> float:
    deltas = [c.vs_reference.delta for c in cells if c.artifact == name and c.vs_reference is not None]
    return sum(deltas) / len(deltas) if deltas else 0.0


# --prefer: name -> (what the reason calls it, sort key over (artifact, cells); smaller is better)
PREFER: dict[str, tuple[str, Callable[[ArtifactRow, list[Cell]], float]]] = {
    "smallest": ("the smallest", lambda a, cells: float(a.size_bytes)),
    "fastest": ("the fastest", lambda a, cells: -_speed(a)),
    "accurate": ("the most accurate", lambda a, cells: -round(_mean_delta(cells, a.name), 6)),
}


def check_max_loss(max_loss: float) -> None:
    if not max_loss > 0 or math.isinf(max_loss):
        raise ConfigError(
            f"--max-loss {max_loss:g} is not an allowed loss: give a positive number of accuracy points, "
            "e.g. --max-loss 1.0 (a margin of 0 can never be certified on a finite number of questions)"
        )


def check_prefer(prefer: str) -> None:
    if prefer not in PREFER:
        raise ConfigError(
            f'--prefer "{prefer}" is not known{did_you_mean(prefer, PREFER)}; choose one of {", ".join(PREFER)}'
        )


def _pts(x: float) -> str:
    return f"{x:+.1f}"


def interval_text(low: float, high: float) -> str:
    return f"[{_pts(low)}, {_pts(high)}]"


def significant_losses(cells: list[Cell]) -> list[str]:
    """'name (benchmark/lang: -x.x pts, p=...)' for every significant drop against the reference."""
    found = []
    for c in cells:
        cmp = c.vs_reference
        if cmp is not None and cmp.difference < 0 and cmp.p_value < SIGNIFICANCE:
            found.append(
                f"{c.artifact} ({c.benchmark}/{c.lang}: {100 * cmp.difference:+.1f} pts, p={cmp.p_value:.3g})"
            )
    return found


def decision(cells: list[Cell], name: str, max_loss: float) -> str:
    """certified / inferior / undecided over every benchmark x language of one artifact."""
    verdicts = [c.vs_reference.decision(max_loss) for c in cells if c.artifact == name and c.vs_reference]
    if not verdicts:
        return "undecided"
    if False in verdicts:
        return "inferior"
    return "certified" if all(v is True for v in verdicts) else "undecided"


def _worst_cell(cells: list[Cell], name: str) -> Cell | None:
    mine = [c for c in cells if c.artifact == name and c.vs_reference is not None]
    return min(mine, key=lambda c: c.vs_reference.delta_ci.low, default=None)


def _needed(cells: list[Cell], name: str, max_loss: float) -> int | None:
    counts = [
        c.vs_reference.questions_needed(max_loss)
        for c in cells
        if c.artifact == name and c.vs_reference is not None and c.vs_reference.decision(max_loss) is None
    ]
    if not counts:
        return None
    return None if None in counts else max(counts)


def _fits(a: ArtifactRow, budget_bytes: int | None) -> str:
    peak = f"{'measured' if a.peak_rss_bytes else 'estimated'} peak {human_bytes(a.ram_estimate_bytes)}"
    return (
        f"fits in {human_bytes(budget_bytes)} of RAM ({peak})"
        if budget_bytes
        else f"no RAM budget given; {peak}"
    )


def recommend(
    artifacts: list[ArtifactRow], cells: list[Cell], reference: str, budget_bytes: int | None,
    max_loss: float, *, prefer: str = "smallest",
) -> Recommendation:  # fmt: skip
    check_max_loss(max_loss)
    check_prefer(prefer)
    signif = significant_losses(cells)
    limit = f"{max_loss:g} point{'' if max_loss == 1 else 's'}"
    decisions = {a.name: "reference" if a.name == reference else decision(cells, a.name, max_loss)
                 for a in artifacts}  # fmt: skip

    def result(chosen: str | None, reason: str, **kw) -> Recommendation:
        return Recommendation(chosen, reason, signif, budget_bytes, max_loss, prefer=prefer,
                              decisions=decisions, **kw)  # fmt: skip

    fitting = [a for a in artifacts if budget_bytes is None or a.ram_estimate_bytes <= budget_bytes]
    if not fitting:
        smallest = min(artifacts, key=lambda a: a.ram_estimate_bytes)
        return result(None, f"no artifact fits in {human_bytes(budget_bytes or 0)} of RAM; the smallest, "
                            f"{smallest.name}, needs about {human_bytes(smallest.ram_estimate_bytes)}")  # fmt: skip
    candidates = [a for a in fitting if a.name != reference]
    ref_row = next((a for a in fitting if a.name == reference), None)
    ref_note = (
        f" The reference {reference} itself fits (no loss by definition)." if ref_row is not None else ""
    )
    n_now = min((c.n for c in cells), default=0)
    certified = [a for a in candidates if decisions[a.name] == "certified"]
    if certified:
        label, key = PREFER[prefer]
        if prefer == "fastest" and not any(_speed(a) for a in certified):
            label, key = "the smallest (no speed measured)", PREFER["smallest"][1]
        chosen = min(certified, key=lambda a: (key(a, cells), _mean_kl(a), a.name))
        worst = _worst_cell(cells, chosen.name)
        where = (
            f"; its lowest interval is {worst.benchmark}/{worst.lang} "
            f"{interval_text(worst.vs_reference.delta_ci.low, worst.vs_reference.delta_ci.high)} points"
            if worst else ""
        )  # fmt: skip
        others = len(certified) - 1
        reason = (
            f"{chosen.name}, {human_bytes(chosen.size_bytes)}: {label} of {len(certified)} artifact"
            f"{'s' if len(certified) != 1 else ''} certified to lose less than {limit} against {reference} "
            f"on every benchmark and language (95% paired interval above -{max_loss:g}); {_fits(chosen, budget_bytes)}"
            f"{where}."
        )
        if others and prefer != "smallest":
            reason += f" --prefer {prefer}; ties broken by KL divergence."
        return result(chosen.name, reason, certified=True)
    open_ = [a for a in candidates if decisions[a.name] == "undecided"]
    # A provisional pick is there to be deployed instead of the reference: one larger than the
    # reference (the fp32 source beside an F16 reference) is closest by KL but saves nothing.
    ref_any = next((a for a in artifacts if a.name == reference), None)
    smaller = [a for a in open_ if ref_any is None or a.size_bytes < ref_any.size_bytes]
    if open_:
        provisional = min(
            smaller or open_, key=lambda a: (_mean_kl(a), -_worst_low(cells, a.name), a.size_bytes, a.name)
        )
        worst = _worst_cell(cells, provisional.name)
        needed = _needed(cells, provisional.name, max_loss)
        among = f" of those smaller than {reference}" if smaller and len(smaller) < len(open_) else ""
        by = (
            f"the closest to {reference} by KL divergence{among} (mean {_mean_kl(provisional):.4f})"
            if math.isfinite(_mean_kl(provisional))
            else "the one with the highest lower interval bound (KL not measured)"
        )
        interval = (
            f"{provisional.name}'s interval is "
            f"{interval_text(worst.vs_reference.delta_ci.low, worst.vs_reference.delta_ci.high)} points "
            f"({worst.benchmark}/{worst.lang}, {worst.n} questions)"
            if worst else f"{provisional.name} has no paired comparison"
        )  # fmt: skip
        towards = (
            "towards certifying it"
            if worst and worst.vs_reference.delta >= -max_loss
            else f"towards a loss of more than {limit}"
        )
        # The projection is for a fixed-size interval; a sequential run needs more (anytime validity).
        fixed = (
            " in a fixed-size run"
            if any(c.sequential for c in cells if c.artifact == provisional.name)
            else ""
        )
        ask = (
            f"about {needed} questions per benchmark and language{fixed} (now {n_now}) would decide it "
            f"({towards}), if the observed rate of changed answers holds"
            if needed
            else "its difference sits on the margin: more questions alone may not decide it"
        )
        reason = (
            f"{provisional.name}, provisionally (nothing is certified): not enough questions to certify a "
            f"loss under {limit}: {interval}. It is {by}, {human_bytes(provisional.size_bytes)}; "
            f"{_fits(provisional, budget_bytes)}; {ask}.{ref_note}"
        )
        return result(provisional.name, reason, provisional=True, questions_needed=needed)
    if ref_row is not None:
        lost = ", ".join(a.name for a in candidates)
        reason = (
            f"{reference}, {human_bytes(ref_row.size_bytes)}: the reference itself; "
            + (f"every other artifact that fits ({lost}) loses more than {limit} (95% interval below "
               f"-{max_loss:g})" if candidates else "no other artifact fits")
            + f"; {_fits(ref_row, budget_bytes)}."
        )  # fmt: skip
        return result(reference, reason, certified=True)
    return result(None, f"every artifact that fits in {human_bytes(budget_bytes or 0)} of RAM loses more than "
                        f"{limit} against {reference} (95% interval below -{max_loss:g})")  # fmt: skip


def _worst_low(cells: list[Cell], name: str) -> float:
    worst = _worst_cell(cells, name)
    return worst.vs_reference.delta_ci.low if worst else -math.inf
