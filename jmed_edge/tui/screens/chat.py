"""Chat: stream answers from an artifact, or from two side by side (e.g. F16 against Q4_K_M)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from jmed_edge.errors import ConfigError, JmedError
from jmed_edge.prompts import LANGS
from jmed_edge.tui.backend import ArtifactView
from jmed_edge.tui.screens.base import JmedScreen
from jmed_edge.tui.widgets.chat_pane import ChatPane, ChatSettings

DEFAULT_MAX_TOKENS = 256


class ChatScreen(JmedScreen):
    MODE = "chat"
    TITLE = "Chat"
    AUTO_FOCUS = "#prompt"
    HELP = """
Type in Japanese or English (several lines are fine) and press Ctrl+S to send; the answer
streams in with its speed in tokens/s below it. Ctrl+T shows a second column that gets the
same question from another artifact, e.g. F16 against Q4_K_M. Ctrl+O opens the settings:
system prompt, template (the model's chat template with history, or a single-turn medpalm /
alpaca prompt) and sampling.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "send", "Send"),
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+t", "compare", "Side by side"),
        Binding("ctrl+o", "settings", "Settings"),
        Binding("ctrl+n", "new_chat", "New chat"),
    ]
    PANES = ("#pane-a", "#pane-b")

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="chat-main"):
            with Vertical(id="chat-column"):
                with Horizontal(id="chat-panes"):
                    yield ChatPane(id="pane-a")
                    yield ChatPane(id="pane-b")
                yield Static(id="chat-status", classes="status-line")
                with Horizontal(id="composer"):
                    yield TextArea(id="prompt", placeholder="質問を入力 / type a question · Ctrl+S sends")
                    with Vertical(id="composer-buttons"):
                        yield Button("Send", id="send", variant="primary", compact=True)
                        yield Button("Stop", id="stop", variant="error", compact=True)
            with VerticalScroll(id="chat-settings"):
                yield Label("System prompt")
                yield TextArea(id="system")
                yield Label("Template")
                yield Select(
                    self._template_options(), value="chat", allow_blank=False, id="template", compact=True
                )
                yield Label("Temperature (0 = greedy)")
                yield Input("0", id="temperature", type="number", compact=True)
                yield Label("Max tokens per answer")
                yield Input(str(DEFAULT_MAX_TOKENS), id="max-tokens", type="integer", compact=True)

    def _template_options(self) -> list[tuple[str, str]]:
        options = [("chat (with history)", "chat")]
        for name in self.app.backend.templates():
            if name != "chat":
                options += [(f"{name} {lang} (one turn)", f"{name}:{lang}") for lang in LANGS]
        return options

    def on_mount(self) -> None:
        super().on_mount()
        self._update_status()

    @property
    def panes(self) -> list[ChatPane]:
        shown = self.PANES if self.comparing else self.PANES[:1]
        return [self.query_one(p, ChatPane) for p in shown]

    # --- artifacts ------------------------------------------------------------------------

    def artifacts_changed(self, artifacts: list[ArtifactView]) -> None:
        options = [(a.label, str(a.info.path)) for a in artifacts if a.runnable]
        for selector in self.PANES:
            self.query_one(selector, ChatPane).set_artifacts(options)
        pane = self.query_one("#pane-a", ChatPane)
        models = [str(a.info.path) for a in artifacts if a.runnable and a.info.kind != "adapter"]
        if pane.chosen is None and (models or options):
            pane.choose((models or [options[0][1]])[0])
        self._update_status()
        super().artifacts_changed(artifacts)

    def apply_request(self, path: str) -> None:
        super().apply_request(path)
        self.query_one("#pane-a", ChatPane).choose(path)

    # --- settings -------------------------------------------------------------------------

    def settings(self) -> ChatSettings:
        """The settings as typed; a one-line ``ConfigError`` when a number is missing or out of range."""
        temperature = self.query_one("#temperature", Input).value.strip()
        max_tokens = self.query_one("#max-tokens", Input).value.strip()
        if not temperature or not max_tokens:
            raise ConfigError(
                "temperature and max tokens need a value (e.g. 0 and 256); see the settings (Ctrl+O)"
            )
        try:
            params = self.app.backend.sampling(max_tokens=int(max_tokens), temperature=float(temperature))
        except ValueError as exc:
            raise ConfigError(
                f"cannot read the sampling settings ({exc}); type numbers, e.g. 0.7 and 256"
            ) from exc
        template = str(self.query_one("#template", Select).value)
        name, _, lang = template.partition(":")
        system = self.query_one("#system", TextArea).text.strip() or None
        return ChatSettings(system=system, template=name, lang=lang or "ja", params=params)

    def _update_status(self) -> None:
        status = self.query_one("#chat-status", Static)
        if self.app.scanned and not any(a.runnable for a in self.app.artifacts):
            status.update(
                f"No artifact to chat with under {self.app.root}: make one with jmed-edge demo (see 1 Artifacts)"
            )
            return
        template = self.query_one("#template", Select).value
        system = self.query_one("#system", TextArea).text.strip()
        parts = [
            f"template {template}",
            f"temperature {self.query_one('#temperature', Input).value or '?'}",
            f"max {self.query_one('#max-tokens', Input).value or '?'} tokens",
            f"system prompt {len(system)} chars" if system else "no system prompt",
        ]
        status.update(" · ".join(parts))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._update_status()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "template":
            self._update_status()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id == "system":
            self._update_status()

    # --- actions --------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self.action_send()
        elif event.button.id == "stop":
            self.action_stop()

    def action_send(self) -> None:
        prompt = self.query_one("#prompt", TextArea)
        text = prompt.text.strip()
        panes = self.panes
        if not text:
            self.notify("type a question first (Japanese or English)", severity="warning")
            return
        if any(p.chosen is None for p in panes):
            self.notify(
                "choose an artifact to chat with (the list above the conversation)", severity="warning"
            )
            return
        if len(panes) == 2 and panes[0].chosen == panes[1].chosen:
            self.notify(
                "side by side compares two different artifacts; choose another on the right",
                severity="warning",
            )
            return
        if any(p.busy for p in panes):
            self.notify("an answer is still being written; Esc stops it", severity="warning")
            return
        try:
            settings = self.settings()
        except JmedError as exc:
            self.app.show_error(exc)
            return
        for pane in panes:
            pane.send(text, settings)
        prompt.clear()

    def action_stop(self) -> None:
        stopped = [p.stop() for p in self.panes]
        if not any(stopped):
            self.notify("nothing to stop", timeout=2)

    @property
    def comparing(self) -> bool:
        return self.query_one("#pane-b", ChatPane).has_class("-open")

    @property
    def settings_open(self) -> bool:
        return self.query_one("#chat-settings").has_class("-open")

    def action_compare(self) -> None:
        # Classes go on the widget that changes, not the screen: restyling the screen is slow.
        right, left = self.query_one("#pane-b", ChatPane), self.query_one("#pane-a", ChatPane)
        right.toggle_class("-open")
        if self.comparing and right.chosen is None:
            other = next((value for value in right.labels if value != left.chosen), None)
            if other is not None:
                right.choose(other)

    def action_settings(self) -> None:
        self.query_one("#chat-settings").toggle_class("-open")
        if self.settings_open:
            self.query_one("#system", TextArea).focus()
        else:
            self.query_one("#prompt", TextArea).focus()

    def action_new_chat(self) -> None:
        if any(p.busy for p in self.panes):
            self.notify("an answer is still being written; Esc stops it first", severity="warning")
            return
        for selector in self.PANES:
            self.query_one(selector, ChatPane).clear()
