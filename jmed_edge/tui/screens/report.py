"""Report: accuracy loss per language, KL divergence per quant type, a RAM-budget recommendation, a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Select, Static, TabbedContent, TabPane

from jmed_edge.errors import ConfigError, JmedError
from jmed_edge.tui.screens.base import JmedScreen
from jmed_edge.tui.widgets.bars import AccuracyBars
from jmed_edge.tui.widgets.tables import fill_table

TABLES = (("accuracy", "Accuracy"), ("chart", "Chart"), ("kl", "KL divergence"), ("perf", "Size & speed"))


def recommendation_text(rec: Any) -> str:
    """The recommendation as the CLI words it (``report.terminal.print_summary``)."""
    from rich.markup import escape

    head = (
        f"[b]recommended:[/b] {escape(rec.reason)}"
        if rec.chosen
        else f"[b]no recommendation:[/b] {escape(rec.reason)}"
    )
    losses = "".join(f"\n[b]significant loss:[/b] {escape(loss)}" for loss in rec.significant_losses)
    return head + losses


def report_text(data: Any) -> str:
    """The recommendation plus the exam verdicts and new contraindicated picks of a built report."""
    from rich.markup import escape

    from jmed_edge.report.exam import exam_sentence

    lines = [recommendation_text(data.recommendation)]
    lines += [escape(exam_sentence(e)) for e in getattr(data, "exams", [])]
    kinki = getattr(data, "new_kinki", [])
    if kinki:
        ids = ", ".join(f"{k['artifact']} {k['id']}/{k['lang']}" for k in kinki[:10])
        lines.append(f"[b]contraindicated answers the reference did not pick:[/b] {escape(ids)}")
    return "\n".join(lines)


class ReportScreen(JmedScreen):
    MODE = "report"
    TITLE = "Report"
    AUTO_FOCUS = "#report-source"
    HELP = """
Pick a bench run folder (or a report written by jmed-edge report) and the reference artifact,
then build: the accuracy-loss table per benchmark and language (95% intervals, the paired
difference with its Newcombe interval and the non-inferiority decision, McNemar, answer flips), KL divergence per quant type on the bundled bilingual medical text, size and
speed, and a chart. Type a RAM budget (e.g. 8GB) and press Enter to get the recommendation for it.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "build", "Build report"),
        Binding("ctrl+g", "focus_budget", "RAM budget"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.data: Any = None
        self._sources: dict[str, tuple[list[Path], str]] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="report-controls", classes="form-row"):
            yield Label("Runs")
            yield Select([], prompt="bench run folder", id="report-source", compact=True)
            yield Label("Reference")
            yield Select([], prompt="artifact", id="report-reference", compact=True)
        with Horizontal(id="report-options", classes="form-row"):
            yield Label("RAM budget")
            yield Input(placeholder="e.g. 8GB", id="budget", compact=True)
            yield Label("Max loss (pts)")
            yield Input("1.0", id="max-loss", type="number", compact=True)
            yield Checkbox("KL divergence", value=True, id="kl", compact=True)
            yield Button("Build", id="build", variant="primary", compact=True)
        yield Static("Choose a bench run folder and press Build (Ctrl+R).", id="recommendation")
        with TabbedContent(id="report-tabs"):
            for key, title in TABLES:
                with TabPane(title, id=f"tab-{key}"):
                    if key == "chart":
                        with VerticalScroll(id="chart-scroll"):
                            yield AccuracyBars(id="chart")
                    else:
                        yield DataTable(id=f"table-{key}", zebra_stripes=True, cursor_type="row")

    # --- sources --------------------------------------------------------------------------

    def artifacts_changed(self, artifacts: list) -> None:
        # Bench runs appear as benchmarks finish, alongside new artifacts: list them again.
        self._list_sources()
        super().artifacts_changed(artifacts)

    @work(thread=True, exclusive=True, group="report-sources")
    def _list_sources(self) -> None:
        backend, root = self.app.backend, self.app.root
        sources: dict[str, tuple[list[Path], str]] = {}
        try:
            for folder in backend.run_folders(root):
                sources[f"run:{folder}"] = ([folder], "")
            for folder in backend.report_folders(root):
                sources[f"report:{folder}"] = backend.report_inputs(folder)
        except Exception as exc:
            self.app.from_worker(self.app.show_error, exc)
        self.app.from_worker(self._set_sources, sources)

    def _set_sources(self, sources: dict[str, tuple[list[Path], str]]) -> None:
        self._sources = sources
        select = self.query_one("#report-source", Select)
        current = select.value
        options = [(self._source_label(key), key) for key in sources]
        select.set_options(options)
        if current in sources:
            select.value = current
        elif options:
            select.value = options[0][1]
        if not options:
            self.query_one("#recommendation", Static).update(
                f"No bench results under {self.app.root} yet: run a benchmark on the Bench screen (3) "
                "or with jmed-edge bench, then come back."
            )

    def _source_label(self, key: str) -> str:
        kind, _, folder = key.partition(":")
        try:
            shown = str(Path(folder).relative_to(self.app.root))
        except ValueError:
            shown = folder
        return f"{shown} (report)" if kind == "report" else shown

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "report-source" and event.value is not Select.NULL:
            run_dirs, reference = self._sources.get(str(event.value), ([], ""))
            self._list_references(run_dirs, reference)

    @work(thread=True, exclusive=True, group="report-refs")
    def _list_references(self, run_dirs: list[Path], reference: str) -> None:
        try:
            names = self.app.backend.run_artifacts(run_dirs)
        except Exception as exc:
            self.app.from_worker(self.app.show_error, exc)
            names = []
        self.app.from_worker(self._set_references, names, reference)

    def _set_references(self, names: list[str], reference: str) -> None:
        select = self.query_one("#report-reference", Select)
        current = select.value
        select.set_options([(n, n) for n in names])
        for choice in (reference, current, names[0] if names else None):
            if choice in names:
                select.value = choice
                break

    # --- building -------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "build":
            self.action_build()

    def _budget(self) -> int | None:
        from jmed_edge.fsutil import parse_bytes

        text = self.query_one("#budget", Input).value.strip()
        return parse_bytes(text) if text else None

    def _max_loss(self) -> float:
        text = self.query_one("#max-loss", Input).value.strip()
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f'max loss "{text}" is not a number of accuracy points, e.g. 1.0') from None

    def action_build(self) -> None:
        source = self.query_one("#report-source", Select).value
        reference = self.query_one("#report-reference", Select).value
        if source is Select.NULL or reference is Select.NULL:
            self.notify("choose a bench run folder and a reference artifact first", severity="warning")
            return
        try:
            budget, max_loss = self._budget(), self._max_loss()
        except JmedError as exc:
            self.app.show_error(exc)
            return
        run_dirs = self._sources[str(source)][0]
        kl = self.query_one("#kl", Checkbox).value
        self.query_one("#recommendation", Static).update(
            "building the report…" + (" (KL divergence loads each artifact)" if kl else "")
        )
        self._build(run_dirs, str(reference), budget, max_loss, kl)

    @work(thread=True, exclusive=True, group="report-build")
    def _build(
        self, run_dirs: list[Path], reference: str, budget: int | None, max_loss: float, kl: bool
    ) -> None:
        try:
            data = self.app.backend.build_report(
                run_dirs, reference, budget_bytes=budget, max_loss=max_loss, kl=kl
            )
        except Exception as exc:
            self.app.from_worker(self.app.show_error, exc)
            self.app.from_worker(
                self.query_one("#recommendation", Static).update, "The report could not be built."
            )
            return
        self.app.from_worker(self.show_report, data)

    def show_report(self, data: Any) -> None:
        from jmed_edge.report.render import accuracy_rows, kl_rows, perf_rows

        self.data = data
        for key, rows in (("accuracy", accuracy_rows), ("kl", kl_rows), ("perf", perf_rows)):
            head, body = rows(data)
            if not body:
                head, body = ["KL divergence"], [["not measured: tick KL divergence and build again"]]
            fill_table(self.query_one(f"#table-{key}", DataTable), head, body)
        self.query_one("#chart", AccuracyBars).show(data)
        self.query_one("#recommendation", Static).update(report_text(data))

    # --- the budget -----------------------------------------------------------------------

    def action_focus_budget(self) -> None:
        self.query_one("#budget", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id not in ("budget", "max-loss"):
            return
        if self.data is None:
            self.action_build()
            return
        try:
            rec = self.app.backend.recommend(self.data, self._budget(), self._max_loss())
        except JmedError as exc:
            self.app.show_error(exc)
            return
        self.data.recommendation = rec
        self.query_one("#recommendation", Static).update(report_text(self.data))
