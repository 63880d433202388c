"""Turn a question into a prompt (template, language, shots) and into scored continuations.

Prompts come from ``jmed_edge.prompts``, the same templates training uses, so a model is
asked the way it was tuned. The answer continuation follows the prompt's own spacing: after
"Answer:" it is " c", after a line break or a chat template's assistant header it is "c".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jmed_edge.bench.records import Question
from jmed_edge.bench.scoring import answers_requested
from jmed_edge.prompts import Example, format_mcq, get_template, mcq_instruction

# Instruction for numeric-entry questions (no choices), per language.
NUMERIC_INSTRUCTION = {
    "ja": "以下は医学に関する計算問題です。答えを数値で答えてください。",
    "en": "The following is a medical calculation question. Answer with the number only.",
}
_QUESTION_LABEL = {"ja": "問題", "en": "Question"}


def answer_text(q: Question) -> str:
    """How a shot's answer is written: "c", "a, d" or the number."""
    return q.answer[0] if q.numeric else ", ".join(q.answer[:1] if q.accept_any else q.answer)


def to_example(q: Question, with_answer: bool) -> Example:
    if q.numeric:
        instruction = NUMERIC_INSTRUCTION[q.lang]
        body = f"{_QUESTION_LABEL[q.lang]}: {q.question.strip()}"
    else:
        instruction = mcq_instruction(q.lang, answers_requested(q)[0])
        body = format_mcq(q.question, q.choices, q.lang)
    return Example(instruction=instruction, input=body, output=answer_text(q) if with_answer else "")


def build_prompt(q: Question, template: str, shots: Sequence[Question] = (), tokenizer: Any = None) -> str:
    """The prompt up to where the answer starts. ``tokenizer``: anything with a chat template."""
    return get_template(template).render(
        to_example(q, with_answer=False),
        q.lang,
        shots=[to_example(s, with_answer=True) for s in shots],
        tokenizer=tokenizer,
    )


def _lead(prompt: str) -> str:
    return "" if not prompt or prompt[-1].isspace() else " "


def letter_continuations(prompt: str, q: Question) -> list[str]:
    lead = _lead(prompt)
    return [lead + letter for letter in q.letters]


def text_continuations(prompt: str, q: Question) -> list[str]:
    lead = _lead(prompt)
    return [lead + choice for choice in q.choices]


def pick_shots(dev: Sequence[Question], lang: str, k: int) -> list[Question]:
    """The first ``k`` dev questions in ``lang`` (fixed shots: every question shares one prefix)."""
    return [q for q in dev if q.lang == lang and not q.numeric][:k] if k > 0 else []
