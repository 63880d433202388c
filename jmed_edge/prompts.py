"""Prompt templates shared by training and benchmarking, so a model is scored the way it was tuned.

Three formats, each in Japanese and English, 0-shot or k-shot:

- ``chat``: the model's own chat template (from its tokenizer), instruction in the user turn;
- ``medpalm``: the task instruction first, as a preamble, then the question and "Answer:";
- ``alpaca``: the instruction inside an Alpaca "### Instruction / ### Input / ### Response" block.

``medpalm`` and ``alpaca`` are the two layouts compared for Japanese medical QA in the 70B
licensing-exam study (instruction as a preamble versus inside the Alpaca block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jmed_edge.errors import ConfigError, did_you_mean

LANGS = ("ja", "en")

# Default task instructions for multiple-choice medical questions.
MCQ_INSTRUCTION = {
    "ja": "以下は医学に関する多肢選択問題です。正しい選択肢の記号を答えてください。",
    "en": "The following is a multiple-choice medical question. Answer with the letter of the correct choice.",
}
MCQ_INSTRUCTION_MULTI = {
    "ja": "以下は医学に関する多肢選択問題です。正しい選択肢の記号を{k}つ答えてください。",
    "en": "The following is a multiple-choice medical question. Answer with the letters of the {k} correct choices.",
}

# Labels of the prompt layouts, per language.
_LABELS = {
    "ja": {"question": "問題", "choices": "選択肢", "answer": "答え",
           "instruction": "指示", "input": "入力", "response": "応答"},
    "en": {"question": "Question", "choices": "Choices", "answer": "Answer",
           "instruction": "Instruction", "input": "Input", "response": "Response"},
}  # fmt: skip
_ALPACA_PREAMBLE = {
    "ja": "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。",
    "en": "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.",
}


@dataclass(frozen=True)
class Example:
    """One instruction-following example: ``output`` is empty for the item being asked."""

    instruction: str
    input: str = ""
    output: str = ""


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ConfigError(f'unknown language "{lang}"; use one of {", ".join(LANGS)}')


def _medpalm(example: Example, lang: str, with_instruction: bool) -> str:
    labels = _LABELS[lang]
    head = f"{example.instruction}\n\n" if with_instruction and example.instruction else ""
    body = example.input.strip()
    return f"{head}{body}\n{labels['answer']}:"


def _alpaca(example: Example, lang: str, with_preamble: bool) -> str:
    labels = _LABELS[lang]
    parts = [_ALPACA_PREAMBLE[lang] + "\n\n"] if with_preamble else []
    parts.append(f"### {labels['instruction']}:\n{example.instruction}\n\n")
    if example.input.strip():
        parts.append(f"### {labels['input']}:\n{example.input.strip()}\n\n")
    parts.append(f"### {labels['response']}:\n")
    return "".join(parts)


def _user_turn(example: Example) -> str:
    return f"{example.instruction}\n\n{example.input}".strip() if example.input else example.instruction


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    help: str

    def render(
        self,
        example: Example,
        lang: str,
        shots: Sequence[Example] = (),
        tokenizer: Any = None,
        system: str | None = None,
    ) -> str:
        """The prompt text up to where the model's answer starts (answer not included)."""
        _check_lang(lang)
        if self.name == "chat":
            return _render_chat(example, shots, tokenizer, system)
        if self.name == "medpalm":
            # Shots repeat the question/answer layout; the instruction appears once, first.
            blocks = [_medpalm(shot, lang, with_instruction=i == 0) + f" {shot.output}\n\n"
                      for i, shot in enumerate(shots)]  # fmt: skip
            blocks.append(_medpalm(example, lang, with_instruction=not shots))
            return "".join(blocks)
        if self.name == "alpaca":
            blocks = [_alpaca(shot, lang, with_preamble=i == 0) + f"{shot.output}\n\n"
                      for i, shot in enumerate(shots)]  # fmt: skip
            blocks.append(_alpaca(example, lang, with_preamble=not shots))
            return "".join(blocks)
        raise AssertionError(self.name)


def _render_chat(example: Example, shots: Sequence[Example], tokenizer: Any, system: str | None) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the chat prompt format needs the model's chat template, and this tokenizer has none; "
            "use --template medpalm or alpaca, or add a chat_template to tokenizer_config.json"
        )
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    for shot in shots:
        messages += [
            {"role": "user", "content": _user_turn(shot)},
            {"role": "assistant", "content": shot.output},
        ]
    messages.append({"role": "user", "content": _user_turn(example)})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


TEMPLATES = {
    t.name: t
    for t in (
        PromptTemplate("chat", "the model's own chat template (instruction in the user turn)"),
        PromptTemplate("medpalm", "task instruction as a preamble before the question, then 'Answer:'"),
        PromptTemplate("alpaca", "instruction inside '### Instruction / ### Input / ### Response'"),
    )
}


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise ConfigError(
            f'unknown prompt template "{name}"{did_you_mean(name, TEMPLATES)}; known: {", ".join(TEMPLATES)}'
        )
    return TEMPLATES[name]


def format_mcq(question: str, choices: Sequence[str], lang: str) -> str:
    """Question and lettered choices as one block (choices keep an existing "a. " prefix)."""
    _check_lang(lang)
    labels = _LABELS[lang]
    lines = [f"{labels['question']}: {question.strip()}", f"{labels['choices']}:"]
    for i, choice in enumerate(choices):
        letter = chr(ord("a") + i)
        text = choice.strip()
        lines.append(text if text[:2].lower() in (f"{letter}.", f"{letter})") else f"{letter}. {text}")
    return "\n".join(lines)


def mcq_instruction(lang: str, k: int = 1) -> str:
    _check_lang(lang)
    return MCQ_INSTRUCTION[lang] if k == 1 else MCQ_INSTRUCTION_MULTI[lang].format(k=k)
