"""Pick the artifact to deploy: fits the RAM budget, loses at most ``max_loss`` points, best accuracy."""

from __future__ import annotations

from jmed_edge.fsutil import human_bytes
from jmed_edge.report.model import ArtifactRow, Cell, Recommendation

SIGNIFICANCE = 0.05
# Below this many questions per cell, say that small accuracy differences are noise.
SMALL_SAMPLE = 300


def _worst_loss(cells: list[Cell], artifact: str) -> float:
    losses = [c.loss_points for c in cells if c.artifact == artifact and c.loss_points is not None]
    return max(losses) if losses else 0.0


def _mean_accuracy(cells: list[Cell], artifact: str) -> float:
    accs = [c.accuracy for c in cells if c.artifact == artifact]
    return sum(accs) / len(accs) if accs else 0.0


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


def recommend(
    artifacts: list[ArtifactRow], cells: list[Cell], reference: str, budget_bytes: int | None, max_loss: float
) -> Recommendation:
    signif = significant_losses(cells)
    signif_names = {s.split(" (")[0] for s in signif}
    fitting = [a for a in artifacts if budget_bytes is None or a.ram_estimate_bytes <= budget_bytes]
    if not fitting:
        smallest = min(artifacts, key=lambda a: a.ram_estimate_bytes)
        return Recommendation(
            None,
            f"no artifact fits in {human_bytes(budget_bytes or 0)} of RAM; the smallest, {smallest.name}, "
            f"needs about {human_bytes(smallest.ram_estimate_bytes)}",
            signif, budget_bytes, max_loss,
        )  # fmt: skip
    within = [a for a in fitting if _worst_loss(cells, a.name) <= max_loss and a.name not in signif_names]
    if not within:
        best_fit = min(fitting, key=lambda a: _worst_loss(cells, a.name))
        return Recommendation(
            None,
            f"every artifact that fits loses more than {max_loss:g} points or loses significantly; the "
            f"closest is {best_fit.name} (worst loss {_worst_loss(cells, best_fit.name):.1f} points)",
            signif, budget_bytes, max_loss,
        )  # fmt: skip
    # Best accuracy first; among equals the smaller file (faster to load, leaves RAM for context).
    chosen = max(within, key=lambda a: (round(_mean_accuracy(cells, a.name), 6), -a.size_bytes))
    peak = f"{'measured' if chosen.peak_rss_bytes else 'estimated'} peak {human_bytes(chosen.ram_estimate_bytes)}"
    fits = (
        f"the most accurate artifact that fits in {human_bytes(budget_bytes)} of RAM ({peak})"
        if budget_bytes
        else f"the most accurate artifact (no RAM budget given; {peak})"
    )
    worst = _worst_loss(cells, chosen.name)
    limit = f"limit {max_loss:g} point{'' if max_loss == 1 else 's'}"
    loss = (
        "it is the reference itself"
        if chosen.name == reference
        else f"largest drop against {reference} {worst:.1f} points ({limit}), none statistically significant"
        if worst > 0
        else f"no drop against {reference} on any benchmark/language ({limit})"
    )
    pairs = {(c.benchmark, c.lang) for c in cells}
    reason = (
        f"{chosen.name}, {human_bytes(chosen.size_bytes)}: {fits}; "
        f"{loss}; mean accuracy "
        f"{100 * _mean_accuracy(cells, chosen.name):.1f}% over {len(pairs)} benchmark/language pairs."
    )
    smallest_n = min((c.n for c in cells), default=0)
    if smallest_n and smallest_n < SMALL_SAMPLE:
        reason += (
            f" With {smallest_n} questions per benchmark and language, differences of a few points are "
            "within noise (see the intervals); the KL divergence ranks the types more finely."
        )
    return Recommendation(chosen.name, reason, signif, budget_bytes, max_loss)
