"""What every screen shares: header, navigation tabs, footer, and the too-small notice."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Container
from textual.events import Resize
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, Tab, Tabs

# mode name, tab label (the number is the key that opens it)
NAV = (("artifacts", "1 Artifacts"), ("chat", "2 Chat"), ("bench", "3 Bench"), ("report", "4 Report"))
MIN_WIDTH, MIN_HEIGHT = 80, 24


class JmedScreen(Screen[None]):
    """A top-level screen. Subclasses fill ``compose_body`` and set ``MODE``."""

    MODE = ""
    HELP = ""  # Markdown shown by the help screen for this screen

    def __init__(self) -> None:
        super().__init__()
        self._requested: str | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Tabs(
            *(Tab(label, id=f"nav-{mode}") for mode, label in NAV), active=f"nav-{self.MODE}", id="nav"
        )
        with Container(id="body"):
            yield from self.compose_body()
        yield Static(id="too-small")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.query_one("#nav", Tabs).can_focus = False
        self._check_size(self.app.size)
        self.app.artifacts_signal.subscribe(self, self.artifacts_changed)
        if self.app.scanned:
            self.artifacts_changed(self.app.artifacts)

    def on_resize(self, event: Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size) -> None:
        small = size.width < MIN_WIDTH or size.height < MIN_HEIGHT
        self.set_class(small, "-too-small")
        if small:
            self.query_one("#too-small", Static).update(
                f"The terminal is {size.width}×{size.height}; jmed-edge tui needs at least "
                f"{MIN_WIDTH}×{MIN_HEIGHT}.\nEnlarge the window, or press Ctrl+Q to quit."
            )

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tabs.id != "nav" or event.tab.id is None:
            return
        event.stop()
        mode = event.tab.id.removeprefix("nav-")
        if mode != self.MODE:
            self.app.switch_mode(mode)

    def on_screen_resume(self) -> None:
        # The nav tabs of a screen that was away may still show the tab clicked to leave it.
        tabs = self.query_one("#nav", Tabs)
        if tabs.active != f"nav-{self.MODE}":
            with tabs.prevent(Tabs.TabActivated):
                tabs.active = f"nav-{self.MODE}"

    # --- hooks ----------------------------------------------------------------------------

    def artifacts_changed(self, artifacts: list) -> None:
        """The app rescanned the root; refresh whatever lists artifacts."""
        if self._requested is not None:
            self.apply_request(self._requested)

    def request_artifact(self, path: str) -> None:
        """Another screen asked to open this one with ``path`` chosen."""
        self._requested = path
        if self.is_mounted and self.app.scanned:
            self.apply_request(path)

    def apply_request(self, path: str) -> None:
        self._requested = None
