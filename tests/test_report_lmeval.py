"""``jmed-edge report RUN_DIR --format lm-eval``: results read back with lm-eval's own code.

lm-evaluation-harness is a dev dependency: its result schema (``lm_eval.result_schema``, the
TypedDicts ``simple_evaluate`` returns and ``EvaluationTracker`` writes), its file-name helpers
(what its tracker and loggers use to find results and samples) and its ``make_table`` read the
files. The run folders come from ``run_benchmark`` itself, with a scripted runtime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_tui_support import bench_runs, build_root

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from jmed_edge.report.lmeval import export_run_dirs

    base = tmp_path_factory.mktemp("lmeval")
    runs = bench_runs(build_root(base / "root"))
    out = base / "lm-eval"
    export_run_dirs([runs], out)
    return runs, out


def _files(out: Path, kind: str) -> list[str]:
    return sorted(str(p) for p in out.rglob(f"{kind}_*.json*"))


def test_files_are_where_lm_eval_puts_them(exported: tuple[Path, Path]) -> None:
    from lm_eval.utils import (
        get_file_task_name,
        get_latest_filename,
        get_results_filenames,
        get_sample_results_filenames,
        sanitize_model_name,
    )

    _, out = exported
    every = [str(p) for p in out.rglob("*")]
    results = get_results_filenames(every)
    assert len(results) == 3  # one per benched artifact
    for name in ("medllm-F16", "medllm-Q8_0", "medllm-Q4_K_M"):
        folder = out / sanitize_model_name(name)
        latest = get_latest_filename(get_results_filenames([str(p) for p in folder.iterdir()]))
        samples = get_sample_results_filenames([str(p) for p in folder.iterdir()])
        tasks = {get_file_task_name(Path(s).name) for s in samples}
        assert tasks == {"jmed-sample_ja", "jmed-sample_en"}
        data = json.loads(Path(latest).read_text(encoding="utf-8"))
        assert data["model_name"] == name and data["model_name_sanitized"] == sanitize_model_name(name)


def test_results_match_lm_eval_s_schema_and_jmed_edge_s_numbers(exported: tuple[Path, Path]) -> None:
    from lm_eval.result_schema import EvalResults, SampleResult
    from pydantic import TypeAdapter

    runs, out = exported
    for results_file in _files(out, "results"):
        data = json.loads(Path(results_file).read_text(encoding="utf-8"))
        # every key but configs: lm-eval's own files carry lists and dicts there (metric_list,
        # metadata) beyond its annotation dict[str, str | bool | None]; checked below instead
        TypeAdapter(EvalResults).validate_python({k: v for k, v in data.items() if k != "configs"})
        for config in data["configs"].values():
            assert {"task", "dataset_path", "output_type", "num_fewshot", "metric_list", "metadata"} <= set(
                config
            )
            assert config["metric_list"] == [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
            ]
        name = data["model_name"]
        summary = json.loads((runs / name / "jmed-sample" / "summary.json").read_text(encoding="utf-8"))
        for lang in ("ja", "en"):
            task = data["results"][f"jmed-sample_{lang}"]
            assert task["acc,none"] == pytest.approx(summary["by_lang"][lang]["accuracy"])
            assert task["sample_len"] == summary["by_lang"][lang]["n"] == 16
            assert 0 < task["acc_stderr,none"] < 0.2 or task["acc,none"] in (0.0, 1.0)
            assert data["n-samples"][f"jmed-sample_{lang}"] == {"original": 16, "effective": 16}
            assert data["configs"][f"jmed-sample_{lang}"]["output_type"] == "multiple_choice"
        assert data["groups"]["jmed-sample"]["acc,none"] == pytest.approx(summary["accuracy"])
        assert data["group_subtasks"] == {"jmed-sample": ["jmed-sample_ja", "jmed-sample_en"]}
        assert set(data["task_hashes"]) == {"jmed-sample_ja", "jmed-sample_en"}
    adapter = TypeAdapter(SampleResult)
    from jmed_edge.bench.registry import load_benchmark

    questions = {(q.id, q.lang): q for q in load_benchmark("jmed-sample").records}
    for samples_file in _files(out, "samples"):
        rows = [json.loads(line) for line in Path(samples_file).read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 16
        for row in rows:
            adapter.validate_python(row)
            assert row["filter"] == "none" and row["metrics"] == ["acc"] and row["acc"] in (0.0, 1.0)
            greedy = [r for r in row["filtered_resps"] if r[1] == "True"]
            assert len(row["arguments"]) == len(row["resps"]) == len(row["filtered_resps"]) >= 2 and greedy
            # The prompt the bench scored, the same for every choice, and hashed as lm-eval does.
            prompts = {args["arg_0"] for args in row["arguments"].values()}
            (prompt,) = prompts
            assert questions[(row["doc"]["id"], row["doc"]["lang"])].question in prompt
            assert row["prompt_hash"] == hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def test_lm_eval_prints_the_table(exported: tuple[Path, Path]) -> None:
    from lm_eval.utils import make_table

    _, out = exported
    data = json.loads(Path(_files(out, "results")[0]).read_text(encoding="utf-8"))
    table = make_table(data)
    assert "jmed-sample_ja" in table and "jmed-sample_en" in table and "|acc" in table.replace(" ", "")
    assert "jmed-sample" in make_table(data, "groups")


def test_report_cli_writes_lm_eval_without_a_reference(
    exported: tuple[Path, Path], run_cli, tmp_path
) -> None:
    runs, _ = exported
    code, out, err = run_cli("report", runs, "--format", "lm-eval", "--out", tmp_path / "lm")
    assert code == 0, err
    assert out.count("lm-eval results:") == 3 and len(_files(tmp_path / "lm", "results")) == 3
    code, _, err = run_cli("report", runs, "--out", tmp_path / "r")
    assert code == 2 and "report needs --reference NAME" in err
    code, _, err = run_cli(
        "report", tmp_path / "nothing-here", "--format", "lm-eval", "--out", tmp_path / "x"
    )
    assert code == 2 and "is not a folder" in err
