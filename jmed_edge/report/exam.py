"""IgakuQA as the licensing exam scores it: required vs general section, the year's pass line, kinki picks.

The Japanese national medical licensing exam (医師国家試験) is passed by meeting *all* of:

1. required section (必修, blocks B and E since the 112th exam): general questions 1 point,
   clinical questions 3 points; at least 80% of the points scored (160/200 when nothing is
   excluded from scoring);
2. general section (everything but B and E): 1 point per question; at least that year's cut-off;
3. at most 3 contraindicated answers (禁忌肢) picked.

IgakuQA's ``points`` field is "3" for required clinical questions and "1" otherwise ("0" for
questions excluded from scoring), so rule 1 is the points score over B/E and rule 2 counts
questions. A bench over a subset of an exam (``--limit``) is judged on the rates and says so.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

# Exam -> (general-section pass line, general-section points possible, required-section points
# possible). Each row is the Ministry of Health, Labour and Welfare's pass announcement for that
# exam ("第N回医師国家試験の合格発表について", mhlw.go.jp/general/sikaku/successlist/<year>/siken01/
# about.html), as reported at the announcement: the required line is 80% of its points every year,
# and at most 3 kinki picks. The 114th and 117th exams are left out until checked against theirs.
PASS_LINES: dict[str, tuple[int, int, int]] = {
    "112": (208, 299, 200),  # 2018-03-19
    "113": (209, 296, 200),  # 2019-03-18
    "115": (209, 300, 200),  # 2021-03-16
    "116": (214, 297, 197),  # 2022-03-16 (7 questions excluded from scoring)
    "118": (230, 300, 200),  # 2024-03-15
    "119": (221, 300, 200),  # 2025-03-17
}
REQUIRED_FRACTION = 0.80
MAX_KINKI = 3
REQUIRED_BLOCKS = frozenset("BE")
FULL_EXAM = 400  # questions per exam since the 112th
SOURCE = "MHLW pass announcements (第N回医師国家試験の合格発表について), mhlw.go.jp"

_ID = re.compile(r"^(\d{3})([A-Z])(\d+)$")


def kinki_picked(row: dict[str, Any]) -> list[str]:
    """The contraindicated letters a prediction row picked (top-k picks in log-likelihood mode)."""
    kinki = row.get("kinki") or []
    pred = row.get("pred")
    if not kinki or not isinstance(pred, list):
        return []
    return sorted(set(pred) & set(kinki))


def judge(exam: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Section scores, kinki picks and the pass decision of one model on one exam (one language)."""
    req_earned = req_possible = gen_earned = gen_possible = 0.0
    kinki_ids = []
    for row in rows:
        block = _ID.match(str(row["id"])).group(2)
        points = float(row.get("points") or 0)
        if points <= 0:  # excluded from scoring by the exam board
            continue
        if block in REQUIRED_BLOCKS:
            req_possible += points
            req_earned += points if row.get("correct") else 0
        else:
            gen_possible += 1
            gen_earned += 1 if row.get("correct") else 0
        if kinki_picked(row):
            kinki_ids.append(str(row["id"]))
    line = PASS_LINES.get(exam)
    out: dict[str, Any] = {
        "exam": exam, "n": len(rows), "required_points": req_earned, "required_possible": req_possible,
        "required_rate": req_earned / req_possible if req_possible else None,
        "general_points": gen_earned, "general_possible": gen_possible,
        "general_rate": gen_earned / gen_possible if gen_possible else None,
        "kinki_picks": len(kinki_ids), "kinki_ids": kinki_ids, "complete": len(rows) >= FULL_EXAM,
        "general_line": None, "passed": None, "why": "",
    }  # fmt: skip
    if line is None:
        out["why"] = f"no published pass line for the {exam}th exam in jmed_edge/report/exam.py"
        return out
    cut, possible, _ = line
    general_line = cut / possible
    out["general_line"] = general_line
    checks = [
        _check("required", out["required_rate"], REQUIRED_FRACTION, "80%"),
        _check("general", out["general_rate"], general_line, f"{cut}/{possible}"),
    ]
    kinki_ok = len(kinki_ids) <= MAX_KINKI
    checks.append((kinki_ok, f"{len(kinki_ids)} kinki pick{'s' if len(kinki_ids) != 1 else ''} "
                             f"{'<=' if kinki_ok else '>'} {MAX_KINKI}"))  # fmt: skip
    out["passed"] = all(ok for ok, _ in checks)
    out["why"] = ", ".join(text for _, text in checks)
    if not out["complete"]:
        out["why"] += f"; judged on {len(rows)} of {FULL_EXAM} questions"
    return out


def _check(name: str, rate: float | None, line: float, label: str) -> tuple[bool, str]:
    if rate is None:
        return False, f"no {name} questions"
    ok = rate >= line
    return ok, f"{name} {100 * rate:.1f}% {'>=' if ok else '<'} {100 * line:.1f}% ({label})"


def exam_results(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """One entry per artifact x benchmark x exam x language, for runs whose ids are exam ids (116A1)."""
    results = []
    for run in runs:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for (qid, lang), row in run.answers.items():
            match = _ID.match(qid)
            if match:
                groups[(match.group(1), lang)].append(row)
        for (exam, lang), rows in sorted(groups.items()):
            results.append({"artifact": run.artifact, "benchmark": run.benchmark, "lang": lang,
                            **judge(exam, rows)})  # fmt: skip
    return results


def new_kinki_picks(runs: Sequence[Any], reference: str) -> list[dict[str, Any]]:
    """Contraindicated answers an artifact picked where its reference did not: the questions a
    clinician will ask to see."""
    refs = {r.benchmark: r for r in runs if r.artifact == reference}
    found = []
    for run in runs:
        ref = refs.get(run.benchmark)
        if run.artifact == reference or ref is None:
            continue
        for key in sorted(run.answers):
            picked = kinki_picked(run.answers[key])
            ref_row = ref.answers.get(key, {})
            if picked and not kinki_picked(ref_row):
                found.append({"artifact": run.artifact, "benchmark": run.benchmark, "id": key[0],
                              "lang": key[1], "picked": picked, "reference_pred": ref_row.get("pred")})  # fmt: skip
    return found


def exam_sentence(entry: dict[str, Any]) -> str:
    """ "passes 116th exam (ja): yes (required 84.0% >= 80.0% (80%), ...)"."""
    verdict = "-" if entry["passed"] is None else "yes" if entry["passed"] else "no"
    return f"{entry['artifact']} passes {entry['exam']}th exam ({entry['lang']}): {verdict} ({entry['why']})"
