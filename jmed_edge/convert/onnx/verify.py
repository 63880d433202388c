"""Check an ONNX artifact against the Hugging Face model it was exported from.

* fp32/fp16: the logits must match the source (max |difference| and top-1 agreement within
  tolerance); a miss is a ``VerificationError``.
* int8/int4: quantization changes the logits by design, so the KL divergence to the source
  (mean and p99) and top-1 agreement are measured per language and recorded, never failed.
* Always: the tokenizer shipped beside the model encodes the bilingual probes exactly as the
  source's does, and the chat template renders the same text.

The source's logits are computed first and the torch model freed before the ONNX model is
loaded, so at most one copy of the weights is in memory at a time; a ``SourceReference`` is
computed once and reused for every precision of a conversion.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.convert.probes import CHAT_PROBE, TOKENIZER_PROBES, TOKENIZER_STRESS, held_out_texts
from jmed_edge.errors import ArtifactError, VerificationError
from jmed_edge.runtimes.base import log_softmax

log = logging.getLogger(__name__)

# A float export is a re-implementation of the same arithmetic (fused attention, different
# summation order): max |Δlogit| 9.7e-5 against fp32 torch on SmolLM2-135M (30 layers), and 0.0
# between onnxruntime thread counts (benchmarks/numerics/spread.py). 5e-3 (50x) leaves room for a
# deeper 7B and other CPUs' kernels while still catching a wrong weight or a broken RoPE
# (differences of whole units).
FLOAT_TOLERANCE = {"fp32": 5e-3, "fp16": 0.25}
MIN_TOP1_FLOAT = 0.98  # near-ties may flip a few argmaxes
# When the source only fits in memory in its own bf16/fp16, the reference itself is rounded.
LOW_PRECISION_REFERENCE_TOLERANCE = 0.5
DEFAULT_POSITIONS = 256  # per language
DEFAULT_WINDOW = 128


@dataclass
class Check:
    name: str
    ok: bool | None  # None: measured and recorded, not judged
    value: str
    limit: str = ""

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "·"}[self.ok]

    @property
    def passed(self) -> bool | None:  # the names the GGUF checks use, so one printer shows both
        return self.ok

    @property
    def detail(self) -> str:
        return self.value + (f" ({self.limit})" if self.limit else "")

    def line(self) -> str:
        return f"{self.mark} {self.name}: {self.detail}"


@dataclass
class VerificationResult:
    artifact: Path
    against: Path
    precision: str
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {"against": str(self.against), "passed": self.passed, "precision": self.precision,
                "checks": [{"name": c.name, "ok": c.ok, "value": c.value, "limit": c.limit} for c in self.checks],
                "metrics": self.metrics}  # fmt: skip

    def raise_if_failed(self) -> None:
        failed = self.failures
        if failed:
            raise VerificationError(
                f"{self.artifact} does not match {self.against}: "
                + "; ".join(f"{c.name} {c.value} ({c.limit})" for c in failed)
            )


@dataclass
class SourceReference:
    """The source model's answers on the verification texts, computed once."""

    path: Path
    windows: dict[str, list[list[int]]]  # language -> token windows
    logits: dict[str, list[np.ndarray]]  # language -> float32 (len(window), vocab) per window
    encodings: dict[str, tuple[list[int], list[int]]]  # probe -> (with specials, without)
    chat: str | None
    text_sources: dict[str, str]
    dtype: str

    @classmethod
    def compute(
        cls, source: Path, *, positions: int = DEFAULT_POSITIONS, window: int = DEFAULT_WINDOW
    ) -> SourceReference:
        from jmed_edge.artifacts import describe
        from jmed_edge.runtimes.hf import HFRuntime

        dtype = _reference_dtype(Path(source))
        runtime = HFRuntime(describe(Path(source)), device="cpu", dtype=dtype)
        try:
            tok = runtime.tokenizer
            encodings = {
                text: (list(tok(text, add_special_tokens=True)["input_ids"]),
                       list(tok(text, add_special_tokens=False)["input_ids"]))
                for text in (*TOKENIZER_PROBES, *TOKENIZER_STRESS)
            }  # fmt: skip
            chat = None
            if runtime.chat_template:
                chat = tok.apply_chat_template(list(CHAT_PROBE), tokenize=False, add_generation_prompt=True)
            bos = tok("a", add_special_tokens=True)["input_ids"][:1]
            prefix = bos if bos and bos[0] == tok.bos_token_id else []
            windows, logits, sources = {}, {}, {}
            for lang, text in held_out_texts().items():
                sources[lang] = f"held-out part of convert/calibration/medical_{lang}.txt"
                ids = list(tok(text, add_special_tokens=False)["input_ids"])
                windows[lang] = _windows(ids, prefix, positions, min(window, runtime.context_length))
                logits[lang] = [runtime.logits(w).astype(np.float32) for w in windows[lang]]
        finally:
            runtime.close()
            del runtime
            gc.collect()
        return cls(Path(source), windows, logits, encodings, chat, sources, dtype)


def _reference_dtype(source: Path) -> str:
    """float32 when an fp32 copy of the source fits in free memory, else the source's own dtype."""
    import psutil

    from jmed_edge.convert.onnx.source import count_parameters

    n_params, _ = count_parameters(source)
    if n_params * 4 * 1.2 < psutil.virtual_memory().available:
        return "float32"
    log.warning(
        "an fp32 copy of %s does not fit in free memory; the reference logits are computed in the "
        "source's own dtype, and float exports are judged with a looser tolerance",
        source,
    )
    return "auto"


def _windows(ids: list[int], prefix: list[int], positions: int, window: int) -> list[list[int]]:
    body = window - len(prefix)
    out = []
    for start in range(0, len(ids), body):
        if sum(len(w) for w in out) >= positions:
            break
        chunk = ids[start : start + body]
        if len(chunk) >= 2:
            out.append(prefix + chunk)
    return out


def _compare_logits(reference: SourceReference, runtime) -> dict[str, dict[str, float]]:
    stats: dict[str, dict[str, float]] = {}
    for lang in reference.windows:
        kls, agree, max_diff = [], [], 0.0
        for ids, ref in zip(reference.windows[lang], reference.logits[lang], strict=True):
            got = runtime.logits(ids)
            if got.shape != ref.shape:
                raise VerificationError(
                    f"{runtime.artifact} returns logits of shape {got.shape} where its source gives "
                    f"{ref.shape}: it was not exported from this model"
                )
            max_diff = max(max_diff, float(np.abs(got - ref).max()))
            ref_lp, got_lp = log_softmax(ref), log_softmax(got)
            kls.append((np.exp(ref_lp) * (ref_lp - got_lp)).sum(axis=-1))
            agree.append(ref.argmax(-1) == got.argmax(-1))
        kl = np.concatenate(kls).clip(min=0.0)
        stats[lang] = {"positions": int(kl.size), "kl_mean": float(kl.mean()),
                       "kl_p99": float(np.percentile(kl, 99)), "top1": float(np.concatenate(agree).mean()),
                       "max_abs_logit_diff": max_diff}  # fmt: skip
    return stats


def _tokenizer_checks(reference: SourceReference, runtime) -> list[Check]:
    mismatched = []
    for text, (with_special, without) in reference.encodings.items():
        if runtime.tokenize(text, add_special=True) != with_special or runtime.tokenize(text) != without:
            mismatched.append(text)
    n = len(reference.encodings)
    # The tokenizer beside an ONNX model is the source's own tokenizer.json, read by
    # onnxruntime-genai: unlike a GGUF's, nothing is re-derived, so even the stress set must match
    # (73/73 measured on the default model).
    value = f"{n - len(mismatched)}/{n} probes and stress-set strings encode identically"
    if mismatched:
        text = mismatched[0]
        ours, theirs = runtime.tokenize(text), reference.encodings[text][1]
        at = next(
            (i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        value += f"; first difference: {text[:40]!r} at token {at}: source {theirs[at : at + 4]} vs ONNX {ours[at : at + 4]}"
    checks = [Check("tokenizer (ja+en probes, stress set)", not mismatched, value)]
    if reference.chat is not None:
        try:
            rendered = runtime.render_chat(list(CHAT_PROBE))
        except Exception as exc:  # the template engine of onnxruntime-genai may reject a template
            rendered = f"<error: {type(exc).__name__}: {exc}>"
        same = rendered == reference.chat
        checks.append(
            Check("chat template", same, "renders identically" if same else f"renders {rendered[:80]!r}")
        )
    return checks


def _precision_of(artifact: Path) -> str:
    from jmed_edge.manifest import read_manifest

    manifest = read_manifest(artifact, required=False)
    return str(manifest.details.get("precision", "unknown")) if manifest else "unknown"


def verify_onnx(
    artifact: Path,
    against: Path | str | None = None,
    *,
    reference: SourceReference | None = None,
    positions: int = DEFAULT_POSITIONS,
    window: int = DEFAULT_WINDOW,
    provider: str = "cpu",
    precision: str | None = None,
    raise_on_failure: bool = True,
    record: bool = False,
) -> VerificationResult:
    """Verify an ONNX folder against its source (``against``; default: its manifest's parent).

    ``precision`` (default: the manifest's) decides whether logits must match (fp32, fp16) or
    their divergence is only measured (int8, int4).

    Prints nothing; returns the checks (``result.lines()`` gives ✓/✗ lines) and raises
    ``VerificationError`` when a check fails (unless ``raise_on_failure=False``). ``record``
    writes the result into the artifact's manifest.
    """
    from jmed_edge.convert.onnx.source import resolve_source
    from jmed_edge.runtimes import open_runtime

    artifact = Path(artifact)
    if against is None:
        against = _parent_path(artifact)
    source = resolve_source(against)
    precision = precision or _precision_of(artifact)
    if reference is None or reference.path != source:
        reference = SourceReference.compute(source, positions=positions, window=window)
    runtime = open_runtime(artifact, runtime="onnx", provider=provider)
    try:
        result = VerificationResult(artifact, source, precision)
        result.checks += _tokenizer_checks(reference, runtime)
        try:
            stats = _compare_logits(reference, runtime)
        except VerificationError as exc:  # a different vocabulary: no number to compare
            result.checks.append(Check("logits", False, str(exc)))
            stats = {}
    finally:
        runtime.close()
    result.metrics = {"languages": stats, "text_sources": reference.text_sources,
                      "reference_dtype": reference.dtype}  # fmt: skip
    float_model = precision in FLOAT_TOLERANCE
    for lang, s in stats.items():
        if float_model:
            exact = reference.dtype == "float32"
            tol = FLOAT_TOLERANCE[precision] if exact else LOW_PRECISION_REFERENCE_TOLERANCE
            min_top1 = MIN_TOP1_FLOAT if exact else 0.95
            result.checks.append(
                Check(
                    f"logits max |Δ| ({lang}, {s['positions']} positions)",
                    s["max_abs_logit_diff"] <= tol,
                    f"{s['max_abs_logit_diff']:.2e}",
                    f"≤ {tol:g}",
                )
            )
            result.checks.append(Check(f"top-1 agreement ({lang})", s["top1"] >= min_top1,
                                       f"{s['top1']:.1%}", f"≥ {min_top1:.0%}"))  # fmt: skip
        else:
            result.checks.append(Check(
                f"KL vs source ({lang}, {s['positions']} positions)", None,
                f"mean {s['kl_mean']:.4f}, p99 {s['kl_p99']:.4f}, top-1 {s['top1']:.1%}",
            ))  # fmt: skip
    if record:
        _record(artifact, result)
    if raise_on_failure:
        result.raise_if_failed()
    return result


def _parent_path(artifact: Path) -> Path:
    from jmed_edge.manifest import read_manifest

    manifest = read_manifest(artifact, required=False)
    if manifest is None or not manifest.parent or not manifest.parent.get("path"):
        raise ArtifactError(f"{artifact} names no source model; pass against=SRC (--against)")
    return Path(manifest.parent["path"])


def _record(artifact: Path, result: VerificationResult) -> None:
    """Write the result into the manifest; the files are unchanged, so they are not re-hashed."""
    from jmed_edge.fsutil import write_text_atomic
    from jmed_edge.manifest import manifest_path, read_manifest

    manifest = read_manifest(artifact, required=False)
    if manifest is None:
        log.info("%s has no manifest; the verification result is not recorded", artifact)
        return
    manifest.verification = result.to_dict()
    write_text_atomic(manifest_path(artifact), manifest.to_json())
