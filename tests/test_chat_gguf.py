"""``jmed-edge chat`` on a real GGUF (the embedded default model's, SmolLM2-135M-Instruct Q4_1)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from jmed_edge.runtimes.base import GenerationStats, SamplingParams

pytestmark = pytest.mark.slow

QUESTION = "What is hypertension? Answer in one sentence."


def run_chat(*argv: str) -> int:
    from jmed_edge.chat.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_prompt_answers_with_the_models_chat_template(default_gguf, capsys):
    assert (
        run_chat(default_gguf, "--prompt", QUESTION, "--max-tokens", "24", "--threads", "1", "--stats") == 0
    )
    out, err = capsys.readouterr()
    answer = out.rstrip("\n")
    assert answer.strip() and "tokens/s" in err and "prompt" in err
    # The same answer comes from the runtime given the GGUF's own ChatML template by hand.
    from jmed_edge.runtimes.base import open_runtime

    runtime = open_runtime(default_gguf, n_threads=1)
    try:
        prompt = runtime.render_chat([{"role": "user", "content": QUESTION}])
        assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
        direct = "".join(runtime.generate(prompt, SamplingParams(max_tokens=24), GenerationStats()))
    finally:
        runtime.close()
    assert answer == direct


def test_prompt_from_stdin(default_gguf):
    script = (
        "import argparse, sys\nfrom jmed_edge.chat.cli import configure\n"
        "p = argparse.ArgumentParser(); configure(p); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(default_gguf), "--prompt", "-", "--max-tokens", "8", "--threads", "1"],
        input="糖尿病とは何ですか？\n", capture_output=True, text=True, encoding="utf-8", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_interactive_chat_driven_by_stdin(default_gguf, tmp_path):
    """The real terminal loop, reading a script from a pipe: answer, stats, save, reset, exit."""
    script = (
        "import argparse, sys\nfrom jmed_edge.chat.cli import configure\n"
        "p = argparse.ArgumentParser(); configure(p); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    saved = tmp_path / "会話.md"
    lines = [
        "Name a symptom of \\", "diabetes.", "/stats", f"/save {saved}", f"/save {tmp_path / 'chat.json'}",
        "/reset", "/stats", '"""', "Thank you.", '"""', "/exit",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", script, str(default_gguf), "--max-tokens", "12", "--threads", "1",
         "--system", "You are a medical assistant."],
        input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8", timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "last answer: " in out and "tokens/s" in out and "context: " in out
    assert "(conversation cleared)" in out and "no answer yet" in out
    markdown = saved.read_text(encoding="utf-8")
    assert "## You\n\nName a symptom of \ndiabetes." in markdown and "## Assistant" in markdown
    record = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert record["messages"][0] == {"role": "system", "content": "You are a medical assistant."}
    assert record["messages"][2]["role"] == "assistant" and record["messages"][2]["content"].strip()


def test_ctrl_c_stops_an_answer_and_the_chat_goes_on(default_gguf):
    """A real SIGINT during a long answer: the answer stops, the chat keeps its state, /exit leaves."""
    import signal
    import threading
    import time

    script = (
        "import argparse, sys\nfrom jmed_edge.chat.cli import configure\n"
        "p = argparse.ArgumentParser(); configure(p); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    # As at a terminal: a shell's background job (CI started with `&`) ignores SIGINT, the child
    # would inherit that, and Python installs no KeyboardInterrupt handler over an ignored signal.
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(default_gguf), "--max-tokens", "2000", "--threads", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    received: list[str] = []
    reader = threading.Thread(
        target=lambda: received.extend(iter(lambda: child.stdout.read(1), "")), daemon=True
    )
    reader.start()
    try:
        child.stdin.write("Write a very long essay about the history of medicine.\n")
        child.stdin.flush()
        deadline = time.monotonic() + 120
        while "you> " not in "".join(received) or len("".join(received).split("you> ", 1)[1]) < 40:
            assert time.monotonic() < deadline and child.poll() is None, "".join(received)
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        time.sleep(0.5)
        child.stdin.write("/stats\n/exit\n")
        child.stdin.close()
        assert child.wait(60) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
    reader.join(10)
    out = "".join(received)
    assert "(stopped)" in out and "finish: cancelled" in out
    answered = int(out.split("last answer: ", 1)[1].split(" tokens", 1)[0])
    assert 0 < answered < 2000


def test_an_answer_cut_mid_character_ends_cleanly(default_gguf):
    # SmolLM2 spells each Japanese character in two byte-level tokens: an odd max_tokens cuts one.
    from jmed_edge.runtimes import open_runtime

    runtime = open_runtime(default_gguf, n_threads=1)
    try:
        prompt = runtime.render_chat(
            [{"role": "user", "content": "高血圧とは何ですか。日本語で説明してください。"}]
        )
        answers = ["".join(runtime.generate(prompt, SamplingParams(max_tokens=n))) for n in (3, 5, 8)]
    finally:
        runtime.close()
    assert all(answers) and not any("\ufffd" in a for a in answers), answers


def test_a_context_that_is_not_a_multiple_of_256_works(default_gguf, capsys):
    # llama.cpp rounds the context up to 256; the runtime must size its own buffers the same way.
    assert (
        run_chat(default_gguf, "--ctx", "40", "--prompt", QUESTION, "--max-tokens", "4", "--threads", "1")
        == 0
    )
    assert capsys.readouterr().out.strip()
