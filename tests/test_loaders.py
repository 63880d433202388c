"""Every benchmark loader on small files written here in the exact published formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jmed_edge.bench.registry import load_benchmark, parse_spec
from jmed_edge.errors import DataError


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ja(pid: str, text: str, choices: list[str], answer: list[str], points: str | int = "1", **extra) -> dict:
    return {"problem_id": pid, "problem_text": text, "choices": choices, "text_only": True,
            "answer": answer, "points": points, **extra}  # fmt: skip


FIVE = ["アスピリン", "インスリン", "メトホルミン", "ヘパリン", "ワルファリン"]


@pytest.fixture
def igakuqa(tmp_path: Path) -> Path:
    """An IgakuQA checkout in miniature: data/{year}/{exam}-{block}.jsonl with twins."""
    block = tmp_path / "data" / "2022" / "116-A.jsonl"
    write_jsonl(block, [
        ja("116A1", "抗血小板薬はどれか。", FIVE, ["a"]),
        ja("116A13", "正しいのはどれか。2つ選べ。", FIVE, ["b", "e"]),
        ja("116A72", "まず行うのはどれか。3つ選べ。", [f"{c}. 選択肢{c}" for c in "abcde"], ["a", "b", "d"], "3"),
        ja("116A30", "対応として正しいのはどれか。", FIVE, ["a or d"]),
        ja("116A40", "6択の問題。", [f"選択肢{i}" for i in range(6)], ["f"]),
        ja("116A41", "8択の問題。", [f"選択肢{i}" for i in range(8)], ["h"], "0"),
        ja("116A75", "静脈栄養投与量を計算せよ。解答：①②③mL", [], ["325"]),
        ja("116A71", "可能性が最も低い疾患はどれか。", FIVE, ["e"]),
    ])  # fmt: skip
    write_jsonl(block.with_name("116-A_translate.jsonl"), [
        {"problem_id": "116A1", "problem_text_en": "Which is an antiplatelet drug?",
         "choices_en": ["Aspirin", "Insulin", "Metformin", "Heparin", "Warfarin"], "answer": ["a"]},
        {"problem_id": "116A13", "problem_text_en": "Which are correct? Choose two.",
         "choices_en": ["A", "B", "C", "D", "E"], "answer": ["b", "e"]},
        {"problem_id": "116A75", "problem_text_en": "Calculate the infusion volume (mL).", "choices_en": [],
         "answer": ["325"]},
    ])  # fmt: skip
    write_jsonl(block.with_name("116-A_metadata.jsonl"), [
        {"problem_id": "116A1", "category": "循環器", "kinki": ["d"], "human_accuracy": "97.1"},
    ])  # fmt: skip
    write_jsonl(tmp_path / "data" / "dev-A.jsonl", [ja("D1", "例題。", FIVE, ["c"])])
    return tmp_path / "data"


def test_igakuqa_reads_every_published_answer_form(igakuqa: Path) -> None:
    bench = load_benchmark(f"igakuqa:{igakuqa}")
    assert bench.by_lang() == {"en": 3, "ja": 8}
    assert bench.skipped == [] and len(bench.dev) == 1
    q = {(r.id, r.lang): r for r in bench.records}
    assert q["116A1", "ja"].answer == ("a",) and q["116A1", "ja"].meta["kinki"] == ["d"]
    assert q["116A13", "ja"].answer == ("b", "e") and q["116A13", "ja"].n_answers == 2
    assert (
        q["116A72", "ja"].choices[0] == "選択肢a" and q["116A72", "ja"].points == 3.0
    )  # "a. " label dropped
    assert q["116A30", "ja"].accept_any and q["116A30", "ja"].answer == ("a", "d")
    assert len(q["116A40", "ja"].choices) == 6 and q["116A40", "ja"].answer == ("f",)
    assert len(q["116A41", "ja"].choices) == 8 and q["116A41", "ja"].points == 0.0
    assert q["116A75", "ja"].numeric and q["116A75", "ja"].answer == ("325",)
    assert q["116A71", "ja"].always_correct
    # The English twin scores the same question: same id, answer and points.
    assert q["116A13", "en"].question.endswith("Choose two.") and q["116A13", "en"].answer == ("b", "e")
    assert q["116A1", "en"].meta["category"] == "循環器"
    assert bench.version.startswith("igakuqa:")


def test_malformed_line_names_file_and_line(igakuqa: Path) -> None:
    block = igakuqa / "2022" / "116-A.jsonl"
    lines = block.read_text(encoding="utf-8").splitlines()
    lines.insert(2, '{"problem_id": "116A99", "problem_text": "broken"')  # line 3: truncated JSON
    block.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"116-A\.jsonl:3: not valid JSON.*--skip-bad"):
        load_benchmark(f"igakuqa:{igakuqa}")
    bench = load_benchmark(f"igakuqa:{igakuqa}", skip_bad=True)
    assert len(bench.skipped) == 1 and bench.skipped[0].where.endswith("116-A.jsonl:3")
    assert bench.by_lang()["ja"] == 8


def test_answer_letter_beyond_choices_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", [ja("Q1", "問", ["x", "y", "z", "w"], ["e"])])
    with pytest.raises(DataError, match=r"set\.jsonl:1: answer 'e' is beyond the 4 choices \(a-d\)"):
        load_benchmark(f"jjsimqa:{path}")


def test_a_lone_separator_between_answer_letters_is_repaired_and_counted(tmp_path: Path) -> None:
    """JJSIMQA 107_888-26 ("２つ選べ") is published with answer ["d", ",", "e"]."""
    from jmed_edge.bench.data_cli import describe_benchmark

    path = write_jsonl(tmp_path / "set.jsonl", [ja("107_888-26", "２つ選べ。", FIVE, ["d", ",", "e"]),
                                                ja("Q2", "問", FIVE, ["a", "、", "c"])])  # fmt: skip
    bench = load_benchmark(f"jjsimqa:{path}")
    assert [q.answer for q in bench.records] == [("d", "e"), ("a", "c")]
    report = describe_benchmark(f"jjsimqa:{path}")
    assert report["repaired"] == 2 and report["skipped"] == 0
    assert report["repaired_records"][0]["where"].endswith("set.jsonl:1")
    assert "',' read as a separator" in report["repaired_records"][0]["repair"]
    for ambiguous in ([",", "d"], ["d", ",", ",", "e"], ["d", ","]):
        bad = write_jsonl(tmp_path / "bad.jsonl", [ja("Q3", "問", FIVE, ambiguous)])
        with pytest.raises(DataError, match="is not a choice letter"):
            load_benchmark(f"jjsimqa:{bad}")


def test_translation_that_disagrees_is_skipped(igakuqa: Path) -> None:
    twin = igakuqa / "2022" / "116-A_translate.jsonl"
    rows = [json.loads(line) for line in twin.read_text(encoding="utf-8").splitlines()]
    rows[0]["answer"] = ["c"]
    write_jsonl(twin, rows)
    bench = load_benchmark(f"igakuqa:{igakuqa}", skip_bad=True)
    assert [s.where.endswith("116-A_translate.jsonl:1") for s in bench.skipped] == [True]
    assert bench.by_lang()["en"] == 2


def test_jjsimqa_single_file_with_int_points(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "jjsimqa.jsonl", [ja("J1", "問1", FIVE, ["b"], 2), ja("J2", "問2", FIVE, ["c"])]
    )
    bench = load_benchmark(f"jjsimqa:{path}")
    assert [(q.id, q.points) for q in bench.records] == [("J1", 2.0), ("J2", 1.0)]


def test_bad_paths_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(f"igakuqa:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no IgakuQA question files"):
        load_benchmark(f"igakuqa:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="not bundled"):
        load_benchmark("medqa")
    with pytest.raises(DataError, match=r'unknown benchmark "medqq".*did you mean "medqa"'):
        load_benchmark("medqq:x")
    assert parse_spec("igakuqa:data/2022") == ("igakuqa", Path("data/2022"))


def test_medqa_options_and_dev_split(tmp_path: Path) -> None:
    rec = {"question": "A 45-year-old man ... Which drug?", "answer": "Aspirin",
           "options": {"A": "Aspirin", "B": "Insulin", "C": "Metformin", "D": "Heparin", "E": "Warfarin"},
           "meta_info": "step1", "answer_idx": "A"}  # fmt: skip
    write_jsonl(tmp_path / "test.jsonl", [rec, {**rec, "answer_idx": "D"}])
    write_jsonl(tmp_path / "dev.jsonl", [rec])
    write_jsonl(tmp_path / "train.jsonl", [rec, rec, rec])
    bench = load_benchmark(f"medqa:{tmp_path}")
    assert [(q.id, q.answer, q.lang) for q in bench.records] == [
        ("test-1", ("a",), "en"),
        ("test-2", ("d",), "en"),
    ]
    assert len(bench.records[0].choices) == 5 and len(bench.dev) == 1
    write_jsonl(
        tmp_path / "bad" / "test.jsonl", [{**rec, "options": {"A": "x", "B": "y"}, "answer_idx": "C"}]
    )
    with pytest.raises(DataError, match=r"test\.jsonl:1: \"answer_idx\" C is beyond the 2 options"):
        load_benchmark(f"medqa:{tmp_path / 'bad'}")


def test_medmcqa_cop_is_one_based_and_medqa_form_accepted(tmp_path: Path) -> None:
    rec = {"id": "e9ad821a", "question": "Which vitamin is fat soluble?", "opa": "B1", "opb": "C",
           "opc": "D", "opd": "B12", "cop": 3, "choice_type": "single", "subject_name": "Biochemistry"}  # fmt: skip
    medqa_form = {
        "id": "m2",
        "question": "Q?",
        "options": {"A": "x", "B": "y", "C": "z", "D": "w"},
        "answer_idx": "B",
    }
    path = write_jsonl(tmp_path / "dev.json", [rec, medqa_form, {**rec, "id": "t1", "cop": None}])
    bench = load_benchmark(f"medmcqa:{path}", skip_bad=True)
    assert [(q.id, q.answer) for q in bench.records] == [("e9ad821a", ("c",)), ("m2", ("b",))]
    assert bench.records[0].meta["subject_name"] == "Biochemistry"
    assert "test split has none" in bench.skipped[0].reason


def test_pubmedqa_uses_test_ground_truth(tmp_path: Path) -> None:
    def item(decision: str) -> dict:
        return {"QUESTION": "Does X improve Y?", "CONTEXTS": ["Background.", "Results."],
                "final_decision": decision, "LONG_ANSWER": "Because."}  # fmt: skip

    (tmp_path / "ori_pqal.json").write_text(
        json.dumps({"101": item("yes"), "102": item("maybe"), "103": item("no")}), encoding="utf-8"
    )
    bench = load_benchmark(f"pubmedqa:{tmp_path}")
    assert [(q.id, q.answer) for q in bench.records] == [("101", ("a",)), ("102", ("c",)), ("103", ("b",))]
    assert bench.records[0].choices == ("yes", "no", "maybe")
    (tmp_path / "test_ground_truth.json").write_text(
        json.dumps({"102": "maybe", "103": "no"}), encoding="utf-8"
    )
    bench = load_benchmark(f"pubmedqa:{tmp_path / 'ori_pqal.json'}")
    assert [q.id for q in bench.records] == ["102", "103"] and [q.id for q in bench.dev] == ["101"]


def test_mmlu_folder_reads_medical_subjects_with_dev(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    (tmp_path / "dev").mkdir()
    row = 'What is the largest organ?,Skin,Liver,"Heart, left",Lung,A\n'
    (tmp_path / "test" / "anatomy_test.csv").write_text(row * 3, encoding="utf-8")
    (tmp_path / "test" / "astronomy_test.csv").write_text(row, encoding="utf-8")
    (tmp_path / "dev" / "anatomy_dev.csv").write_text(row, encoding="utf-8")
    bench = load_benchmark(f"mmlu:{tmp_path}")
    assert [q.id for q in bench.records] == ["anatomy-1", "anatomy-2", "anatomy-3"]
    assert bench.records[0].choices[2] == "Heart, left" and len(bench.dev) == 1


def test_jmmlu_bom_leading_spaces_and_bad_row(tmp_path: Path) -> None:
    text = "\ufeff心臓の弁はどれか？, 僧帽弁, 肝臓, 腎臓, 脾臓,A\n弁の数は？,1,2,3,4,D\n壊れた行,1,2,B\n"
    (tmp_path / "anatomy.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"anatomy\.csv:3: expected 6 cells"):
        load_benchmark(f"jmmlu:{tmp_path}")
    bench = load_benchmark(f"jmmlu:{tmp_path}", skip_bad=True)
    first = bench.records[0]
    assert first.question == "心臓の弁はどれか？" and first.choices[0] == "僧帽弁" and first.lang == "ja"
    assert len(bench.records) == 2 and len(bench.skipped) == 1


def test_bundled_sample_loads() -> None:
    bench = load_benchmark("jmed-sample")
    assert bench.by_lang() == {"en": 48, "ja": 48}
    assert {q.lang for q in bench.dev} == {"ja", "en"}
    assert all(len(q.choices) == 5 and not q.choices[0].startswith("a.") for q in bench.records)


def test_data_check_cli(run_cli, igakuqa: Path) -> None:
    code, out, _ = run_cli("data", "check", "jmed-sample", "--json")
    report = json.loads(out)
    assert code == 0 and report["records"] == 96 and report["by_lang"] == {"en": 48, "ja": 48}
    assert report["skipped"] == 0
    (igakuqa / "2022" / "116-B.jsonl").write_text('{"problem_id": 1\n', encoding="utf-8")
    code, out, _ = run_cli("data", "check", f"igakuqa:{igakuqa}")
    assert code == 1 and "116-B.jsonl:1" in out and "not valid JSON" in out
    code, _, err = run_cli("data", "check", f"igakuqa:{igakuqa / 'missing'}")
    assert code == 2 and "does not exist" in err
