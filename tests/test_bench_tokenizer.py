"""bench records which scored questions a GGUF tokenizes unlike its Hugging Face source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jmed_edge.bench import BenchSettings, run_benchmark
from jmed_edge.bench.tokenizer_check import CACHE, tokenizer_files_sha256

FIVE_JA = ["アスピリン", "インスリン", "メトホルミン", "ヘパリン", "ワルファリン"]


def _row(pid: str, text: str) -> str:
    return json.dumps({"problem_id": pid, "problem_text": text, "choices": FIVE_JA, "text_only": True,
                       "answer": ["a"], "points": "1"}, ensure_ascii=False)  # fmt: skip


@pytest.fixture(scope="module")
def joined_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two questions where punctuation meets a letter ("/dL", "、動"), two where it does not.

    The tiny Llama's BPE learned merges across such joins ("/d", "、" + a kanji's first byte),
    which Llama 3's regex allows and GPT-2's splits apart.
    """
    folder = tmp_path_factory.mktemp("bench") / "joined"
    folder.mkdir()
    rows = [_row("D1", "CRP 3.2 mg/dLで使う薬はどれか。"), _row("P1", "抗血小板薬はどれか。"),
            _row("D2", "冷汗、動悸があるときの薬はどれか。"), _row("P2", "注射で使う薬はどれか。")]  # fmt: skip
    (folder / "mini-A.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def _merges_circled(text: str) -> list[int]:
    """Like ``_chars`` but " ②" is one id: a tokenizer that diverges only where that appears."""
    return _chars(text.replace(" ②", "\x00"))


def test_a_question_diverges_where_its_prompt_or_a_scored_continuation_does() -> None:
    from jmed_edge.bench.records import Question
    from jmed_edge.bench.tokenizer_check import divergent_questions

    plain = Question("P", "ja", "どれか。", ("a1", "b1"), ("a",))
    in_stem = Question("S", "ja", "正しいのは ② か。", ("a1", "b1"), ("a",))
    in_choice = Question("C", "en", "Which?", ("x ② y", "z"), ("a",))
    items = [plain, in_stem, in_choice]

    def render(q: Question) -> str:
        return f"{q.question}\n" + "\n".join(q.choices) + "\nAnswer:"

    letters = BenchSettings(scoring="letter")
    found = divergent_questions(items, render, letters, _merges_circled, _chars)
    assert found == {"ja": ["S"], "en": ["C"]}  # the choice is part of the rendered prompt
    # A continuation alone can diverge: scored by text, " ②" begins the second option's continuation.
    only_text = Question("T", "en", "Which?", ("x", "②"), ("a",))

    def render_bare(q: Question) -> str:
        return "Answer:"

    assert divergent_questions([only_text], render_bare, letters, _merges_circled, _chars) == {"en": []}
    by_text = BenchSettings(scoring="text")
    assert divergent_questions([only_text], render_bare, by_text, _merges_circled, _chars) == {"en": ["T"]}


def test_the_cache_follows_the_source_tokenizers_content_not_its_path(tiny_llama: Path, tmp_path: Path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_llama, moved)
    assert tokenizer_files_sha256(moved) == tokenizer_files_sha256(tiny_llama)
    config = moved / "tokenizer_config.json"
    config.write_text(json.dumps(json.loads(config.read_text(encoding="utf-8")) | {"model_max_length": 7}))
    assert tokenizer_files_sha256(moved) != tokenizer_files_sha256(tiny_llama)


@pytest.mark.slow
def test_bench_records_the_questions_a_gguf_tokenizes_unlike_its_source(
    tiny_llama: Path, joined_bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.report.build import build_report

    # The tiny Llama's tokenizer uses Llama 3's regex; relabelled "gpt-2", llama.cpp splits otherwise.
    wrong = convert_to_gguf(tiny_llama, tmp_path / "wrong", quants=(), verify=False, pre_tokenizer="gpt-2")
    wrong = wrong["F16"]
    right = convert_to_gguf(tiny_llama, tmp_path / "right", quants=(), verify=False)["F16"]
    spec, runs = f"igakuqa:{joined_bench}", tmp_path / "runs"
    settings = BenchSettings(runtime_options={"n_threads": 1})
    summary = run_benchmark(wrong, spec, runs, settings)
    assert summary.tokenizer_divergent_ids == {"ja": ["D1", "D2"]}
    assert Path(summary.tokenizer_check["source"]).resolve() == tiny_llama.resolve()
    assert summary.tokenizer_check["from_cache"] == 0
    folder = Path(summary.out_dir)
    on_disk = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["tokenizer_divergent_ids"] == {"ja": ["D1", "D2"]}
    cache = json.loads((folder / CACHE).read_text(encoding="utf-8"))
    assert cache["key"]["artifact_sha256"] == summary.sha256 and cache["key"]["benchmark_hash"]
    assert cache["key"]["source_tokenizer_sha256"] == tokenizer_files_sha256(tiny_llama)
    from jmed_edge.bench import tokenizer_check

    def no_load(src: Path) -> None:
        raise AssertionError(f"loaded the tokenizer of {src} although every question is cached")

    monkeypatch.setattr(tokenizer_check, "load_tokenizer", no_load)
    again = run_benchmark(wrong, spec, runs, settings)  # nothing left to score or tokenize
    monkeypatch.undo()
    assert again.tokenizer_divergent_ids == {"ja": ["D1", "D2"]} and again.tokenizer_check["from_cache"] == 4

    assert run_benchmark(right, spec, tmp_path / "runs-right", settings).tokenizer_divergent_ids == {"ja": []}
    hf = run_benchmark(tiny_llama, spec, runs, BenchSettings())
    assert hf.tokenizer_divergent_ids == {"ja": []} and "itself" in hf.tokenizer_check["reason"]
    data = build_report([runs], hf.artifact_name, kl=False)
    cmp = data.cell(summary.artifact_name, "igakuqa", "ja").vs_reference
    assert cmp.tokenizer_divergent == 2 and cmp.delta_excluding_divergent.n == 2

    # A bare copy of the GGUF names no source: null, said why, and the bench still scores.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(next(wrong.glob("*.gguf")), bare / "copy.gguf")
    alone = run_benchmark(bare / "copy.gguf", spec, tmp_path / "runs-bare", settings)
    assert alone.n == 4 and alone.tokenizer_divergent_ids is None
    assert "no Hugging Face source" in alone.tokenizer_check["reason"]
