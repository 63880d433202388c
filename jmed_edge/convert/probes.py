"""Texts the checks run on: a bilingual tokenizer probe set, logit probe prompts, calibration text.

The tokenizer probes cover what breaks conversions of Japanese models: kanji and kana,
full-width letters, digits and spaces, half-width katakana, digit runs (a wrong pre-tokenizer
passes plain text and splits "100 mg" differently), code-like strings, and leading, multiple
and mixed whitespace.

The bilingual medical calibration text (``convert/calibration/medical_{ja,en}.txt``) is split
per language: the first ~85% of its paragraphs compute the importance matrix, the last ~15%
are held out for measuring what quantization cost (KL divergence, top-1 agreement), so the
measurement is not made on the very text the imatrix was fitted to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from jmed_edge.resources import shipped

TOKENIZER_PROBES: tuple[str, ...] = (
    # Japanese medical text: kanji, hiragana, katakana, ASCII digits
    "患者は65歳の男性で、高血圧と2型糖尿病の既往がある。",
    "胸痛を主訴に救急外来を受診した。心電図でST上昇を認めた。",
    "アスピリンとワルファリンの併用で出血のリスクが高まる。",
    "インスリン療法中は低血糖（冷汗、動悸、意識障害）に注意する。",
    # full-width letters, digits, punctuation and the ideographic space
    "ＣＲＰ　３．２ｍｇ／ｄＬ、ＷＢＣ　１２０００／μＬ、体温３８．５℃",
    "ＨｂＡ１ｃ　７．８％（ＮＧＳＰ）",
    # half-width katakana
    "ﾅｰｽｺｰﾙ ｹﾝｻ ﾚﾝﾄｹﾞﾝ ｶﾙﾃ",
    # English medical text
    "A 65-year-old man with hypertension presented with chest pain radiating to the left arm.",
    "Community-acquired pneumonia presents with fever, cough and dyspnea.",
    # digit runs (pre-tokenizers group digits differently)
    "Aspirin 100 mg",
    "Take 1000mg twice daily; eGFR 45 mL/min/1.73m2; BP 152/94 mmHg.",
    "1 12 123 1234 12345 123456 1234567 3.14159 0.5 10,000",
    "アスピリン100 mgを1日1回、7日間内服。",
    # mixed scripts
    "HbA1c 7.8%の患者にmetformin 500mgを処方した。",
    # code-like strings
    "def dose(weight_kg): return weight_kg * 15  # mg/kg, max 1000 mg",
    '{"drug": "metformin", "dose_mg": 500, "route": "po"}',
    "if (x <= 10 && y != 0) { z = x / y; }",
    # leading, multiple and mixed whitespace, newlines
    "  leading spaces",
    " 先頭に空白",
    "multiple   spaces\tand\ttabs",
    "line one\n\nline two\n",
    "全角　スペース　区切り",
    "   ",
    # symbols
    "SpO2 94%、体温38.5℃、±5%、≧3回/日 → 改善",
)

# Prompts whose next-token logits are compared (F16/BF16 GGUF against the source model).
LOGIT_PROBES: tuple[str, ...] = (
    "患者は65歳の男性で、高血圧と2型糖尿病の既往がある。胸痛を主訴に",
    "A 65-year-old man with hypertension and type 2 diabetes presented with",
    "アスピリン100 mgを内服し、経皮的冠動脈インターベンションが",
    "Aspirin 100 mg was given and percutaneous coronary intervention was",
)
CHAT_PROBE: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "あなたは医療の質問に答えるアシスタントです。"},
    {"role": "user", "content": "高血圧の第一選択薬は何ですか？ What is first-line for hypertension?"},
)

CALIBRATION_LANGS = ("ja", "en")
HELD_OUT_SHARE = 0.15


@dataclass(frozen=True)
class CalibrationText:
    lang: str
    fit: str  # for the importance matrix
    held_out: str  # for KL / top-1 measurements


def _paragraphs(text: str) -> list[str]:
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return blocks if len(blocks) >= 4 else [ln.strip() for ln in text.splitlines() if ln.strip()]


def calibration(lang: str) -> CalibrationText:
    """The shipped calibration text for ``lang``, split into a fit part and a held-out part."""
    text = shipped(f"convert/calibration/medical_{lang}.txt").read_text(encoding="utf-8")
    parts = _paragraphs(text)
    n_held = max(1, round(len(parts) * HELD_OUT_SHARE)) if len(parts) > 1 else 0
    fit, held = parts[: len(parts) - n_held], parts[len(parts) - n_held :]
    return CalibrationText(lang, "\n\n".join(fit) + "\n", "\n\n".join(held or parts) + "\n")


def calibration_corpus() -> tuple[str, dict[str, object]]:
    """Fit text of every language joined (for llama-imatrix) and what to record about it."""
    texts = [calibration(lang) for lang in CALIBRATION_LANGS]
    corpus = "\n\n".join(t.fit.strip() for t in texts) + "\n"
    record = {
        "sha256": hashlib.sha256(corpus.encode("utf-8")).hexdigest(),
        "languages": list(CALIBRATION_LANGS),
        "characters": {t.lang: len(t.fit) for t in texts},
        "source": [f"convert/calibration/medical_{lang}.txt" for lang in CALIBRATION_LANGS],
        "held_out_share": HELD_OUT_SHARE,
    }
    return corpus, record


def held_out_texts() -> dict[str, str]:
    """Per-language held-out medical text for quantization-loss measurements."""
    return {lang: calibration(lang).held_out for lang in CALIBRATION_LANGS}
