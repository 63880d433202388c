"""Artifacts: every model, adapter, GGUF and ONNX artifact under the root, with actions on one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Static

from jmed_edge.tui.backend import CONVERTIBLE_FORMATS, ArtifactView
from jmed_edge.tui.screens.base import JmedScreen
from jmed_edge.tui.screens.dialogs import ConvertDialog, ConvertRequest
from jmed_edge.tui.widgets.tables import fill_table

COLUMNS = ("name", "format", "quant", "size", "parent", "verified")


def empty_message(root: Path) -> str:
    return (
        f"No artifacts under [b]{escape(str(root))}[/b]. Make some first, for example:\n\n"
        "  [b]jmed-edge demo[/b]\n"
        "      the shipped demo on the embedded model, offline (writes runs/demo)\n"
        "  [b]jmed-edge convert MODEL_DIR --to gguf --out runs/gguf[/b]\n"
        "      Q8_0 and Q4_K_M GGUFs of your own Hugging Face model\n\n"
        "Then press [b]r[/b] to scan again, or run [b]jmed-edge tui --root FOLDER[/b]."
    )


class StatusProgress:
    """The converter's progress sink (``jmed_edge.convert.progress.Progress``) on a status line."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show
        self.step = ""
        self.percent = -1

    def task(self, description: str, total: float | None = None) -> None:
        self.step, self.percent = description, -1
        self.show(f"{description}…")

    def advance(self, done: float, total: float | None = None) -> None:
        percent = int(100 * done / total) if total else -1
        if percent != self.percent:  # at most a hundred updates a step
            self.percent = percent
            self.show(f"{self.step}… {percent}%")

    def finish(self, summary: str) -> None:
        self.show(summary)

    def note(self, message: str) -> None:
        self.show(message)

    def checks(self, title: str, result: Any) -> None:
        self.show(f"{title}: " + "  ".join(f"{c.mark} {c.name}" for c in result.checks))


class ArtifactsScreen(JmedScreen):
    MODE = "artifacts"
    TITLE = "Artifacts"
    AUTO_FOCUS = "#artifact-table"
    HELP = """
Every model, adapter, GGUF and ONNX artifact under the root: format, quant type, size, the
parent it was made from and its verification status (from its manifest). Pick one and chat
with it, benchmark it, verify it against its source, or convert a Hugging Face model to GGUF.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "chat", "Chat"),
        Binding("b", "bench", "Bench"),
        Binding("v", "verify", "Verify"),
        Binding("g", "convert", "Convert to GGUF"),
        Binding("r", "rescan", "Rescan"),
    ]

    def compose_body(self) -> ComposeResult:
        yield DataTable(id="artifact-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="artifacts-empty")
        yield Static(id="artifact-detail")
        with Horizontal(id="artifact-actions", classes="actions"):
            yield Button("Chat", id="do-chat", variant="primary")
            yield Button("Bench", id="do-bench")
            yield Button("Verify", id="do-verify")
            yield Button("Convert", id="do-convert")
            yield Button("Rescan", id="do-rescan")
        yield Static(id="artifact-status", classes="status-line")

    def on_mount(self) -> None:
        self.query_one("#artifact-status", Static).update("scanning…")
        super().on_mount()

    # --- showing --------------------------------------------------------------------------

    def artifacts_changed(self, artifacts: list[ArtifactView]) -> None:
        table = self.query_one("#artifact-table", DataTable)
        selected = self.selected()
        fill_table(
            table,
            COLUMNS,
            [(a.name, a.format, a.quant, a.size, a.parent, a.verified) for a in artifacts],
            keys=[str(a.info.path) for a in artifacts],
        )
        empty = not artifacts
        self.set_class(empty, "-empty")
        self.query_one("#artifacts-empty", Static).update(empty_message(self.app.root) if empty else "")
        self.query_one("#artifact-status", Static).update(
            f"{len(artifacts)} artifact(s) under {self.app.root}" if artifacts else ""
        )
        if selected is not None:
            self._move_to(str(selected.info.path))
        self._show_detail()
        super().artifacts_changed(artifacts)

    def apply_request(self, path: str) -> None:
        super().apply_request(path)
        self._move_to(path)

    def _move_to(self, path: str) -> None:
        table = self.query_one("#artifact-table", DataTable)
        try:
            table.move_cursor(row=table.get_row_index(path))
        except Exception:  # the artifact is gone after a rescan
            pass

    def selected(self) -> ArtifactView | None:
        table = self.query_one("#artifact-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.app.artifact(key) if key else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_chat()

    def _show_detail(self) -> None:
        a = self.selected()
        detail = self.query_one("#artifact-detail", Static)
        if a is None:
            detail.update("")
            return
        manifest = a.info.manifest
        lines = [f"[b]{escape(a.name)}[/b] · {escape(a.path)}"]
        if manifest is not None:
            parent = manifest.parent or {}
            lines.append(f"made {manifest.created or '?'} · parent {escape(self._shown(parent.get('path')))}")
            checks = (manifest.verification or {}).get("checks") or []
            if checks:
                marks = {True: "✓", False: "✗", None: "•"}
                lines.append(
                    "checks: "
                    + "  ".join(
                        f"{marks.get(c.get('passed', c.get('ok')), '•')} {escape(str(c.get('name')))}"
                        for c in checks
                    )
                )
        detail.update("\n".join(lines))

    def _shown(self, path: str | None) -> str:
        """A path as the user knows it: relative to the root when it lies below it."""
        if not path:
            return "-"
        try:
            return str(Path(path).resolve().relative_to(self.app.root.resolve()))
        except ValueError:
            return path

    # --- actions --------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = (event.button.id or "").removeprefix("do-")
        getattr(self, f"action_{action}")()

    def _need_selection(self) -> ArtifactView | None:
        a = self.selected()
        if a is None:
            self.notify("no artifact selected; make one first (see the message above)", severity="warning")
        return a

    def action_chat(self) -> None:
        if (a := self._need_selection()) is None:
            return
        if not a.runnable:
            self.notify(f"{a.name} is a {a.format}; chat with the model it applies to", severity="warning")
            return
        self.app.open_with("chat", a)

    def action_bench(self) -> None:
        if (a := self._need_selection()) is None:
            return
        if not a.runnable:
            self.notify(f"{a.name} is a {a.format}; benchmark the model it applies to", severity="warning")
            return
        self.app.open_with("bench", a)

    def action_rescan(self) -> None:
        self.query_one("#artifact-status", Static).update("scanning…")
        self.app.rescan()

    def action_verify(self) -> None:
        if (a := self._need_selection()) is None:
            return
        self.query_one("#artifact-status", Static).update(f"verifying {a.name}…")
        self._verify(a)

    @work(thread=True, group="artifact-job")
    def _verify(self, a: ArtifactView) -> None:
        try:
            result = self.app.backend.verify(a.info.path)
        except Exception as exc:
            self.app.from_worker(self.app.show_error, exc)
        else:
            passed = getattr(result, "passed", getattr(result, "ok", True))
            message = f"{a.name}: verification {'passed' if passed else 'FAILED'}"
            self.app.from_worker(self.notify, message, severity="information" if passed else "error")
        self.app.from_worker(self.app.rescan)

    def action_convert(self) -> None:
        if (a := self._need_selection()) is None:
            return
        if a.info.format not in CONVERTIBLE_FORMATS:
            self.notify(
                f"{a.name} is {a.format}; GGUF conversion starts from a Hugging Face model folder "
                "(merge an adapter first: jmed-edge merge)",
                severity="warning",
            )
            return
        default_out = self.app.root / f"{a.name}-gguf"

        def start(request: ConvertRequest | None) -> None:
            if request is not None:
                self.query_one("#artifact-status", Static).update(
                    f"converting {a.name} to {', '.join(request.quants)} in {request.out_dir}…"
                )
                self._convert(a, request)

        self.app.push_screen(ConvertDialog(a.name, default_out), start)

    @work(thread=True, group="artifact-job")
    def _convert(self, a: ArtifactView, request: ConvertRequest) -> None:
        try:
            status = self.query_one("#artifact-status", Static)
            progress = StatusProgress(lambda text: self.app.from_worker(status.update, text))
            self.app.backend.convert_to_gguf(a.info.path, request.out_dir, request.quants, progress)
        except Exception as exc:
            self.app.from_worker(self.app.show_error, exc)
        else:
            self.app.from_worker(
                self.notify, f"{a.name}: wrote {', '.join(request.quants)} to {request.out_dir}"
            )
        self.app.from_worker(self.app.rescan)
