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

# A bilingual medical stress set: what exam text is made of and plain prose is not. Numbered
# statements with circled and parenthesised numbers (with and without a space before them),
# full-width and half-width letters and digits, Japanese and ASCII punctuation side by side,
# runs of spaces and newlines, tables flattened with tabs and newlines, units and formulas,
# Greek letters, super- and subscripts, drug names in katakana and Latin. Measured, not failing:
# a divergence here is shown with the pieces from both sides and counted by pattern.
TOKENIZER_STRESS: tuple[str, ...] = (
    # circled and parenthesised numbers, as numbered statements and answer boxes
    "正しいのはどれか。2つ選べ。 ① 血圧上昇 ② 徐脈 ③ 散瞳 ④ 発汗 ⑤ 尿閉",
    "①と②は正しい。③④⑤は誤り。",
    "次の記述のうち誤っているのはどれか。 ⑴ 肝硬変 ⑵ 胆石症 ⑶ 膵炎",
    "(1) 抗凝固療法 (2) 抗血小板療法 (3) 血栓溶解療法",
    "（１）問診（２）視診（３）触診（４）打診（５）聴診",
    "a ①②  b ①⑤  c ②③  d ③④  e ④⑤",
    "㈠ 主訴 ㈡ 現病歴 ㈢ 既往歴",
    "Which are correct? ① tachycardia ② bradycardia ③ mydriasis",
    # answer letters, full-width and half-width
    "ａ　ｂ　ｃ　ｄ　ｅ",
    "a．心房細動 b．心室細動 c．房室ブロック d．洞不全症候群 e．WPW症候群",
    "正答：ｃ，ｅ",
    "Ａ群β溶血性連鎖球菌",
    # full-width and half-width digits and letters in lab values
    "ＡＳＴ　１２０　Ｕ／Ｌ、ＡＬＴ　９８　Ｕ／Ｌ、γ－ＧＴＰ　２５０　Ｕ／Ｌ",
    "ＡＳＴ 120 U/L、ALT ９８ U/L、LDH 4５0 U/L",
    "血清Ｎａ　１３２　ｍＥｑ／Ｌ、Ｋ　５．８　ｍＥｑ／Ｌ",
    # Japanese and ASCII punctuation mixes
    "「胸が苦しい」と訴え、来院した。",
    "既往歴：高血圧（10年前から）、糖尿病(5年前から)。",
    "発熱・咳嗽・呼吸困難を認める…。",
    "診断は?  治療は？  予後は!?",
    "【症例】65歳、男性。【主訴】胸痛。",
    "〔検査所見〕尿所見：蛋白（＋）、糖（－）、潜血（±）。",
    # runs of spaces and newlines
    "患者は65歳の男性。\n\n1. 既往歴\n2. 家族歴",
    "表\n\n\n1.",
    "Findings:\n\n1. fever\n\n2. cough",
    "a\n\n\n\nb",
    "BP  152/94  mmHg   HR  110/min",
    "    四つの空白で始まる行",
    "end of line   \n",
    # tables flattened with tabs and newlines
    "検査項目\t結果\t基準値\nWBC\t12,000/μL\t3,300-8,600\nHb\t9.8 g/dL\t13.7-16.8",
    "Test\tResult\tUnit\nCRP\t3.2\tmg/dL\nPLT\t15×10⁴\t/μL",
    "|項目|値|\n|---|---|\n|Na|140|",
    # units and formulas
    "血糖 126 mg/dL、HbA1c 6.5%、eGFR 45 mL/分/1.73 m²",
    "白血球 12,000/μL、血小板 15×10⁴/μL、赤血球 420×10⁴/μL",
    "体温 38.5℃、SpO₂ 94%（室内気）",
    "Na⁺ 140 mEq/L, K⁺ 4.2 mEq/L, Ca²⁺ 9.1 mg/dL, HCO₃⁻ 18 mEq/L",
    "PaO₂ 60 Torr、PaCO₂ 45 Torr、pH 7.32",
    "ビタミンB₁₂ 200 pg/mL、葉酸 3.1 ng/mL、μg、mEq、IU/L",
    "BMI = 体重(kg) ÷ 身長(m)²",
    "2×10³/μL ≦ x ＜ 5×10³/μL",
    # Greek letters
    "α遮断薬、β遮断薬、γ-グロブリン、δ波、Δp",
    "β₂刺激薬とα₁遮断薬",
    "TNF-α, IFN-γ, IL-1β",
    # drug names in katakana and Latin
    "アムロジピン、エナラプリル、カンデサルタン、ヒドロクロロチアジド",
    "amlodipine, enalapril, candesartan, hydrochlorothiazide",
    "ワルファリン（warfarin）とダビガトラン（dabigatran）",
    "ｱﾑﾛｼﾞﾋﾟﾝ 5mg 1錠 分1 朝食後",
    # mixed exam-style stems
    "112A-23 65歳の男性。息切れを主訴に来院した。",
    "第116回医師国家試験　問題Ｂ－１５",
    "A 45-year-old woman (BMI 32 kg/m²) presents with HbA1c 8.1%.",
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


# The first fifth of each language's fit paragraphs is what mixed-precision sensitivities are
# measured on (``mix_probe``); a mix is judged on the rest. ~3,400 ja and ~1,070 en tokens of the
# default model's tokenizer, so 4,096+ positions per language are left for judging.
SENSITIVITY_SHARE = 0.2


def _fit_split(lang: str) -> tuple[list[str], list[str]]:
    parts = _paragraphs(calibration(lang).fit)
    n = max(1, round(len(parts) * SENSITIVITY_SHARE))
    return parts[:n], parts[n:]


def sensitivity_texts() -> dict[str, str]:
    """Per-language text per-tensor sensitivities are measured on (never the text results are judged on)."""
    return {lang: "\n\n".join(_fit_split(lang)[0]) + "\n" for lang in CALIBRATION_LANGS}


def judging_texts() -> dict[str, str]:
    """Per-language text a mix is compared on: the held-out part, then the fit text after the
    sensitivity part. Only the held-out part is also unseen by the importance matrix."""
    return {
        lang: calibration(lang).held_out + "\n" + "\n\n".join(_fit_split(lang)[1]) + "\n"
        for lang in CALIBRATION_LANGS
    }
