"""The report from bench run folders: every section, the recommendation, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jmed_edge.errors import ConfigError, DataError
from jmed_edge.report.build import build_report, write_report

GIB = 1024**3


def _write_run(root: Path, name: str, size: int, answers: dict[str, list[bool]], *, qhash: str = "q1",
               version: str = "1", points: list[float] | None = None) -> None:  # fmt: skip
    folder = root / name / "jmed-sample"
    folder.mkdir(parents=True)
    rows = []
    for lang, flags in answers.items():
        for i, ok in enumerate(flags):
            rows.append({"id": f"S{i:03d}", "lang": lang, "gold": ["a"], "pred": ["a"] if ok else ["b"],
                         "correct": ok, "points": (points or [1.0] * len(flags))[i]})  # fmt: skip
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"artifact": str(root / "missing" / name), "artifact_name": name, "benchmark": "jmed-sample",
               "benchmark_version": version, "question_set_hash": qhash, "sha256": f"sha-{name}",
               "size_bytes": size, "timings": {"load_seconds": 0.5, "questions_per_second": 3.0}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "bench"
    ref = [True] * 30 + [False] * 10
    _write_run(root, "m-F16", 4 * GIB, {"ja": ref, "en": ref})
    # Q8_0: two flips each way in Japanese, identical in English
    q8_ja = ref.copy()
    q8_ja[0] = q8_ja[1] = False
    q8_ja[30] = q8_ja[31] = True
    _write_run(root, "m-Q8_0", 2 * GIB, {"ja": q8_ja, "en": ref})
    # Q2_K: loses 12 answers in Japanese (significant), 1 in English
    q2_ja = [False] * 12 + ref[12:]
    q2_en = [False, *ref[1:]]
    _write_run(root, "m-Q2_K", GIB // 2, {"ja": q2_ja, "en": q2_en})
    return root


def test_report_numbers_and_recommendation(runs: Path, tmp_path: Path):
    data = build_report([runs], "m-F16", budget_bytes=3 * GIB, max_loss=1.0, kl=False)
    q8 = data.cell("m-Q8_0", "jmed-sample", "ja")
    assert q8.accuracy == pytest.approx(0.75)
    assert (q8.vs_reference.right_to_wrong, q8.vs_reference.wrong_to_right) == (2, 2)
    assert q8.loss_points == pytest.approx(0.0)
    q2 = data.cell("m-Q2_K", "jmed-sample", "ja")
    assert q2.vs_reference.right_to_wrong == 12 and q2.vs_reference.p_value < 0.001
    # F16 does not fit in 3 GB. Q8_0 fits and flips 2 answers each way: no drop, but 40 questions
    # cannot certify a loss under 1 point, so it is only a provisional choice. Q2_K is inferior.
    rec = data.recommendation
    assert rec.chosen == "m-Q8_0" and rec.provisional and not rec.certified
    assert rec.decisions == {"m-F16": "reference", "m-Q8_0": "undecided", "m-Q2_K": "inferior"}
    assert any(s.startswith("m-Q2_K (jmed-sample/ja") for s in rec.significant_losses)
    assert "fits in 3.0 GB" in rec.reason
    assert (
        "not enough questions to certify a loss under 1 point: m-Q8_0's interval is [-11.3, +11.3]"
        in rec.reason
    )
    assert rec.questions_needed is not None and rec.questions_needed > 40
    assert f"about {rec.questions_needed} questions per benchmark and language (now 40)" in rec.reason


def test_report_files_have_every_section(runs: Path, tmp_path: Path):
    out = write_report(build_report([runs], "m-F16", budget_bytes=8 * GIB, kl=False), tmp_path / "report")
    md = (out / "report.md").read_text(encoding="utf-8")
    for section in ("## Recommendation", "## Accuracy against the reference", "## Answer flips",
                    "## Size, memory and speed"):  # fmt: skip
        assert section in md
    assert "| m-Q2_K | jmed-sample | ja | 40 | 45.0" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 2  # figures inlined: opens offline
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org", "")
    for png in ("accuracy_vs_size.png", "flips.png"):
        assert (out / png).stat().st_size > 5000
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["reference"] == "m-F16"
    assert "load_seconds" in data["timings"]["m-Q8_0"]
    assert all("load_seconds" not in a for a in data["artifacts"])


def test_report_json_is_reproducible(runs: Path, tmp_path: Path):
    a = write_report(build_report([runs], "m-F16", kl=False), tmp_path / "a")
    b = write_report(build_report([runs], "m-F16", kl=False), tmp_path / "b")
    ja, jb = (json.loads((p / "report.json").read_text()) for p in (a, b))
    ja.pop("timings"), jb.pop("timings")
    assert ja == jb


def test_terminal_summary_fits_80_columns_with_short_names(runs: Path):
    from rich.console import Console

    from jmed_edge.report.model import short_names
    from jmed_edge.report.terminal import print_summary

    assert short_names(["Qwen2-7B-jmed-F16", "Qwen2-7B-jmed-Q8_0"]) == {
        "Qwen2-7B-jmed-F16": "F16", "Qwen2-7B-jmed-Q8_0": "Q8_0"}  # fmt: skip
    assert short_names(["m", "m-Q8_0"]) == {"m": "m", "m-Q8_0": "m-Q8_0"}  # nothing left to cut
    # Never cut inside a quant type.
    assert short_names(["x-Q4_K_M", "x-Q4_K_S"]) == {"x-Q4_K_M": "Q4_K_M", "x-Q4_K_S": "Q4_K_S"}
    data = build_report([runs], "m-F16", budget_bytes=3 * GIB, max_loss=1.0, kl=False)
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(data, console)
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    row = {line.split()[0]: line for line in lines if line.strip().startswith(("F16", "Q8_0", "Q2_K"))}
    assert row["F16"].split()[-1] == "ref"
    # Q2_K: 45.0% in Japanese, 12 answers lost, significant (*), interval wholly below -1: ✗.
    assert "45.0 [-43,-14]*" in row["Q2_K"] and "72.5 [-10,+5.1]" in row["Q2_K"] and "13/0" in row["Q2_K"]
    assert row["Q2_K"].split()[-1] == "✗"
    assert "75.0 [-11,+11]" in row["Q8_0"] and "2/2" in row["Q8_0"] and row["Q8_0"].split()[-1] == "?"
    assert "recommended: m-Q8_0, provisionally (nothing is certified)" in " ".join(text.split())
    assert "significant loss: m-Q2_K (jmed-sample/ja" in " ".join(text.split())


def test_perf_is_used_only_for_the_artifact_version_it_measured(runs: Path, monkeypatch):
    from jmed_edge.report import probe

    calls = []

    def fake_measure(artifact, *, options=None, timeout=900):
        calls.append(artifact)
        return {"load_seconds": 0.2, "prompt_tokens_per_second": 300.0, "decode_tokens_per_second": 30.0,
                "decode_tokens": 48, "peak_rss_bytes": 700 * 2**20}  # fmt: skip

    monkeypatch.setattr(probe, "measure_in_subprocess", fake_measure)
    folder = runs / "m-Q8_0"
    probe.record_perf(Path("q8.gguf"), folder, "sha-m-Q8_0")
    probe.record_perf(Path("q8.gguf"), folder, "sha-m-Q8_0")  # same version: reused
    assert len(calls) == 1
    probe.record_perf(
        Path("q8.gguf"), folder, "sha-m-Q8_0", options={"n_threads": 4}
    )  # other settings: remeasured
    assert len(calls) == 2
    data = build_report([runs], "m-F16", budget_bytes=8 * GIB, kl=False)
    q8 = next(a for a in data.artifacts if a.name == "m-Q8_0")
    assert q8.peak_rss_bytes == 700 * 2**20 and q8.decode_tokens_per_second == 30.0
    # The artifact changed since (its bench summary names another sha256): the old numbers are not its own.
    perf = json.loads((folder / "perf.json").read_text())
    (folder / "perf.json").write_text(json.dumps({**perf, "sha256": "sha-older"}))
    data = build_report([runs], "m-F16", budget_bytes=8 * GIB, kl=False)
    q8 = next(a for a in data.artifacts if a.name == "m-Q8_0")
    assert q8.peak_rss_bytes is None and q8.ram_estimate_bytes == int(2 * GIB * 1.2 + 256 * 2**20)


def test_budget_smaller_than_everything_names_the_smallest(runs: Path, tmp_path: Path, run_cli):
    data = build_report([runs], "m-F16", budget_bytes=100 * 1024**2, kl=False)
    assert data.recommendation.chosen is None
    assert "smallest, m-Q2_K" in data.recommendation.reason
    # On the command line it is a mistake: one line, exit 2, nothing written.
    code, _, err = run_cli("report", runs, "--reference", "m-F16", "--budget", "100MB", "--no-kl",
                           "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and not (tmp_path / "r").exists()
    assert "--budget 100.0 MB is smaller than every artifact: the smallest, m-Q2_K, needs about" in err
    assert len(err.strip().splitlines()) == 1


def test_reference_not_among_runs(runs: Path):
    with pytest.raises(
        ConfigError, match=r'reference "m-F61" is not among the runs \(did you mean "m-F16"\?\)'
    ):
        build_report([runs], "m-F61", kl=False)


def test_runs_on_different_questions_are_refused(runs: Path):
    _write_run(runs, "other-Q4_K_M", GIB, {"ja": [True] * 40}, qhash="q2")
    with pytest.raises(DataError, match="different questions") as exc:
        build_report([runs], "m-F16", kl=False)
    # Compared with the reference, naming the ids only it has (other-Q4_K_M has no English).
    assert "m-F16 and other-Q4_K_M" in str(exc.value)
    assert "only in m-F16: S000/en, S001/en, S002/en, S003/en, S004/en (+35 more)" in str(exc.value)


def test_an_unfinished_run_names_the_missing_ids(runs: Path):
    rows = (runs / "m-Q8_0" / "jmed-sample" / "predictions.jsonl").read_text().splitlines()
    kept = [r for r in rows if json.loads(r)["id"] not in ("S007", "S039")]
    (runs / "m-Q8_0" / "jmed-sample" / "predictions.jsonl").write_text("\n".join(kept) + "\n")
    with pytest.raises(DataError) as exc:
        build_report([runs], "m-F16", kl=False)
    assert "answered different jmed-sample/en questions (38 vs 40: only in m-F16: S007, S039)" in str(
        exc.value
    )


def test_runs_of_different_benchmark_versions_are_refused(runs: Path):
    _write_run(runs, "other-Q4_K_M", GIB, {"ja": [True] * 40}, version="2")
    with pytest.raises(DataError, match="benchmark version"):
        build_report([runs], "m-F16", kl=False)


def test_report_cli(runs: Path, tmp_path: Path, run_cli):
    code, out, _ = run_cli(
        "report", runs, "--reference", "m-F16", "--budget", "3GB", "--no-kl", "--out", tmp_path / "r"
    )
    assert code == 0
    assert "recommended:" in out and "m-Q8_0" in out
    assert (tmp_path / "r" / "report.html").exists()
    code, _, err = run_cli("report", tmp_path / "nothing", "--reference", "x", "--out", tmp_path / "r2")
    assert code == 2 and "does not exist" in err
    # --out at the bench folder itself, or at any folder of the user's: refused, nothing touched.
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    code, _, err = run_cli("report", runs, "--reference", "m-F16", "--no-kl", "--out", runs)
    assert code == 2 and "overlaps the run folder 1" in err
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    # A report written earlier is replaced.
    code, _, err = run_cli("report", runs, "--reference", "m-F16", "--no-kl", "--out", tmp_path / "r")
    assert code == 0, err


def test_pipeline_sections_validate_with_did_you_mean(tmp_path: Path):
    from jmed_edge.pipeline.recipe import load_sections

    path = tmp_path / "r.yaml"
    path.write_text(
        "model: {path: default}\nreprot: {budget: 8GB}\nbench: {benchmarks: [jmed-sample], lmit: 3}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_sections(path)
    message = str(exc.value)
    assert 'unknown section reprot (did you mean "report"?)' in message
    assert 'bench.lmit (did you mean "limit"?)' in message
    ok = _write(tmp_path / "ok.yaml", "bench: {limit: 3}\nconvert: {gguf: {quants: [q8_0]}}\n")
    sections = load_sections(ok, ["report.budget=8GB"])
    assert sections.bench.limit == 3 and sections.report.budget == "8GB"
    assert sections.convert.gguf.quants == ["q8_0"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_figures_draw_japanese_names_with_a_japanese_font(tmp_path: Path):
    """A figure titled in Japanese (an artifact or category name) draws its glyphs, not boxes:
    matplotlib warns "Glyph ... missing from font(s)" for every character it cannot draw."""
    import warnings

    from matplotlib import font_manager

    from jmed_edge.report import plots

    if not any(
        key in Path(p).name.lower() for p in font_manager.findSystemFonts() for key in plots._JA_FILES
    ):
        pytest.skip("no Japanese font on this machine (apt install fonts-ipafont-gothic)")
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    ax.set_title("医療モデル-Q4_K_M: 正答率 (ja)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp_path / "ja.png")
    plt.close(fig)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:2]
