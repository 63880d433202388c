"""The OpenAI-compatible server over a scripted runtime: protocol, security, limits, queueing.

The runtime here answers "echo: <the last line of the prompt>" word by word, so every answer
is predictable and tied to its own request. It refuses to be used by two requests at once,
which is how the tests prove that one model instance is never shared. The same server over a
real GGUF is in test_serve_gguf.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from jmed_edge.errors import ConfigError
from jmed_edge.runtimes.base import GenerationStats
from jmed_edge.serve import ServeSettings, create_app, is_loopback
from jmed_edge.serve.server import BackgroundServer, bind_socket

MODEL = "fake-model"
KEY = "test-key-0123456789"


class EchoRuntime:
    """Whitespace 'tokens'; answers 'echo:' plus the words of the prompt's last line."""

    name = "echo"

    def __init__(self, context_length: int = 64, delay: float = 0.0) -> None:
        self.artifact = Path("/models") / MODEL
        self.context_length = context_length
        self.delay = delay
        self.in_use = threading.Lock()
        self.generated = 0  # tokens produced, to see that a cancelled answer stopped early
        self.prompts: list[str] = []

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def render_chat(self, messages, *, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}> {m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def generate(self, prompt: str, params, stats: GenerationStats | None = None):
        stats = stats if stats is not None else GenerationStats()
        if not self.in_use.acquire(blocking=False):
            raise AssertionError("one runtime was used by two requests at once")
        try:
            self.prompts.append(prompt)
            stats.prompt_tokens = len(self.tokenize(prompt))
            last = [line for line in prompt.splitlines() if line.strip() and line != "<assistant>"][-1]
            words = ["echo:", *(last.split()[1:] if last.startswith("<") else last.split())]
            stats.finish_reason = "stop"
            for i, word in enumerate(words):
                if i >= params.max_tokens:
                    stats.finish_reason = "length"
                    break
                time.sleep(self.delay)
                self.generated += 1
                stats.completion_tokens += 1
                yield (" " if i else "") + word
        finally:
            self.in_use.release()

    def close(self) -> None:
        pass


def serve(runtimes=None, **settings):
    runtimes = runtimes or [EchoRuntime()]
    return BackgroundServer(create_app(runtimes, ServeSettings(model_name=MODEL, **settings)))


@functools.cache
def client(server: BackgroundServer, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def ask(words: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": words}]


@pytest.fixture(scope="module")
def server():
    with serve(max_tokens_limit=8) as running:
        yield running


def still_serving(server: BackgroundServer) -> None:
    answer = client(server).chat.completions.create(model=MODEL, messages=ask("still here"))
    assert answer.choices[0].message.content == "echo: still here"


# --- the protocol, through the official client ----------------------------------------------


def test_models_and_health(server):
    assert [m.id for m in client(server).models.list().data] == [MODEL]
    assert client(server).models.retrieve(MODEL).id == MODEL
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}


def test_chat_completion_non_streaming(server):
    answer = client(server).chat.completions.create(model=MODEL, messages=ask("血圧 は 高い"), temperature=0)
    assert answer.choices[0].message.content == "echo: 血圧 は 高い"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 5 and answer.usage.completion_tokens == 4
    assert answer.usage.total_tokens == 9 and answer.model == MODEL


def test_chat_completion_streaming(server):
    stream = client(server).chat.completions.create(
        model=MODEL, messages=ask("one two three"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 4 and not chunks[-1].choices


def test_completions_both_ways_and_length_finish(server):
    done = client(server).completions.create(model=MODEL, prompt="alpha beta", max_tokens=2)
    assert done.choices[0].text == "echo: alpha" and done.choices[0].finish_reason == "length"
    streamed = client(server).completions.create(model=MODEL, prompt="alpha beta", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "echo: alpha beta"


def test_max_tokens_above_the_limit_is_clamped(server):
    answer = client(server).chat.completions.create(model=MODEL, messages=ask("w " * 20), max_tokens=10_000)
    assert answer.usage.completion_tokens == 8  # --max-tokens-limit 8
    assert answer.choices[0].finish_reason == "length"


# --- bad requests: clear OpenAI-style errors, and the server keeps serving ------------------


def test_malformed_json_is_400_in_openai_shape(server):
    r = httpx.post(server.base_url + "/v1/chat/completions", content=b'{"model": ',
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]
    still_serving(server)


def test_invalid_fields_are_400_naming_the_field(server):
    with pytest.raises(openai.BadRequestError) as exc:
        client(server).chat.completions.create(model=MODEL, messages=ask("x"), temperature=7)
    assert "temperature" in str(exc.value)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client(server).chat.completions.create(model=MODEL, messages=ask("x"), n=2)
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    still_serving(server)


def test_unknown_model_is_404_with_a_suggestion(server):
    with pytest.raises(openai.NotFoundError) as exc:
        client(server).chat.completions.create(model="fake-modle", messages=ask("x"))
    assert exc.value.body["code"] == "model_not_found"
    assert 'did you mean "fake-model"' in exc.value.body["message"]
    still_serving(server)


def test_prompt_longer_than_the_context_is_400(server):
    with pytest.raises(openai.BadRequestError) as exc:
        client(server).chat.completions.create(model=MODEL, messages=ask("word " * 200))
    assert exc.value.body["code"] == "context_length_exceeded"
    assert "the model's context is 64 tokens" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError):  # a streaming request fails before the stream starts
        client(server).chat.completions.create(model=MODEL, messages=ask("word " * 200), stream=True)
    still_serving(server)


def test_unknown_endpoint_and_wrong_content_type(server):
    r = httpx.get(server.base_url + "/v2/anything")
    assert r.status_code == 404 and "/v1/chat/completions" in r.json()["error"]["message"]
    r = httpx.post(server.base_url + "/v1/completions", content=b'{"prompt": "x"}',
                   headers={"Content-Type": "text/plain"})  # fmt: skip
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    still_serving(server)


def test_a_foreign_host_header_is_refused_on_loopback(server):
    # What a DNS-rebinding web page would send to the local server.
    r = httpx.get(server.base_url + "/v1/models", headers={"Host": "attacker.example:8000"})
    assert r.status_code == 400 and "loopback" in r.json()["error"]["message"]
    assert httpx.get(server.base_url + "/v1/models", headers={"Host": "localhost:8000"}).status_code == 200


# --- security and limits ---------------------------------------------------------------------


def test_api_key_is_required_when_set():
    with serve(api_key=KEY) as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, api_key="wrong-key-000").models.list()
        r = httpx.get(server.base_url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": ask("x")},
                       headers={"Authorization": "Bearer"})  # fmt: skip
        assert r.status_code == 401
        answer = client(server, api_key=KEY).chat.completions.create(model=MODEL, messages=ask("ok"))
        assert answer.choices[0].message.content == "echo: ok"
        assert httpx.get(server.base_url + "/health").status_code == 200  # no content, no key needed


def test_non_loopback_host_needs_an_api_key():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without an API key"):
        ServeSettings(model_name=MODEL, host="0.0.0.0").check()
    ServeSettings(model_name=MODEL, host="0.0.0.0", api_key=KEY).check()
    with pytest.raises(ConfigError, match="shorter than 8"):
        ServeSettings(model_name=MODEL, host="0.0.0.0", api_key="abc").check()


def test_cli_refuses_a_public_host_without_a_key_before_loading(tmp_path):
    from jmed_edge.serve.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)  # never loaded: the check comes first
    args = parser.parse_args([str(gguf), "--host", "0.0.0.0", "--api-key", ""])
    with pytest.raises(ConfigError) as exc:
        args.func(args)
    assert "--api-key" in str(exc.value) and "\n" not in str(exc.value)


def test_cli_names_a_missing_artifact_in_one_line(tmp_path):
    from jmed_edge.errors import ArtifactError
    from jmed_edge.serve.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(tmp_path / "nowhere.gguf")])
    with pytest.raises(ArtifactError, match="does not exist"):
        args.func(args)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model", encoding="utf-8")
    with pytest.raises(ArtifactError, match="is not a model"):
        args.func(parser.parse_args([str(notes)]))


def test_busy_port_is_one_clear_line():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as exc:
            bind_socket("127.0.0.1", port)
        assert f"port {port}" in str(exc.value) and "--port" in str(exc.value)
    finally:
        taken.close()
    with pytest.raises(ConfigError, match="not an IP address"):
        bind_socket("my-laptop.local", 0)  # never resolved: no DNS


def test_oversized_bodies_are_413():
    with serve(max_body_bytes=2048) as server:
        big = {"model": MODEL, "messages": ask("x" * 4000)}
        r = httpx.post(server.base_url + "/v1/chat/completions", json=big)
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]

        def chunked():  # no Content-Length: the limit is enforced while reading
            yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = httpx.post(server.base_url + "/v1/chat/completions", content=chunked(),
                       headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413
        still_serving(server)


def test_concurrent_requests_each_get_their_own_answer():
    runtimes = [EchoRuntime(delay=0.01), EchoRuntime(delay=0.01)]
    with serve(runtimes, max_concurrency=2, queue=10) as server:
        api = client(server)

        def one(i: int) -> tuple[int, str]:
            if i % 2:
                stream = api.chat.completions.create(model=MODEL, messages=ask(f"nonce {i} a b"), stream=True)
                return i, "".join(c.choices[0].delta.content or "" for c in stream)
            answer = api.chat.completions.create(model=MODEL, messages=ask(f"nonce {i} a b"))
            return i, answer.choices[0].message.content

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(12)))
    assert all(text == f"echo: nonce {i} a b" for i, text in results)  # EchoRuntime also asserts no sharing
    assert all(rt.generated > 0 for rt in runtimes)  # both instances answered


def test_excess_requests_get_429_when_the_queue_is_full():
    runtime = EchoRuntime(delay=0.05)
    with serve([runtime], max_concurrency=1, queue=0) as server:
        api = client(server)
        started = threading.Event()

        def slow() -> str:
            stream = api.chat.completions.create(model=MODEL, messages=ask("a b c d e f"), stream=True)
            parts = []
            for chunk in stream:
                started.set()
                parts.append(chunk.choices[0].delta.content or "")
            return "".join(parts)

        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(slow)
            assert started.wait(10)
            r = httpx.post(
                server.base_url + "/v1/chat/completions", json={"model": MODEL, "messages": ask("x")}
            )
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["Retry-After"] == "1"
            assert first.result() == "echo: a b c d e f"  # the running request was not disturbed
        still_serving(server)


def test_back_to_back_requests_from_one_client_are_never_refused():
    """An instance is back in the pool before the client sees the end of its answer."""
    with serve([EchoRuntime()], max_concurrency=1, queue=0) as server:
        api = client(server)
        for i in range(30):
            if i % 2:
                text = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
                    model=MODEL, messages=ask(f"n{i}"), stream=True))  # fmt: skip
            else:
                text = (
                    api.chat.completions.create(model=MODEL, messages=ask(f"n{i}")).choices[0].message.content
                )
            assert text == f"echo: n{i}"


def test_a_disconnected_stream_stops_the_model_and_frees_it():
    runtime = EchoRuntime(delay=0.05)
    with serve([runtime], max_concurrency=1, queue=0) as server:
        body = {"model": MODEL, "messages": ask("w " * 40), "stream": True, "max_tokens": 40}
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if '"content":"echo:"' in line)  # leave after the first token
        deadline = time.monotonic() + 5
        while runtime.in_use.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runtime.generated < 10 and not runtime.in_use.locked()
        still_serving(server)  # with --queue 0 this would be a 429 if the instance were still held


def test_a_request_abandoned_in_the_queue_costs_no_model_time():
    runtime = EchoRuntime(delay=0.05)
    with serve([runtime], max_concurrency=1, queue=2) as server:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                lambda: client(server).chat.completions.create(model=MODEL, messages=ask("a " * 20))
            )
            while not runtime.in_use.locked():
                time.sleep(0.01)
            body = json.dumps({"model": MODEL, "messages": ask("abandoned request")}).encode()
            with socket.create_connection((server.host, server.port)) as raw:
                raw.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                time.sleep(0.2)  # queued behind the first request; then the client leaves
            assert first.result().choices[0].message.content.startswith("echo: a a")
        still_serving(server)
    assert not any("abandoned" in prompt for prompt in runtime.prompts)


# --- logging and the network ----------------------------------------------------------------


def test_log_has_counts_but_no_content_unless_asked(caplog):
    caplog.set_level(logging.INFO, logger="jmed_edge.serve")
    with serve() as server:
        client(server).chat.completions.create(model=MODEL, messages=ask("secret patient name"))
    access = [r.getMessage() for r in caplog.records if r.name == "jmed_edge.serve.access"]
    assert any(
        '"POST /v1/chat/completions" 200' in m and "prompt_tokens=5 completion_tokens=4" in m for m in access
    )
    assert "secret" not in caplog.text
    caplog.clear()
    with serve(log_content=True) as server:
        client(server).chat.completions.create(model=MODEL, messages=ask("secret patient name"))
    assert "secret patient name" in caplog.text


def test_no_connection_leaves_loopback(monkeypatch):
    """Every socket connect during start-up and requests goes to a loopback address."""
    seen: list[object] = []
    real_connect = socket.socket.connect

    def recording_connect(self, address):
        seen.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    with serve() as server:
        api = client(server)
        api.models.list()
        api.chat.completions.create(model=MODEL, messages=ask("hello"))
        list(api.chat.completions.create(model=MODEL, messages=ask("hello"), stream=True))
    assert seen and all(isinstance(a, tuple) and is_loopback(a[0]) for a in seen), seen


def test_force_offline_sets_the_hub_switches(monkeypatch):
    from jmed_edge.chat.model import OFFLINE_ENV, force_offline

    for name in OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    force_offline()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"


def test_streamed_answers_are_valid_server_sent_events(server):
    body = {"model": MODEL, "messages": ask("日本語 テキスト"), "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    pieces = [json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1]]
    assert "".join(pieces) == "echo: 日本語 テキスト"


def test_load_benchmark_tells_drift_from_cross_talk(monkeypatch):
    """benchmarks/perf/serve_load.py's check: each answer is its own prompt's, or it is flagged."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "perf" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    load = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "serve_load", load)  # dataclasses look their module up there
    spec.loader.exec_module(load)
    alone = {0: "Hypertension is high blood pressure.", 1: "An ECG records the heart's electrical activity."}
    results = [
        load.Result(0, False, 200, alone[0], 1.0, None, 8),
        load.Result(1, True, 200, "An ECG records the heart's rhythm.", 1.0, 0.2, 8),  # drift
        load.Result(0, True, 200, alone[1], 1.0, 0.2, 8),  # another request's answer
        load.Result(1, False, 200, "Hypertension is a disease", 1.0, None, 8),  # starts as prompt 0's answer
        load.Result(1, False, 429),
        load.Result(0, False, 0, error="ReadTimeout: timed out"),
    ]
    report = load.summarise(load.Report("m", 2, 1, 0, 8), (results, 2.0), alone)
    assert (report.sent, report.ok, report.rejected_429, report.dropped) == (6, 4, 1, 1)
    assert (report.exact, report.drifted, report.crossed) == (1, 1, 2)
    assert report.requests_per_second == 2.0 and report.tokens_per_second == 16.0
