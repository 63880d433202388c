"""Scoring against hand-worked examples, and answer extraction from generated text."""

from __future__ import annotations

import pytest

from jmed_edge.bench.extract import extract_letters, extract_number
from jmed_edge.bench.records import Question
from jmed_edge.bench.scoring import (
    answers_requested,
    gestalt,
    is_correct,
    question_set_hash,
    summarize,
    text_metrics,
    top_k,
)

CHOICES = ("心房細動", "心室細動", "洞性頻脈", "房室ブロック", "WPW症候群")


def q(answer: tuple[str, ...], text: str = "どれか。", **kw) -> Question:
    choices = kw.pop("choices", CHOICES)
    return Question("Q", kw.pop("lang", "ja"), text, choices, answer, **kw)


def test_exact_set_scoring() -> None:
    multi = q(("b", "e"), "正しいのはどれか。2つ選べ。")
    assert is_correct(multi, ["e", "b"])
    assert not is_correct(multi, ["b"])  # a partial set earns nothing
    assert not is_correct(multi, ["b", "c", "e"])
    either = q(("a", "d"), accept_any=True)  # IgakuQA "a or d"
    assert is_correct(either, ["a"]) and is_correct(either, ["d"])
    assert not is_correct(either, ["a", "d"])
    dropped = q(("e",), always_correct=True)
    assert is_correct(dropped, ["a"]) and is_correct(dropped, None)
    numeric = q(("325",), choices=())
    assert is_correct(numeric, "325") and is_correct(numeric, "0325") and is_correct(numeric, "325.0")
    assert not is_correct(numeric, "32.5") and not is_correct(numeric, None)


def test_points_and_accuracy_by_language() -> None:
    rows = [
        {"id": "1", "lang": "ja", "correct": True, "points": 1.0},
        {"id": "2", "lang": "ja", "correct": False, "points": 3.0},
        {"id": "3", "lang": "ja", "correct": True, "points": 3.0},
        {"id": "4", "lang": "ja", "correct": True, "points": 0.0},
        {"id": "1", "lang": "en", "correct": False, "points": 1.0},
    ]
    s = summarize(rows)
    assert (s["n"], s["n_correct"], s["accuracy"]) == (5, 3, 0.6)
    assert (s["points"], s["points_possible"]) == (4.0, 8.0) and s["points_score"] == 0.5
    ja = s["by_lang"]["ja"]
    assert (ja["n_correct"], ja["accuracy"], ja["points"], ja["points_possible"]) == (3, 0.75, 4.0, 7.0)
    assert s["by_lang"]["en"]["accuracy"] == 0.0


def test_gestalt_is_difflib_ratio() -> None:
    # 2K / (|R| + |C|): "abcd" vs "abce" share "abc" (K = 3): 6 / 8.
    assert gestalt("abcd", "abce") == pytest.approx(0.75)
    # "心房細動です" (6) vs "心房細動" (4): K = 4, 8 / 10.
    assert gestalt("心房細動です", "心房細動") == pytest.approx(0.8)
    assert gestalt("ｃ", "c") == 1.0  # NFKC: full-width equals ASCII
    metrics = text_metrics(q(("a",)), "心房細動です", k=1)
    assert metrics["gestalt"] == pytest.approx(0.8)
    assert metrics["gestalt_pred"] == ["a"] and metrics["gestalt_correct"]
    assert not metrics["exact_match"]
    assert text_metrics(q(("d",)), "房室ブロック", k=1)["exact_match"]
    two = text_metrics(q(("a", "b")), "心房細動と心室細動", k=2)
    assert two["gestalt_pred"] == ["a", "b"] and two["gestalt_correct"]


def test_how_many_answers_a_question_asks_for() -> None:
    assert answers_requested(q(("b", "e"), "正しいのはどれか。2つ選べ。")) == (2, "question")
    assert answers_requested(q(("a", "b", "d"), "行うのはどれか。３つ選べ。")) == (3, "question")
    assert answers_requested(q(("b", "e"), "Which are correct? Choose two.", lang="en")) == (2, "question")
    assert answers_requested(q(("b", "e"), "Which are correct?", lang="en")) == (2, "answer")
    assert answers_requested(q(("a", "d"), accept_any=True)) == (1, "answer")


def test_top_k_picks_best_letters_sorted() -> None:
    assert top_k([-3.0, -1.0, -2.0, -0.5, -9.0], 2) == ["b", "d"]
    assert top_k([-1.0, -1.0, -2.0], 1) == ["a"]  # ties keep the earlier letter


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("c", ["c"]),
        ("C.", ["c"]),
        ("ｃ", ["c"]),
        ("ｃ．心房細動", ["c"]),
        ("a, c", ["a", "c"]),
        ("a、c", ["a", "c"]),
        ("ａ，ｅ", ["a", "e"]),
        ("a and e", ["a", "e"]),
        ("「b」", ["b"]),
        ("答えはc", ["c"]),
        ("答え：a、d", ["a", "d"]),
        ("正解は「b」です。", ["b"]),
        ("The answer is (B).", ["b"]),
        ("Answer: D", ["d"]),
        ("c. CHADS2スコア", ["c"]),
        ("b\n\n問題: 次の", ["b"]),
        ("A patient with fever needs fluids.", []),  # an English article is not an answer
        ("f", []),  # beyond the five choices
        ("", []),
    ],
)
def test_extract_letters(response: str, expected: list[str]) -> None:
    assert extract_letters(response, 5) == expected


def test_extract_number() -> None:
    assert extract_number("325 mL") == "325"
    assert extract_number("答え：３２５mL") == "325"
    assert extract_number("1,250 mL") == "1250"
    assert extract_number("わかりません") is None


def test_question_set_hash_ignores_order_not_content() -> None:
    a = question_set_hash([("Q1", "ja"), ("Q2", "ja"), ("Q1", "en")])
    assert a == question_set_hash([("Q1", "en"), ("Q2", "ja"), ("Q1", "ja")])
    assert a != question_set_hash([("Q1", "ja"), ("Q2", "ja")])
