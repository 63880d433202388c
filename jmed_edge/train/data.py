"""Training data: read Alpaca, chat and IgakuQA files into prompt/response token sequences.

Each format reader yields ``Item``s (one single-turn ``Example`` or one conversation), naming the
``file:line`` it came from so a bad record is reported where it is. Items are rendered with the
shared prompt templates (``jmed_edge.prompts``), so a model is tuned in the layout it is later
benchmarked in, and tokenized segment by segment: the prompt is tokenized on its own, as it is at
inference, and only response tokens carry labels (prompt labels are -100).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jmed_edge.errors import ConfigError, DataError
from jmed_edge.prompts import Example, format_mcq, get_template, mcq_instruction

log = logging.getLogger(__name__)

IGNORE = -100  # label of tokens that carry no loss (the prompt, padding)
_CHOICE_LETTER = re.compile(r"^[a-zA-Z][.)]\s*")  # the "a. " an IgakuQA choice starts with
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
# How each template separates the prompt from the answer; mirrors how prompts.py lays out shot answers.
ANSWER_LEAD = {"medpalm": " ", "alpaca": "", "chat": ""}


@dataclass
class Item:
    source: str  # "file:line", for messages about this record
    example: Example | None = None
    lang: str = "ja"
    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Segment:
    text: str
    train: bool


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as fh:
        try:
            yield from _parsed_lines(path, fh)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8, "
                f"e.g. iconv -f cp932 -t utf-8 {path.name} > utf8-{path.name}"
            ) from exc


def _parsed_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object"
            ) from exc
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
        yield where, record


def _text_field(record: dict[str, Any], name: str, where: str, expected: str, required: bool = True) -> str:
    value = record.get(name)
    if value is None or (required and isinstance(value, str) and not value.strip()):
        if not required:
            return ""
        state = "missing" if name not in record else "empty"
        raise DataError(f'{where}: {state} field "{name}" ({expected}); fix or remove the record')
    if not isinstance(value, str):
        raise DataError(f'{where}: field "{name}" must be text, found {type(value).__name__}')
    return value


def detect_lang(text: str) -> str:
    """'ja' when the text has kana or kanji, else 'en' (used for lang: auto)."""
    return "ja" if _JAPANESE.search(text) else "en"


def read_alpaca(path: Path, options: dict[str, Any]) -> Iterator[Item]:
    expected = "Alpaca records need instruction and output, input is optional"
    for where, record in _records(path):
        example = Example(
            instruction=_text_field(record, "instruction", where, expected),
            input=_text_field(record, "input", where, expected, required=False),
            output=_text_field(record, "output", where, expected),
        )
        lang = record.get("lang") or options["lang"]
        if lang == "auto":
            lang = detect_lang(example.instruction + example.input)
        yield Item(where, example=example, lang=lang)


def read_chat(path: Path, options: dict[str, Any]) -> Iterator[Item]:
    for where, record in _records(path):
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            state = "missing" if "messages" not in record else "empty or not a list"
            raise DataError(f'{where}: {state} field "messages" (a list of {{"role", "content"}} turns)')
        for i, message in enumerate(messages):
            for key in ("role", "content"):
                if not isinstance(message, dict) or not isinstance(message.get(key), str):
                    raise DataError(
                        f'{where}: messages[{i}] has no "{key}" (each turn needs role and content)'
                    )
            if message["role"] not in ("system", "user", "assistant"):
                raise DataError(
                    f'{where}: messages[{i}] has role "{message["role"]}"; use system, user or assistant'
                )
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: the conversation has no assistant turn to learn from")
        text = " ".join(m["content"] for m in messages)
        yield Item(
            where,
            messages=[{"role": m["role"], "content": m["content"]} for m in messages],
            lang=detect_lang(text),
        )


def _mcq_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    # {exam}-{block}.jsonl; its _translate (English) and _metadata twins are not questions.
    files = [p for p in sorted(path.glob("*.jsonl"))
             if not p.name.startswith("_") and p.stem.rsplit("_", 1)[-1] not in ("translate", "metadata")]  # fmt: skip
    if not files:
        raise DataError(
            f"{path} holds no IgakuQA files ({{exam}}-{{block}}.jsonl); is this the right folder?"
        )
    return files


def _english_twin(path: Path) -> dict[str, dict[str, Any]]:
    twin = path.with_name(f"{path.stem}_translate.jsonl")
    if not twin.exists():
        raise DataError(
            f"{path} has no English twin {twin.name}; set data.mcq.languages: [ja] or add the translation"
        )
    return {str(record.get("problem_id")): record for _, record in _records(twin)}


def read_igakuqa(path: Path, options: dict[str, Any]) -> Iterator[Item]:
    """Multiple-choice questions -> (instruction + question + lettered choices, answer letters)."""
    mcq = options["mcq"]
    expected = "IgakuQA records need problem_id, problem_text, choices and answer"
    for file in _mcq_files(path):
        twins = _english_twin(file) if "en" in mcq["languages"] else {}
        for where, record in _records(file):
            for name in ("problem_id", "problem_text", "choices", "answer"):
                if record.get(name) in (None, "", []):
                    state = "missing" if name not in record else "empty"
                    raise DataError(f'{where}: {state} field "{name}" ({expected})')
            if mcq["text_only"] and record.get("text_only") is False:
                continue  # the question needs an image the model cannot see
            answer = record["answer"] if isinstance(record["answer"], list) else [record["answer"]]
            letters = [str(a).strip().lower() for a in answer]
            for lang in mcq["languages"]:
                if lang == "en":
                    twin = twins.get(str(record["problem_id"]))
                    if twin is None or not twin.get("problem_text_en") or not twin.get("choices_en"):
                        raise DataError(
                            f"{where}: problem {record['problem_id']} has no English twin with problem_text_en and "
                            f"choices_en in {file.stem}_translate.jsonl; set data.mcq.languages: [ja]"
                        )
                    question, choices = twin["problem_text_en"], twin["choices_en"]
                else:
                    question, choices = record["problem_text"], record["choices"]
                yield Item(
                    where,
                    example=_mcq_example(question, choices, letters, lang, mcq["answer_text"], where),
                    lang=lang,
                )


def _mcq_example(
    question: str, choices: list[str], letters: list[str], lang: str, with_text: bool, where: str
) -> Example:
    index = {chr(ord("a") + i): text for i, text in enumerate(choices)}
    unknown = [x for x in letters if x not in index]
    if unknown:
        raise DataError(f"{where}: answer {','.join(unknown)} is not among the {len(choices)} choices")
    output = ",".join(letters)
    if with_text:
        output += "\n" + "\n".join(f"{x}. {_CHOICE_LETTER.sub('', index[x].strip())}" for x in letters)
    return Example(
        instruction=mcq_instruction(lang, len(letters)),
        input=format_mcq(question, choices, lang),
        output=output,
    )


# Data format name -> reader. Each reader yields Items and raises DataError naming file:line.
FORMATS: dict[str, Callable[[Path, dict[str, Any]], Iterator[Item]]] = {
    "alpaca": read_alpaca,
    "chat": read_chat,
    "igakuqa": read_igakuqa,
}


def segments_for(item: Item, template: str, tokenizer: Any, system: str | None) -> list[Segment]:
    """Prompt and response text of one item; conversations give one response per assistant turn."""
    if item.messages or template == "chat":
        messages = item.messages or _single_turn_messages(item.example, system)
        if system and item.messages and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        return _chat_segments(messages, tokenizer, item.source, item.example, item.lang, system)
    assert item.example is not None
    prompt = get_template(template).render(item.example, item.lang)
    return [Segment(prompt, False), Segment(ANSWER_LEAD[template] + item.example.output, True)]


def _single_turn_messages(example: Example | None, system: str | None) -> list[dict[str, str]]:
    assert example is not None
    user = f"{example.instruction}\n\n{example.input}".strip() if example.input else example.instruction
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": example.output}]


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _chat_segments(
    messages: list[dict[str, str]],
    tokenizer: Any,
    where: str,
    example: Example | None,
    lang: str,
    system: str | None,
) -> list[Segment]:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "chat data and the chat template need the model's chat template, and this tokenizer has none; "
            "use data.template: alpaca (or medpalm) with Alpaca data"
        )
    segments: list[Segment] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], generation_prompt=True)
        if example is not None and i == len(messages) - 1:
            # Single-turn items must see exactly the prompt the benchmarks render.
            prompt = get_template("chat").render(example, lang, tokenizer=tokenizer, system=system)
        full = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ConfigError(
                f"{where}: this model's chat template does not render a conversation as a growing prefix, so "
                "assistant turns cannot be isolated; use data.template: alpaca with Alpaca data"
            )
        segments += [Segment(prompt[len(done) :], False), Segment(full[len(prompt) :], True)]
        done = full
    return [s for s in segments if s.text]


class Tokenized(dict):
    """``input_ids`` and ``labels`` of one example (a dict, as the Trainer's collator expects)."""


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids a tokenizer puts before any text (Llama's BOS; nothing for Qwen2)."""
    return tokenizer("", add_special_tokens=True)["input_ids"]


def tokenize(
    segments: list[Segment], tokenizer: Any, max_length: int, add_eos: bool, prefix: list[int] | None = None
) -> tuple[Tokenized | None, bool]:
    """Token ids and labels; returns (None, _) when truncation leaves no response token.

    ``prefix`` is ``special_prefix(tokenizer)``, passed in to compute it once per data set.
    """
    ids: list[int] = []
    labels: list[int] = []
    prefix = special_prefix(tokenizer) if prefix is None else prefix
    bos = tokenizer.bos_token
    if prefix and not (bos and segments and segments[0].text.startswith(bos)):
        ids += prefix
        labels += [IGNORE] * len(prefix)
    for segment in segments:
        part = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if segment.train else [IGNORE] * len(part)
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None, truncated
    return Tokenized(input_ids=ids, labels=labels), truncated


@dataclass
class DataStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    per_file: dict[str, int] = field(default_factory=dict)


def load_examples(recipe: Any, tokenizer: Any) -> tuple[list[Tokenized], DataStats]:
    """Read, render and tokenize every data file of a recipe."""
    data = recipe.data
    options = {"lang": data.lang, "mcq": data.mcq.model_dump()}
    stats = DataStats()
    examples: list[Tokenized] = []
    prefix = special_prefix(tokenizer)
    for path, fmt in recipe.data_files():
        count = 0
        for item in FORMATS[fmt](path, options):
            segments = segments_for(item, data.template, tokenizer, data.system)
            add_eos = data.template != "chat"  # a chat template closes the turn itself
            tokens, truncated = tokenize(segments, tokenizer, recipe.train.max_length, add_eos, prefix)
            stats.truncated += truncated
            if tokens is None:
                stats.dropped += 1
                continue
            examples.append(tokens)
            count += 1
        stats.per_file[str(path)] = count
        if count == 0 and not stats.dropped:
            raise DataError(f"{path} holds no {fmt} records; the data set is empty")
    if not examples:
        raise DataError(
            f"no training examples left: all {stats.dropped} had no response token within "
            f"train.max_length={recipe.train.max_length}; raise train.max_length"
        )
    if stats.dropped:
        log.warning(
            "dropped %d examples whose prompt fills train.max_length=%d",
            stats.dropped,
            recipe.train.max_length,
        )
    if stats.truncated:
        log.info("%d examples were cut to train.max_length=%d", stats.truncated, recipe.train.max_length)
    stats.examples = len(examples)
    return examples, stats


def split_eval(
    examples: list[Tokenized], eval_split: float, seed: int
) -> tuple[list[Tokenized], list[Tokenized]]:
    """Hold out a seeded random share (fraction < 0.5) or count (>= 1) of examples for eval loss."""
    if not eval_split:
        return examples, []
    n_eval = int(eval_split) if eval_split >= 1 else max(1, round(eval_split * len(examples)))
    if n_eval >= len(examples):
        raise DataError(
            f"data.eval_split={eval_split} leaves no training examples out of {len(examples)}; lower it"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]
