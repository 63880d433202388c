"""The terminal side of ``convert`` and ``verify``: rich progress bars, ✓/✗ lines, result tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from jmed_edge.convert.checks import VerifyResult

_STYLE = {True: "green", False: "bold red", None: "cyan"}


def print_checks(console: Console, title: str, result: VerifyResult) -> None:
    against = result.against or "its own tokenizer metadata"
    console.print(f"[bold]{title}[/] checked against {against}")
    for check in result.checks:
        style = _STYLE[check.passed]
        console.print(f"  [{style}]{check.mark}[/] {check.name}: {check.detail}", highlight=False)


class RichProgress:
    """``progress.Progress`` drawn with rich: one bar per step, finished steps stay as a ✓ line."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end()
        self._bar.stop()

    def _end(self) -> None:
        if self._task is not None:
            self._bar.remove_task(self._task)
            self._task = None

    def task(self, description: str, total: float | None = None) -> None:
        self._end()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, done: float, total: float | None = None) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=done, total=total if total else None)

    def finish(self, summary: str) -> None:
        self._end()
        self.console.print(f"[green]✓[/] {summary}", highlight=False)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]![/] {message}", highlight=False)

    def checks(self, title: str, result: VerifyResult) -> None:
        self._end()
        print_checks(self.console, title, result)


def artifacts_table(folders: dict[str, Path]) -> Table:
    """One row per artifact: size, bits/weight, imatrix, and the measured quantization loss."""
    from jmed_edge.manifest import read_manifest

    folder_names = {Path(f).parent for f in folders.values()}
    where = f" in {next(iter(folder_names))}" if len(folder_names) == 1 else ""
    table = Table(title=f"GGUF artifacts{where} (KL / top-1 against the 16-bit GGUF, held-out text)")
    for column in ("type", "size", "bits/w", "imatrix", "KL ja", "KL en", "top-1 ja", "top-1 en"):
        table.add_column(column, justify="left" if column in ("type", "imatrix") else "right")
    for name, folder in folders.items():
        manifest = read_manifest(Path(folder))
        assert manifest is not None
        d = manifest.details
        kl = next((c.get("kl") for c in manifest.verification.get("checks", []) if c.get("kl")), None) or {}

        def cell(lang: str, key: str, fmt: str, kl=kl) -> str:
            return format(kl[lang][key], fmt) if lang in kl and key in kl[lang] else "-"

        size = d.get("size_bytes", 0) / 1024**2
        table.add_row(
            name,
            f"{size:,.1f} MB",
            f"{d.get('bits_per_weight', 0):.2f}",
            imatrix_cell(d),
            cell("ja", "kl_mean", ".4f"),
            cell("en", "kl_mean", ".4f"),
            cell("ja", "top1", ".1%"),
            cell("en", "top1", ".1%"),
        )
    return table


def imatrix_cell(details: dict[str, Any]) -> str:
    """``auto`` / ``file NAME`` when the artifact was quantized with an importance matrix,
    ``none`` when its type takes one and it was made without, ``-`` when the type takes none."""
    from jmed_edge.convert.quant_types import QUANT_TYPES

    record = details.get("imatrix") or {}
    if record.get("mode") == "file":
        return f"file {record.get('file', '')}".strip()
    if record.get("mode"):
        return str(record["mode"])
    row = QUANT_TYPES.get(str(details.get("quant", "")).upper())
    return "none" if row is not None and row.uses_imatrix else "-"
