"""``jmed-edge setup``: prepare everything that later runs offline (converter, imatrix tool)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="fetch and rebuild even if present")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: all CPUs)")
    parser.set_defaults(func=_main)


@contextmanager
def _build_progress(console: Any) -> Iterator[Any]:
    """A bar with cmake's step percent and the elapsed time; plain lines when not on a terminal.

    ``make setup`` in CI writes to a pipe, where a live bar draws nothing: there a line is printed
    at every tenth of the build and at least once a minute.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if console.is_terminal:
        bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                       TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=console,
                       transient=True)  # fmt: skip
        task = bar.add_task("setting up llama.cpp", total=None)
        with bar:
            yield lambda message, fraction: bar.update(
                task, description=message.split(" (")[0], completed=(fraction or 0) * 100,
                total=100 if fraction is not None else None,
            )  # fmt: skip
        return
    started, last = time.monotonic(), {"step": -1, "at": 0.0, "what": ""}

    def report(message: str, fraction: float | None) -> None:
        what, now = message.split(" (")[0], time.monotonic()
        step = int((fraction or 0) * 10)
        if what != last["what"] or step != last["step"] or now - last["at"] >= 60:
            percent = f" {fraction:.0%}" if fraction is not None else ""
            console.print(f"  {what}{percent}, {now - started:.0f} s elapsed", highlight=False)
            last.update(step=step, at=now, what=what)

    yield report


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jmed_edge.convert.llamacpp_tools import (
        built_for_another_cpu,
        rebuild_bindings,
        setup_tools,
        tools_dir,
        tools_status,
    )
    from jmed_edge.cpu import check_bindings

    console = Console(stderr=True)
    bindings = check_bindings()
    override = os.environ.get("LLAMA_CPP_LIB_PATH")  # a library the user chose: reported, not replaced
    if (not bindings.ok or bindings.unused) and not override:
        console.print(
            f"[yellow]![/] llama-cpp-python: {bindings.detail}; rebuilding it from source for this CPU (~20 min)",
            highlight=False,
        )
        with _build_progress(console) as progress:
            rebuild_bindings(progress)
        after = check_bindings()
        if not after.ok:
            from jmed_edge.errors import DependencyError

            raise DependencyError(f"llama-cpp-python still does not run here after a rebuild: {after.detail}")
        if after.unused:  # the compiler does not know them: it runs, and that is all a rebuild can do
            console.print(f"[yellow]![/] llama-cpp-python: {after.detail} (this compiler does not emit them)")
    elif bindings.detail:
        console.print(f"[yellow]![/] llama-cpp-python from LLAMA_CPP_LIB_PATH={override}: {bindings.detail}")
    force = args.force
    if foreign := built_for_another_cpu():
        console.print(f"[yellow]![/] {foreign}; rebuilding them for this CPU")
        force = True
    ready, detail = tools_status()
    if ready and not force:
        console.print(f"[green]✓[/] {detail}")
        return 0
    console.print(
        "fetching llama.cpp's converter and building llama-imatrix and llama-quantize (once, ~5 min; "
        f"log: {tools_dir() / 'build.log'})",
        highlight=False,
    )
    started = time.monotonic()
    with _build_progress(console) as progress:
        setup_tools(force=force, jobs=args.jobs, progress=progress)
    ready, detail = tools_status()
    if not ready:
        from jmed_edge.errors import DependencyError

        raise DependencyError(f"llama.cpp tools are still not usable after the build: {detail}")
    console.print(f"[green]✓[/] {detail} (built in {time.monotonic() - started:.0f} s)", highlight=False)
    return 0
