"""Scoring: official exact-set correctness, points, the JMedLoRA text metrics, and summaries.

- A question is correct when the predicted set of letters equals the gold set exactly (IgakuQA's
  official rule: a multi-answer question earns nothing for a partial set). "a or d" questions
  accept exactly one of their letters; questions dropped from scoring are correct for everyone;
  numeric questions compare numbers.
- Points: each correct question earns its ``points``; the score is earned / possible.
- Gestalt (JMedLoRA, Sukeda et al. 2023): difflib's ``SequenceMatcher.ratio`` = 2K / (|R| + |C|)
  between the response R and the correct choice text C; Gestalt-nearest accuracy asks whether
  the choice nearest to the response (by that ratio) is the correct one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from difflib import SequenceMatcher
from typing import Any

from jmed_edge.bench.extract import normalize_number
from jmed_edge.bench.records import LETTERS, Question

# "2つ選べ", "２つ選べ", "3つ選べ", "Choose two", "Select 2", "choose THREE".
_K_JA = re.compile(r"(\d)\s*つ\s*選べ")
_K_EN = re.compile(r"(?:choose|select|pick)\s+(\d|two|three|four|five)\b", re.IGNORECASE)
_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5}


def answers_requested(q: Question) -> tuple[int, str]:
    """How many letters to pick, and where that came from ("question" text or "answer" length)."""
    text = unicodedata.normalize("NFKC", q.question)
    match = _K_JA.search(text) or _K_EN.search(text)
    if match:
        raw = match.group(1).lower()
        k = int(raw) if raw.isdigit() else _WORDS[raw]
        if 1 <= k <= len(q.choices):
            return k, "question"
    return q.n_answers, "answer"


def rule(q: Question) -> str:
    if q.always_correct:
        return "always-correct"
    if q.numeric:
        return "numeric"
    return "any-of" if q.accept_any else "exact-set"


def is_correct(q: Question, pred: Sequence[str] | str | None) -> bool:
    """Official correctness of a prediction (letters, or a number for numeric questions)."""
    if q.always_correct:
        return True
    if pred is None:
        return False
    if q.numeric:
        value = pred if isinstance(pred, str) else "".join(pred)
        return normalize_number(value) == q.answer[0]
    letters = sorted(set(pred))
    if q.accept_any:
        return len(letters) == 1 and letters[0] in q.answer
    return letters == list(q.answer)


def top_k(scores: Sequence[float], k: int) -> list[str]:
    """The ``k`` best-scoring letters, sorted (ties keep the earlier letter)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(LETTERS[i] for i in order[:k])


def gestalt(a: str, b: str) -> float:
    """difflib's ratio 2K / (|a| + |b|) over NFKC-normalised, stripped texts."""
    a, b = unicodedata.normalize("NFKC", a).strip(), unicodedata.normalize("NFKC", b).strip()
    if not a and not b:
        return 1.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def gold_text(q: Question) -> str:
    """The correct choice text(s): the reference for exact match and Gestalt."""
    if q.numeric:
        return q.answer[0]
    return "\n".join(q.choice_text(letter) for letter in q.answer)


def text_metrics(q: Question, response: str, k: int) -> dict[str, Any]:
    """JMedLoRA metrics of a free-text response: exact match, Gestalt score, Gestalt-nearest."""
    reference = gold_text(q)
    clean = unicodedata.normalize("NFKC", response).strip()
    out: dict[str, Any] = {
        "exact_match": clean == unicodedata.normalize("NFKC", reference).strip(),
        "gestalt": round(gestalt(response, reference), 6),
    }
    if not q.numeric:
        ratios = [gestalt(response, choice) for choice in q.choices]
        nearest = top_k(ratios, k)
        out["gestalt_pred"] = nearest
        out["gestalt_correct"] = is_correct(q, nearest)
    return out


def question_set_hash(items: Iterable[tuple[str, str]]) -> str:
    """Hash of the sorted (id, lang) pairs scored: equal hashes mean the same question set."""
    digest = hashlib.sha256()
    for qid, lang in sorted(set(items)):
        digest.update(f"{qid}\t{lang}\n".encode())
    return digest.hexdigest()


def _block(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    possible = sum(float(r["points"]) for r in rows)
    earned = sum(float(r["points"]) for r in rows if r["correct"])
    block: dict[str, Any] = {
        "n": n,
        "n_correct": correct,
        "accuracy": correct / n if n else 0.0,
        "points": earned,
        "points_possible": possible,
        "points_score": earned / possible if possible else 0.0,
    }
    if rows and "gestalt" in rows[0]:
        block["exact_match"] = sum(1 for r in rows if r.get("exact_match")) / n
        block["gestalt"] = sum(float(r.get("gestalt", 0.0)) for r in rows) / n
        with_choices = [r for r in rows if "gestalt_correct" in r]
        if with_choices:
            block["gestalt_accuracy"] = sum(1 for r in with_choices if r["gestalt_correct"]) / len(
                with_choices
            )
        block["unparsed"] = sum(1 for r in rows if not r.get("pred"))
    return block


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over prediction rows, overall and per language (``by_lang``)."""
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_lang[row["lang"]].append(row)
    summary = _block(rows)
    summary["by_lang"] = {lang: _block(by_lang[lang]) for lang in sorted(by_lang)}
    summary["by_rule"] = dict(sorted(Counter(r.get("rule", "exact-set") for r in rows).items()))
    return summary
