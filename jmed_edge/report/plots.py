"""Report figures as PNG files (also embedded in the HTML): size vs accuracy, KL, flips."""

from __future__ import annotations

from pathlib import Path

from jmed_edge.report.model import ReportData
from jmed_edge.report.stats import pareto_front

_LANG_COLOURS = {"ja": "#c0392b", "en": "#2471a3"}


# Japanese fonts, most to least preferred, by family and by the file names their packages install
# (fonts-ipaexfont, fonts-ipafont, fonts-noto-cjk, macOS, Windows).
_JA_FAMILIES = ("IPAexGothic", "IPAGothic", "IPAPGothic", "Noto Sans CJK JP", "Noto Sans JP",
                "Hiragino Sans", "Yu Gothic", "MS Gothic", "TakaoGothic", "VL Gothic")  # fmt: skip
_JA_FILES = ("ipaexg", "ipag", "notosanscjk", "notosansjp", "hiragino", "yugoth", "msgothic",
             "takaogothic", "vl-gothic")  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    _japanese_fallback(matplotlib)
    return plt


def _japanese_fallback(matplotlib) -> str | None:
    """Let figures draw Japanese (artifact and category names) instead of empty boxes.

    Matplotlib falls back glyph by glyph along ``font.family`` (3.6+), so a Japanese family goes
    after DejaVu Sans. Its font list is cached when matplotlib is first imported, and a font
    installed later is not in it: those are added from the system's font files by name."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    found = next((f for f in _JA_FAMILIES if f in known), None)
    if found is None:
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in _JA_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                    continue
        known = {f.name for f in font_manager.fontManager.ttflist}
        found = next((f for f in _JA_FAMILIES if f in known), None)
    if found is None:
        import logging

        logging.getLogger(__name__).warning(
            "no Japanese font found: Japanese names in figures show as boxes "
            "(install one, e.g. apt install fonts-ipafont-gothic or fonts-noto-cjk)"
        )
        return None
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", found]
    return found


def _mb_formatter(minor: bool = False):
    """Plain "100", "200" on a log axis instead of 10^2 and 2x10^2 (minor ticks: 2, 3, 5 only)."""
    from matplotlib.ticker import FuncFormatter

    def fmt(value: float, _pos: int) -> str:
        if minor and f"{value:.0e}"[0] not in "235":
            return ""
        return f"{value:g}"

    return FuncFormatter(fmt)


def _tick_style(labels: list[str]) -> dict:
    """Upright tick labels while they are short; slanted once they would run into each other."""
    longest = max((len(line) for label in labels for line in label.splitlines()), default=0)
    slant = longest > 9
    return {"labels": labels, "rotation": 30 if slant else 0, "ha": "right" if slant else "center",
            "fontsize": 8}  # fmt: skip


def accuracy_vs_size(data: ReportData, out: Path) -> Path:
    plt = _pyplot()
    langs = data.langs()
    fig, axes = plt.subplots(1, len(langs), figsize=(5.5 * len(langs), 4.2), squeeze=False)
    sizes = {a.name: a.size_bytes / 1024**2 for a in data.artifacts}
    names = data.short_names()
    for ax, lang in zip(axes[0], langs, strict=True):
        for bench in sorted({c.benchmark for c in data.cells if c.lang == lang}):
            cells = [c for c in data.cells if c.lang == lang and c.benchmark == bench]
            pts = [(sizes[c.artifact], 100 * c.accuracy) for c in cells]
            front = pareto_front(pts)
            ax.errorbar(
                [p[0] for p in pts], [p[1] for p in pts],
                yerr=[[100 * (c.accuracy - c.ci.low) for c in cells], [100 * (c.ci.high - c.accuracy) for c in cells]],
                fmt="o", color=_LANG_COLOURS.get(lang, "#555"), alpha=0.8, capsize=3, label=bench,
            )  # fmt: skip
            ordered = sorted(front, key=lambda i: pts[i][0])
            ax.plot([pts[i][0] for i in ordered], [pts[i][1] for i in ordered], "--", color="#777",
                    label="Pareto front" if bench == sorted({c.benchmark for c in cells})[0] else None)  # fmt: skip
            # Labels alternate above and below in size order, so neighbours do not overprint.
            for rank, (c, (x, y)) in enumerate(sorted(zip(cells, pts, strict=True), key=lambda cp: cp[1][0])):
                ax.annotate(names.get(c.artifact, c.artifact), (x, y), textcoords="offset points",
                            xytext=(5, 5 if rank % 2 == 0 else -11), fontsize=8)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_mb_formatter())
        low, high = ax.get_xlim()
        if high / max(low, 1e-9) < 30:  # labelled minor ticks only while they cannot crowd
            ax.xaxis.set_minor_formatter(_mb_formatter(minor=True))
        ax.set_xlabel("file size (MB, log scale)")
        ax.set_ylabel("accuracy (%) with 95% CI")
        ax.set_title(f"{data.common_name()}: accuracy vs size ({lang})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def kl_per_quant(data: ReportData, out: Path) -> Path | None:
    rows = [
        a for a in data.artifacts if a.kl and a.name != data.reference
    ]  # the reference is 0 by definition
    if not rows:
        return None
    plt = _pyplot()
    names = data.short_names()
    langs = sorted({lang for a in rows for lang in a.kl}, key=lambda lang: (lang != "ja", lang))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4))
    width = 0.8 / len(langs)
    for i, lang in enumerate(langs):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [a.kl.get(lang, {}).get("mean_kl", 0.0) for a in rows], width,
               color=_LANG_COLOURS.get(lang, "#555"), label=f"{lang} mean KL")  # fmt: skip
        ax.scatter(xs, [a.kl.get(lang, {}).get("p99_kl", 0.0) for a in rows], marker="_", s=200,
                   color="black", label="p99 KL" if i == 0 else None)  # fmt: skip
    centres = [j + width * (len(langs) - 1) / 2 for j in range(len(rows))]
    ax.set_xticks(centres, **_tick_style([names[a.name] for a in rows]))
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylabel(f"KL divergence vs {names.get(data.reference, data.reference)} (nats)")
    ax.set_title(f"{data.common_name()}: KL divergence on held-out medical text", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def flips(data: ReportData, out: Path) -> Path | None:
    order = {a.name: i for i, a in enumerate(data.artifacts)}
    cells = sorted(
        (c for c in data.cells if c.vs_reference is not None and c.artifact != data.reference),
        key=lambda c: (order.get(c.artifact, len(order)), c.benchmark, c.lang != "ja", c.lang),
    )
    if not cells:
        return None
    plt = _pyplot()
    names = data.short_names()
    one_benchmark = len({c.benchmark for c in cells}) == 1
    labels = [
        f"{names.get(c.artifact, c.artifact)}\n{c.lang if one_benchmark else f'{c.benchmark}/{c.lang}'}"
        for c in cells
    ]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(cells) + 2), 4))
    xs = range(len(cells))
    ax.bar(xs, [c.vs_reference.right_to_wrong for c in cells], color="#c0392b", label="right → wrong")
    ax.bar(xs, [c.vs_reference.wrong_to_right for c in cells],
           bottom=[c.vs_reference.right_to_wrong for c in cells], color="#27ae60", label="wrong → right")  # fmt: skip
    ax.set_xticks(list(xs), **_tick_style(labels))
    ax.set_ylabel("questions")
    ax.set_title(
        f"{data.common_name()}: answer flips against {names.get(data.reference, data.reference)}", fontsize=10
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_all(data: ReportData, folder: Path) -> dict[str, Path]:
    made = {
        "accuracy_vs_size": accuracy_vs_size(data, folder / "accuracy_vs_size.png"),
        "kl_divergence": kl_per_quant(data, folder / "kl_divergence.png"),
        "flips": flips(data, folder / "flips.png"),
    }
    return {k: v for k, v in made.items() if v is not None}
