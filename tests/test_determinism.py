"""The same request gets the same answer, whatever the model instance evaluated before.

llama.cpp's float sums depend on how a sequence is split into decode calls, so a runtime that
reuses whatever prefix its KV cache holds answers a repeated temperature-0 request differently
(measured on ``jmed-edge serve``: four identical chat requests with others between gave three
answers). ``runtimes.kvplan`` decodes every prompt in the calls a fresh instance would use and
keeps only the part of the cache written the same way: these tests compare token for token and
score for score, exactly, against a fresh instance.
"""

from __future__ import annotations

import pytest

from jmed_edge.runtimes.base import GenerationStats, SamplingParams

pytestmark = pytest.mark.slow

SYSTEM = "You are a doctor."
QUESTION = "What is hypertension?"
OTHER = "高血圧の治療薬を一つ挙げてください。"
MCQ = [
    ("Question: Which drug is an antiplatelet agent?\nA. aspirin\nB. insulin\nC. metformin\nD. heparin\nAnswer:",
     [" A", " B", " C", " D", " aspirin"]),
    ("問題: 2型糖尿病の第一選択薬はどれか。\nA. メトホルミン\nB. ワルファリン\nC. アスピリン\nD. ヘパリン\n答え:",
     [" A", " B", " C", " D", " メトホルミン"]),
    ("Question: What does an ECG measure?\nA. blood glucose\nB. the heart's electrical activity\nC. lung volume\n"
     "D. bone density\nAnswer:", [" A", " B", " C", " D"]),
]  # fmt: skip


@pytest.fixture(scope="module", params=["Q4_1", "F16"])
def open_gguf(request):
    """Instances of the default model's shipped Q4_1 GGUF, and of its F16 conversion: F16 is
    where a token decoded alone and inside a batch differ most (up to 0.03 in a logit)."""
    from jmed_edge.artifacts import describe
    from jmed_edge.chat.model import open_model

    gguf = request.getfixturevalue("default_gguf" if request.param == "Q4_1" else "default_f16")
    info = describe(gguf)
    opened = []

    def make():
        runtime = open_model(info, n_threads=2, n_ctx=1024)
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        runtime.close()


def answer_ids(runtime, prompt: str, n: int = 60) -> list[tuple[int, float]]:
    """The answer as (token, log-probability) pairs: equal floats, not only equal greedy picks.

    A decode split that differs only in the last bits (the last prompt token decoded alone
    rather than in the prompt's batch: 0.033 in a logit on the F16 GGUF, measured on AVX-512)
    rarely flips a greedy pick on a short answer, but it always shows in the numbers."""
    stats = GenerationStats()
    text = "".join(runtime.generate(prompt, SamplingParams(max_tokens=n, temperature=0.0, logprobs=0), stats))
    assert text
    return [(t.token, t.logprob) for t in stats.tokens]


def chat_prompt(runtime, user: str, system: str | None = SYSTEM) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return runtime.render_chat(messages)


def test_a_repeated_request_gets_the_answer_a_fresh_instance_gives(open_gguf):
    """Request A, A again, B sharing A's system prompt, a long unrelated prompt, A again."""
    fresh, used = open_gguf(), open_gguf()
    a = chat_prompt(fresh, QUESTION)
    expected = answer_ids(fresh, a)
    assert len(expected) > 20  # long enough for drift to show
    seen = [answer_ids(used, a), answer_ids(used, a)]
    answer_ids(used, chat_prompt(used, OTHER))  # shares A's system prompt and template
    answer_ids(used, chat_prompt(used, QUESTION + " " + "Explain in detail. " * 20))  # shares A's start
    seen.append(answer_ids(used, a))
    used.score_continuations(*MCQ[0])
    seen.append(answer_ids(used, a))
    for i, answer in enumerate(seen):
        departs = next((j for j, (x, y) in enumerate(zip(answer, expected, strict=False)) if x != y), None)
        assert answer == expected, f"answer {i} departs from a fresh instance's at token {departs}"


def test_bench_scores_do_not_depend_on_the_order_of_questions(open_gguf):
    forward, backward = open_gguf(), open_gguf()
    first = [[s.logprob for s in forward.score_continuations(c, opts)] for c, opts in MCQ]
    generated = answer_ids(backward, chat_prompt(backward, OTHER), 12)  # leave something in the cache
    assert generated
    second = [[s.logprob for s in backward.score_continuations(c, opts)] for c, opts in reversed(MCQ)]
    assert first == list(reversed(second))  # exactly: the same calls compute the same numbers
    again = [[s.logprob for s in forward.score_continuations(c, opts)] for c, opts in MCQ]
    assert again == first


def test_chat_answers_the_same_after_reset_and_across_turns(open_gguf):
    from jmed_edge.chat.session import ChatSession

    def ask(session: ChatSession, text: str) -> str:
        turn = session.ask(text)
        for _ in turn:  # stream the answer to its end
            pass
        session.commit(turn)
        return turn.answer

    params = SamplingParams(max_tokens=40, temperature=0.0)
    alone = ask(ChatSession(open_gguf(), system=SYSTEM, params=params), QUESTION)
    session = ChatSession(open_gguf(), system=SYSTEM, params=params)
    assert ask(session, QUESTION) == alone
    second_turn = ask(session, OTHER)
    session.reset()
    assert ask(session, QUESTION) == alone  # /reset: as if the chat had just started
    # The second turn's answer is the one a fresh instance gives to the same two-turn history.
    replay = ChatSession(open_gguf(), system=SYSTEM, params=params)
    ask(replay, QUESTION)
    assert ask(replay, OTHER) == second_turn
