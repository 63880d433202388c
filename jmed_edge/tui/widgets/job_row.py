"""One benchmark job (artifact × benchmark): a progress bar, running accuracy and questions/s."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

STATES = ("waiting", "running", "done", "cancelled", "failed")


class JobRow(Vertical):
    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="job -waiting")
        self.title = title
        self.state = "waiting"

    def compose(self) -> ComposeResult:
        yield Static(self.title, classes="job-title")
        yield ProgressBar(total=None, show_eta=False, classes="job-bar")
        yield Static("waiting", classes="job-stats")

    def set_progress(self, done: int, total: int, stats: str) -> None:
        bar = self.query_one(ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        self.query_one(".job-stats", Static).update(stats)

    def set_state(self, state: str, text: str | None = None) -> None:
        for name in STATES:
            self.set_class(name == state, f"-{name}")
        self.state = state
        if text is not None:
            self.query_one(".job-stats", Static).update(text)
