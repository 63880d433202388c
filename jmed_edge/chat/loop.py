"""The interactive terminal loop: multi-line input, slash commands, streaming answers, Ctrl-C.

Input goes through ``input()``, which uses GNU readline when it is available: line editing,
wide (Japanese) characters and IME composition are then handled by the terminal and readline.
No history file is written, since conversations may contain patient information.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from rich.console import Console

from jmed_edge.chat.session import ChatSession, ContextOverflowError
from jmed_edge.errors import JmedError, did_you_mean

HELP = """\
Type a message and press Enter. For several lines, end a line with \\ to continue it, or put
\"\"\" on a line of its own to start a block and again to end it (paste Japanese text freely).
  /reset        forget the conversation (the system prompt stays)
  /save FILE    save the conversation (FILE.md as Markdown, anything else as JSON)
  /stats        speed of the last answer and how much of the context is used
  /help         this text
  /exit         leave (also Ctrl-D, or Ctrl-C twice at the prompt)
Ctrl-C while the model answers stops the answer and keeps the chat open.
Start a message with // to send text that begins with /."""

CONTINUE_MARKS = ("\\", "＼")  # ASCII backslash, and the full-width one a Japanese IME types
BLOCK_MARK = '"""'


def read_message(read_line: Callable[[str], str], prompt: str, more: str) -> str | None:
    """Read one message, joining continued lines and \"\"\" blocks; None at end of input."""
    try:
        line = read_line(prompt)
        if line.lstrip().startswith(BLOCK_MARK):
            first = line.lstrip()[len(BLOCK_MARK) :]
            if first.rstrip().endswith(BLOCK_MARK):  # """one line"""
                return first.rstrip()[: -len(BLOCK_MARK)]
            lines = [first] if first.strip() else []
            while True:
                try:
                    line = read_line(more)
                except EOFError:
                    break
                if line.rstrip().endswith(BLOCK_MARK):
                    lines.append(line.rstrip()[: -len(BLOCK_MARK)])
                    break
                lines.append(line)
            return "\n".join(lines).strip("\n")
        parts = []
        while line.endswith(CONTINUE_MARKS):
            parts.append(line[:-1])
            line = read_line(more)
        parts.append(line)
        return "\n".join(parts)
    except EOFError:
        return None


class ChatLoop:
    """Drive a ``ChatSession`` from a line reader (``input`` in a terminal, a list in tests)."""

    def __init__(self, session: ChatSession, *, read_line: Callable[[str], str] = input,
                 out: TextIO | None = None, color: bool | None = None) -> None:  # fmt: skip
        self.session = session
        self.read_line = read_line
        self.out = out or sys.stdout
        color = self.out.isatty() if color is None else color
        self.console = Console(file=self.out, highlight=False, soft_wrap=True, no_color=not color)
        # \001 and \002 tell readline that the colour codes take no width on screen.
        self.prompt = "\001\033[1;36m\002you>\001\033[0m\002 " if color else "you> "
        self.more = "\001\033[2m\002...\001\033[0m\002 " if color else "... "
        self.commands: dict[str, Callable[[str], bool]] = {
            "/reset": self._reset, "/save": self._save, "/stats": self._stats,
            "/help": self._help, "/exit": self._exit, "/quit": self._exit,
        }  # fmt: skip

    def say(self, text: str, style: str = "dim") -> None:
        self.console.print(text, style=style, markup=False)

    def banner(self) -> str:
        s = self.session
        system = f"; system prompt: {len(s.system)} characters" if s.system else ""
        return (
            f"jmed-edge chat · {s.model_name} · context {s.context_length} tokens · "
            f"max {s.params.max_tokens} tokens per answer · temperature {s.params.temperature:g}{system}\n"
            'Multi-line: end a line with \\ or wrap text in """ ... """. '
            "Commands: /reset /save FILE /stats /help /exit. Ctrl-C stops an answer."
        )

    def run(self) -> int:
        self.say(self.banner())
        interrupted = False
        while True:
            try:
                text = read_message(self.read_line, self.prompt, self.more)
            except KeyboardInterrupt:
                if interrupted:
                    self.out.write("\n")
                    return 0
                interrupted = True
                self.say("\n(Ctrl-C again or /exit to leave)")
                continue
            interrupted = False
            if text is None:  # end of input (Ctrl-D or the end of a script)
                self.out.write("\n")
                return 0
            if not text.strip():
                continue
            head = unicodedata.normalize("NFKC", text.lstrip()[:2])  # a full-width ／ from an IME works too
            if head.startswith("/") and head != "//":
                if not self._command(text.strip()):
                    return 0
                continue
            self.answer(text.lstrip()[1:] if head == "//" else text)

    def answer(self, text: str) -> None:
        try:
            turn = self.session.ask(text)
        except ContextOverflowError as exc:
            self.say(f"error: {exc}", "bold red")
            return
        if turn.dropped_exchanges:
            self.say(
                f"(context full: left the {turn.dropped_exchanges} oldest exchange(s) out of the prompt; "
                "/reset starts afresh)"
            )
        try:
            for piece in turn:
                self.out.write(piece)
                self.out.flush()
        except KeyboardInterrupt:
            turn.cancel()
            self.out.write("\n")
            self.say("(stopped)")
        except JmedError as exc:
            self.out.write("\n")
            self.say(f"error: {exc}", "bold red")
            return
        else:
            self.out.write("\n")
            if turn.stats.finish_reason == "length":
                self.say(
                    f"(answer cut at {turn.params.max_tokens} tokens; raise --max-tokens for longer answers)"
                )
        self.session.commit(turn)

    def _command(self, line: str) -> bool:
        name, arg = ([*line.split(maxsplit=1), ""])[:2]  # also splits on the full-width space
        name = unicodedata.normalize("NFKC", name).lower()
        handler = self.commands.get(name)
        if handler is None:
            self.say(f"unknown command {name}{did_you_mean(name, self.commands)}; /help lists them", "yellow")
            return True
        return handler(arg.strip())

    def _reset(self, _: str) -> bool:
        self.session.reset()
        self.say("(conversation cleared)")
        return True

    def _save(self, arg: str) -> bool:
        if not arg:
            self.say("usage: /save FILE (FILE.md for Markdown, otherwise JSON)", "yellow")
            return True
        try:
            path = self.session.save(Path(arg))
        except (JmedError, OSError) as exc:
            self.say(f"error: cannot save to {arg}: {exc}", "bold red")
            return True
        self.say(f"(saved {len(self.session.transcript)} messages to {path})")
        return True

    def _stats(self, _: str) -> bool:
        s = self.session
        used, ctx = s.context_used(), s.context_length
        lines = []
        if s.last is None:
            lines.append("no answer yet")
        else:
            st = s.last.stats
            decode = f"{st.decode_tokens_per_second:.1f} tokens/s" if st.decode_seconds else "n/a"
            lines.append(f"last answer: {st.completion_tokens} tokens, {decode} "
                         f"({st.decode_seconds:.2f} s decoding), finish: {st.finish_reason or 'n/a'}")  # fmt: skip
            if st.prompt_seconds:
                lines.append(f"prompt: {st.prompt_tokens} tokens in {st.prompt_seconds:.2f} s "
                             f"({st.prompt_tokens_per_second:.0f} tokens/s)")  # fmt: skip
        dropped = f"; {s.dropped_exchanges} oldest exchange(s) left out" if s.dropped_exchanges else ""
        lines.append(f"context: {used} / {ctx} tokens used ({100 * used / max(ctx, 1):.0f}%){dropped}")
        self.say("\n".join(lines), "cyan")
        return True

    def _help(self, _: str) -> bool:
        self.say(HELP, "")
        return True

    def _exit(self, _: str) -> bool:
        return False
