"""One conversation column: an artifact chooser, the messages, and the answer streaming in.

The model runs on a worker thread (``ChatSession.ask`` streams through its own generation
thread); each text piece reaches the view through ``call_from_thread``, so keys are answered
while the model works. Stopping cancels the turn after the current token, on a thread of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Select, Static

from jmed_edge.runtimes.base import GenerationStats, SamplingParams

REDRAW_SECONDS = 0.05


@dataclass(frozen=True)
class ChatSettings:
    system: str | None
    template: str  # "chat" or a prompt layout of jmed_edge.prompts (single turn)
    lang: str  # language of the prompt layout's labels (ignored by "chat")
    params: SamplingParams


def stats_line(stats: GenerationStats, finish: str = "") -> str:
    """'42 tokens · 31.5 tok/s · stop': the runtime's own counts and decode speed."""
    rate = f"{stats.decode_tokens_per_second:.1f} tok/s" if stats.decode_seconds else "… tok/s"
    return f"{stats.completion_tokens} tokens · {rate}" + (f" · {finish}" if finish else "")


class ChatPane(Vertical):
    """A conversation with one artifact (the chat screen shows one, or two side by side)."""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id, classes="chat-pane")
        self.runtime: Any = None
        self.runtime_path: str | None = None
        self.session: Any = None
        self.turn: Any = None
        self.busy = False
        self.labels: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Select(
            [], prompt="choose an artifact", id=f"{self.id}-artifact", compact=True, classes="pane-artifact"
        )
        yield VerticalScroll(classes="messages")

    # --- artifact choice ------------------------------------------------------------------

    @property
    def chooser(self) -> Select:
        return self.query_one(Select)

    def set_artifacts(self, options: list[tuple[str, str]]) -> None:
        current = self.chooser.value
        self.labels = {value: label for label, value in options}
        with self.chooser.prevent(Select.Changed):
            self.chooser.set_options(options)
            if current in self.labels:
                self.chooser.value = current

    def choose(self, path: str) -> None:
        self.chooser.value = path

    @property
    def chosen(self) -> str | None:
        value = self.chooser.value
        return None if value is Select.NULL else str(value)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.border_subtitle = ""
        if self.query(".msg") and event.value is not Select.NULL:
            # The next question starts a new conversation: the other model has not seen this one.
            self.add_message(
                "note", f"new conversation with {self.labels.get(str(event.value), event.value)}"
            )

    # --- messages -------------------------------------------------------------------------

    def add_message(self, role: str, text: str) -> Static:
        message = Static(Text(text), classes=f"msg {role}")
        messages = self.query_one(".messages", VerticalScroll)
        messages.mount(message)
        messages.scroll_end(animate=False)
        return message

    def clear(self) -> None:
        self.query_one(".messages", VerticalScroll).remove_children()
        self.border_subtitle = ""
        if self.session is not None:
            self.session.reset()

    def _show_piece(self, message: Static, answer: str, stats: str) -> None:
        if not message.is_attached:  # the conversation was cleared or the app is closing
            return
        message.update(Text(answer))
        self.border_subtitle = stats
        self.query_one(".messages", VerticalScroll).scroll_end(animate=False)

    def _set_subtitle(self, text: str) -> None:
        self.border_subtitle = text

    # --- answering ------------------------------------------------------------------------

    def send(self, text: str, settings: ChatSettings) -> None:
        path = self.chosen
        if path is None:
            return
        self.add_message("user", text)
        reply = self.add_message("assistant", "")
        self.busy = True
        self.add_class("-busy")
        self._answer(path, text, settings, reply)

    @work(thread=True, exclusive=True, group="chat")
    def _answer(self, path: str, text: str, settings: ChatSettings, reply: Static) -> None:
        app = self.app
        try:
            self._ensure_runtime(path, settings)
            self.session.system = settings.system
            self.session.params = settings.params
            turn = self._start_turn(text, settings)
            self.turn = turn
            shown = 0.0
            for _ in turn:
                # At most ~20 redraws a second however fast the model writes, so keys stay snappy.
                if time.monotonic() - shown >= REDRAW_SECONDS:
                    shown = time.monotonic()
                    app.from_worker(self._show_piece, reply, turn.answer, stats_line(turn.stats))
            if settings.template == "chat":
                self.session.commit(turn)
            finish = "stopped" if turn.cancelled else turn.stats.finish_reason
            answer = turn.answer or "(no text: the model ended its answer at once)"
            app.from_worker(self._show_piece, reply, answer, stats_line(turn.stats, finish))
        except Exception as exc:
            app.from_worker(app.show_error, exc)
            app.from_worker(self._set_subtitle, "error")
        finally:
            self.turn = None
            app.from_worker(self._finished)

    def _ensure_runtime(self, path: str, settings: ChatSettings) -> None:
        if self.runtime is not None and self.runtime_path == path:
            return
        self.app.from_worker(self._set_subtitle, "loading…")
        self.close_runtime()
        self.runtime = self.app.backend.open_runtime(path)
        self.runtime_path = path
        self.session = self.app.backend.new_session(self.runtime, settings.system, settings.params)

    def _start_turn(self, text: str, settings: ChatSettings) -> Any:
        if settings.template == "chat":
            return self.session.ask(text)
        from jmed_edge.chat.session import Turn

        prompt = self.app.backend.template_prompt(settings.template, settings.lang, text)
        n_prompt = len(self.runtime.tokenize(prompt, add_special=True))
        return Turn(text, prompt, settings.params, n_prompt, 0, 0).start(self.runtime)

    def _finished(self) -> None:
        self.busy = False
        self.remove_class("-busy")

    def stop(self) -> bool:
        """Stop the answer being written (after its current token). True when one was running."""
        turn = self.turn
        if turn is None:
            return False
        self.run_worker(turn.cancel, thread=True, group="chat-stop")
        return True

    def close_runtime(self) -> None:
        runtime, self.runtime, self.runtime_path, self.session = self.runtime, None, None, None
        if runtime is not None:
            runtime.close()

    def on_unmount(self) -> None:
        # The app is closing: stop a running answer and free the model's memory.
        if self.turn is not None:
            self.turn.cancel()
        self.close_runtime()
