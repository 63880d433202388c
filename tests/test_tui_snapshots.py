"""Snapshots of every screen (pytest-textual-snapshot): the layout as drawn, Japanese text included.

Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and
look at the SVGs in ``tests/__snapshots__/``. Content is fixed: artifacts of fixed names, sizes and
dates under a relative ``runs`` folder, scripted model answers and speeds, bench results written
by ``run_benchmark`` from scripted scores.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_tui_support import ScriptedBackend, bench_runs, build_root, key, settle
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, Select, SelectionList, TabbedContent, TextArea

from jmed_edge.tui.app import JmedEdgeApp
from jmed_edge.tui.widgets.chat_pane import ChatPane


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fixed artifact tree at ./runs (relative, so no temporary path shows on screen)."""
    build_root(tmp_path)
    monkeypatch.chdir(tmp_path)
    return Path("runs")


@pytest.fixture(scope="module")
def benched_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("benched")
    bench_runs(build_root(base))
    return base


@pytest.fixture
def benched(benched_base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``runs`` (relative) with bench results of three GGUFs, written once per module."""
    monkeypatch.chdir(benched_base)
    return Path("runs")


async def ready(pilot: Pilot) -> None:
    while not pilot.app.scanned:
        await pilot.pause(0.02)
    await settle(pilot)


def steady(app: JmedEdgeApp) -> None:
    """Stop the cursors of the screen's text fields blinking (a blink is the one thing that
    would differ between two screenshots); call before typing, so that the text is redrawn."""
    for field in app.screen.query("TextArea, Input"):
        field.cursor_blink = False


def test_artifacts(snap_compare, runs: Path):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("down", "down")
        await settle(pilot)

    assert snap_compare(JmedEdgeApp(runs, ScriptedBackend()), run_before=run_before)


def test_artifacts_empty_root(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert snap_compare(JmedEdgeApp(Path("runs"), ScriptedBackend()), run_before=ready)


def test_chat_japanese(snap_compare, runs: Path):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        app = pilot.app
        await pilot.press("2")
        steady(app)
        app.screen.query_one("#pane-a", ChatPane).choose(key(app, "medllm-F16"))
        app.screen.query_one("#prompt", TextArea).text = "高血圧の第一選択薬は何ですか？"
        await pilot.press("ctrl+s")
        await settle(pilot)
        app.screen.query_one("#prompt", TextArea).text = "副作用も教えてください。"
        await settle(pilot)

    assert snap_compare(JmedEdgeApp(runs, ScriptedBackend()), run_before=run_before)


def test_chat_side_by_side(snap_compare, runs: Path):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        app = pilot.app
        await pilot.press("2", "ctrl+t")
        steady(app)
        app.screen.query_one("#pane-a", ChatPane).choose(key(app, "medllm-F16"))
        app.screen.query_one("#pane-b", ChatPane).choose(key(app, "medllm-Q4_K_M"))
        app.screen.query_one("#prompt", TextArea).text = "高血圧の第一選択薬は？"
        await pilot.press("ctrl+s")
        await settle(pilot)

    assert snap_compare(JmedEdgeApp(runs, ScriptedBackend()), run_before=run_before, terminal_size=(110, 30))


def test_chat_settings(snap_compare, runs: Path):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        app = pilot.app
        await pilot.press("2", "ctrl+o")
        steady(app)
        app.screen.query_one(
            "#system", TextArea
        ).text = "あなたは日本の医療専門職を支援するアシスタントです。"
        app.screen.query_one("#temperature", Input).value = "0.7"
        await settle(pilot)

    assert snap_compare(JmedEdgeApp(runs, ScriptedBackend()), run_before=run_before)


def test_bench_done_and_cancelled(snap_compare, runs: Path):
    def cancel_second_job(n: int, cancel: threading.Event) -> None:
        # The first job (8 answers) completes; the second is cancelled after its third answer.
        if n == 3 and any(r.model_name == "medllm-Q4_K_M" for r in backend.opened):
            cancel.set()

    backend = ScriptedBackend(on_score=cancel_second_job)

    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        app = pilot.app
        await pilot.press("3")
        steady(app)
        chooser = app.screen.query_one("#bench-artifacts", SelectionList)
        for name in ("medllm-F16", "medllm-Q4_K_M"):
            chooser.select(key(app, name))
        app.screen.query_one("#bench-limit", Input).value = "4"
        await pilot.press("ctrl+s")
        await settle(pilot)

    assert snap_compare(JmedEdgeApp(runs, backend), run_before=run_before)


def _report_before(tab: str):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        app = pilot.app
        await pilot.press("4")
        await settle(pilot)
        steady(app)
        screen = app.screen
        screen.query_one("#report-reference", Select).value = "medllm-F16"
        screen.query_one("#kl", Checkbox).value = False
        await pilot.press("ctrl+r")
        await settle(pilot)
        screen.query_one("#report-tabs", TabbedContent).active = tab
        await settle(pilot)

    return run_before


def test_report_accuracy(snap_compare, benched: Path):
    app = JmedEdgeApp(benched, ScriptedBackend())
    assert snap_compare(app, run_before=_report_before("tab-accuracy"), terminal_size=(120, 30))


def test_report_chart(snap_compare, benched: Path):
    assert snap_compare(JmedEdgeApp(benched, ScriptedBackend()), run_before=_report_before("tab-chart"))


def test_help(snap_compare, runs: Path):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("2", "f1")
        await settle(pilot)

    assert snap_compare(JmedEdgeApp(runs, ScriptedBackend()), run_before=run_before)


def test_terminal_too_small(snap_compare, runs: Path):
    assert snap_compare(JmedEdgeApp(runs, ScriptedBackend()), run_before=ready, terminal_size=(60, 20))
