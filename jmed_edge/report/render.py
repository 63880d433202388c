"""Write the report as Markdown, a self-contained HTML page (figures inlined) and JSON."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from jmed_edge.fsutil import human_bytes
from jmed_edge.report.model import ReportData


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


DECISION = {True: "yes", False: "no", None: "undecided"}


def decision_text(ok: bool | None, sequential: bool = False) -> str:
    return DECISION[ok] + (" (sequential)" if sequential else "")


def _ci(low: float, high: float) -> str:
    return f"[{low:+.1f}, {high:+.1f}]"


def accuracy_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """The accuracy-loss table, one row per artifact x benchmark x language."""
    max_loss = data.recommendation.max_loss_points
    with_points = any(c.vs_reference and c.vs_reference.points_delta_ci for c in data.cells)
    head = ["artifact", "benchmark", "lang", "n", "accuracy % [95% CI]", "points %",
            "Δ vs ref (pts) [95% CI]", f"non-inferior (-{max_loss:g} pt{'' if max_loss == 1 else 's'})", "p (McNemar)",
            "flips R→W / W→R"] + (["points Δ [95% CI]"] if with_points else [])  # fmt: skip
    with_tok = with_tokenizer_columns(data)
    if with_tok:  # beside the full Δ, so conversion and quantization loss are read side by side
        head[7:7] = ["tokenized unlike source", "Δ without them [95% CI]"]
    rows = []
    for c in sorted(
        data.cells, key=lambda c: (c.benchmark, c.lang, c.artifact != data.reference, c.artifact)
    ):
        cmp = c.vs_reference
        is_ref = cmp is None or c.artifact == data.reference
        row = [
            c.artifact + (" (ref)" if c.artifact == data.reference else ""),
            c.benchmark, c.lang, str(c.n),
            f"{_pct(c.accuracy)} [{_pct(c.ci.low)}, {_pct(c.ci.high)}]",
            _pct(c.points),
            "-" if is_ref else f"{cmp.delta:+.1f} {_ci(cmp.delta_ci.low, cmp.delta_ci.high)}",
            "-" if is_ref else decision_text(cmp.decision(max_loss), c.sequential is not None),
            "-" if is_ref else f"{cmp.p_value:.3g}",
            "-" if is_ref else f"{cmp.right_to_wrong} / {cmp.wrong_to_right}",
        ]  # fmt: skip
        if with_tok:
            row[7:7] = tokenizer_cells(cmp, c.artifact == data.reference)
        if with_points:
            row.append("-" if is_ref or cmp.points_delta_ci is None
                       else f"{cmp.points_delta:+.1f} {_ci(cmp.points_delta_ci.low, cmp.points_delta_ci.high)}")  # fmt: skip
        rows.append(row)
    return head, rows


def with_tokenizer_columns(data: ReportData) -> bool:
    """Whether any cell knows which questions its runs tokenized unlike the HF source."""
    return any(
        c.vs_reference is not None and c.vs_reference.tokenizer_divergent is not None for c in data.cells
    )


def tokenizer_cells(cmp, is_ref: bool) -> list[str]:
    """The divergent-question count and the Δ over the other questions ("-" where unknown)."""
    if cmp is None or cmp.tokenizer_divergent is None:
        return ["-", "-"]
    rest = cmp.delta_excluding_divergent
    if is_ref or rest is None:
        return [str(cmp.tokenizer_divergent), "-"]
    return [str(cmp.tokenizer_divergent), f"{rest.delta:+.1f} {_ci(rest.delta_ci.low, rest.delta_ci.high)}"]


_TOKENIZER_NOTE = (
    ' "Tokenized unlike source": questions (of n) for which the artifact or the reference feeds other '
    "token ids than the Hugging Face source tokenizer gives (prompt or answer continuations); "
    '"Δ without them" is the paired difference over the remaining questions. A loss that remains without '
    "them is the quantization's; one that disappears came from the conversion's tokenizer."
)


def category_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """Paired rows per category (IgakuQA specialty, MMLU subject), the largest losses first."""
    head = [
        "artifact",
        "benchmark",
        "lang",
        "category",
        "n",
        "Δ (pts) [95% CI]",
        "non-inferior",
        "flips R→W / W→R",
    ]
    ordered = sorted(
        data.by_category, key=lambda r: (r["delta"], r["delta_ci"]["low"], r["artifact"], r["category"])
    )
    rows = [[r["artifact"], r["benchmark"], r["lang"], r["category"], str(r["n"]),
             f"{r['delta']:+.1f} {_ci(r['delta_ci']['low'], r['delta_ci']['high'])}",
             DECISION[r["noninferior"]], f"{r['right_to_wrong']} / {r['wrong_to_right']}"]
            for r in ordered]  # fmt: skip
    return head, rows


def exam_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "exam", "lang", "n", "required % (必修)", "general % (一般・臨床)", "pass line %",
            "kinki picks", "passes"]  # fmt: skip
    rows = [[e["artifact"], f"{e['exam']}th", e["lang"], str(e["n"]), _pct(e["required_rate"]),
             _pct(e["general_rate"]), _pct(e["general_line"]), str(e["kinki_picks"]),
             "-" if e["passed"] is None else ("yes" if e["passed"] else "no") + ("" if e["complete"] else " (partial)")]
            for e in data.exams]  # fmt: skip
    return head, rows


def kinki_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "benchmark", "question id", "lang", "contraindicated pick", "reference answered"]
    rows = [[k["artifact"], k["benchmark"], k["id"], k["lang"], ", ".join(k["picked"]),
             ", ".join(k["reference_pred"]) if isinstance(k["reference_pred"], list) else str(k["reference_pred"] or "-")]
            for k in data.new_kinki]  # fmt: skip
    return head, rows


def generation_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "benchmark", "lang", "exact match %", "Gestalt score", "Gestalt-nearest acc %"]
    rows = [
        [c.artifact, c.benchmark, c.lang, _pct(c.generation.get("exact_match")),
         _num(c.generation.get("gestalt_score"), "{:.3f}"), _pct(c.generation.get("gestalt_nearest_accuracy"))]
        for c in data.cells if c.generation
    ]  # fmt: skip
    return head, rows


def kl_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "lang", "mean KL", "p99 KL", "top-1 agree %", "perplexity", "positions"]
    rows = []
    for a in data.artifacts:
        for lang, kl in sorted(a.kl.items(), key=lambda kv: (kv[0] != "ja", kv[0])):
            rows.append([a.name, lang, _num(kl.get("mean_kl"), "{:.4f}"), _num(kl.get("p99_kl"), "{:.4f}"),
                         _pct(kl.get("top1")), _num(kl.get("perplexity"), "{:.2f}"), str(kl.get("positions", "-"))])  # fmt: skip
    return head, rows


def perf_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    head = [
        "artifact",
        "format",
        "quant",
        "file size",
        "peak RAM",
        "load s",
        "prompt tok/s",
        "gen tok/s",
        "questions/s",
    ]
    rows = [
        [a.name, a.format, a.quant, human_bytes(a.size_bytes),
         human_bytes(a.peak_rss_bytes) if a.peak_rss_bytes else "-", _num(a.load_seconds, "{:.2f}"),
         _num(a.prompt_tokens_per_second), _num(a.decode_tokens_per_second), _num(a.questions_per_second, "{:.2f}")]
        for a in data.artifacts
    ]  # fmt: skip
    return head, rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _recommendation_text(data: ReportData) -> str:
    rec = data.recommendation
    head = (
        "**Recommended (certified non-inferior)**" if rec.certified
        else "**Provisional choice (not certified)**" if rec.provisional
        else "**No recommendation**"
    )  # fmt: skip
    lines = [f"{head}: {rec.reason}"]
    if rec.decisions:
        lines.append("Decisions (every benchmark and language, 95% interval against "
                     f"-{rec.max_loss_points:g} point{'' if rec.max_loss_points == 1 else 's'}): "
                     + "; ".join(f"{name}: {verdict}" for name, verdict in rec.decisions.items()))  # fmt: skip
    if rec.significant_losses:
        lines.append(
            "Statistically significant losses (McNemar p < 0.05): " + "; ".join(rec.significant_losses)
        )
    else:
        lines.append("No artifact lost accuracy significantly (McNemar p < 0.05) against the reference; "
                     "that alone does not show that nothing was lost (see the intervals).")  # fmt: skip
    from jmed_edge.report.exam import exam_sentence

    lines += [exam_sentence(e) for e in data.exams]
    if data.new_kinki:
        lines.append(f"**{len(data.new_kinki)} contraindicated (禁忌肢) answers** picked where the reference "
                     "did not: " + ", ".join(f"{k['artifact']} {k['id']}/{k['lang']}" for k in data.new_kinki))  # fmt: skip
    return "\n\n".join(lines)


_NOTES = (
    "Accuracy intervals are 95% percentile bootstrap intervals over questions. Δ is paired against the "
    "reference on the same questions, with its 95% interval by Newcombe's hybrid score method for paired "
    "proportions (Stat Med 1998;17:2635, method 10); the points score's Δ has a paired bootstrap interval. "
    "An artifact is non-inferior when the whole interval lies above minus the allowed loss, inferior when "
    "it lies below, and undecided otherwise. p is McNemar's exact test on the flipped answers. Flips count "
    "answers that changed from right to wrong (R→W) and wrong to right (W→R): accuracy can stay flat "
    "while many answers flip. KL divergence, top-1 agreement and perplexity are measured on the bundled "
    "bilingual medical text, per language. Timings are from this machine and vary with its load."
)


def _exam_source() -> str:
    from jmed_edge.report.exam import SOURCE

    return SOURCE


def sections(data: ReportData, figures: dict[str, Path]) -> list[tuple[str, str, tuple | None, str | None]]:
    """(title, intro text, table, figure key) in report order; shared by Markdown and HTML."""
    return [
        ("Recommendation", _recommendation_text(data), None, None),
        (
            "Accuracy against the reference",
            f"Reference: **{data.reference}**." + (_TOKENIZER_NOTE if with_tokenizer_columns(data) else ""),
            accuracy_rows(data),
            "accuracy_vs_size",
        ),
        ("Answer flips", "", None, "flips"),
        ("Categories, largest losses first", "", category_rows(data), None),
        (
            "The licensing exam's own pass rules",
            "IgakuQA scored as the exam is: required section (blocks B and E, clinical questions 3 points) "
            "at least 80%, general section at least that year's cut-off, at most 3 contraindicated answers. "
            f"Pass lines: {_exam_source()}."
            if data.exams
            else "",
            exam_rows(data),
            None,
        ),
        ("Contraindicated answers the reference did not pick", "", kinki_rows(data), None),
        ("Generation metrics", "", generation_rows(data), None),
        ("KL divergence against the reference", "", kl_rows(data), "kl_divergence"),
        ("Size, memory and speed", "", perf_rows(data), None),
    ]


def write_markdown(data: ReportData, figures: dict[str, Path], out: Path) -> None:
    parts = ["# jmed-edge quantization report\n", _NOTES + "\n"]
    for title, intro, table, fig in sections(data, figures):
        if table is not None and not table[1] and not intro:
            continue
        parts.append(f"## {title}\n")
        if intro:
            parts.append(intro + "\n")
        if table is not None:
            parts.append(_md_table(*table))
        if fig and fig in figures:
            parts.append(f"![{title}]({figures[fig].name})\n")
    out.write_text("\n".join(parts), encoding="utf-8")


_CSS = """
body{font-family:system-ui,"Hiragino Sans","Noto Sans CJK JP",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;border:1px solid #eee}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}.scroll table{margin:0}
.rec{background:#eef7ee;border-left:4px solid #27ae60;padding:.6em 1em}.rec.warn{background:#fff8e6;border-left-color:#e67e22}.note{color:#555;font-size:.9em}
"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    # a table wider than a phone's screen scrolls inside its own box, not the whole page
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def _inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _md_bold_to_html(text: str) -> str:
    out, bold = [], False
    for i, part in enumerate(html.escape(text).split("**")):
        if i:
            bold = not bold
            out.append("<strong>" if bold else "</strong>")
        out.append(part)
    return "".join(out).replace("\n\n", "<br><br>")


def write_html(data: ReportData, figures: dict[str, Path], out: Path) -> None:
    parts = [f"<!doctype html><html lang='en'><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'><title>jmed-edge report</title><style>{_CSS}</style>",
             "<h1>jmed-edge quantization report</h1>", f"<p class='note'>{html.escape(_NOTES)}</p>"]  # fmt: skip
    for title, intro, table, fig in sections(data, figures):
        if table is not None and not table[1] and not intro:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if intro:
            warn = "" if data.recommendation.certified else " warn"
            cls = f" class='rec{warn}'" if title == "Recommendation" else ""
            parts.append(f"<p{cls}>{_md_bold_to_html(intro)}</p>")
        if table is not None:
            parts.append(_html_table(*table))
        if fig and fig in figures:
            parts.append(f"<img alt='{html.escape(title)}' src='{_inline_png(figures[fig])}'>")
    parts.append("</html>")
    out.write_text("\n".join(parts), encoding="utf-8")


def write_json(data: ReportData, out: Path) -> None:
    out.write_text(
        json.dumps(data.to_json(), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
