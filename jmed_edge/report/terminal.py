"""A short report in the terminal: the accuracy table and the recommendation."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from jmed_edge.report.model import ReportData
from jmed_edge.report.render import accuracy_rows, kl_rows


def print_summary(data: ReportData, console: Console) -> None:
    head, rows = accuracy_rows(data)
    table = Table(title=f"accuracy against {data.reference}", title_justify="left")
    for h in head:
        table.add_column(h, justify="left" if h in ("artifact", "benchmark", "lang") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    head, rows = kl_rows(data)
    if rows:
        kl = Table(title="KL divergence on bilingual medical text", title_justify="left")
        for h in head:
            kl.add_column(h, justify="left" if h in ("artifact", "lang") else "right")
        for row in rows:
            kl.add_row(*row)
        console.print(kl)
    rec = data.recommendation
    console.print(
        f"[bold green]recommended:[/] {rec.reason}"
        if rec.chosen
        else f"[bold yellow]no recommendation:[/] {rec.reason}"
    )
    for loss in rec.significant_losses:
        console.print(f"[red]significant loss:[/] {loss}")
