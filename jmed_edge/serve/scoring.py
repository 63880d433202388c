"""``/v1/completions`` with ``echo`` and ``logprobs``: what evaluation tools score through.

lm-evaluation-harness (``local-completions``, ``gguf``) sends ``echo: true, logprobs: 1,
max_tokens: 1`` with the context and a choice as one prompt, then sums
``token_logprobs[ctxlen:-1]``: the echo must list every prompt token (the first with a null
log-probability, as OpenAI does) followed by the generated ones. The numbers are the model's
raw-logit log-probabilities (``jmed_edge.runtimes.logprobs``); all prompts of a request run on
one model instance in order, so the choices of a question share their context's KV cache.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from jmed_edge.errors import JmedError
from jmed_edge.runtimes.base import GenerationStats, Runtime, SamplingParams
from jmed_edge.runtimes.logprobs import TokenLogprob, prompt_logprobs
from jmed_edge.serve import protocol as p


def token_text(runtime: Any, token: int) -> str:
    """A token as OpenAI spells it: its text, or ``bytes:\\xNN`` for part of a character."""
    raw = _token_bytes(runtime, token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def _token_bytes(runtime: Any, token: int) -> bytes:
    own = getattr(runtime, "token_bytes", None)
    if own is not None:
        return own(token)
    return runtime.detokenize([token]).encode("utf-8")


def legacy_logprobs(runtime: Any, tokens: Sequence[TokenLogprob], top: int) -> tuple[str, dict[str, Any]]:
    """The text these tokens spell and OpenAI's legacy ``logprobs`` object for them."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text: list[str] = []
    offsets, names, values, tops = [], [], [], []
    length = 0
    for item in tokens:
        offsets.append(length)
        piece = decoder.decode(_token_bytes(runtime, item.token))
        text.append(piece)
        length += len(piece)
        names.append(token_text(runtime, item.token))
        values.append(item.logprob)
        if item.logprob is None:
            tops.append(None)
            continue
        alternatives: dict[str, float] = {}
        for token, value in item.top[:top]:
            name = token_text(runtime, token)
            alternatives[name] = max(value, alternatives.get(name, value))
        tops.append(alternatives)
    text.append(decoder.decode(b"", final=True))
    return "".join(text), {
        "tokens": names,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(runtime: Any, tokens: Sequence[TokenLogprob], top: int) -> dict[str, Any]:
    """OpenAI's chat ``logprobs`` object: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""

    def entry(token: int, value: float) -> dict[str, Any]:
        return {
            "token": token_text(runtime, token),
            "logprob": value,
            "bytes": list(_token_bytes(runtime, token)),
        }

    content = []
    for item in tokens:
        row = entry(item.token, item.logprob)
        row["top_logprobs"] = [entry(t, v) for t, v in item.top[:top]]
        content.append(row)
    return {"content": content, "refusal": None}


@dataclass
class Scored:
    choices: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int


def score_prompts(runtime: Runtime, req: p.CompletionRequest, limit: int, params: SamplingParams) -> Scored:
    """Answer every prompt of ``req`` on ``runtime`` (runs on the worker thread)."""
    prompts = req.prompts()
    top = req.logprobs
    ctx = int(runtime.context_length)
    takes_ids = getattr(runtime, "accepts_token_prompts", False)
    if req.token_prompts and not takes_ids:
        raise p.RequestError(400, f"token-id prompts need a GGUF artifact (the llama.cpp runtime); this server "
                             f"runs {runtime.name}: send text prompts", param="prompt")  # fmt: skip
    vocab = getattr(runtime, "n_vocab", None)
    choices, n_prompt, n_completion = [], 0, 0
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            ids = runtime.tokenize(prompt, add_special=True)
        else:
            ids = prompt
            bad = next((t for t in ids if t < 0 or (vocab is not None and t >= vocab)), None)
            if bad is not None:
                raise p.RequestError(400, f"prompt {index} holds token id {bad}, outside this model's vocabulary "
                                     f"of {vocab} (0-{vocab - 1})", param="prompt")  # fmt: skip
        if not ids:
            raise p.RequestError(400, f"prompt {index} is empty; send at least one token", param="prompt")
        requested = limit if req.max_tokens is None else min(req.max_tokens, limit)
        if len(ids) > ctx or (requested > 0 and len(ids) >= ctx):
            raise p.RequestError(400, f"prompt {index} is {len(ids)} tokens but the model's context is {ctx} "
                                 "tokens; shorten the prompt", param="prompt", code="context_length_exceeded")  # fmt: skip
        budget = min(requested, ctx - len(ids))
        echoed: list[TokenLogprob] = []
        if req.echo:
            if top is not None:
                if not hasattr(runtime, "logits") and not hasattr(runtime, "prompt_logprobs"):
                    raise p.RequestError(400, f"prompt log-probabilities need a GGUF, ONNX or Hugging Face model; "
                                         f"the {runtime.name} runtime has no logits", param="logprobs")  # fmt: skip
                echoed = prompt_logprobs(runtime, ids, top)
            else:
                echoed = [TokenLogprob(int(t), None) for t in ids]
        stats = GenerationStats()
        text = ""
        if budget > 0:
            if top is not None and not getattr(runtime, "reports_logprobs", False):
                raise p.RequestError(400, f"log-probabilities of generated tokens need a GGUF artifact (the "
                                     f"llama.cpp runtime), not {runtime.name}; send max_tokens: 0 with echo: true "
                                     "to score a prompt", param="logprobs")  # fmt: skip
            run = replace(params, max_tokens=budget, logprobs=top)
            try:
                text = "".join(runtime.generate(ids if takes_ids else prompt, run, stats))
            except JmedError as exc:
                raise p.RequestError(400, str(exc)) from exc
        # The token that ended the answer (end of generation) is listed too, as OpenAI lists
        # "<|endoftext|>": lm-eval drops the last listed token as the generated one, so with
        # max_tokens 1 and an answer that ends at once, leaving it out would make it drop the
        # last prompt token instead and score the choice 0.0.
        ended = stats.finish_reason == "stop" and len(stats.tokens) > stats.completion_tokens
        generated = stats.tokens[: stats.completion_tokens + ended]
        logprobs = None
        if top is not None or req.echo:
            echo_text, _ = legacy_logprobs(runtime, echoed, top or 0) if req.echo else ("", None)
            if top is not None:
                _, logprobs = legacy_logprobs(runtime, [*echoed, *generated], top)
                if not req.echo:  # offsets count from the start of the prompt, as OpenAI's do
                    shift = len(prompt) if isinstance(prompt, str) else len(runtime.detokenize(ids))
                    logprobs["text_offset"] = [o + shift for o in logprobs["text_offset"]]
            if req.echo:
                # A text prompt is echoed as sent; token ids as the text they spell.
                text = (
                    prompt if isinstance(prompt, str) and echo_text.endswith(prompt) else echo_text
                ) + text
        reason = "length" if budget == 0 or stats.finish_reason == "length" else "stop"
        choices.append(p.completion_choice(index, text, reason, logprobs))
        n_prompt += len(ids)
        n_completion += stats.completion_tokens
    return Scored(choices, n_prompt, n_completion)
