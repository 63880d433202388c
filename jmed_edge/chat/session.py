"""A conversation with one model: the history, fitting it into the context window, saving it.

The prompt is always the artifact's own chat template applied to the messages
(``runtime.render_chat``). When the conversation no longer leaves room for an answer
(``max_tokens``, or half the context if that is smaller), the oldest exchanges are left out of
the prompt (the caller shows a notice); they stay in the transcript that ``save`` writes. A
single message too long for the context is an error; an answer is cut where the context ends.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from jmed_edge.chat.stream import SyncStream
from jmed_edge.errors import JmedError
from jmed_edge.fsutil import write_text_atomic
from jmed_edge.runtimes.base import GenerationStats, Runtime, SamplingParams


class ContextOverflowError(JmedError):
    """A message (with the system prompt and template) does not fit in the model's context."""


@dataclass
class Turn:
    """One question and its streamed answer. Iterate it to receive the answer's text pieces."""

    user: str
    prompt: str
    params: SamplingParams
    prompt_tokens: int
    dropped_exchanges: int  # earlier question/answer pairs left out of this prompt
    window_start: int
    stats: GenerationStats = field(default_factory=GenerationStats)
    pieces: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _stream: SyncStream | None = None

    def start(self, runtime: Runtime) -> Turn:
        self._stream = SyncStream(lambda: runtime.generate(self.prompt, self.params, self.stats))
        return self

    def __iter__(self):
        assert self._stream is not None, "call start() first"
        began = time.perf_counter()
        try:
            for piece in self._stream:
                self.pieces.append(piece)
                yield piece
        finally:
            self.seconds = time.perf_counter() - began

    def cancel(self) -> None:
        """Stop the answer after the current token and wait until the model is free again."""
        if self._stream is not None and self._stream.running:
            self._stream.cancel()
            self._stream.wait()
            self.stats.finish_reason = "cancelled"

    @property
    def answer(self) -> str:
        return "".join(self.pieces)

    @property
    def cancelled(self) -> bool:
        return self._stream is not None and self._stream.cancelled


class ChatSession:
    """History and settings of one chat; ``ask`` streams an answer, ``commit`` records it."""

    def __init__(self, runtime: Runtime, *, system: str | None = None, params: SamplingParams | None = None):
        self.runtime = runtime
        self.system = system or None
        self.params = params or SamplingParams()
        self.transcript: list[dict[str, str]] = []  # every user/assistant message, in order
        self._window_start = 0  # first transcript index still sent to the model
        self.last: Turn | None = None
        self._current: Turn | None = None

    @property
    def model_name(self) -> str:
        return Path(self.runtime.artifact).name

    @property
    def context_length(self) -> int:
        return int(self.runtime.context_length)

    def _messages(self, start: int, user: str | None = None) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += self.transcript[start:]
        if user is not None:
            messages.append({"role": "user", "content": user})
        return messages

    def count_tokens(self, text: str) -> int:
        return len(self.runtime.tokenize(text, add_special=True))

    def ask(self, text: str) -> Turn:
        """Prepare the prompt for ``text`` (dropping old exchanges if needed) and start answering."""
        ctx = self.context_length
        room = min(self.params.max_tokens, ctx // 2)  # kept free for the answer
        start = self._window_start
        while True:
            prompt = self.runtime.render_chat(self._messages(start, text))
            n_prompt = self.count_tokens(prompt)
            if n_prompt + room <= ctx or start >= len(self.transcript):
                break
            start += 2  # one user/assistant exchange
        if n_prompt >= ctx:
            what = "the message with the system prompt" if self.system else "the message"
            raise ContextOverflowError(
                f"{what} is {n_prompt} tokens after the chat template, but the model's context is "
                f"{ctx} tokens; shorten it (or open the model with a larger --ctx)"
            )
        params = replace(self.params, max_tokens=min(self.params.max_tokens, ctx - n_prompt))
        turn = Turn(text, prompt, params, n_prompt, (start - self._window_start) // 2, start)
        self._current = turn.start(self.runtime)
        return turn

    def stop(self) -> None:
        """Stop an answer still being generated; after this the runtime may be closed safely."""
        if self._current is not None:
            self._current.cancel()

    def commit(self, turn: Turn) -> None:
        """Record a finished (or stopped) answer in the history."""
        self._window_start = turn.window_start
        self.transcript += [
            {"role": "user", "content": turn.user},
            {"role": "assistant", "content": turn.answer},
        ]
        if not turn.stats.prompt_tokens:
            turn.stats.prompt_tokens = turn.prompt_tokens
        self.last = turn

    def reset(self) -> None:
        self.transcript.clear()
        self._window_start = 0
        self.last = None

    @property
    def dropped_exchanges(self) -> int:
        return self._window_start // 2

    def context_used(self) -> int:
        """Tokens of the conversation the model currently sees (last prompt + last answer)."""
        if self.last is None:
            return (
                self.count_tokens(self.runtime.render_chat(self._messages(0), add_generation_prompt=True))
                if self.system
                else 0
            )
        return self.last.stats.prompt_tokens + self.last.stats.completion_tokens

    def save(self, path: Path) -> Path:
        """Write the whole transcript: Markdown for ``.md``, JSON otherwise."""
        path = Path(path).expanduser()
        markdown = path.suffix.lower() in (".md", ".markdown")
        write_text_atomic(path, self.to_markdown() if markdown else self.to_json())
        return path

    def to_json(self) -> str:
        record = {
            "model": self.model_name,
            "artifact": str(self.runtime.artifact),
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sampling": {"temperature": self.params.temperature, "top_p": self.params.top_p,
                         "max_tokens": self.params.max_tokens, "seed": self.params.seed},
            "messages": self._messages(0),
        }  # fmt: skip
        return json.dumps(record, ensure_ascii=False, indent=2) + "\n"

    def to_markdown(self) -> str:
        lines = [f"# Chat with {self.model_name}", "", f"_Saved {time.strftime('%Y-%m-%d %H:%M')}_", ""]
        titles = {"system": "System", "user": "You", "assistant": "Assistant"}
        for message in self._messages(0):
            lines += [f"## {titles.get(message['role'], message['role'])}", "", message["content"], ""]
        return "\n".join(lines)
