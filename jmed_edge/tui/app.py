"""The Textual application: four screens (modes) over one artifact root and one ``Backend``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.message import Message
from textual.signal import Signal

from jmed_edge.errors import JmedError
from jmed_edge.resources import shipped
from jmed_edge.tui.backend import ArtifactView, Backend
from jmed_edge.tui.screens.artifacts import ArtifactsScreen
from jmed_edge.tui.screens.bench import BenchScreen
from jmed_edge.tui.screens.chat import ChatScreen
from jmed_edge.tui.screens.help import HelpScreen
from jmed_edge.tui.screens.report import ReportScreen

log = logging.getLogger(__name__)


class UICall(Message):
    """A call a worker thread asks the UI thread to make (see ``JmedEdgeApp.from_worker``)."""

    def __init__(self, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        super().__init__()
        self.callback = callback
        self.args = args


def error_message(exc: BaseException) -> str:
    """The CLI's one-line message for an exception (``jmed_edge.cli.main`` words it the same way)."""
    if isinstance(exc, JmedError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)"


class JmedEdgeApp(App[None]):
    """``jmed-edge tui``: artifacts, chat, bench and report over the artifacts under ``root``."""

    TITLE = "jmed-edge"
    MODES: ClassVar[dict[str, Any]] = {
        "artifacts": ArtifactsScreen,
        "chat": ChatScreen,
        "bench": BenchScreen,
        "report": ReportScreen,
    }
    DEFAULT_MODE = "artifacts"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "app.switch_mode('artifacts')", "Artifacts", show=False),
        Binding("2", "app.switch_mode('chat')", "Chat", show=False),
        Binding("3", "app.switch_mode('bench')", "Bench", show=False),
        Binding("4", "app.switch_mode('report')", "Report", show=False),
        # The same from inside a text field, where digits are typed.
        Binding("f2", "app.switch_mode('artifacts')", "Artifacts", show=False, priority=True),
        Binding("f3", "app.switch_mode('chat')", "Chat", show=False, priority=True),
        Binding("f4", "app.switch_mode('bench')", "Bench", show=False, priority=True),
        Binding("f5", "app.switch_mode('report')", "Report", show=False, priority=True),
        Binding("f1", "help", "Help", priority=True),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, root: Path, backend: Backend | None = None, *, debug: bool = False) -> None:
        super().__init__(css_path=shipped("tui/jmed_edge.tcss"))
        self.root = Path(root)
        self.backend = backend or Backend()
        self.debug_errors = debug
        self.sub_title = str(self.root)
        self.artifacts: list[ArtifactView] = []
        self.artifacts_signal: Signal[list[ArtifactView]] = Signal(self, "artifacts")
        self.scanned = False

    def on_mount(self) -> None:
        self.rescan()

    # --- workers ---------------------------------------------------------------------------

    def from_worker(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the UI thread, from a worker thread, without waiting.

        Unlike ``call_from_thread`` it never blocks the worker, so a worker still finishing
        its model call when the app closes cannot hang the exit; calls after closing are dropped.
        """
        self.post_message(UICall(callback, args))

    def on_uicall(self, message: UICall) -> None:
        try:
            message.callback(*message.args)
        except NoMatches:  # the widget it updates is gone (screen closed, conversation cleared)
            log.debug("UI update for a removed widget dropped: %s", message.callback)

    # --- shared state ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="scan")
    def rescan(self) -> None:
        """Scan the root for artifacts in a worker; screens hear of the result through a signal."""
        try:
            found = self.backend.scan(self.root)
        except Exception as exc:
            self.from_worker(self.show_error, exc)
            found = []
        self.from_worker(self._set_artifacts, found)

    def _set_artifacts(self, found: list[ArtifactView]) -> None:
        self.artifacts = found
        self.scanned = True
        self.artifacts_signal.publish(found)

    def artifact(self, path: str | Path) -> ArtifactView | None:
        return next((a for a in self.artifacts if str(a.info.path) == str(path)), None)

    def show_error(self, exc: BaseException) -> None:
        """A notification with the CLI's one-line message; the app keeps running.

        With ``--debug`` a bug (anything but a ``JmedError``) closes the app with its traceback.
        """
        if not isinstance(exc, JmedError):
            log.error("unexpected error in the TUI", exc_info=exc)
            if self.debug_errors:
                from rich.traceback import Traceback

                self.panic(Traceback.from_exception(type(exc), exc, exc.__traceback__))
                return
        self.notify(error_message(exc), severity="error", timeout=10)

    # --- navigation -----------------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen(self.current_mode, self.MODES))

    def open_with(self, mode: str, artifact: ArtifactView) -> None:
        """Switch to ``mode`` with ``artifact`` chosen there (chat with it, bench it)."""
        self.switch_mode(mode)
        self.screen.request_artifact(str(artifact.info.path))


def run_tui(root: Path, *, debug: bool = False) -> int:
    JmedEdgeApp(root, debug=debug).run()
    return 0
