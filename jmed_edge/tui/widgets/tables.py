"""Fill a DataTable with (header, rows) as the report's renderers and the artifact list give them."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from textual.widgets import DataTable


def fill_table(
    table: DataTable, head: Sequence[str], rows: Sequence[Sequence[str]], keys: Sequence[str] | None = None
) -> None:
    """Replace the table's columns and rows. Column widths are set from the content up front: a
    table refilled while on screen otherwise keeps drawing its cells at the header's width."""
    table.clear(columns=True)
    for i, label in enumerate(head):
        width = max([cell_len(label), *(cell_len(str(r[i])) for r in rows if i < len(r))])
        table.add_column(label, width=width, key=label)
    for n, row in enumerate(rows):
        table.add_row(*row, key=keys[n] if keys else None)
