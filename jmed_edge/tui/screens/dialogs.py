"""Small modal dialogs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from jmed_edge.errors import JmedError

# What the convert dialog proposes: the usual 8-bit and 4-bit pair.
DEFAULT_QUANTS = "q8_0,q4_k_m"


@dataclass(frozen=True)
class ConvertRequest:
    quants: list[str]
    out_dir: Path


class ConvertDialog(ModalScreen[ConvertRequest | None]):
    """Ask for the GGUF quant types and the output folder of a conversion."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, out_dir: Path) -> None:
        super().__init__()
        self.source_name = name
        self.out_dir = out_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(f"Convert [b]{self.source_name}[/b] to GGUF", classes="dialog-title")
            yield Label("Quant types (comma-separated llama.cpp names)")
            yield Input(DEFAULT_QUANTS, id="quants")
            yield Label("Output folder")
            yield Input(str(self.out_dir), id="out-dir")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Convert", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def _submit(self) -> None:
        from jmed_edge.convert.quant_types import parse_quants

        text = self.query_one("#quants", Input).value
        out = self.query_one("#out-dir", Input).value.strip()
        try:
            quants = [q.name for q in parse_quants(text)]
        except JmedError as exc:
            self.notify(str(exc), severity="error")
            return
        if not out:
            self.notify(
                "the output folder is empty; give a folder to write the GGUF files into", severity="error"
            )
            return
        self.dismiss(ConvertRequest(quants, Path(out).expanduser()))

    def action_cancel(self) -> None:
        self.dismiss(None)
