"""What a quantization cost, per language: KL divergence, top-1 agreement and perplexity.

Both artifacts run the same token ids (from the reference's tokenizer) through their own
runtime; at every position the reference's next-token distribution P is compared with the
candidate's Q: KL(P || Q), whether the argmax agrees, and the perplexity of each on the text
itself. Texts are cut into windows of ``window`` tokens (each starting as the model starts a
prompt, with BOS where it adds one) until ``positions`` positions per language are covered.

The reference's log-probabilities are kept for the last reference used, so comparing several
quantized types against one F16 GGUF runs the F16 model once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.runtimes.base import log_softmax

log = logging.getLogger(__name__)

DEFAULT_POSITIONS = 256  # per language; ~1 s on a 135M model, ~30 s on a 7B F16 on CPU
DEFAULT_WINDOW = 128


@dataclass
class _Reference:
    key: str
    windows: dict[str, list[list[int]]]  # lang -> token windows
    logprobs: dict[str, list[np.ndarray]]  # lang -> per-window (n, vocab) float32


_CACHE: dict[str, _Reference] = {}


def _windows(runtime, text: str, positions: int, window: int) -> list[list[int]]:
    head = runtime.tokenize("", add_special=True)  # [BOS] for models that add one, else []
    body = runtime.tokenize(text, add_special=False)
    step = max(8, min(window, VERIFY_N_CTX, getattr(runtime, "context_length", window)) - len(head))
    out: list[list[int]] = []
    covered = 0
    for start in range(0, len(body), step):
        chunk = body[start : start + min(step, positions - covered)]
        if len(chunk) < 2:
            break
        out.append(head + chunk)
        covered += len(head) + len(chunk)
        if covered >= positions:
            break
    return out


def _logprobs(runtime, windows: list[list[int]]) -> list[np.ndarray]:
    return list(_iter_logprobs(runtime, windows))


def _iter_logprobs(runtime, windows: list[list[int]]):
    """One window's log-probs at a time: a candidate's are compared and dropped, not all kept."""
    for ids in windows:
        yield log_softmax(runtime.logits(ids)).astype(np.float32)


CI_RESAMPLES = 2000


def _interval(sums: np.ndarray, counts: np.ndarray) -> list[float]:
    """95% interval of the mean KL, resampling whole windows (positions within one are correlated)."""
    if len(sums) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(sums), size=(CI_RESAMPLES, len(sums)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


VERIFY_N_CTX = 512  # llama.cpp context for checks: windows and probes are shorter; keeps the KV cache small


def open_for_checks(artifact: Path, **options: Any):
    """A runtime for ``artifact`` sized for short check sequences, on every core (CPU/GPU chosen by
    the runtime). The HF runtime ignores the llama.cpp-only options."""
    from jmed_edge.runtimes import open_runtime

    options.setdefault("n_threads", os.cpu_count())
    return open_runtime(Path(artifact), n_ctx=VERIFY_N_CTX, **options)


def _reference(
    artifact: Path, texts_by_lang: dict[str, str], positions: int, window: int, n_threads: int | None = None
) -> _Reference:
    path = Path(artifact).resolve()
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    digest = hashlib.sha256(repr(sorted(texts_by_lang.items())).encode()).hexdigest()[:16]
    key = f"{path}:{stamp}:{digest}:{positions}:{window}"
    if key not in _CACHE:
        runtime = open_for_checks(path, **({"n_threads": n_threads} if n_threads else {}))
        try:
            windows = {
                lang: _windows(runtime, text, positions, window) for lang, text in texts_by_lang.items()
            }
            logprobs = {lang: _logprobs(runtime, w) for lang, w in windows.items()}
        finally:
            runtime.close()
        _CACHE.clear()  # keep one reference's log-probs in memory, not one per call
        _CACHE[key] = _Reference(key, windows, logprobs)
    return _CACHE[key]


def _stats(ref: list[np.ndarray], cand: list[np.ndarray], windows: list[list[int]]) -> dict[str, Any]:
    kls, agree, nll_ref, nll_cand = [], [], [], []
    for p, q, ids in zip(ref, cand, windows, strict=True):
        n = min(len(p), len(q))
        p, q = p[:n].astype(np.float64), q[:n].astype(np.float64)
        kls.append((np.exp(p) * (p - q)).sum(-1))
        agree.append(p.argmax(-1) == q.argmax(-1))
        targets = np.asarray(ids[1:n], dtype=np.int64)
        rows = np.arange(len(targets))
        nll_ref.append(-p[rows, targets])
        nll_cand.append(-q[rows, targets])
    kl = np.concatenate(kls) if kls else np.zeros(0)
    if kl.size == 0:
        return {"positions": 0}
    kl = np.maximum(kl, 0.0)  # rounding can make a KL of ~0 slightly negative
    sums = np.array([np.maximum(k, 0.0).sum() for k in kls])
    counts = np.array([k.size for k in kls], dtype=float)
    return {
        "positions": int(kl.size),
        "kl_mean": float(kl.mean()),
        "kl_ci95": _interval(sums, counts),
        "_window_kl": (sums, counts),
        "kl_p99": float(np.percentile(kl, 99)),
        "kl_max": float(kl.max()),
        "top1": float(np.concatenate(agree).mean()),
        "ppl_reference": float(np.exp(np.concatenate(nll_ref).mean())),
        "ppl_candidate": float(np.exp(np.concatenate(nll_cand).mean())),
    }


def kl_against(
    reference_artifact: Path,
    candidate_artifact: Path,
    texts_by_lang: dict[str, str] | None = None,
    *,
    positions: int = DEFAULT_POSITIONS,
    window: int = DEFAULT_WINDOW,
    keep_windows: bool = False,
    n_threads: int | None = None,
) -> dict[str, Any]:
    """Per-language KL / top-1 / perplexity of ``candidate`` against ``reference``.

    ``texts_by_lang`` defaults to the held-out part of the shipped medical calibration text
    (``probes.held_out_texts()``). Returns ``{lang: {positions, kl_mean, kl_p99, kl_max, top1,
    ppl_reference, ppl_candidate}, "settings": {...}}``; ``kl_ci95`` is a 95% interval
    of ``kl_mean`` (windows resampled). ``keep_windows`` adds ``_window_kl`` (per-window KL sums
    and position counts) for paired comparisons. ``n_threads``: llama.cpp threads (default
    every core).
    """
    if texts_by_lang is None:
        from jmed_edge.convert.probes import held_out_texts

        texts_by_lang = held_out_texts()
    ref = _reference(Path(reference_artifact), texts_by_lang, positions, window, n_threads)
    runtime = open_for_checks(Path(candidate_artifact), **({"n_threads": n_threads} if n_threads else {}))
    try:
        result: dict[str, Any] = {
            lang: _stats(ref.logprobs[lang], _iter_logprobs(runtime, windows), windows)
            for lang, windows in ref.windows.items()
        }
        if not keep_windows:
            for lang in ref.windows:
                result[lang].pop("_window_kl", None)
    finally:
        runtime.close()
    result["settings"] = {
        "reference": str(Path(reference_artifact)),
        "positions_per_language": positions,
        "window": window,
        "divergence": "KL(reference || candidate), natural log, next-token distributions",
    }
    return result
