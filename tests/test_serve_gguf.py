"""``jmed-edge serve`` over a real GGUF (the embedded default model's), with the official client."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from jmed_edge.serve import ServeSettings, create_app, is_loopback
from jmed_edge.serve.server import BackgroundServer

pytestmark = pytest.mark.slow

NAME = "smollm2-q4"
QUESTIONS = [
    "What is hypertension?",
    "高血圧とは何ですか？",
    "Name one symptom of diabetes.",
    "What does an ECG measure?",
]


@pytest.fixture(scope="module")
def server(default_gguf):
    from jmed_edge.artifacts import describe
    from jmed_edge.chat.model import open_model

    info = describe(default_gguf)
    runtimes = [open_model(info, n_threads=1, n_ctx=512) for _ in range(2)]
    settings = ServeSettings(model_name=NAME, max_tokens_limit=16, max_concurrency=2, queue=8)
    try:
        with BackgroundServer(create_app(runtimes, settings)) as running:
            yield running
    finally:
        for runtime in runtimes:
            runtime.close()


def api(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(server: BackgroundServer, question: str, *, stream: bool = False) -> str:
    messages = [{"role": "user", "content": question}]
    if stream:
        chunks = api(server).chat.completions.create(
            model=NAME, messages=messages, temperature=0, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return (
        api(server)
        .chat.completions.create(model=NAME, messages=messages, temperature=0)
        .choices[0]
        .message.content
    )


def test_streaming_and_non_streaming_agree(server):
    whole = ask(server, QUESTIONS[0])
    assert whole.strip()
    assert ask(server, QUESTIONS[0], stream=True) == whole


def test_completions_endpoint(server):
    done = api(server).completions.create(model=NAME, prompt="The heart pumps", max_tokens=8, temperature=0)
    assert done.choices[0].text.strip() and done.usage.completion_tokens <= 8
    assert done.usage.prompt_tokens == 3


def test_concurrent_requests_each_get_the_answer_they_get_alone(server):
    alone = {q: ask(server, q) for q in QUESTIONS}
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda i: (QUESTIONS[i % 4], ask(server, QUESTIONS[i % 4], stream=i % 2 == 1)),
                                 range(8)))  # fmt: skip
    assert all(text == alone[q] for q, text in together)


def test_prompt_longer_than_the_context_is_400_and_the_server_goes_on(server):
    with pytest.raises(openai.BadRequestError) as exc:
        ask(server, "血圧 " * 400)
    assert exc.value.body["code"] == "context_length_exceeded" and "512 tokens" in exc.value.body["message"]
    assert ask(server, QUESTIONS[2]).strip()


def test_no_outbound_connection_during_requests(server, monkeypatch):
    seen = []
    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, a: (seen.append(a), real(self, a))[1])
    ask(server, QUESTIONS[3], stream=True)
    assert httpx.get(server.base_url + "/health").status_code == 200
    assert seen and all(is_loopback(a[0]) for a in seen)


def test_cli_reports_a_busy_port(tmp_path, capsys):
    """The real command line: a port in use is one line naming it, before the model loads."""
    import argparse

    from jmed_edge.errors import ConfigError
    from jmed_edge.models.default import default_gguf
    from jmed_edge.serve.cli import configure

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(Path(default_gguf())), "--port", str(port)])
    try:
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use.*--port"):
            args.func(args)
    finally:
        taken.close()
