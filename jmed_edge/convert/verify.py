"""Check a GGUF against the Hugging Face model it came from, and measure what quantization cost.

Checks that fail the artifact (✗ raises ``VerificationError``):
  * tokenizer parity: llama.cpp's token ids equal the HF tokenizer's on the bilingual probes;
  * chat template: embedded in the GGUF, renders like the source's, BOS/EOS ids agree, and the
    rendered prompt tokenizes the way the runtimes feed it (one BOS at most) to the same ids;
  * logit parity (F32/F16/BF16 GGUFs): next-token logits on the probe prompts agree with the
    source model within a tolerance set by the GGUF's float type.
Measured and recorded, never failing (quantized types): KL divergence, top-1 agreement and
perplexity against the F16/BF16 GGUF they were made from, on held-out Japanese and English
medical text (see ``kl``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.artifacts import describe
from jmed_edge.convert import probes
from jmed_edge.convert.checks import FLOAT_FILE_TYPES, Check, VerifyResult, float_parent, parent_path
from jmed_edge.convert.ggufinfo import KEY_FILE_TYPE, GGUFInfo, probe_load, read_gguf
from jmed_edge.convert.kl import kl_against, open_for_checks
from jmed_edge.errors import ArtifactError
from jmed_edge.manifest import check_files
from jmed_edge.runtimes.base import log_softmax

__all__ = ["Check", "VerifyResult", "kl_against", "verify_artifact"]

log = logging.getLogger(__name__)

# Logit tolerance per float type: max |Δlogit| <= rtol * max |source logit|, mean KL <= kl.
# Measured against fp32 HF on SmolLM2-135M: F16 max |Δ| 0.52% of the largest logit, KL 1.1e-5;
# BF16 (8 bits of mantissa, ~8x coarser) 4.1%, KL 4e-4. llama.cpp's own spread (batch split,
# threads, AVX2 vs AVX-512 build; benchmarks/numerics/spread.py, jmed_edge/testing/numerics.py)
# adds up to 0.57% and KL 6e-6, so F16 is bounded by 3 x (0.52% + 0.57%) = 3.3%. A source
# computed in bf16/fp16 (a 7B loaded in its stored dtype) is itself that coarse, so it gets the
# BF16 row. A broken conversion (wrong RoPE layout, norm or tensor mapping) is off by KL > 0.1.
TOLERANCE = {"F32": (0.005, 1e-4), "F16": (0.035, 1e-3), "BF16": (0.1, 5e-3)}


# --- finding what to check against -------------------------------------------------------------


def source_of(artifact: Path) -> Path | None:
    """The Hugging Face folder at the root of ``artifact``'s manifest parent chain, if still there."""
    current: Path | None = Path(artifact)
    for _ in range(8):
        parent, _kind = parent_path(current)  # type: ignore[arg-type]
        if parent is None or not parent.exists():
            return None
        if (parent / "config.json").exists():
            return parent
        current = parent
    return None


def _hf_tokenizer(src: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src)


def _hf_tokenize(tok, text: str, add_special: bool) -> list[int]:
    # As the runtimes do: a rendered template that already starts with BOS gets no second one.
    bos = tok.bos_token
    if add_special and isinstance(bos, str) and bos and text.startswith(bos):
        add_special = False
    return list(tok(text, add_special_tokens=add_special)["input_ids"])


# --- the checks ---------------------------------------------------------------------------------


def _pieces(tok, ids: list[int], start: int) -> str:
    return " ".join(repr(tok.convert_ids_to_tokens(i)) for i in ids[start : start + 4])


def check_tokenizer(tok, runtime, pre_tokenizer: str | None) -> Check:
    mismatches = []
    for text in probes.TOKENIZER_PROBES:
        hf_ids, ll_ids = _hf_tokenize(tok, text, False), runtime.tokenize(text, add_special=False)
        if hf_ids != ll_ids:
            mismatches.append((text, hf_ids, ll_ids))
    total = len(probes.TOKENIZER_PROBES)
    values = {"probes": total, "matching": total - len(mismatches), "pre_tokenizer": pre_tokenizer}
    if not mismatches:
        return Check("tokenizer parity", True, f"{total}/{total} ja/en probes give identical ids", values)
    text, hf_ids, ll_ids = mismatches[0]
    at = next(
        (i for i, (a, b) in enumerate(zip(hf_ids, ll_ids, strict=False)) if a != b),
        min(len(hf_ids), len(ll_ids)),
    )
    detail = (
        f"{total - len(mismatches)}/{total} probes match; {text!r}: HF {_pieces(tok, hf_ids, at)} vs llama.cpp "
        f"{_pieces(tok, ll_ids, at)} at token {at} (pre-tokenizer {pre_tokenizer or 'unknown'}; "
        "re-convert with the right --pre-tokenizer)"
    )
    values["failing_probes"] = [m[0] for m in mismatches]
    return Check("tokenizer parity", False, detail, values)


def check_tokenizer_texts(
    tok, runtime, texts: Sequence[tuple[str | None, str]], name: str, gguf_file: Path | None = None,
    try_pre: bool = False,
) -> Check:  # fmt: skip
    """Measured (never failing): identical ids on ``texts``, divergences grouped by pattern.

    With ``try_pre``, every pre-tokenizer llama.cpp's converter knows is tried on the same texts
    and the best is named (not applied: that is the user's re-conversion to make).
    """
    from jmed_edge.convert.tokenizer_parity import compare, hf_side, known_pre_tokenizers, try_pre_tokenizers

    hf_tokenize, pieces, decode = hf_side(tok)
    report = compare(texts, hf_tokenize, lambda t: runtime.tokenize(t, add_special=False), pieces, decode)
    values: dict[str, Any] = report.to_dict()
    detail = report.summary()
    if report.divergences and try_pre and gguf_file is not None:
        from jmed_edge.convert.llamacpp_tools import converter_dir

        unique = list(dict.fromkeys(t for _, t in texts))
        trial = try_pre_tokenizers(gguf_file, unique, hf_tokenize, known_pre_tokenizers(converter_dir()))
        values["pre_tokenizer_trial"] = asdict(trial)
        detail += f"; {trial.describe()}"
    elif report.divergences:
        detail += "; `jmed-edge verify --try-pre-tokenizers` tries the other pre-tokenizers"
    return Check(name, None, detail, values)


def verify_tokenizer_only(
    gguf_file: Path,
    parity_texts: dict[str, Sequence[tuple[str | None, str]]] | None = None,
    try_pre: bool = False,
    started: float | None = None,
) -> VerifyResult:
    """A bare GGUF with no Hugging Face source here: llama.cpp's tokenizer against one rebuilt
    from the GGUF's own tokenizer metadata by transformers. It finds llama.cpp's splitting
    differences, not a metadata error the two would share; logits cannot be checked."""
    from transformers import AutoTokenizer

    started = time.perf_counter() if started is None else started
    result = VerifyResult(gguf_file, None)
    result.checks.append(Check("source", None, "no Hugging Face source on this machine (pass --against SRC): "
                               "tokenizer compared with the one transformers rebuilds from the GGUF's metadata; "
                               "logits, chat template and quantization loss not checked"))  # fmt: skip
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except Exception as exc:  # transformers reads tokenizers of some architectures only
        raise ArtifactError(
            f"{gguf_file} names no Hugging Face source and transformers cannot rebuild its tokenizer "
            f"({type(exc).__name__}: {exc}); pass --against SRC"
        ) from exc
    runtime = open_for_checks(gguf_file)
    try:
        sets = {"tokenizer parity (probes)": [(None, t) for t in probes.TOKENIZER_PROBES],
                "tokenizer stress set": [(None, t) for t in probes.TOKENIZER_STRESS],
                **{f"tokenizer parity on {k}": v for k, v in (parity_texts or {}).items()}}  # fmt: skip
        for name, texts in sets.items():
            result.checks.append(check_tokenizer_texts(tok, runtime, texts, name, gguf_file, try_pre))
    finally:
        runtime.close()
    result.seconds = time.perf_counter() - started
    return result


def check_chat(tok, runtime, gguf: GGUFInfo) -> Check:
    embedded = gguf.get("tokenizer.chat_template")
    source = getattr(tok, "chat_template", None)
    if not embedded:
        where = (
            "the source has none either; add one to its tokenizer_config.json" if not source else "re-convert"
        )
        return Check("chat template", False, f"the GGUF has no tokenizer.chat_template ({where})")
    messages = list(probes.CHAT_PROBE)
    problems = []
    rendered_ll = runtime.render_chat(messages)
    rendered_hf = (
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) if source else None
    )
    if rendered_hf is not None and rendered_ll != rendered_hf:
        problems.append("renders differently from the source's template")
    for role, hf_id, key in (
        ("BOS", tok.bos_token_id, "tokenizer.ggml.bos_token_id"),
        ("EOS", tok.eos_token_id, "tokenizer.ggml.eos_token_id"),
    ):
        if hf_id is not None and gguf.get(key) != hf_id:
            problems.append(f"{role} id {gguf.get(key)} but the source's is {hf_id}")
    ll_ids = runtime.tokenize(rendered_ll, add_special=True)
    hf_ids = _hf_tokenize(tok, rendered_ll, True)
    bos = gguf.get("tokenizer.ggml.bos_token_id")
    n_bos = next((i for i, t in enumerate(ll_ids) if t != bos), len(ll_ids)) if bos is not None else 0
    if n_bos > 1:
        problems.append(f"the rendered prompt starts with {n_bos} BOS tokens")
    if ll_ids != hf_ids:
        problems.append(f"the rendered prompt tokenizes to {len(ll_ids)} ids, the source's to {len(hf_ids)}")
    plain = _hf_tokenize(tok, "患者 Aspirin 100 mg", True)
    if runtime.tokenize("患者 Aspirin 100 mg", add_special=True) != plain:
        problems.append("BOS handling differs (add_bos_token)")
    values = {
        "bos_id": bos,
        "eos_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "chat_prompt_tokens": len(ll_ids),
        "template_identical": embedded == source,
    }
    if problems:
        return Check("chat template", False, "; ".join(problems), values)
    return Check(
        "chat template",
        True,
        f"embedded, renders like the source's; BOS {bos}, EOS {values['eos_id']}; chat prompt {len(ll_ids)} "
        f"tokens, {n_bos} BOS",
        values,
    )


def logit_probe_ids(tok, runtime) -> list[list[int]]:
    """Token ids of the logit probes (and the rendered chat prompt), tokenized as the runtimes do."""
    prompts = list(probes.LOGIT_PROBES)
    if runtime.chat_template:  # a missing template is the chat check's failure, not this one's
        prompts.append(runtime.render_chat(list(probes.CHAT_PROBE)))
    return [_hf_tokenize(tok, text, True) for text in prompts]


def check_logits(
    source_logits: list[np.ndarray],
    gguf_logits: list[np.ndarray],
    float_type: str,
    source_dtype: str = "float32",
) -> Check:
    """Compare next-token logits position by position (source = reference)."""
    coarse = source_dtype in ("bfloat16", "float16")
    rtol, kl_tol = TOLERANCE["BF16" if coarse else float_type]
    max_diff = max_ref = 0.0
    kls, agree, margins = [], [], []
    for ref, got in zip(source_logits, gguf_logits, strict=True):
        ref, got = ref.astype(np.float64), got.astype(np.float64)
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        max_ref = max(max_ref, float(np.abs(ref).max()))
        p, q = log_softmax(ref), log_softmax(got)
        kls.append((np.exp(p) * (p - q)).sum(-1))
        top2 = np.sort(ref, axis=-1)[:, -2:]
        agree.append(ref.argmax(-1) == got.argmax(-1))
        margins.append(top2[:, 1] - top2[:, 0])
    atol = rtol * max_ref
    kl = np.concatenate(kls)
    agree_all, margin = np.concatenate(agree), np.concatenate(margins)
    real_flips = int((~agree_all & (margin > atol)).sum())  # flips where the source was not near a tie
    values = {
        "source_dtype": source_dtype,
        "positions": int(kl.size),
        "max_abs_diff": max_diff,
        "atol": atol,
        "kl_mean": float(kl.mean()),
        "kl_tol": kl_tol,
        "top1": float(agree_all.mean()),
        "flips_beyond_ties": real_flips,
    }
    detail = (
        f"{float_type} vs source ({source_dtype}) on {kl.size} positions: max |Δlogit| {max_diff:.4f} (tol {atol:.3f}), "
        f"KL {kl.mean():.2e} (tol {kl_tol:.0e}), top-1 {agree_all.mean():.1%}"
    )
    ok = max_diff <= atol and kl.mean() <= kl_tol and real_flips == 0
    if real_flips:
        detail += f", {real_flips} top-1 flips where the source's margin exceeds the tolerance"
    return Check("logit parity", ok, detail, values)


def quant_loss_check(reference: Path, candidate: Path, texts_by_lang: dict[str, str] | None) -> Check:
    measured = kl_against(reference, candidate, texts_by_lang)
    langs = [k for k in measured if k != "settings"]
    parts = [
        f"{lang}: KL {measured[lang]['kl_mean']:.4f} (p99 {measured[lang]['kl_p99']:.3f}), "
        f"top-1 {measured[lang]['top1']:.1%}, {measured[lang]['positions']} pos"
        for lang in langs
    ]
    return Check("quantization loss vs " + describe(reference).name, None, "; ".join(parts), {"kl": measured})


# --- the entry point ------------------------------------------------------------------------------


def _source_logits(src: Path, probe_ids: list[list[int]]) -> tuple[list[np.ndarray], str]:
    """The source's logits on the probes: computed module by module from its files where its
    architecture allows (peak: one weight, not the model; see ``merge.streamed_check``), else
    from the model loaded by the HF runtime."""
    from jmed_edge.merge.streamed_check import source_logits

    streamed = source_logits(src, probe_ids)
    if streamed is not None:
        return streamed
    hf_runtime = open_for_checks(src)
    try:
        return [hf_runtime.logits(ids) for ids in probe_ids], str(getattr(hf_runtime, "dtype", "float32"))
    finally:
        hf_runtime.close()


def verify_artifact(
    artifact: Path,
    against: Path | None = None,
    *,
    reference: Path | None = None,
    texts_by_lang: dict[str, str] | None = None,
    record: bool = False,
    parity_texts: dict[str, Sequence[tuple[str | None, str]]] | None = None,
    try_pre_tokenizers: bool = False,
) -> VerifyResult:
    """Verify a GGUF artifact against its Hugging Face source (default: its manifest's parent chain).

    ``reference``: the F16/BF16 GGUF a quantized artifact is measured against (default: its
    manifest parent). ``record``: write the result into the artifact's manifest.
    ``parity_texts``: more texts to measure tokenizer parity on, by name (a user's benchmark);
    ``try_pre_tokenizers``: where they diverge, try the other pre-tokenizers llama.cpp knows.
    """
    started = time.perf_counter()
    if Path(artifact).is_file():
        read_gguf(
            Path(artifact)
        )  # a one-line error for a truncated or corrupt file, before anything reads it
    info = describe(Path(artifact))
    if info.format == "gguf-lora":  # checked against peft, not a source model: see lora_gguf
        raise ArtifactError(f"{artifact} is a GGUF LoRA adapter; check it with: jmed-edge verify {artifact}")
    if info.format != "gguf" or info.model_file is None:
        raise ArtifactError(f"{artifact} is a {info.format} artifact; verify checks GGUF files")
    if info.manifest is not None and (problems := check_files(info.folder, info.manifest)):
        raise ArtifactError(
            f"{info.folder}: {problems[0]} (truncated or changed since conversion); re-convert it"
        )
    gguf = read_gguf(info.model_file)
    src = Path(against) if against else source_of(info.folder)
    if src is None:
        return verify_tokenizer_only(info.model_file, parity_texts, try_pre_tokenizers, started)
    if describe(src).format != "hf-safetensors":
        raise ArtifactError(f"--against {src} is not a Hugging Face model folder")
    probe_load(info.model_file)
    result = VerifyResult(info.path, src)
    tok = _hf_tokenizer(src)
    float_type = FLOAT_FILE_TYPES.get(gguf.get(KEY_FILE_TYPE, -1))
    # One model in memory at a time (a 7B F16 GGUF and its bf16 source would not fit together).
    runtime = open_for_checks(info.model_file)
    try:
        result.checks.append(check_tokenizer(tok, runtime, gguf.get("tokenizer.ggml.pre")))
        stress = [(None, t) for t in probes.TOKENIZER_STRESS]
        sets = {
            "tokenizer stress set": stress,
            **{f"tokenizer parity on {k}": v for k, v in (parity_texts or {}).items()},
        }
        for name, texts in sets.items():
            result.checks.append(
                check_tokenizer_texts(tok, runtime, texts, name, info.model_file, try_pre_tokenizers)
            )
        result.checks.append(check_chat(tok, runtime, gguf))
        probe_ids = logit_probe_ids(tok, runtime) if float_type else []
        gguf_logits = [runtime.logits(ids) for ids in probe_ids]
    finally:
        runtime.close()
    if float_type:
        source_logits, source_dtype = _source_logits(src, probe_ids)
        result.checks.append(check_logits(source_logits, gguf_logits, float_type, source_dtype))
    ref = Path(reference) if reference else (None if float_type else float_parent(info.folder))
    if ref is not None:
        result.checks.append(quant_loss_check(ref, info.path, texts_by_lang))
    elif not float_type:
        result.checks.append(
            Check("quantization loss", None, "not measured: the F16 GGUF it came from is gone")
        )
    result.seconds = time.perf_counter() - started
    if record and info.manifest is not None:
        from jmed_edge.fsutil import write_text_atomic
        from jmed_edge.manifest import manifest_path

        info.manifest.verification = result.to_dict()
        write_text_atomic(manifest_path(info.folder), info.manifest.to_json())
    return result
