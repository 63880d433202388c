"""Bench: run benchmarks on artifacts with a progress bar per job; cancel, and resume later."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, SelectionList, Static

from jmed_edge.errors import ConfigError, JmedError
from jmed_edge.tui.backend import ArtifactView
from jmed_edge.tui.screens.base import JmedScreen
from jmed_edge.tui.widgets.job_row import JobRow


@dataclass(frozen=True)
class Job:
    key: str
    artifact: ArtifactView
    spec: str

    @property
    def title(self) -> str:
        return f"{self.artifact.label} · {self.spec}"


def progress_text(report: Any) -> str:
    """A ``BenchProgress`` as one line: questions done, running accuracy, questions per second."""
    return (
        f"{report.done}/{report.total} questions · accuracy {100 * report.accuracy:.1f}% · "
        f"{report.questions_per_second:.2f} q/s"
    )


def summary_text(summary: Any) -> str:
    """A finished job's ``Summary``: accuracy overall and per language."""
    langs = "".join(f" · {lang} {100 * block['accuracy']:.1f}%" for lang, block in summary.by_lang.items())
    return f"done · {summary.n} answers · accuracy {100 * summary.accuracy:.1f}%{langs}"


class BenchScreen(JmedScreen):
    MODE = "bench"
    TITLE = "Bench"
    AUTO_FOCUS = "#bench-artifacts"
    HELP = """
Tick artifacts and benchmarks (the bundled jmed-sample, or NAME:PATH for a published file such
as medqa:data/test.jsonl), optionally a limit of questions per language, and start. Each
artifact × benchmark job shows its progress, running accuracy and questions per second.
Cancel stops after the current question; starting again resumes every job where it stopped,
keeping the answers already written. Results go to the output folder, ready for the Report screen.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start"),
        Binding("ctrl+x", "cancel", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.cancel_event = threading.Event()
        self.running = False
        self.runs = 0  # starts so far: job widget ids stay unique while old rows are removed

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="bench-main"):
            with Vertical(id="bench-setup"):
                yield Label("Artifacts")
                yield SelectionList[str](id="bench-artifacts", compact=True)
                yield Label("Benchmarks")
                yield SelectionList[str](id="bench-benchmarks", compact=True)
                yield Input(placeholder="NAME:PATH, e.g. medqa:test.jsonl", id="bench-extra", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("Limit")
                    yield Input(placeholder="all questions", id="bench-limit", type="integer", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("Out")
                    yield Input(id="bench-out", compact=True)
                with Horizontal(id="bench-buttons", classes="actions"):
                    yield Button("Start", id="bench-start", variant="primary")
                    yield Button("Cancel", id="bench-cancel", variant="error")
            with VerticalScroll(id="bench-jobs"):
                yield Static(
                    "Tick artifacts and benchmarks on the left, then Start (Ctrl+S).\n"
                    "A cancelled job resumes where it stopped when you start it again.",
                    id="bench-hint",
                )

    def on_mount(self) -> None:
        self.query_one("#bench-out", Input).value = str(self.app.root / "bench")
        benchmarks = self.query_one("#bench-benchmarks", SelectionList)
        try:
            names = self.app.backend.benchmarks()
        except JmedError as exc:
            self.app.show_error(exc)
            names = []
        for name in names:
            benchmarks.add_option((name, name, name == "jmed-sample"))
        super().on_mount()

    # --- artifacts ------------------------------------------------------------------------

    def artifacts_changed(self, artifacts: list[ArtifactView]) -> None:
        chooser = self.query_one("#bench-artifacts", SelectionList)
        ticked = set(chooser.selected)
        chooser.clear_options()
        for a in artifacts:
            if a.runnable:
                chooser.add_option((a.label, str(a.info.path), str(a.info.path) in ticked))
        super().artifacts_changed(artifacts)

    def apply_request(self, path: str) -> None:
        super().apply_request(path)
        self.query_one("#bench-artifacts", SelectionList).select(path)

    # --- jobs -----------------------------------------------------------------------------

    def _jobs(self) -> list[Job]:
        paths = self.query_one("#bench-artifacts", SelectionList).selected
        specs = list(self.query_one("#bench-benchmarks", SelectionList).selected)
        extra = self.query_one("#bench-extra", Input).value.strip()
        if extra:
            specs += [s.strip() for s in extra.split(",") if s.strip()]
        if not paths:
            raise ConfigError("tick at least one artifact to benchmark (Space ticks the highlighted one)")
        if not specs:
            raise ConfigError("tick a benchmark or type one as NAME:PATH (e.g. jmed-sample)")
        jobs = []
        for path in paths:
            artifact = self.app.artifact(path)
            if artifact is not None:
                jobs += [Job(f"run{self.runs}-job{len(jobs)}", artifact, spec) for spec in specs]
        return jobs

    def _limit(self) -> int | None:
        text = self.query_one("#bench-limit", Input).value.strip()
        if not text:
            return None
        if int(text) < 1:
            raise ConfigError(f"limit {text} must be at least 1 question per language (or empty for all)")
        return int(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "bench-start":
            self.action_start()
        elif event.button.id == "bench-cancel":
            self.action_cancel()

    def action_start(self) -> None:
        if self.running:
            self.notify("a benchmark is running; cancel it first (Ctrl+X)", severity="warning")
            return
        self.runs += 1
        try:
            jobs, limit = self._jobs(), self._limit()
            out = Path(
                self.query_one("#bench-out", Input).value.strip() or self.app.root / "bench"
            ).expanduser()
        except JmedError as exc:
            self.app.show_error(exc)
            return
        box = self.query_one("#bench-jobs", VerticalScroll)
        box.remove_children()
        rows = {job.key: JobRow(job.title, id=job.key) for job in jobs}
        box.mount_all(rows.values())
        self.running = True
        self.cancel_event = threading.Event()
        self.add_class("-running")
        self._run(jobs, rows, out, limit, self.cancel_event)

    def action_cancel(self) -> None:
        if not self.running:
            self.notify("no benchmark is running", timeout=2)
            return
        self.cancel_event.set()
        self.notify("cancelling after the current question; start again to resume")

    @work(thread=True, exclusive=True, group="bench")
    def _run(self, jobs: list[Job], rows: dict[str, JobRow], out: Path, limit: int | None,
             cancel: threading.Event) -> None:  # fmt: skip
        app = self.app
        for job in jobs:
            row = rows[job.key]
            if cancel.is_set():
                app.from_worker(row.set_state, "cancelled", "not started")
                continue
            app.from_worker(row.set_state, "running", "loading the model…")

            total = 0

            def progress(report: Any, row: JobRow = row) -> None:
                nonlocal total
                total = report.total
                app.from_worker(row.set_progress, report.done, report.total, progress_text(report))

            try:
                summary = app.backend.run_benchmark(
                    job.artifact.info.path, job.spec, out, limit=limit, progress=progress, cancel=cancel
                )
            except Exception as exc:
                app.from_worker(app.show_error, exc)
                app.from_worker(
                    row.set_state, "failed", f"failed: {exc}" if isinstance(exc, JmedError) else "failed"
                )
                continue
            if summary.complete:
                app.from_worker(row.set_state, "done", summary_text(summary))
            else:
                text = f"cancelled at {summary.n}/{total or '?'} · start again to resume"
                app.from_worker(row.set_state, "cancelled", text)
        app.from_worker(self._finished, out)

    def on_unmount(self) -> None:
        # The app is closing: stop after the current batch (the answers so far are kept).
        self.cancel_event.set()

    def _finished(self, out: Path) -> None:
        self.running = False
        self.remove_class("-running")
        self.app.rescan()  # the Report screen lists the new results
