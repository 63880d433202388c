"""The merge proof: logits of the merged model against base + adapter on bilingual probe prompts.

A merge folds ``B @ A * alpha / r`` into each target weight; done right, the merged model computes
what the unmerged peft model computes, up to rounding in the merge precision. The probes are
Japanese and English medical sentences with digits and units, where tokenization and
rounding differences show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Bilingual medical probe sentences: Japanese clinical prose, English, digits with units.
PROBES = (
    "患者は65歳の男性で、高血圧と2型糖尿病の既往がある。",
    "胸痛を主訴に救急外来を受診し、心電図でST上昇を認めた。",
    "アスピリン100 mgを1日1回内服してください。",
    "発熱と咳嗽があり、胸部X線で右下肺野に浸潤影を認めた。",
    "A 65-year-old man with hypertension presented with chest pain.",
    "Metformin is contraindicated in severe renal impairment (eGFR < 30).",
    "Take one tablet of aspirin 100 mg three times a day after meals.",
    "Community-acquired pneumonia presents with fever, cough and dyspnea.",
)

# Largest |logit difference| accepted, per merge precision, as a fraction of the largest |logit|.
# fp32 rounding leaves ~1e-6 relative (1.5e-6 measured on the tiny fixture: 1.1e-5 on logits
# reaching 7; torch only, so no llama.cpp spread enters); 16-bit weights round each merged value to 8 (bf16) or
# 11 (fp16) mantissa bits, and the error grows through the layers: up to ~7% of the largest
# logit for bf16 on the (deliberately high-gain) tiny test models. A merge that lost or
# mis-scaled the adapter is off by the adapter's whole effect, recorded beside it.
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 1e-1}
# Share of positions whose most likely next token must agree.
MIN_TOP1 = {"fp32": 0.99, "fp16": 0.95, "bf16": 0.9}


@dataclass
class ParityResult:
    probes: int
    positions: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    min_top1: float
    adapter_effect_max_abs: (
        float  # how far the adapter moves the base's logits: the check is meaningful when >> tolerance
    )
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failures(self) -> list[str]:
        problems = []
        if not self.max_abs_diff <= self.tolerance:
            problems.append(
                f"max |logit difference| {self.max_abs_diff:.3g} > tolerance {self.tolerance:.3g}"
            )
        if self.top1_agreement < self.min_top1:
            problems.append(f"top-1 agreement {self.top1_agreement:.1%} < {self.min_top1:.0%}")
        return problems


def probe_batch(tokenizer: Any) -> dict[str, Any]:
    """The probe sentences as one padded batch."""
    pad_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(list(PROBES), return_tensors="pt", padding=True)
    tokenizer.padding_side = pad_side
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def probe_logits(model: Any, batch: dict[str, Any]) -> Any:
    """fp32 logits at every real (non-pad) position, flattened to (positions, vocab)."""
    import torch

    with torch.inference_mode():
        device = next(model.parameters()).device
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
    return logits[batch["attention_mask"].bool().to(logits.device)].float().cpu()


def compare(reference: Any, merged: Any, base: Any, dtype: str) -> ParityResult:
    import torch

    diff = (merged - reference).abs().max().item()
    scale = max(reference.abs().max().item(), 1.0)
    tolerance = RELATIVE_TOLERANCE[dtype] * scale
    top1 = (merged.argmax(-1) == reference.argmax(-1)).float().mean().item()
    effect = (reference - base).abs().max().item()
    result = ParityResult(
        probes=len(PROBES), positions=reference.shape[0], max_abs_diff=diff, tolerance=tolerance,
        top1_agreement=top1, min_top1=MIN_TOP1[dtype], adapter_effect_max_abs=effect, passed=False,
    )  # fmt: skip
    result.passed = bool(torch.isfinite(merged).all()) and not result.failures()
    return result
