"""Horizontal bars of accuracy per artifact, per benchmark and language, in Unicode block characters."""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget

from jmed_edge.report.model import ReportData
from jmed_edge.report.recommend import SIGNIFICANCE

# Eighths of a cell, so a bar's end is drawn to 1/8 of a character.
EIGHTHS = " ▏▎▍▌▋▊▉"


def hbar(fraction: float, width: int) -> tuple[str, str]:
    """A bar ``fraction`` (0..1) of ``width`` cells long: (the bar, the empty track after it)."""
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    bar = "█" * full + (EIGHTHS[int((cells - full) * 8)].strip() if full < width else "")
    return bar, " " * (width - len(bar))


def _fit(name: str, width: int) -> str:
    if cell_len(name) <= width:
        return name + " " * (width - cell_len(name))
    while cell_len(name) > width - 1:
        name = name[:-1]
    return name + "…" + " " * (width - 1 - cell_len(name))


class AccuracyBars(Widget):
    """Accuracy of every artifact, one block per benchmark × language; the reference bar first."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "bars--title",
        "bars--ref",
        "bars--bar",
        "bars--loss",
        "bars--axis",
        "bars--track",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: ReportData | None = None

    def show(self, data: ReportData | None) -> None:
        self.data = data
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self._lines(width)))

    def render(self) -> Text:
        return Text("\n").join(self._lines(self.content_size.width or 80))

    def _lines(self, width: int) -> list[Text]:
        data = self.data
        if data is None:
            return [Text("Build a report to see the chart.")]
        styles = {name: self.get_component_rich_style(name, partial=True) for name in self.COMPONENT_CLASSES}
        names = [a.name for a in data.artifacts]
        name_w = min(max((cell_len(n) for n in names), default=8), 24)
        bar_w = max(10, width - name_w - 20)
        lines: list[Text] = []
        for bench in sorted({c.benchmark for c in data.cells}):
            for lang in data.langs():
                cells = [data.cell(n, bench, lang) for n in names]
                cells = [c for c in cells if c is not None]
                if not cells:
                    continue
                lines.append(
                    Text(
                        f"{bench} · {lang}  (accuracy %, Δ points vs {data.reference})", styles["bars--title"]
                    )
                )
                for c in cells:
                    is_ref = c.artifact == data.reference
                    line = Text(_fit(c.artifact, name_w) + " ")
                    bar, track = hbar(c.accuracy, bar_w)
                    line.append(bar, styles["bars--track"] + styles["bars--ref" if is_ref else "bars--bar"])
                    line.append(track, styles["bars--track"])
                    line.append(f" {100 * c.accuracy:5.1f}")
                    if not is_ref and c.loss_points is not None:
                        cmp = c.vs_reference
                        mark = (
                            "*"
                            if cmp is not None and cmp.difference < 0 and cmp.p_value < SIGNIFICANCE
                            else " "
                        )
                        delta = f" {-c.loss_points:+5.1f}{mark}"
                        line.append(delta, styles["bars--loss"] if mark == "*" else "")
                    lines.append(line)
                lines.append(Text(""))
        if lines:
            lines.append(Text(f"* significant loss (McNemar p < {SIGNIFICANCE:g})", styles["bars--axis"]))
        return lines or [Text("The report holds no accuracy results.")]
