"""The non-inferiority decision: the paired interval, the recommendation built on it, and the
licensing exam's own pass rules, on outcomes whose answers are known."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from jmed_edge.errors import ConfigError, DataError
from jmed_edge.report.build import build_report, write_report
from jmed_edge.report.exam import judge
from jmed_edge.report.model import ArtifactRow, Cell
from jmed_edge.report.recommend import recommend
from jmed_edge.report.stats import Interval, newcombe_paired, noninferiority, paired

GIB = 1024**3


# --- the interval -------------------------------------------------------------------------


def test_newcombe_matches_the_worked_example_of_the_paper():
    # Newcombe RG (1998) Stat Med 17:2635, Table II example (a): e=36, f=12, g=2, h=14 (n=64),
    # theta = 10/64 = 0.1563; method 10 (hybrid score, corrected phi) gives 0.0428 to 0.2645.
    # Here the candidate is the first classification: both right 36, candidate-only right 12.
    ci = newcombe_paired(both_right=36, right_to_wrong=2, wrong_to_right=12, both_wrong=14)
    assert (round(ci.low, 4), round(ci.high, 4)) == (0.0428, 0.2645)
    # Swapping the two models negates the interval.
    swapped = newcombe_paired(36, 12, 2, 14)
    assert (round(swapped.low, 4), round(swapped.high, 4)) == (-0.2645, -0.0428)


def test_newcombe_interval_covers_the_true_difference_95_percent_of_the_time():
    # 2,000 simulated benches of 150 paired questions; the true difference is -3 points.
    rng = np.random.default_rng(0)
    probs = [0.55, 0.06, 0.03, 0.36]  # both right, R->W, W->R, both wrong: delta = 0.03 - 0.06
    covered = 0
    for counts in rng.multinomial(150, probs, size=2000):
        ci = newcombe_paired(*counts)
        covered += ci.low <= -0.03 <= ci.high
    assert 0.93 <= covered / 2000 <= 0.975


@pytest.mark.parametrize(
    ("lost", "gained", "expected"),
    [
        (0, 40, True),  # clearly better: 40 of 400 answers gained, none lost
        (60, 0, False),  # clearly worse: 60 of 400 lost, interval wholly below -1 point
        (6, 5, None),  # undecided: 400 questions cannot tell -0.25 points from -1
    ],
)
def test_noninferiority_on_constructed_paired_outcomes(lost: int, gained: int, expected: bool | None):
    ref = [True] * 300 + [False] * 100
    cand = ref.copy()
    for i in range(lost):
        cand[i] = False
    for i in range(gained):
        cand[300 + i] = True
    cmp = paired(ref, cand, max_loss=1.0)
    assert cmp.noninferior is expected
    assert cmp.delta == pytest.approx(100 * (gained - lost) / 400)
    assert cmp.delta_ci.low <= cmp.delta <= cmp.delta_ci.high
    # The JSON decision rule, spelled out: low >= -margin, high < -margin, else undecided.
    assert noninferiority(Interval(-0.9, 5.0), 1.0) is True
    assert noninferiority(Interval(-9.0, -1.1), 1.0) is False
    assert noninferiority(Interval(-1.5, 2.0), 1.0) is None


def test_identical_answers_on_many_questions_are_certified():
    ref = [True] * 1500 + [False] * 500
    cmp = paired(ref, ref, max_loss=1.0)
    assert cmp.noninferior is True and cmp.delta == 0.0 and cmp.delta_ci.low > -1.0


# --- the recommendation ---------------------------------------------------------------------


def _row(name: str, size: int, kl: float | None = None, speed: float | None = None) -> ArtifactRow:
    return ArtifactRow(name=name, format="gguf", quant="-", path="", sha256="", size_bytes=size,
                       peak_rss_bytes=size, decode_tokens_per_second=speed,
                       kl={"ja": {"mean_kl": kl}} if kl is not None else {})  # fmt: skip


def _cell(name: str, lost: int, gained: int, n: int = 2000) -> Cell:
    ref = [True] * (n * 3 // 4) + [False] * (n - n * 3 // 4)
    cand = ref.copy()
    for i in range(lost):
        cand[i] = False
    for i in range(gained):
        cand[-1 - i] = True
    cmp = paired(ref, cand, max_loss=1.0)
    return Cell(name, "b", "ja", n, sum(cand), sum(cand) / n, Interval(0, 1), vs_reference=cmp)


def test_prefer_picks_among_certified_artifacts_and_ties_go_to_kl():
    rows = [_row("F16", 4 * GIB), _row("Q8_0", 2 * GIB, kl=0.01, speed=20.0),
            _row("Q6_K", 2 * GIB, kl=0.005, speed=25.0), _row("Q4", GIB, kl=0.05, speed=40.0),
            _row("Q2", GIB // 2, kl=0.4, speed=60.0)]  # fmt: skip
    cells = [_cell("F16", 0, 0), _cell("Q8_0", 2, 4), _cell("Q6_K", 2, 6), _cell("Q4", 4, 2),
             _cell("Q2", 150, 10)]  # fmt: skip
    smallest = recommend(rows, cells, "F16", None, 1.0)
    assert smallest.chosen == "Q4" and smallest.certified and not smallest.provisional  # Q2 is inferior
    assert smallest.decisions["Q2"] == "inferior" and smallest.questions_needed is None
    assert recommend(rows, cells, "F16", None, 1.0, prefer="fastest").chosen == "Q4"
    assert recommend(rows, cells, "F16", None, 1.0, prefer="accurate").chosen == "Q6_K"
    # Same size: the lower KL wins.
    assert recommend(rows, cells, "F16", int(2.5 * GIB), 1.0).chosen == "Q4"
    tie = recommend([rows[0], rows[1], rows[2]], cells[:3], "F16", None, 1.0)
    assert tie.chosen == "Q6_K"
    with pytest.raises(ConfigError, match=r'--prefer "smalest" is not known \(did you mean "smallest"\?\)'):
        recommend(rows, cells, "F16", None, 1.0, prefer="smalest")


def test_nothing_certified_names_a_provisional_choice_by_kl_and_the_questions_needed():
    rows = [_row("F16", 4 * GIB), _row("Q8_0", 2 * GIB, kl=0.01), _row("Q3", GIB, kl=0.2)]
    cells = [_cell("F16", 0, 0, 48), _cell("Q8_0", 1, 2, 48), _cell("Q3", 1, 5, 48)]
    rec = recommend(rows, cells, "F16", None, 1.0)
    assert (rec.chosen, rec.certified, rec.provisional) == ("Q8_0", False, True)  # not Q3's lucky +8
    assert rec.reason.startswith("Q8_0, provisionally (nothing is certified): not enough questions to "
                                 "certify a loss under 1 point: Q8_0's interval is [")  # fmt: skip
    assert "closest to F16 by KL divergence" in rec.reason
    assert rec.questions_needed is not None and rec.questions_needed > 48
    # More questions at the same rates would decide it: the projected size certifies.
    assert cells[1].vs_reference.questions_needed(1.0) == rec.questions_needed
    # The fp32 source beside an F16 reference is closest by KL but saves nothing: not the pick.
    f32 = recommend([_row("F32", 8 * GIB, kl=0.0), *rows], [_cell("F32", 0, 0, 48), *cells], "F16", None, 1.0)
    assert f32.chosen == "Q8_0" and "closest to F16 by KL divergence of those smaller than F16" in f32.reason


def test_the_recommendation_never_calls_an_uncertified_artifact_certified():
    rnd = random.Random(3)
    for _ in range(60):
        rows, cells = [_row("ref", 8 * GIB)], [_cell("ref", 0, 0, 400)]
        for i in range(4):
            name = f"q{i}"
            rows.append(_row(name, rnd.randint(1, 7) * GIB, kl=rnd.random()))
            cells.append(_cell(name, rnd.randint(0, 30), rnd.randint(0, 30), 400))
        budget = rnd.choice([None, 3 * GIB, 9 * GIB])
        rec = recommend(rows, cells, "ref", budget, rnd.choice([0.5, 1.0, 3.0]), prefer=rnd.choice(
            ["smallest", "fastest", "accurate"]))  # fmt: skip
        if rec.certified and rec.chosen != "ref":
            chosen = next(c for c in cells if c.artifact == rec.chosen)
            assert chosen.vs_reference.delta_ci.low >= -rec.max_loss_points
        if rec.provisional:
            assert not rec.certified


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_max_loss_must_be_positive(bad: float, tmp_path: Path, run_cli):
    with pytest.raises(ConfigError, match=f"--max-loss {bad:g} is not an allowed loss"):
        recommend([_row("F16", GIB)], [_cell("F16", 0, 0)], "F16", None, bad)
    code, _, err = run_cli("report", tmp_path / "runs", "--reference", "x", "--max-loss", str(bad),
                           "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and f"--max-loss {bad:g} is not an allowed loss" in err


# --- the report files ---------------------------------------------------------------------


def _write(root: Path, name: str, rows: list[dict], size: int = GIB, bench: str = "igakuqa") -> None:
    folder = root / name / bench
    folder.mkdir(parents=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "summary.json").write_text(json.dumps({
        "artifact": "gone", "artifact_name": name, "benchmark": bench, "benchmark_version": "1",
        "question_set_hash": "h", "sha256": name, "size_bytes": size}))  # fmt: skip


def _exam(right: dict[str, bool], preds: dict[str, list[str]] | None = None) -> list[dict]:
    """A hand-built 116th exam: B/E blocks required (5 three-point clinical + 5 one-point), A/C general."""
    rows = []
    for qid, ok in right.items():
        block, number = qid[3], int(qid[4:])
        points = 3 if block in "BE" and number <= 5 else 1
        pred = (preds or {}).get(qid, ["a"] if ok else ["b"])
        rows.append({"id": qid, "lang": "ja", "correct": ok, "points": points, "pred": pred,
                     "category": "循環器" if number % 2 else "呼吸器", "kinki": ["e"]})  # fmt: skip
    return rows


def _ids() -> list[str]:
    return [f"116{b}{i}" for b in "BE" for i in range(1, 11)] + [
        f"116{b}{i}" for b in "AC" for i in range(1, 21)
    ]


def test_pass_rule_on_a_hand_built_exam():
    ids = _ids()
    all_right = {q: True for q in ids}
    verdict = judge("116", _exam(all_right))
    assert verdict["passed"] is True and verdict["required_possible"] == 2 * (5 * 3 + 5)
    # Required section: lose two 3-point questions (6 of 40 points, 85%): still passes;
    # a third one (9 of 40 = 77.5%) fails the 80% rule.
    two = {**all_right, "116B1": False, "116B2": False}
    assert judge("116", _exam(two))["passed"] is True
    three = {**two, "116E1": False}
    result = judge("116", _exam(three))
    assert result["passed"] is False and "required 77.5% < 80.0% (80%)" in result["why"]
    # General section: the 116th line is 214/297 = 72.1%; 28 of 40 = 70% fails.
    general = {**all_right, **{f"116A{i}": False for i in range(1, 13)}}
    result = judge("116", _exam(general))
    assert result["passed"] is False and "general 70.0% < 72.1% (214/297)" in result["why"]
    # Four contraindicated picks fail even a perfect score.
    kinki = _exam(all_right, {f"116A{i}": ["a", "e"] for i in range(1, 5)})
    result = judge("116", kinki)
    assert result["kinki_picks"] == 4 and result["passed"] is False and "4 kinki picks > 3" in result["why"]
    # An exam without a published line in the table is reported, not judged.
    assert judge("114", _exam(all_right))["passed"] is None


def test_report_json_carries_intervals_decisions_categories_and_kinki(tmp_path: Path):
    root = tmp_path / "bench"
    ids = _ids()
    _write(root, "m-F16", _exam({q: True for q in ids}), size=4 * GIB)
    # Q4: loses five general questions, all 循環器 (odd numbers), and picks kinki on 116A3 and 116C1.
    lost = {f"116A{i}": False for i in (1, 3, 5, 7, 9)}
    _write(root, "m-Q4", _exam({**{q: True for q in ids}, **lost}, {"116A3": ["e"], "116C1": ["a", "e"]}))
    data = build_report([root], "m-F16", kl=False)
    out = write_report(data, tmp_path / "report")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    cell = next(c for c in report["cells"] if c["artifact"] == "m-Q4")
    vs = cell["vs_reference"]
    assert vs["delta"] == pytest.approx(-100 * 5 / 60, abs=1e-3)
    assert vs["delta_ci"]["low"] < vs["delta"] < vs["delta_ci"]["high"]
    assert vs["noninferior"] is None  # 60 questions: undecided
    assert vs["points_delta"] == pytest.approx(-100 * 5 / 80, abs=1e-3) and vs["points_delta_ci"] is not None
    rec = report["recommendation"]
    assert (
        rec["certified"] is False and rec["provisional"] is True and isinstance(rec["questions_needed"], int)
    )
    cats = {(r["artifact"], r["category"]): r for r in report["by_category"]}
    assert cats[("m-Q4", "循環器")]["right_to_wrong"] == 5 and cats[("m-Q4", "呼吸器")]["delta"] == 0.0
    exams = {e["artifact"]: e for e in report["exams"]}
    assert exams["m-F16"]["passed"] is True and exams["m-Q4"]["kinki_picks"] == 2
    assert [(k["id"], k["picked"]) for k in report["new_kinki"]] == [("116A3", ["e"]), ("116C1", ["e"])]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "m-Q4 passes 116th exam (ja): yes (" in md and "2 kinki picks <= 3" in md
    assert "| m-Q4 | igakuqa | 116A3 | ja | e |" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    # Categories: the largest loss first.
    assert html.index("循環器") < html.index("呼吸器", html.index("Categories"))
    assert "rec warn" in html  # a provisional choice is not styled as a recommendation


def test_kinki_letter_beyond_the_choices_is_one_clear_line(tmp_path: Path):
    from jmed_edge.bench.registry import load_benchmark

    folder = tmp_path / "igaku"
    folder.mkdir()
    q = {"problem_id": "116A1", "problem_text": "どれか。", "choices": ["a", "b", "c", "d", "e"],
         "answer": ["a"], "points": "1"}  # fmt: skip
    (folder / "116-A.jsonl").write_text(json.dumps(q, ensure_ascii=False) + "\n")
    (folder / "116-A_metadata.jsonl").write_text(json.dumps({"problem_id": "116A1", "kinki": ["f"]}) + "\n")
    with pytest.raises(DataError) as exc:
        load_benchmark(f"igakuqa:{folder}")
    message = str(exc.value)
    assert "116-A_metadata.jsonl:1" in message and "names 'f', beyond its 5 choices (a-e)" in message
    assert "\n" not in message
