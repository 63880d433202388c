"""KL divergence, top-1 agreement and perplexity of each artifact against the reference, per language.

Measured on bilingual medical text with the same machinery ``jmed-edge verify`` uses; results are
cached by (reference sha256, candidate sha256) because each measurement loads two models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from jmed_edge.errors import JmedError
from jmed_edge.report.model import ArtifactRow

log = logging.getLogger(__name__)


def _load_cache(cache: Path | None) -> dict[str, dict]:
    if cache is None or not cache.exists():
        return {}
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def _per_language(measured: dict, *, candidate: bool) -> dict[str, dict[str, float]]:
    """The report's view of ``kl_against``'s result; the reference itself has KL 0 and top-1 100%."""
    out = {}
    for lang, m in measured.items():
        if lang == "settings" or not isinstance(m, dict):
            continue
        out[lang] = {
            "mean_kl": m["kl_mean"] if candidate else 0.0,
            "p99_kl": m["kl_p99"] if candidate else 0.0,
            "top1": m["top1"] if candidate else 1.0,
            "perplexity": m["ppl_candidate"] if candidate else m["ppl_reference"],
            "positions": m["positions"],
        }
    return out


def attach_kl(artifacts: list[ArtifactRow], reference: str, *, cache: Path | None = None) -> None:
    """Fill ``row.kl`` for every artifact (the reference gets KL 0 and its own perplexity)."""
    from jmed_edge.convert.kl import kl_against

    ref = next(a for a in artifacts if a.name == reference)
    if not ref.path or not Path(ref.path).exists():
        log.warning("reference %s has no artifact path on this machine; KL divergence skipped", reference)
        return
    stored = _load_cache(cache)
    for row in artifacts:
        if row.name == reference:
            continue
        key = f"{ref.sha256}:{row.sha256}"
        if key not in stored:
            if not row.path or not Path(row.path).exists():
                log.warning("%s has no artifact path on this machine; KL divergence skipped", row.name)
                continue
            try:
                # Default texts: the held-out part of the bilingual calibration text.
                stored[key] = kl_against(Path(ref.path), Path(row.path))
            except JmedError as exc:
                log.warning("KL divergence of %s against %s failed: %s", row.name, reference, exc)
                continue
        row.kl = _per_language(stored[key], candidate=True)
        if not ref.kl:
            ref.kl = _per_language(stored[key], candidate=False)
        if cache is not None:
            from jmed_edge.fsutil import write_text_atomic

            write_text_atomic(cache, json.dumps(stored, indent=1))
