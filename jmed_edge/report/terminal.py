"""A short report in the terminal: one row per artifact, then the recommendation.

The full tables (intervals, p-values, perplexity, speed) live in report.md / report.html; this
summary has to fit an 80-column terminal, so artifact names lose the prefix they all share.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jmed_edge.fsutil import human_bytes
from jmed_edge.report.model import ReportData
from jmed_edge.report.recommend import SIGNIFICANCE, decision
from jmed_edge.report.tokenization import divergence_lines

MARKS = {"certified": "✓", "inferior": "✗", "undecided": "?", "reference": "ref"}


def _short(x: float) -> str:
    """One decimal near the margin, whole points further out (the column must fit 80 columns)."""
    return f"{x:+.1f}" if abs(x) < 10 else f"{x:+.0f}"


def summary_table(data: ReportData) -> Table:
    names = data.short_names()
    pairs = sorted({(c.benchmark, c.lang) for c in data.cells}, key=lambda p: (p[0], p[1] != "ja", p[1]))
    one_benchmark = len({b for b, _ in pairs}) == 1
    kl_langs = sorted({lang for a in data.artifacts for lang in a.kl}, key=lambda x: (x != "ja", x))
    ref_name = names.get(data.reference, data.reference)
    title = f"{data.common_name()}: accuracy % [95% interval of Δ points vs {ref_name}]"
    max_loss = data.recommendation.max_loss_points
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1),
                  collapse_padding=True, pad_edge=False, show_edge=False)  # fmt: skip
    table.add_column("artifact", no_wrap=True, min_width=min(max(map(len, names.values()), default=8), 24))
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("RAM", justify="right", no_wrap=True)
    # Two language columns fit on one line each; with more benchmarks a cell may wrap instead of losing its Δ.
    for bench, lang in pairs:
        table.add_column(
            lang if one_benchmark else f"{bench} {lang}", justify="right", no_wrap=len(pairs) <= 2
        )
    for lang in kl_langs:
        table.add_column(f"KL {lang}", justify="right", no_wrap=True)
    table.add_column("flips", justify="right", no_wrap=True)
    table.add_column("ok", justify="center", no_wrap=True)
    for a in data.artifacts:
        is_ref = a.name == data.reference
        row = [names[a.name], human_bytes(a.size_bytes),
               human_bytes(a.peak_rss_bytes) if a.peak_rss_bytes else "-"]  # fmt: skip
        lost = gained = compared = 0
        for bench, lang in pairs:
            cell = data.cell(a.name, bench, lang)
            if cell is None:
                row.append("-")
                continue
            cmp = cell.vs_reference
            text = f"{100 * cell.accuracy:.1f}"
            if cmp is not None and not is_ref:
                star = "*" if cmp.p_value < SIGNIFICANCE and cmp.difference < 0 else ""
                text += f" [{_short(cmp.delta_ci.low)},{_short(cmp.delta_ci.high)}]{star}"
                lost, gained = lost + cmp.right_to_wrong, gained + cmp.wrong_to_right
                compared += 1
            row.append(text)
        for lang in kl_langs:
            mean = a.kl.get(lang, {}).get("mean_kl")
            row.append("ref" if is_ref else "-" if mean is None else f"{mean:.3f}")
        row.append("ref" if is_ref else f"{lost}/{gained}" if compared else "-")
        verdict = data.recommendation.decisions.get(a.name) or decision(data.cells, a.name, max_loss)
        row.append(MARKS.get(verdict, "?"))
        table.add_row(*row, style="bold" if a.name == data.recommendation.chosen else None)
    table.caption = (
        f"ok: ✓ certified (interval above -{max_loss:g} pt{'' if max_loss == 1 else 's'}), ✗ loses more, "
        "? undecided · "
        "* McNemar p<0.05 · KL: mean · flips: R→W/W→R"
    )
    table.caption_justify = "left"
    return table


def print_summary(data: ReportData, console: Console) -> None:
    console.print(summary_table(data))
    from jmed_edge.report.exam import exam_sentence

    rec = data.recommendation
    console.print(
        f"[bold green]recommended:[/] {escape(rec.reason)}"
        if rec.certified
        else f"[bold yellow]recommended:[/] {escape(rec.reason)}"
        if rec.chosen
        else f"[bold yellow]no recommendation:[/] {escape(rec.reason)}",
        highlight=False,
    )
    for loss in rec.significant_losses:
        console.print(f"[red]significant loss:[/] {escape(loss)}", highlight=False)
    for entry in data.exams:
        console.print(escape(exam_sentence(entry)), highlight=False)
    for line in divergence_lines(data.cells, data.reference, data.short_names()):
        console.print(f"[yellow]{escape(line)}[/]", highlight=False)
    if data.new_kinki:
        ids = ", ".join(f"{k['artifact']} {k['id']}/{k['lang']}" for k in data.new_kinki[:10])
        more = f" (+{len(data.new_kinki) - 10} more in report.md)" if len(data.new_kinki) > 10 else ""
        console.print(f"[red]contraindicated answers the reference did not pick:[/] {escape(ids)}{more}",
                      highlight=False)  # fmt: skip
