"""How long conversion steps report what they are doing, without tying the library to a UI.

The library calls a ``Progress`` sink; the CLI passes one that draws rich progress bars and
prints ✓/✗ tables (``console.RichProgress``), library callers get log lines by default.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from jmed_edge.convert.checks import VerifyResult

log = logging.getLogger("jmed_edge.convert")


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> None:
        """Start a step (ends the previous one)."""

    def advance(self, done: float, total: float | None = None) -> None:
        """Absolute progress of the current step."""

    def finish(self, summary: str) -> None:
        """The current step is done; ``summary`` says what it produced."""

    def note(self, message: str) -> None:
        """An announcement the user should see (a default chosen, a heuristic applied)."""

    def checks(self, title: str, result: VerifyResult) -> None:
        """Verification results of one artifact."""


class LogProgress:
    """Progress as log lines (INFO), for library use and tests."""

    def task(self, description: str, total: float | None = None) -> None:
        log.info("%s ...", description)

    def advance(self, done: float, total: float | None = None) -> None: ...

    def finish(self, summary: str) -> None:
        log.info("%s", summary)

    def note(self, message: str) -> None:
        log.warning("%s", message)

    def checks(self, title: str, result: VerifyResult) -> None:
        for check in result.checks:
            log.info("%s %s %s: %s", title, check.mark, check.name, check.detail)
