"""Take the README screenshots of ``jmed-edge tui`` from a real artifact root.

    jmed-edge demo                                   # or any root with GGUFs and bench results
    python tui/screenshots/make_screenshots.py --root runs/demo

The app runs headless on the real library (models answer, benchmarks run, the report is built),
driven the way a user drives it; each screen is saved as SVG (``App.save_screenshot``) and
converted to PNG with ``rsvg-convert``, which draws Japanese with an installed CJK font (Debian:
``apt-get install librsvg2-bin fonts-ipafont-gothic``; cairosvg draws Japanese as empty boxes).
The PNGs are committed; CI does not run this script.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, Select, SelectionList, TabbedContent, TextArea

from jmed_edge.tui.app import JmedEdgeApp
from jmed_edge.tui.widgets.chat_pane import ChatPane

HERE = Path(__file__).resolve().parent
# The embedded 135M model answers English sensibly and Japanese poorly (the snapshot tests show
# Japanese conversations, with scripted answers).
QUESTION = "What is the first-line treatment for hypertension?"


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.2)
    await pilot.pause(0.3)


def steady(app: JmedEdgeApp) -> None:
    for field in app.screen.query("TextArea, Input"):
        field.cursor_blink = False


async def take(app: JmedEdgeApp, pilot: Pilot, out: Path, name: str) -> Path:
    await pilot.pause(0.3)
    path = out / f"{name}.svg"
    app.save_screenshot(path.name, str(out))
    print(f"saved {path}")
    return path


async def scenario(app: JmedEdgeApp, pilot: Pilot, out: Path, bench_out: Path, reference: str | None) -> None:
    await wait_for(pilot, lambda: app.scanned, 60, "the artifact scan")
    ggufs = sorted((a for a in app.artifacts if a.format == "gguf"), key=lambda a: -a.info.size_bytes)
    if len(ggufs) < 2:
        raise SystemExit(
            f"{app.root} holds {len(ggufs)} GGUF artifacts; the screenshots need two (run jmed-edge demo)"
        )
    big, small = ggufs[0], ggufs[-1]
    table = app.screen.query_one("#artifact-table")
    table.move_cursor(row=table.get_row_index(str(small.info.path)))
    await take(app, pilot, out, "artifacts")

    # Chat: the same question to the largest and the smallest GGUF, side by side.
    await pilot.press("f3", "ctrl+t")
    steady(app)
    app.screen.query_one("#pane-a", ChatPane).choose(str(big.info.path))
    app.screen.query_one("#pane-b", ChatPane).choose(str(small.info.path))
    app.screen.query_one("#max-tokens", Input).value = "96"
    app.screen.query_one("#prompt", TextArea).text = QUESTION
    await pilot.press("ctrl+s")
    panes = list(app.screen.query(ChatPane))
    await wait_for(pilot, lambda: not any(p.busy for p in panes), 600, "both answers")
    await take(app, pilot, out, "chat")

    # Bench: two artifacts on the bundled sample, into a scratch folder; shot while it runs.
    await pilot.press("f4")
    steady(app)
    chooser = app.screen.query_one("#bench-artifacts", SelectionList)
    chooser.deselect_all()
    for artifact in (big, small):
        chooser.select(str(artifact.info.path))
    app.screen.query_one("#bench-limit", Input).value = "8"
    app.screen.query_one("#bench-out", Input).value = str(bench_out)
    await pilot.press("ctrl+s")
    stats = app.screen.query(".job-stats")
    await wait_for(pilot, lambda: "done" in str(stats.first().render()), 900, "the first job")
    await wait_for(pilot, lambda: "questions" in str(stats.last().render()), 900, "the second job's progress")
    await take(app, pilot, out, "bench")
    await pilot.press("ctrl+x")
    await wait_for(pilot, lambda: not app.screen.running, 900, "the bench to stop")

    # Report: the root's own bench results against the largest artifact, with KL divergence.
    await pilot.press("f5")
    steady(app)
    screen = app.screen
    run_dirs = [d for d in app.backend.run_folders(app.root) if not d.is_relative_to(bench_out)]
    if not run_dirs:
        raise SystemExit(f"{app.root} holds no bench results (run jmed-edge demo, or jmed-edge bench)")
    names = app.backend.run_artifacts(run_dirs[:1])
    source = screen.query_one("#report-source", Select)
    await wait_for(pilot, lambda: source.value is not Select.NULL, 60, "the bench run folders")
    source.value = f"run:{run_dirs[0]}"
    refs = screen.query_one("#report-reference", Select)
    await wait_for(pilot, lambda: refs.value in names, 60, "the reference choices")
    refs.value = reference or next((n for n in names if "F16" in n), names[0])
    screen.query_one("#budget", Input).value = "4GB"
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: screen.data is not None, 900, "the report")
    screen.query_one("#report-tabs", TabbedContent).active = "tab-chart"
    await take(app, pilot, out, "report-chart")
    screen.query_one("#report-tabs", TabbedContent).active = "tab-kl"
    await take(app, pilot, out, "report-kl")
    screen.query_one("#report-tabs", TabbedContent).active = "tab-accuracy"
    await take(app, pilot, out, "report")


def to_png(svg: Path) -> Path:
    """PNG of a Textual SVG. Textual writes spaces as U+00A0, whose runs at the start of a text
    element rsvg-convert drops; written as plain spaces under xml:space="preserve" they stay."""
    tool = shutil.which("rsvg-convert")
    if tool is None:
        raise SystemExit("rsvg-convert not found: apt-get install librsvg2-bin fonts-ipafont-gothic")
    text = svg.read_text(encoding="utf-8").replace("&#160;", " ")
    text = re.sub(r"<svg ", '<svg xml:space="preserve" ', text, count=1)
    png = svg.with_suffix(".png")
    with tempfile.NamedTemporaryFile("w", suffix=".svg", encoding="utf-8", delete=False) as tmp:
        tmp.write(text)
    subprocess.run([tool, "--zoom", "1.0", tmp.name, "-o", str(png)], check=True)
    Path(tmp.name).unlink()
    return png


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="artifact root with GGUFs and bench results")
    parser.add_argument("--out", type=Path, default=HERE, help="where the SVG and PNG files go (this folder)")
    parser.add_argument("--size", default="110x32", help="terminal size, COLUMNSxROWS (110x32)")
    parser.add_argument("--reference", help="reference artifact of the report (default: the largest GGUF)")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        app = JmedEdgeApp(args.root)
        # The benchmark run for the screenshot writes to a hidden scratch folder, removed after.
        bench_out = args.root / ".screenshot-bench"
        try:
            async with app.run_test(size=(width, height)) as pilot:
                await scenario(app, pilot, args.out, bench_out, args.reference)
        finally:
            shutil.rmtree(bench_out, ignore_errors=True)

    asyncio.run(run())
    for svg in sorted(args.out.glob("*.svg")):
        print(f"wrote {to_png(svg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
