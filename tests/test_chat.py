"""The terminal chat over a scripted runtime: multi-line input, commands, Ctrl-C, context limits.

The same chat over a real GGUF is in test_chat_gguf.py.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
from pathlib import Path

import pytest

from jmed_edge.chat.cli import answer_once
from jmed_edge.chat.loop import ChatLoop, read_message
from jmed_edge.chat.session import ChatSession, ContextOverflowError
from jmed_edge.runtimes.base import GenerationStats, SamplingParams


class EchoRuntime:
    """Whitespace 'tokens'; answers 'echo:' and the words of the last user message."""

    name = "echo"

    def __init__(self, context_length: int = 200) -> None:
        self.artifact = Path("/models/echo-model")
        self.context_length = context_length
        self.in_use = threading.Lock()
        self.prompts: list[str] = []
        self.generated = 0

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return [len(w) for w in text.split()]

    def render_chat(self, messages, *, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}> {m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def generate(self, prompt: str, params: SamplingParams, stats: GenerationStats | None = None):
        stats = stats if stats is not None else GenerationStats()
        assert self.in_use.acquire(blocking=False), "runtime used twice at once"
        try:
            self.prompts.append(prompt)
            stats.prompt_tokens = len(self.tokenize(prompt))
            user = prompt.rsplit("<user> ", 1)[1].rsplit("\n<assistant>", 1)[0]
            words = ["echo:", *user.split()]
            stats.finish_reason = "stop"
            for i, word in enumerate(words):
                if i >= params.max_tokens:
                    stats.finish_reason = "length"
                    break
                self.generated += 1
                stats.completion_tokens += 1
                stats.decode_seconds += 0.01
                yield (" " if i else "") + word
        finally:
            self.in_use.release()

    def close(self) -> None:
        pass


def script(*lines: str):
    """A line reader that returns ``lines`` then signals end of input, recording the prompts."""
    queue = list(lines)
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    read.prompts = prompts  # type: ignore[attr-defined]
    return read


def chat(*lines, runtime=None, **session_options) -> tuple[int, str, ChatSession]:
    session = ChatSession(runtime or EchoRuntime(), **session_options)
    out = io.StringIO()
    code = ChatLoop(session, read_line=script(*lines), out=out, color=False).run()
    return code, out.getvalue(), session


# --- input ---------------------------------------------------------------------------------


def test_lines_ending_with_a_backslash_continue():
    read = script("一行目\\", "二行目＼", "三行目")  # ASCII and full-width (IME) backslash
    assert read_message(read, "you> ", "... ") == "一行目\n二行目\n三行目"
    assert read.prompts == ["you> ", "... ", "... "]


def test_triple_quote_blocks():
    assert (
        read_message(script('"""', "症例：65歳男性", "", "胸痛あり", '"""'), ">", ".")
        == "症例：65歳男性\n\n胸痛あり"
    )
    assert read_message(script('"""first line', 'last"""'), ">", ".") == "first line\nlast"
    assert read_message(script('"""one line"""'), ">", ".") == "one line"
    assert read_message(script(), ">", ".") is None


# --- the loop ------------------------------------------------------------------------------


def test_a_conversation_with_reset_save_and_stats(tmp_path):
    code, out, session = chat(
        "高血圧 の 薬 は", "/stats", "and more", f"/save {tmp_path / 'chat.json'}",
        f"/save {tmp_path / 'chat.md'}", "/reset", "/stats", "fresh start",
        system="医療アシスタント",
    )  # fmt: skip
    assert code == 0
    assert "echo: 高血圧 の 薬 は" in out and "echo: and more" in out
    assert "Multi-line" in out and "/save" in out  # the banner documents input and commands
    assert "last answer: 5 tokens" in out and "context:" in out and "/ 200 tokens used" in out
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert saved["messages"][1]["content"] == "高血圧 の 薬 は" and saved["model"] == "echo-model"
    markdown = (tmp_path / "chat.md").read_text(encoding="utf-8")
    assert "## You\n\n高血圧 の 薬 は" in markdown and "## Assistant\n\necho: and more" in markdown
    assert "(conversation cleared)" in out and "no answer yet" in out
    # After /reset the model sees only the system prompt and the new question.
    last_prompt = session.runtime.prompts[-1]
    assert "and more" not in last_prompt and last_prompt.startswith("<system> 医療アシスタント")


def test_history_is_sent_with_each_question():
    _, _, session = chat("first question", "second question")
    assert "<user> first question\n<assistant> echo: first question" in session.runtime.prompts[1]


def test_unknown_commands_and_full_width_slash():
    code, out, _ = chat("/sav", "//etc is a path", "／ｅｘｉｔ", "never read")
    assert 'unknown command /sav (did you mean "/save"?)' in out
    assert "echo: /etc is a path" in out  # // sends a message that starts with /
    assert "never read" not in out and code == 0  # the IME's full-width ／exit leaves


def test_help_and_exit():
    code, out, _ = chat("/help", "/exit", "never read")
    assert code == 0 and "/reset" in out and "Ctrl-C" in out and "never" not in out


def test_ctrl_c_at_the_prompt_twice_leaves():
    code, out, _ = chat(
        KeyboardInterrupt(), "still chatting", KeyboardInterrupt(), KeyboardInterrupt(), "never"
    )
    assert code == 0 and "echo: still chatting" in out and "Ctrl-C again" in out and "never" not in out


def test_ctrl_c_during_an_answer_stops_it_and_keeps_the_chat():
    class InterruptingOut(io.StringIO):
        armed = True

        def write(self, text: str) -> int:
            if self.armed and text == " b":
                self.armed = False
                raise KeyboardInterrupt
            return super().write(text)

    runtime = EchoRuntime()
    session = ChatSession(runtime)
    out = InterruptingOut()
    ChatLoop(session, read_line=script("a b c d e f g", "next one"), out=out, color=False).run()
    text = out.getvalue()
    assert "(stopped)" in text and "echo: next one" in text
    assert session.transcript[1]["content"].startswith("echo: a")  # the partial answer is kept
    assert "g" not in session.transcript[1]["content"]
    assert not runtime.in_use.locked()


def test_old_exchanges_leave_the_prompt_when_the_context_fills():
    runtime = EchoRuntime(context_length=40)
    params = SamplingParams(max_tokens=14)  # the 3rd prompt is 28 tokens: 28 + 14 > 40
    _, out, session = chat("one two three four", "five six seven eight", "nine ten eleven twelve",
                           runtime=runtime, params=params)  # fmt: skip
    assert "context full: left the 1 oldest exchange(s) out" in out
    assert "one two" not in runtime.prompts[-1]
    assert len(session.transcript) == 6  # /save still has everything


def test_a_message_longer_than_the_context_is_a_clear_error():
    _, out, _ = chat("word " * 100, "short", runtime=EchoRuntime(context_length=30))
    assert "error: the message is 102 tokens" in out and "context is 30 tokens" in out
    assert "echo: short" in out  # the chat went on


def test_answer_cut_at_max_tokens_says_so():
    _, out, _ = chat("a b c d e f", params=SamplingParams(max_tokens=3))
    assert "echo: a b\n" in out and "answer cut at 3 tokens" in out


def test_answer_once_prints_only_the_answer():
    out = io.StringIO()
    session = ChatSession(EchoRuntime())
    assert answer_once(session, "質問 です", out=out) == 0
    assert out.getvalue() == "echo: 質問 です\n"


def test_context_overflow_error_is_one_line():
    session = ChatSession(EchoRuntime(context_length=10), system="s " * 20)
    with pytest.raises(ContextOverflowError) as exc:
        session.ask("hello")
    assert "with the system prompt" in str(exc.value) and "\n" not in str(exc.value)


# --- the command line -----------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    from jmed_edge.chat.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(argv))


def test_cli_errors_are_one_line(tmp_path):
    from jmed_edge.errors import ArtifactError, ConfigError

    args = parse(str(tmp_path / "missing.gguf"), "--prompt", "x")
    with pytest.raises(ArtifactError, match="does not exist"):
        args.func(args)
    args = parse(str(tmp_path), "--prompt", "x", "--temperature", "5")
    with pytest.raises(ConfigError, match=r"--temperature 5\.0 is outside"):
        args.func(args)
    args = parse(str(tmp_path), "--prompt", "x")
    with pytest.raises(ArtifactError, match="is not a model"):
        args.func(args)


def tiny_adapter_gguf(path: Path) -> Path:
    """A GGUF that says it is a LoRA adapter (read by describe; never loaded)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_lora_adapter_passed_as_the_model_points_at_lora(tmp_path):
    from jmed_edge.errors import ConfigError

    adapter = tiny_adapter_gguf(tmp_path / "adapter.gguf")
    args = parse(str(adapter), "--prompt", "x")
    with pytest.raises(ConfigError, match="pass the base GGUF as ARTIFACT and this file as --lora"):
        args.func(args)
    (tmp_path / "empty").mkdir()
    args = parse(str(tmp_path / "empty"), "--lora", str(adapter), "--prompt", "x")
    with pytest.raises(Exception, match="is not a model"):  # the model is checked first
        args.func(args)
