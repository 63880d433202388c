"""The help screen (F1 or ?): keys of every screen, taken from their bindings, and what each screen does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.markdown import Markdown as RichMarkdown
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

GLOBAL_KEYS = (
    ("1 2 3 4", "Artifacts, Chat, Bench, Report (or click the tabs)"),
    ("F2 F3 F4 F5", "the same, also while typing in a text field"),
    ("Tab / Shift+Tab", "move between fields and buttons"),
    ("F1 or ?", "this help"),
    ("Ctrl+Q", "quit"),
)


def _key_name(keys: str) -> str:
    """'ctrl+s,escape' -> 'Ctrl+S / Esc'."""
    names = {"escape": "Esc", "enter": "Enter", "delete": "Del", "question_mark": "?"}

    def one(key: str) -> str:
        *mods, last = key.split("+")
        last = names.get(last, last.upper() if len(last) == 1 else last.capitalize())
        return "+".join([*(m.capitalize() for m in mods), last])

    return " / ".join(one(k) for k in keys.split(","))


def help_markdown(current: str, modes: Mapping[str, Any]) -> str:
    """The help page: global keys, then each screen of ``modes`` (the app's), the current first."""
    parts = ["# jmed-edge tui", "", "| key | action |", "|---|---|"]
    parts += [f"| {k} | {what} |" for k, what in GLOBAL_KEYS]
    for _mode, screen in sorted(modes.items(), key=lambda kv: kv[0] != current):
        parts += ["", f"## {screen.TITLE}", "", screen.HELP.strip(), "", "| key | action |", "|---|---|"]
        for binding in screen.BINDINGS:
            if isinstance(binding, Binding) and binding.description:
                parts.append(f"| {_key_name(binding.key)} | {binding.description} |")
    return "\n".join(parts) + "\n"


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def __init__(self, current: str, modes: Mapping[str, Any]) -> None:
        super().__init__()
        self.current = current
        self.modes = modes

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            # Rich's Markdown renderer: a page of tables draws far faster than Textual's widget one.
            yield Static(RichMarkdown(help_markdown(self.current, self.modes)), id="help-text")
        yield Static("Esc closes this help", id="help-hint")

    def action_dismiss(self) -> None:
        self.dismiss()
