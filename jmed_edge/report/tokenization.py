"""Tell conversion loss from quantization loss: the paired difference without the questions a
runtime tokenizes unlike the Hugging Face source.

``bench`` records per GGUF/ONNX run the scored questions whose token ids differ from the source
tokenizer's (``summary.json`` ``tokenizer_divergent_ids``, per language; null when no source
tokenizer was available; Hugging Face runs diverge nowhere). In a cell, ``tokenizer_divergent``
counts the paired questions where the candidate *or* the reference diverges, and
``delta_excluding_divergent`` is the paired difference (Newcombe interval) over the questions
where neither does. A loss that stays once they are excluded is the quantization's; a loss that
goes away with them came from the conversion's tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from jmed_edge.report.stats import ExcludedDelta, Interval, PairedComparison, paired


def divergent_ids(summary: Mapping[str, Any], lang: str) -> set[str] | None:
    """Question ids of ``lang`` the run tokenized unlike the source; None when unknown."""
    recorded = summary.get("tokenizer_divergent_ids")
    if not isinstance(recorded, Mapping):  # null, or a summary written before the check existed
        return None
    return {str(i) for i in recorded.get(lang, ())}


def exclude_divergent(
    cmp: PairedComparison, keys: Sequence[tuple[str, str]], lang: str,
    candidate: tuple[Mapping[str, Any], Mapping[tuple[str, str], Mapping[str, Any]]],
    reference: tuple[Mapping[str, Any], Mapping[tuple[str, str], Mapping[str, Any]]],
    *, is_reference: bool = False, max_loss: float = 1.0,
) -> PairedComparison:  # fmt: skip
    """``cmp`` with ``tokenizer_divergent`` and ``delta_excluding_divergent`` filled in.

    ``candidate`` and ``reference`` are (summary, answers by (id, lang)). Left as they are when
    either side's divergent ids are unknown; ``delta_excluding_divergent`` stays None when every
    question diverges (nothing left to compare).
    """
    ours, theirs = divergent_ids(candidate[0], lang), divergent_ids(reference[0], lang)
    if ours is None or theirs is None:
        return cmp
    kept = [k for k in keys if k[0] not in ours and k[0] not in theirs]
    excluded = len(keys) - len(kept)
    if not kept:
        return replace(cmp, tokenizer_divergent=excluded)
    if is_reference:  # the same answers by construction
        rest = ExcludedDelta(len(kept), 0.0, Interval(0.0, 0.0))
    elif not excluded:
        rest = ExcludedDelta(cmp.n, cmp.delta, cmp.delta_ci)
    else:
        sub = paired([bool(reference[1][k].get("correct")) for k in kept],
                     [bool(candidate[1][k].get("correct")) for k in kept], max_loss=max_loss)  # fmt: skip
        rest = ExcludedDelta(sub.n, sub.delta, sub.delta_ci)
    return replace(cmp, tokenizer_divergent=excluded, delta_excluding_divergent=rest)


def divergence_lines(cells: Sequence[Any], reference: str, names: Mapping[str, str]) -> list[str]:
    """One line per artifact whose questions tokenize unlike the source (terminal summary)."""
    parts: dict[str, list[str]] = {}
    for c in cells:
        cmp = c.vs_reference
        if cmp is None or not cmp.tokenizer_divergent or c.artifact == reference:
            continue
        rest = cmp.delta_excluding_divergent
        shown = "none left" if rest is None else (
            f"Δ {rest.delta:+.1f} [{rest.delta_ci.low:+.1f},{rest.delta_ci.high:+.1f}] "
            f"vs {cmp.delta:+.1f} with them")  # fmt: skip
        parts.setdefault(c.artifact, []).append(
            f"{c.benchmark} {c.lang} {cmp.tokenizer_divergent}/{c.n} ({shown})"
        )
    return [f"tokenized unlike the source: {names.get(a, a)} " + "; ".join(p) for a, p in parts.items()]
