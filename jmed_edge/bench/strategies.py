"""The two ways a batch of questions is answered: option log-likelihoods, or generation.

Each returns one prediction row per question (the ``predictions.jsonl`` format documented in
benchmarks/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from jmed_edge.bench.extract import extract_letters, extract_number
from jmed_edge.bench.prompting import build_prompt, letter_continuations, text_continuations
from jmed_edge.bench.records import Question
from jmed_edge.bench.scoring import answers_requested, is_correct, rule, text_metrics, top_k
from jmed_edge.bench.settings import BenchSettings
from jmed_edge.runtimes.base import ChatTemplateView, GenerationStats, SamplingParams, score_batch

# Where a generated answer ends: a blank line, or the model starting the next question.
GENERATION_STOPS = ("\n\n", "###", "\n問題", "\nQuestion")


# Where a question's category lives in each loader's ``meta``: IgakuQA's metadata ``category``,
# MMLU/JMMLU's subject (the file name), MedMCQA's ``subject_name``.
CATEGORY_KEYS = ("category", "subject", "subject_name")


def _base_row(q: Question, k: int, k_source: str) -> dict[str, Any]:
    row = {
        "id": q.id,
        "lang": q.lang,
        "gold": q.answer[0] if q.numeric else list(q.answer),
        "rule": rule(q),
        "k": k,
        "k_source": k_source,
        "points": q.points,
    }
    category = next((q.meta[key] for key in CATEGORY_KEYS if q.meta.get(key)), None)
    if category is not None:
        row["category"] = str(category)
    if q.meta.get("kinki"):  # the report counts contraindicated picks (IgakuQA's 禁忌肢)
        row["kinki"] = list(q.meta["kinki"])
    return row


def render_prompt(
    runtime: Any, q: Question, settings: BenchSettings, shots: Mapping[str, Sequence[Question]]
) -> str:
    view = ChatTemplateView(runtime) if settings.template == "chat" else None
    return build_prompt(q, settings.template, shots.get(q.lang, ()), view)


def score_loglik(
    runtime: Any, batch: Sequence[Question], settings: BenchSettings, shots: Mapping[str, Sequence[Question]]
) -> list[dict[str, Any]]:
    """Score every option (by letter; also by text when the scoring asks for it); pick the top k."""
    prompts = [render_prompt(runtime, q, settings, shots) for q in batch]
    with_text = settings.scoring != "letter"
    requests = []
    for q, prompt in zip(batch, prompts, strict=True):
        continuations = letter_continuations(prompt, q)
        if with_text:
            continuations += text_continuations(prompt, q)
        requests.append((prompt, continuations))
    started = time.perf_counter()
    results = score_batch(runtime, requests)
    latency = (time.perf_counter() - started) / max(len(batch), 1)
    rows = []
    for q, prompt, result in zip(batch, prompts, results, strict=True):
        n = len(q.choices)
        k, k_source = answers_requested(q)
        scores = {"letter": [round(s.logprob, 6) for s in result[:n]]}
        if with_text:
            text = result[n:]
            scores["text"] = [round(s.logprob, 6) for s in text]
            scores["text_norm"] = [round(s.logprob / max(s.n_tokens, 1), 6) for s in text]
            scores["text_tokens"] = [s.n_tokens for s in text]
        preds = {
            variant: top_k(scores[variant], k)
            for variant in ("letter", "text", "text_norm")
            if variant in scores
        }
        pred = preds[settings.scoring.replace("-", "_")]
        row = _base_row(q, k, k_source)
        row.update(pred=pred, correct=is_correct(q, pred), scores=scores, latency_s=round(latency, 6))
        row["prompt"] = prompt  # exactly what was scored: lm-eval's samples and audits show it
        if with_text:
            row["preds"] = preds
        rows.append(row)
    return rows


def score_generate(
    runtime: Any, batch: Sequence[Question], settings: BenchSettings, shots: Mapping[str, Sequence[Question]]
) -> list[dict[str, Any]]:
    """Greedy answer, then letters (or the number) read from it, plus the JMedLoRA text metrics."""
    rows = []
    for q in batch:
        prompt = render_prompt(runtime, q, settings, shots)
        params = SamplingParams(max_tokens=settings.max_new_tokens, temperature=0.0, seed=settings.seed,
                                stop=GENERATION_STOPS)  # fmt: skip
        stats = GenerationStats()
        started = time.perf_counter()
        response = "".join(runtime.generate(prompt, params, stats))
        latency = time.perf_counter() - started
        k, k_source = answers_requested(q)
        pred: Any = extract_number(response) if q.numeric else extract_letters(response, len(q.choices))
        row = _base_row(q, k, k_source)
        row.update(pred=pred, correct=is_correct(q, pred), response=response, latency_s=round(latency, 6),
                   prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
                   prompt=prompt)  # fmt: skip
        row.update(text_metrics(q, response, k))
        rows.append(row)
    return rows
