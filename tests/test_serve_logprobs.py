"""Scoring through the server: ``echo`` + ``logprobs`` on ``/v1/completions`` and chat ``logprobs``.

The numbers an evaluation tool sums (lm-eval's ``token_logprobs[ctxlen:-1]``) must equal what
``bench`` computes for the same prompt, within llama.cpp's own batch-split spread.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from jmed_edge.serve import ServeSettings, create_app
from jmed_edge.serve.server import BackgroundServer
from jmed_edge.testing.numerics import LLAMACPP_CONTINUATION_ATOL

pytestmark = pytest.mark.slow

NAME = "smollm2"
MCQ = (
    "Question: Which drug is an antiplatelet agent?\nA. aspirin\nB. insulin\nC. metformin\nD. heparin\n"
    "Answer:"
)
CHOICES = [" A", " B", " C", " D", " aspirin, because it inhibits platelets"]


@pytest.fixture(scope="module")
def runtimes(default_gguf):
    from jmed_edge.artifacts import describe
    from jmed_edge.chat.model import open_model

    info = describe(default_gguf)
    served, reference = (open_model(info, n_threads=2, n_ctx=512) for _ in range(2))
    yield served, reference
    served.close()
    reference.close()


@pytest.fixture(scope="module")
def server(runtimes):
    settings = ServeSettings(model_name=NAME, max_tokens_limit=16)
    with BackgroundServer(create_app([runtimes[0]], settings)) as running:
        yield running


def api(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def post(server: BackgroundServer, **body) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/completions", json={"model": NAME, **body}, timeout=120)


def test_echo_scores_equal_bench_for_text_and_token_prompts(server, runtimes):
    """lm-eval's request, both ways it sends it: the summed continuation equals bench's score."""
    _, reference = runtimes
    bench = [s.logprob for s in reference.score_continuations(MCQ, CHOICES)]
    n_ctx = len(reference.tokenize(MCQ, add_special=True))
    texts = api(server).completions.create(model=NAME, prompt=[MCQ + c for c in CHOICES], echo=True,
                                           logprobs=1, max_tokens=1, temperature=0)  # fmt: skip
    ids = [reference.tokenize(MCQ + c, add_special=True) for c in CHOICES]
    tokens = api(server).completions.create(model=NAME, prompt=ids, echo=True, logprobs=1, max_tokens=1,
                                            temperature=0)  # fmt: skip
    for answer in (texts, tokens):
        assert [c.index for c in answer.choices] == list(range(len(CHOICES)))
        for choice, expected, prompt in zip(answer.choices, bench, ids, strict=True):
            lp = choice.logprobs
            # Every prompt token, then the generated one; the first has no log-probability.
            assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(prompt) + 1
            assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
            assert all(isinstance(v, float) and v <= 0 for v in lp.token_logprobs[1:])
            assert all(len(top) == 1 for top in lp.top_logprobs[1:])
            served = sum(lp.token_logprobs[n_ctx:-1])
            assert served == pytest.approx(expected, abs=LLAMACPP_CONTINUATION_ATOL), (
                choice.index,
                served,
                expected,
            )
            assert "".join(lp.tokens[:-1]) == choice.text[: len("".join(lp.tokens[:-1]))]
            assert choice.text.startswith(MCQ)
            assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    # Text and token-id prompts of the same tokens get the very same numbers.
    assert [c.logprobs.token_logprobs for c in texts.choices] == [
        c.logprobs.token_logprobs for c in tokens.choices
    ]
    # The greedy check lm-eval makes: a token is greedy when it is its position's top entry.
    top = texts.choices[0].logprobs.top_logprobs[-1]
    assert max(top.values()) == texts.choices[0].logprobs.token_logprobs[-1]


def test_max_tokens_zero_scores_only_and_text_offsets_count_characters(server):
    prompt = "高血圧の患者に aspirin 100 mg"
    r = post(server, prompt=prompt, echo=True, logprobs=3, max_tokens=0)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert r.json()["usage"]["completion_tokens"] == 0
    assert len(lp["tokens"]) == r.json()["usage"]["prompt_tokens"]
    assert all(len(t) <= 3 for t in lp["top_logprobs"][1:])
    # text_offset is the character where each token's text starts in the echoed text.
    assert lp["text_offset"][-1] == prompt.index(" mg") and lp["tokens"][-1] == " mg"
    # echo without logprobs: the prompt comes back, no numbers
    r = post(server, prompt=prompt, echo=True, max_tokens=0)
    assert r.json()["choices"][0]["text"] == prompt and r.json()["choices"][0]["logprobs"] is None


def test_logprobs_without_echo_cover_the_answer(server):
    r = post(server, prompt="The heart pumps", logprobs=2, max_tokens=4, temperature=0)
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == r.json()["usage"]["completion_tokens"] == 4
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"][0] == len("The heart pumps")
    assert all(lp["token_logprobs"][i] == max(lp["top_logprobs"][i].values()) for i in range(4))  # greedy


def test_chat_logprobs_in_the_chat_shape(server):
    messages = [{"role": "user", "content": "What is hypertension?"}]
    answer = api(server).chat.completions.create(model=NAME, messages=messages, logprobs=True, top_logprobs=3,
                                                 max_tokens=6, temperature=0)  # fmt: skip
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].logprob == token.logprob  # greedy
        assert bytes(token.bytes).decode() == token.token
    plain = api(server).chat.completions.create(model=NAME, messages=messages, max_tokens=6, temperature=0)
    assert plain.choices[0].message.content == answer.choices[0].message.content
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "logprobs": 21}, "logprobs must be between 0 and 20"),
        ({"prompt": "x", "logprobs": -1}, "logprobs must be between 0 and 20"),
        ({"prompt": [], "echo": True}, "prompt is an empty list"),
        ({"prompt": ["a", [1, 2]], "echo": True}, "prompt mixes kinds"),
        ({"prompt": [[1, 2], 3]}, "prompt mixes kinds"),
        (
            {"prompt": [[5, 49152]], "echo": True, "logprobs": 1, "max_tokens": 0},
            "outside this model's vocabulary",
        ),
        ({"prompt": [[-1]], "echo": True, "max_tokens": 0}, "outside this model's vocabulary"),
        (
            {"prompt": "血圧 " * 400, "echo": True, "logprobs": 1, "max_tokens": 0},
            "the model's context is 512",
        ),
        ({"prompt": "x", "n": 2, "temperature": 0}, "n must be 1 (at temperature 0"),
        ({"prompt": ["a", "b"], "stream": True}, "send stream: false"),
    ],
)
def test_bad_scoring_requests_are_one_clear_400(server, body, message):
    r = post(server, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert "\n" not in error["message"]
    assert post(server, prompt="The heart", max_tokens=2, temperature=0).status_code == 200  # still serving


def test_an_answer_that_ends_at_once_still_lists_its_token(server, runtimes):
    """With max_tokens 1, a model that ends its answer at once (here: "<|im_end|>" after "Yes.")
    must still list that token: lm-eval drops the last listed token as the generated one."""
    _, reference = runtimes
    context = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n"
    [expected] = [s.logprob for s in reference.score_continuations(context, ["Yes."])]
    n_ctx = len(reference.tokenize(context, add_special=True))
    r = post(server, prompt=context + "Yes.", echo=True, logprobs=1, max_tokens=1, temperature=0)
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["finish_reason"] == "stop" and lp["tokens"][-1] == "<|im_end|>"
    assert len(lp["tokens"]) == r.json()["usage"]["prompt_tokens"] + 1
    assert sum(lp["token_logprobs"][n_ctx:-1]) == pytest.approx(expected, abs=LLAMACPP_CONTINUATION_ATOL)
    assert choice["text"] == context + "Yes."  # the end token is listed, not printed
