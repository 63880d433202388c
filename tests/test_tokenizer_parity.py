"""Tokenizer parity on exam-like text: divergences found, shown from both sides, attributed."""

from __future__ import annotations

from pathlib import Path

import pytest

from jmed_edge.convert import probes
from jmed_edge.convert.ggufinfo import KEY_PRE, read_gguf, write_vocab_only
from jmed_edge.convert.tokenizer_parity import (
    VocabTokenizer,
    classify,
    compare,
    hf_side,
    known_pre_tokenizers,
    try_pre_tokenizers,
)


def test_patterns_name_what_the_text_looks_like_where_ids_differ() -> None:
    assert classify("正しいのは ② である", 5) == "space + circled number"
    assert classify("表\n\n\n1. 既往", 1) == "newline run + digit"
    assert classify("ＣＲＰ　３．２", 4) == "full-width letter or digit"
    assert classify("plain words here", 6) == "other"


def test_compare_counts_once_and_shows_both_sides() -> None:
    ours = {"a b": [1, 2], "① ②": [3, 4, 5]}
    theirs = {"a b": [1, 2], "① ②": [3, 9, 5]}
    report = compare(
        [("ja", "a b"), ("ja", "① ②"), ("en", "a b")],  # a repeated choice is one string
        ours.__getitem__, theirs.__getitem__, lambda ids: [f"<{i}>" for i in ids], lambda ids: "①" * len(ids),
    )  # fmt: skip
    assert (report.identical, report.total) == (1, 2)
    [d] = report.divergences
    assert d.token == 1 and d.hf == ("<4>", "<5>") and d.llama == ("<9>", "<5>")
    assert d.pattern == "space + circled number" and "1/2 identical" in report.summary()


@pytest.fixture(scope="module")
def default_pair(default_model: Path, default_gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model), default_gguf


@pytest.mark.slow
def test_the_default_gguf_diverges_on_circled_numbers_and_another_pre_tokenizer_removes_it(
    default_pair, tmp_path: Path
) -> None:
    tok, gguf = default_pair
    hf_tokenize, pieces, decode = hf_side(tok)
    llama = VocabTokenizer(write_vocab_only(gguf, tmp_path / "vocab.gguf", {}))
    try:
        report = compare([(None, t) for t in probes.TOKENIZER_STRESS], hf_tokenize, llama, pieces, decode)
    finally:
        llama.close()
    # Measured with llama-cpp-python 0.3.36 and SmolLM2's tokenizer ('smollm' pre-tokenizer):
    # " ①" is Ġâ|ĳ|ł in HF and Ġ|â|ĳ|ł in llama.cpp; "\n\n1." is Ċ|Ċ|1 against ĊĊ|1.
    assert report.by_pattern["space + circled number"] >= 3 and report.by_pattern["newline run + digit"] >= 2
    circled = next(d for d in report.divergences if d.pattern == "space + circled number")
    assert circled.hf[0] == "Ġâ" and circled.llama[:2] == ("Ġ", "â")
    candidates = known_pre_tokenizers(Path(__file__).parents[1] / "nonexistent")  # "default" only
    assert candidates == ["default"]
    texts = list(probes.TOKENIZER_PROBES + probes.TOKENIZER_STRESS)
    trial = try_pre_tokenizers(gguf, texts, hf_tokenize, ["gpt-2", "a.x-4.0", "no-such-pre"])
    assert trial.chosen == read_gguf(gguf).get(KEY_PRE) == "smollm"
    assert trial.best == "a.x-4.0" and trial.equally_good == ("gpt-2",)  # ties: alphabetical, all named
    assert trial.best_identical == len(texts) > trial.chosen_identical
    assert trial.tried == 3  # smollm, gpt-2, a.x-4.0; the unknown name is skipped
    assert "removes every divergence (so do gpt-2)" in trial.describe()
    assert "re-convert with --pre-tokenizer a.x-4.0" in trial.describe()


@pytest.mark.slow
def test_a_gguf_given_the_wrong_pre_tokenizer_fails_and_the_right_one_is_found(
    tiny_llama: Path, tmp_path: Path
) -> None:
    """The check fails when it should: the tiny Llama-3-style GGUF relabelled 'gpt-2' splits digits differently."""
    from transformers import AutoTokenizer

    from jmed_edge.convert.gguf import convert_to_gguf

    f16 = convert_to_gguf(tiny_llama, tmp_path / "gguf", quants=(), verify=False)["F16"]
    gguf = next(f16.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    hf_tokenize, pieces, decode = hf_side(tok)
    texts = [(None, t) for t in probes.TOKENIZER_PROBES + probes.TOKENIZER_STRESS]
    for pre, diverges in (("llama-bpe", False), ("gpt-2", True)):
        llama = VocabTokenizer(write_vocab_only(gguf, tmp_path / f"{pre}.gguf", {KEY_PRE: pre}))
        try:
            report = compare(texts, hf_tokenize, llama, pieces, decode)
        finally:
            llama.close()
        assert bool(report.divergences) is diverges, (pre, report.summary())
    assert report.by_pattern["digit run"] > 0
    wrong = write_vocab_only(gguf, tmp_path / "wrong.gguf", {KEY_PRE: "gpt-2"})
    trial = try_pre_tokenizers(wrong, [t for _, t in texts], hf_tokenize, ["llama-bpe", "default"])
    assert trial.chosen == "gpt-2" and trial.best == "llama-bpe" and trial.best_identical == len(texts)


@pytest.mark.slow
def test_verify_texts_and_a_bare_gguf_without_source(default_gguf: Path, run_cli, tmp_path: Path) -> None:
    """A GGUF with no Hugging Face folder: compared with the tokenizer rebuilt from its metadata."""
    code, out, err = run_cli("verify", default_gguf, "--no-record", "--texts", "jmed-sample", "--json")
    assert code == 0, err
    import json

    [result] = json.loads(out)
    checks = {c["name"]: c for c in result["checks"]}
    assert "no Hugging Face source" in checks["source"]["detail"] and result["against"] is None
    sample = checks["tokenizer parity on jmed-sample"]
    assert sample["strings"] > 500 and sample["by_lang"]["ja"]["strings"] > 200
    assert checks["tokenizer stress set"]["by_pattern"]["space + circled number"] >= 3
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("verify", default_gguf, "--texts", f"igakuqa:{empty}")
    assert code != 0 and "has no IgakuQA question files" in err and len(err.strip().splitlines()) == 1
