"""Training data: formats, prompt/response masking, IgakuQA conversion, bad records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jmed_edge.errors import DataError
from jmed_edge.prompts import Example, get_template
from jmed_edge.train.data import (
    ANSWER_LEAD,
    IGNORE,
    Item,
    load_examples,
    read_igakuqa,
    segments_for,
    split_eval,
    tokenize,
)
from jmed_edge.train.recipe import validate_recipe


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def llama_tok(tiny_llama):
    from jmed_edge.train.model import load_tokenizer

    return load_tokenizer(tiny_llama)


@pytest.fixture(scope="module")
def qwen_tok(tiny_qwen2):
    from jmed_edge.train.model import load_tokenizer

    return load_tokenizer(tiny_qwen2)


def _recipe(tmp_path: Path, files: list, **data) -> object:
    raw = {"data": {"files": files, **data}, "train": {"max_length": 512}}
    return validate_recipe(raw, source="test.yaml", base_dir=tmp_path)


def _trained_text(tokens, tokenizer) -> str:
    return tokenizer.decode(
        [t for t, label in zip(tokens["input_ids"], tokens["labels"], strict=True) if label != IGNORE]
    )


@pytest.mark.parametrize("template", ["alpaca", "medpalm"])
def test_alpaca_loss_only_on_the_response(template, llama_tok):
    example = Example("高血圧の治療は?", "65歳男性", "降圧薬を使う。")
    segments = segments_for(Item("x:1", example=example, lang="ja"), template, llama_tok, None)
    tokens, _ = tokenize(segments, llama_tok, 512, add_eos=True)
    prompt = get_template(template).render(example, "ja")
    assert segments[0].text == prompt and not segments[0].train
    assert _trained_text(tokens, llama_tok) == ANSWER_LEAD[template] + "降圧薬を使う。" + llama_tok.eos_token
    assert tokens["input_ids"][0] == llama_tok.bos_token_id and tokens["labels"][0] == IGNORE


@pytest.mark.parametrize("template", ["alpaca", "medpalm"])
def test_answer_lead_matches_how_prompts_lay_out_shot_answers(template):
    shot, ask = Example("Q1", "", "A1"), Example("Q2")
    rendered = get_template(template).render(ask, "en", shots=[shot])
    assert get_template(template).render(shot, "en") + ANSWER_LEAD[template] + "A1" in rendered


def test_chat_messages_train_on_assistant_turns_only(qwen_tok):
    messages = [
        {"role": "system", "content": "You are a careful clinician."},
        {"role": "user", "content": "発熱があります。"},
        {"role": "assistant", "content": "何日続いていますか?"},
        {"role": "user", "content": "3日です。"},
        {"role": "assistant", "content": "受診してください。"},
    ]
    segments = segments_for(Item("x:1", messages=messages), "chat", qwen_tok, None)
    tokens, _ = tokenize(segments, qwen_tok, 512, add_eos=False)
    trained = _trained_text(tokens, qwen_tok)
    assert trained == "何日続いていますか?<|im_end|>\n受診してください。<|im_end|>\n"
    full = qwen_tok.apply_chat_template(messages, tokenize=False)
    assert qwen_tok.decode(tokens["input_ids"]) == full


def test_single_turn_chat_prompt_is_the_benchmark_prompt(llama_tok):
    example = Example("Explain eGFR.", "", "Kidney filtration.")
    segments = segments_for(Item("x:1", example=example, lang="en"), "chat", llama_tok, "Be brief.")
    assert segments[0].text == get_template("chat").render(
        example, "en", tokenizer=llama_tok, system="Be brief."
    )
    assert segments[1].text == "Kidney filtration.<|eot_id|>" and segments[1].train


def test_truncation_that_leaves_no_answer_drops_the_example(llama_tok):
    example = Example("x " * 300, "", "answer")
    segments = segments_for(Item("x:1", example=example, lang="en"), "medpalm", llama_tok, None)
    tokens, truncated = tokenize(segments, llama_tok, 64, add_eos=True)
    assert tokens is None and truncated


def _igakuqa_folder(tmp_path: Path, english: bool = True) -> Path:
    folder = tmp_path / "exam"
    folder.mkdir()
    _write_jsonl(folder / "100-A.jsonl", [
        {"problem_id": "100A1", "problem_text": "脳梗塞リスクの評価に用いるのはどれか。",
         "choices": ["a. NYHA分類", "b. CHADS2スコア", "c. Wellsスコア"], "answer": ["b"], "points": "1", "text_only": True},
        {"problem_id": "100A2", "problem_text": "正しいのはどれか。2つ選べ。",
         "choices": ["a. 甲", "b. 乙", "c. 丙", "d. 丁"], "answer": ["a", "d"], "points": "1", "text_only": True},
        {"problem_id": "100A3", "problem_text": "画像を示す。", "choices": ["a. x", "b. y"], "answer": ["a"],
         "points": "1", "text_only": False},
    ])  # fmt: skip
    _write_jsonl(folder / "100-A_metadata.jsonl", [{"problem_id": "100A1", "category": "cardiology"}])
    if english:
        _write_jsonl(folder / "100-A_translate.jsonl", [
            {"problem_id": "100A1", "problem_text_en": "Which assesses stroke risk?",
             "choices_en": ["a. NYHA class", "b. CHADS2 score", "c. Wells score"]},
            {"problem_id": "100A2", "problem_text_en": "Choose two.", "choices_en": ["a. A", "b. B", "c. C", "d. D"]},
        ])  # fmt: skip
    return folder


def test_igakuqa_questions_become_instruction_pairs(tmp_path):
    folder = _igakuqa_folder(tmp_path)
    options = {"lang": "auto", "mcq": {"languages": ["ja", "en"], "answer_text": True, "text_only": True}}
    items = list(read_igakuqa(folder, options))
    assert [(i.lang, i.example.output.splitlines()[0]) for i in items] == [
        ("ja", "b"),
        ("en", "b"),
        ("ja", "a,d"),
        ("en", "a,d"),
    ]  # the image question (text_only: false) and the metadata file are skipped
    ja, en = items[0].example, items[1].example
    assert "CHADS2スコア" in ja.input and "b. CHADS2スコア" in ja.input and ja.output == "b\nb. CHADS2スコア"
    assert "Which assesses stroke risk?" in en.input and en.output == "b\nb. CHADS2 score"
    assert "2" in items[2].example.instruction  # "answer with 2 letters"


def test_igakuqa_english_without_twin_is_a_clear_error(tmp_path):
    folder = _igakuqa_folder(tmp_path, english=False)
    options = {"lang": "auto", "mcq": {"languages": ["en"], "answer_text": False, "text_only": True}}
    with pytest.raises(DataError, match=r"no English twin 100-A_translate\.jsonl.*languages: \[ja\]"):
        list(read_igakuqa(folder, options))


def test_bundled_igakuqa_sample_loads(llama_tok):
    from jmed_edge.resources import shipped

    folder = shipped("benchmarks/data/jmed-sample")
    recipe = validate_recipe(
        {
            "data": {
                "files": [str(folder)],
                "format": "igakuqa",
                "template": "medpalm",
                "mcq": {"languages": ["ja", "en"]},
            },
            "train": {"max_length": 512},
        }
    )
    _, stats = load_examples(recipe, llama_tok)
    assert stats.examples + stats.dropped >= 2 * 48


def test_missing_field_names_file_line_and_field(tmp_path, llama_tok):
    path = _write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}, {"instruction": "e", "input": "f"}
    ])  # fmt: skip
    with pytest.raises(DataError, match=rf'{path}:3: missing field "output"'):
        load_examples(_recipe(tmp_path, ["d.jsonl"]), llama_tok)


def test_bad_chat_and_bad_json_name_the_line(tmp_path, qwen_tok):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=rf"{path}:1: the conversation has no assistant turn"):
        load_examples(_recipe(tmp_path, ["c.jsonl"], format="chat", template="chat"), qwen_tok)
    path.write_text('{"messages": []}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf'{path}:1: empty or not a list field "messages"'):
        load_examples(_recipe(tmp_path, ["c.jsonl"], format="chat", template="chat"), qwen_tok)
    path.write_text('\n{"instruction": "a", "output": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON"):
        load_examples(_recipe(tmp_path, ["c.jsonl"]), qwen_tok)


def test_empty_data_set_is_a_clear_error(tmp_path, llama_tok):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl holds no alpaca records; the data set is empty"):
        load_examples(_recipe(tmp_path, ["empty.jsonl"]), llama_tok)


def test_eval_split_is_seeded_and_disjoint():
    examples = [{"input_ids": [i], "labels": [i]} for i in range(20)]
    train, held = split_eval(examples, 0.2, seed=3)
    assert len(held) == 4 and len(train) == 16
    assert {e["input_ids"][0] for e in train}.isdisjoint({e["input_ids"][0] for e in held})
    assert split_eval(examples, 0.2, seed=3) == (train, held)
    assert len(split_eval(examples, 5, seed=3)[1]) == 5
    with pytest.raises(DataError, match="leaves no training examples"):
        split_eval(examples[:1], 0.4, seed=3)


def test_length_grouped_order_is_seeded_complete_and_not_longest_first():
    from jmed_edge.train.loop import LengthGroupedOrder

    lengths = [(i * 37) % 101 + 1 for i in range(203)]
    order = LengthGroupedOrder(lengths, batch_size=4, seed=7, mega=10)
    first = list(order)
    assert sorted(first) == list(range(203)) and first == list(order)
    batches = [first[i : i + 4] for i in range(0, 200, 4)]
    mega_spread = max(lengths) - min(lengths)
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) < mega_spread / 4 for b in batches)
    longest = [max(lengths[i] for i in b) for b in batches[:10]]
    assert longest != sorted(longest, reverse=True)  # batch order is shuffled, not longest-first
    order.set_epoch(1)
    assert list(order) != first


def test_data_not_saved_as_utf8_names_the_file_and_the_fix(tmp_path, llama_tok):
    path = tmp_path / "sjis.jsonl"
    path.write_bytes('{"instruction": "高血圧とは", "output": "血圧が高い状態"}\n'.encode("cp932"))
    with pytest.raises(DataError, match=rf"{path} is not UTF-8 text .*iconv -f cp932 -t utf-8"):
        load_examples(_recipe(tmp_path, ["sjis.jsonl"]), llama_tok)
    # A UTF-8 file with a byte-order mark (as Windows editors save it) reads fine.
    path.write_bytes('{"instruction": "高血圧とは", "output": "血圧が高い状態"}\n'.encode("utf-8-sig"))
    examples, _ = load_examples(_recipe(tmp_path, ["sjis.jsonl"]), llama_tok)
    assert len(examples) == 1
