"""The TUI driven like a user drives it (Textual's Pilot): every screen, its keys, its failures."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from test_tui_support import DEFAULT_REPLY, ScriptedBackend, bench_runs, build_root, key, settle
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Select, SelectionList, Static, TextArea

from jmed_edge.tui.app import JmedEdgeApp
from jmed_edge.tui.backend import Backend
from jmed_edge.tui.screens.help import HelpScreen
from jmed_edge.tui.widgets.chat_pane import ChatPane
from jmed_edge.tui.widgets.job_row import JobRow


def drive(
    app: JmedEdgeApp, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (100, 30)
) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await wait_until(pilot, lambda: app.scanned)
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


def text_of(widget: Static) -> str:
    return str(widget.render())


def notes(app: JmedEdgeApp) -> list[tuple[str, str]]:
    return [(n.message, n.severity) for n in app._notifications]


async def wait_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the TUI"
        await pilot.pause(0.02)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_root(tmp_path)


# --- artifacts ------------------------------------------------------------------------------


def test_artifacts_lists_every_artifact_with_its_manifest_facts(root: Path):
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        table = app.screen.query_one("#artifact-table", DataTable)
        rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(table.row_count)}
        assert set(rows) == {"medllm-lora", "medllm-F16", "medllm-Q8_0", "medllm-Q4_K_M", "medllm-merged",
                             "medllm-onnx-int4"}  # fmt: skip
        assert rows["medllm-Q4_K_M"] == [
            "medllm-Q4_K_M",
            "gguf",
            "Q4_K_M",
            "82.0 KB",
            "merged",
            "not verified",
        ]
        assert rows["medllm-Q8_0"][5] == "✓ passed"
        assert rows["medllm-lora"][1:3] == ["peft-adapter", "-"]
        assert rows["medllm-onnx-int4"][1:3] == ["onnx", "int4"]
        # The detail line follows the cursor and shows the recorded checks.
        table.move_cursor(row=table.get_row_index(key(app, "medllm-F16")))
        await pilot.pause()
        detail = text_of(app.screen.query_one("#artifact-detail", Static))
        assert "gguf/F16" in detail and "✓ tokenizer" in detail and "✓ logits" in detail

    drive(app, scenario)


def test_empty_root_says_how_to_make_an_artifact(tmp_path: Path):
    app = JmedEdgeApp(tmp_path / "nothing-here", ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        empty = app.screen.query_one("#artifacts-empty", Static)
        assert empty.display and "jmed-edge demo" in text_of(empty) and "jmed-edge convert" in text_of(empty)
        await pilot.press("c")  # chat with nothing selected: a warning, no crash
        assert any("no artifact selected" in m for m, _ in notes(app))
        await pilot.press("2")
        await settle(pilot)
        assert "jmed-edge demo" in text_of(app.screen.query_one("#chat-status", Static))

    drive(app, scenario)


def test_convert_dialog_validates_quant_types_then_converts(root: Path):
    backend = ScriptedBackend()
    app = JmedEdgeApp(root, backend)

    async def scenario(pilot: Pilot) -> None:
        table = app.screen.query_one("#artifact-table", DataTable)
        table.move_cursor(row=table.get_row_index(key(app, "medllm-Q8_0")))
        await pilot.press("g")  # a GGUF is no conversion source: told why
        assert any("starts from a Hugging Face model folder" in m for m, _ in notes(app))
        table.move_cursor(row=table.get_row_index(key(app, "medllm-merged")))
        await pilot.press("g")
        await pilot.pause()
        dialog = app.screen
        dialog.query_one("#quants", Input).value = "q4_k_mm"
        await pilot.click("#ok")
        assert any("unknown" in m.lower() and "q4_k_m" in m.lower() for m, s in notes(app) if s == "error")
        quants = dialog.query_one("#quants", Input)
        quants.value = "q8_0"
        quants.focus()
        await pilot.press("enter")  # the error's toast may cover the button; Enter submits too
        await settle(pilot)
        assert backend.calls == [("convert", (root / "merged", root / "medllm-merged-gguf", ["Q8_0"]))]
        assert "wrote Q8_0" in " ".join(m for m, _ in notes(app))

    drive(app, scenario)


def test_verify_failure_is_a_notification_and_the_app_goes_on(root: Path):
    backend = ScriptedBackend()
    app = JmedEdgeApp(root, backend)

    async def scenario(pilot: Pilot) -> None:
        table = app.screen.query_one("#artifact-table", DataTable)
        table.move_cursor(row=table.get_row_index(key(app, "medllm-Q4_K_M")))
        await pilot.press("v")
        await settle(pilot)
        # The fixture GGUF holds no tensors: the library's one-line error, shown as the CLI shows it.
        errors = [m for m, s in notes(app) if s == "error"]
        assert errors and "\n" not in errors[-1] and "Q4_K_M" in errors[-1]
        await pilot.press("2")
        assert app.current_mode == "chat"

    drive(app, scenario)


# --- help and size --------------------------------------------------------------------------


def test_help_lists_the_keys_of_every_screen(root: Path):
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        from jmed_edge.tui.screens.help import help_markdown

        text = help_markdown("artifacts", JmedEdgeApp.MODES)
        for shortcut in ("Ctrl+S", "Esc", "Ctrl+T", "Ctrl+X", "Ctrl+R", "Convert to GGUF"):
            assert shortcut in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)

    drive(app, scenario)


def test_too_small_terminal_shows_a_message_instead_of_the_layout(root: Path):
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        notice = app.screen.query_one("#too-small", Static)
        assert notice.display and "needs at least 80×24" in text_of(notice) and "70×20" in text_of(notice)
        assert not app.screen.query_one("#body").display
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not notice.display and app.screen.query_one("#body").display

    drive(app, scenario, size=(70, 20))


# --- chat -----------------------------------------------------------------------------------


def _ask(app: JmedEdgeApp, text: str) -> None:
    app.screen.query_one("#prompt", TextArea).text = text


def test_chat_streams_stays_responsive_and_stops(root: Path):
    backend = ScriptedBackend(delay=0.12)  # ~2 s of streaming
    app = JmedEdgeApp(root, backend)

    async def scenario(pilot: Pilot) -> None:
        table = app.screen.query_one("#artifact-table", DataTable)
        table.move_cursor(row=table.get_row_index(key(app, "medllm-F16")))
        await pilot.press("c")
        await pilot.pause()
        assert app.current_mode == "chat"
        pane = app.screen.query_one("#pane-a", ChatPane)
        assert pane.chosen == key(app, "medllm-F16")
        _ask(app, "高血圧の第一選択薬は？")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "高血圧" in text_of(pane.query(".msg.assistant").last()))
        # Mid-stream the interface answers keys at once (the model runs on a worker thread):
        # the next question can be typed while the answer streams.
        # (The median of six keys, as this machine's other work can delay any one of them.)
        prompt = app.screen.query_one("#prompt", TextArea)
        delays = []
        for char in "次の質問です":
            began = time.perf_counter()
            app.simulate_key(char)
            while not prompt.text.endswith(char) and time.perf_counter() - began < 2:
                await asyncio.sleep(0.002)
            delays.append(time.perf_counter() - began)
        assert prompt.text == "次の質問です" and pane.busy
        assert sorted(delays)[len(delays) // 2] < 0.1, delays
        partial = text_of(pane.query(".msg.assistant").last())
        await settle(pilot)
        answer = text_of(pane.query(".msg.assistant").last())
        assert len(partial) < len(answer) and answer.startswith("高血圧の第一選択薬には")
        assert pane.border_subtitle == "16 tokens · 31.5 tok/s · stop"
        assert text_of(pane.query(".msg.user").last()) == "高血圧の第一選択薬は？"
        assert pane.session.transcript[-1]["content"] == answer  # the history holds the answer

        # Esc stops the next answer after a few tokens; what was written stays, in the history too.
        pane.choose(key(app, "medllm-Q8_0"))
        _ask(app, "What is HbA1c?")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: pane.turn is not None and len(pane.turn.pieces) >= 2)
        await pilot.press("escape")
        await settle(pilot)
        partial = text_of(pane.query(".msg.assistant").last())
        assert 0 < len(partial) < len(DEFAULT_REPLY[0]) and pane.border_subtitle.endswith("stopped")
        assert not pane.busy and pane.session.transcript[-1]["content"] == partial

    drive(app, scenario)


def test_chat_side_by_side_streams_both_with_their_speeds(root: Path):
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("2")
        left, right = app.screen.query_one("#pane-a", ChatPane), app.screen.query_one("#pane-b", ChatPane)
        left.choose(key(app, "medllm-F16"))
        await pilot.press("ctrl+t")
        assert right.display
        right.choose(key(app, "medllm-F16"))
        _ask(app, "高血圧の第一選択薬は？")
        await pilot.press("ctrl+s")
        assert any("two different artifacts" in m for m, _ in notes(app))
        right.choose(key(app, "medllm-Q4_K_M"))
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert text_of(left.query(".msg.assistant").last()).startswith("高血圧の第一選択薬には")
        assert text_of(right.query(".msg.assistant").last()).startswith("第一選択薬はACE阻害薬")
        assert "31.5 tok/s" in left.border_subtitle and "58.2 tok/s" in right.border_subtitle
        # In the text field digits are typed; F2-F5 switch screens from anywhere.
        app.screen.query_one("#prompt", TextArea).focus()
        await pilot.press("4")
        assert app.current_mode == "chat" and app.screen.query_one("#prompt", TextArea).text == "4"
        await pilot.press("f5")
        assert app.current_mode == "report"

    drive(app, scenario)


def test_chat_settings_reach_the_model_and_bad_ones_are_refused(root: Path):
    backend = ScriptedBackend()
    app = JmedEdgeApp(root, backend)

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("2")
        await pilot.press("ctrl+o")
        app.screen.query_one("#system", TextArea).text = "あなたは医療アシスタントです。"
        app.screen.query_one("#max-tokens", Input).value = "0"
        _ask(app, "こんにちは")
        await pilot.press("ctrl+s")
        assert ("--max-tokens 0 must be at least 1", "error") in notes(app)
        app.screen.query_one("#max-tokens", Input).value = "5"
        await pilot.press("ctrl+s")
        await settle(pilot)
        pane = app.screen.query_one("#pane-a", ChatPane)
        assert pane.session.system == "あなたは医療アシスタントです。"
        assert pane.session.last.prompt.startswith("<system>あなたは医療アシスタントです。")
        assert pane.border_subtitle.startswith("5 tokens") and pane.border_subtitle.endswith("length")
        # A single-turn prompt layout of the benchmarks, in English.
        app.screen.query_one("#template", Select).value = "alpaca:en"
        _ask(app, "Define sepsis.")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert len(pane.session.transcript) == 2  # single-turn layouts leave the chat history alone

    drive(app, scenario)


def test_chat_with_an_artifact_that_fails_to_load(root: Path):
    app = JmedEdgeApp(root, ScriptedBackend(broken=["medllm-Q4_K_M"]))

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("2")
        pane = app.screen.query_one("#pane-a", ChatPane)
        pane.choose(key(app, "medllm-Q4_K_M"))
        _ask(app, "こんにちは")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert any("cannot load" in m and s == "error" for m, s in notes(app))
        assert pane.border_subtitle == "error" and not pane.busy
        pane.choose(key(app, "medllm-F16"))  # the app goes on with another artifact
        _ask(app, "こんにちは")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "高血圧" in text_of(pane.query(".msg.assistant").last())

    drive(app, scenario)


@pytest.mark.slow
def test_chat_with_the_tiny_model_through_the_hf_runtime(tiny_llama: Path, tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_llama, root / "tiny-llama")
    app = JmedEdgeApp(root)  # the real backend: ChatSession over the Hugging Face runtime

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("c")
        pane = app.screen.query_one("#pane-a", ChatPane)
        app.screen.query_one("#max-tokens", Input).value = "12"
        _ask(app, "高血圧とは？ What is hypertension?")
        await pilot.press("ctrl+s")
        await settle(pilot)
        await wait_until(pilot, lambda: not pane.busy, timeout=60)
        assert not [m for m, s in notes(app) if s == "error"]
        stats = pane.session.last.stats
        assert stats.completion_tokens > 0 and "tok/s" in pane.border_subtitle
        assert text_of(pane.query(".msg.assistant").last()) == pane.session.last.answer

    drive(app, scenario)


# --- bench ----------------------------------------------------------------------------------


def _tick(app: JmedEdgeApp, *paths: str) -> None:
    chooser = app.screen.query_one("#bench-artifacts", SelectionList)
    chooser.deselect_all()
    for path in paths:
        chooser.select(str(path))


def test_bench_start_cancel_and_resume_without_losing_answers(root: Path):
    scored = threading.Event()

    def hold_at_five(n: int, cancel: threading.Event) -> None:
        # The first job's model pauses after its fifth question until the user cancels.
        if n == 5 and not scored.is_set():
            scored.set()
            cancel.wait(10)

    backend = ScriptedBackend(on_score=hold_at_five)
    app = JmedEdgeApp(root, backend)
    out = root / "bench"

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("3")
        await pilot.pause()
        _tick(app, key(app, "medllm-Q8_0"), key(app, "medllm-Q4_K_M"))
        app.screen.query_one("#bench-limit", Input).value = "6"
        await pilot.press("ctrl+s")
        await wait_until(pilot, scored.is_set)
        await pilot.press("ctrl+x")
        await settle(pilot)
        first, second = app.screen.query(JobRow)
        assert first.state == "cancelled" and second.state == "cancelled"
        assert "start again to resume" in text_of(first.query_one(".job-stats", Static))
        assert text_of(second.query_one(".job-stats", Static)) == "not started"
        predictions = out / "medllm-Q8_0" / "jmed-sample" / "predictions.jsonl"
        kept = predictions.read_text(encoding="utf-8").splitlines()
        assert len(kept) == 5
        summary = json.loads((out / "medllm-Q8_0" / "jmed-sample" / "summary.json").read_text())
        assert summary["complete"] is False

        await pilot.press("ctrl+s")  # resume
        await settle(pilot)
        first, second = app.screen.query(JobRow)
        assert first.state == "done" and second.state == "done"
        assert text_of(first.query_one(".job-stats", Static)).startswith("done · 12 answers · accuracy")
        rows = predictions.read_text(encoding="utf-8").splitlines()
        assert len(rows) == 12 and rows[: len(kept)] == kept  # earlier answers kept, none redone
        summary = json.loads((out / "medllm-Q8_0" / "jmed-sample" / "summary.json").read_text())
        assert summary["complete"] is True and summary["n"] == 12

    drive(app, scenario)


def test_bench_refuses_missing_choices_and_bad_specs(root: Path):
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("3")
        await pilot.pause()
        _tick(app)
        await pilot.press("ctrl+s")
        assert any("tick at least one artifact" in m for m, _ in notes(app))
        _tick(app, key(app, "medllm-F16"))
        app.screen.query_one("#bench-benchmarks", SelectionList).deselect_all()
        app.screen.query_one("#bench-extra", Input).value = "medqa:/no/such/file.jsonl"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert any("does not exist" in m and s == "error" for m, s in notes(app))
        assert app.screen.query_one(JobRow).state == "failed"

    drive(app, scenario)


@pytest.mark.slow
def test_bench_the_tiny_model_then_report_it(tiny_llama: Path, tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_llama, root / "tiny-llama")
    app = JmedEdgeApp(root, Backend())

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("b")  # from the artifacts screen, with the highlighted artifact ticked
        await pilot.pause()
        assert app.screen.query_one("#bench-artifacts", SelectionList).selected == [str(root / "tiny-llama")]
        app.screen.query_one("#bench-limit", Input).value = "2"
        await pilot.press("ctrl+s")
        await settle(pilot)
        await wait_until(pilot, lambda: not app.screen.running, timeout=90)
        row = app.screen.query_one(JobRow)
        assert row.state == "done", text_of(row.query_one(".job-stats", Static))
        assert (root / "bench" / "tiny-llama-F32" / "jmed-sample" / "summary.json").exists()

        await pilot.press("4")
        await settle(pilot)
        await settle(pilot)
        screen = app.screen
        assert screen.query_one("#report-reference", Select).value == "tiny-llama-F32"
        screen.query_one("#kl", Checkbox).value = False
        await pilot.press("ctrl+r")
        await settle(pilot)
        table = screen.query_one("#table-accuracy", DataTable)
        assert [table.get_row_at(i)[:4] for i in range(table.row_count)] == [
            ["tiny-llama-F32 (ref)", "jmed-sample", "en", "2"],
            ["tiny-llama-F32 (ref)", "jmed-sample", "ja", "2"],
        ]

    drive(app, scenario)


# --- report ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with bench results of three GGUFs and a report written from them (built once)."""
    from jmed_edge.report.build import build_report, write_report

    root = build_root(tmp_path_factory.mktemp("benched"))
    runs = bench_runs(root)
    write_report(build_report([runs], "medllm-Q4_K_M", kl=False), root / "report")
    return root


def test_report_tables_chart_and_budget_recommendation(benched: Path):
    root = benched
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("4")
        await settle(pilot)
        await settle(pilot)
        screen = app.screen
        assert screen.query_one("#report-source", Select).value == f"run:{root / 'bench'}"
        screen.query_one("#report-reference", Select).value = "medllm-F16"
        screen.query_one("#kl", Checkbox).value = False
        await pilot.press("ctrl+r")
        await settle(pilot)
        accuracy = screen.query_one("#table-accuracy", DataTable)
        assert accuracy.row_count == 6  # 3 artifacts x ja, en
        first = accuracy.get_row_at(0)
        assert first[:4] == ["medllm-F16 (ref)", "jmed-sample", "en", "16"]
        chart = screen.query_one("#chart")
        lines = [str(line) for line in chart._lines(70)]
        assert any(line.startswith("jmed-sample · ja") for line in lines)
        assert sum("█" in line for line in lines) == 6
        rec = text_of(screen.query_one("#recommendation", Static))
        assert rec.startswith("recommended:")
        # A budget too small for any artifact, typed and entered: the recommendation follows it.
        budget = screen.query_one("#budget", Input)
        budget.value = "100KB"
        budget.focus()
        await pilot.press("enter")
        assert text_of(screen.query_one("#recommendation", Static)).startswith(
            "no recommendation: no artifact fits in 100.0 KB"
        )
        budget.value = "lots"
        await pilot.press("enter")
        assert ('cannot read size "lots"; write it like 8GB or 512MB', "error") in notes(app)

    drive(app, scenario)


def test_report_reads_a_written_report_folder(benched: Path):
    root = benched
    app = JmedEdgeApp(root, ScriptedBackend())

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("4")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#report-source", Select).value = f"report:{root / 'report'}"
        await settle(pilot)
        # The report's manifest names its runs and reference.
        assert screen.query_one("#report-reference", Select).value == "medllm-Q4_K_M"

    drive(app, scenario)


# --- command line ---------------------------------------------------------------------------


def test_cli_defaults_to_runs_and_refuses_a_file_as_root(run_cli, tmp_path: Path):
    from jmed_edge.cli import build_parser

    args = build_parser("tui").parse_args(["tui"])
    assert args.root == Path("runs")
    not_a_folder = tmp_path / "model.gguf"
    not_a_folder.write_bytes(b"GGUF")
    code, _, err = run_cli("tui", "--root", not_a_folder)
    assert code == 2 and "is a file; give the folder that holds your artifacts" in err
