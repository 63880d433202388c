"""The self-contained HTML report, opened in a real headless Chromium as a reader would open it.

Offline (every resource inlined: the page asks the network for nothing), every figure decoded
and drawn, tables readable on a 1280 px screen and on a phone (no sideways scrolling of the
page, text at least 12 px), and Japanese text drawn with a Japanese font rather than boxes.
Skipped, with the command that installs it, where Chromium is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jmed_edge.testing.browser import INSTALL_HINT, Browser, find_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason=f"Chromium is not installed: run {INSTALL_HINT}"),
]

GIB = 1024**3
# (width, height, mobile, device scale): a 1280 px desktop and a 390 px phone (iPhone 12-15 class)
VIEWPORTS = {"desktop": (1280, 900, False, 1.0), "phone": (390, 844, True, 3.0)}
CATEGORIES = ("循環器", "呼吸器", "消化器", "腎臓", "内分泌・代謝")
# Families fontconfig may pick for Japanese: IPA (the install script's), Noto CJK, Takao, VL, ...
JAPANESE_FONTS = ("IPAGothic", "IPAPGothic", "IPAexGothic", "Noto Sans CJK", "Noto Serif CJK", "TakaoGothic",
                  "VL Gothic", "Hiragino", "Yu Gothic", "Source Han")  # fmt: skip


def _write_run(root: Path, name: str, size: int, flags: dict[str, list[bool]]) -> None:
    folder = root / name / "igakuqa"
    folder.mkdir(parents=True)
    rows = []
    for lang, answers in flags.items():
        for i, ok in enumerate(answers):
            rows.append({"id": f"118A{i:02d}", "lang": lang, "gold": ["a"], "pred": ["a"] if ok else ["b"],
                         "correct": ok, "points": 1.0, "category": CATEGORIES[i % len(CATEGORIES)]})  # fmt: skip
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = {"artifact": str(root / "missing" / name), "artifact_name": name, "benchmark": "igakuqa",
               "benchmark_version": "1", "question_set_hash": "q", "sha256": f"sha-{name}", "size_bytes": size,
               "timings": {"load_seconds": 0.5, "questions_per_second": 3.0}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.report.build import build_report, write_report

    root = tmp_path_factory.mktemp("browser") / "bench"
    ref = [True] * 45 + [False] * 15
    _write_run(root, "med-7B-F16", 14 * GIB, {"ja": ref, "en": ref})
    _write_run(root, "med-7B-Q8_0", 7 * GIB, {"ja": [False, False, *ref[2:]], "en": ref})
    _write_run(root, "med-7B-Q4_K_M", 4 * GIB, {"ja": [False] * 9 + ref[9:], "en": [False, *ref[1:]]})
    data = build_report([root], "med-7B-F16", budget_bytes=8 * GIB, kl=False)
    out = write_report(data, root.parent / "report")
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_opens_offline_and_every_figure_renders(browser: Browser, report_html: Path, viewport: str) -> None:
    width, height, mobile, scale = VIEWPORTS[viewport]
    browser.open(report_html.as_uri(), width, height, mobile=mobile, scale=scale)
    fetched = [u for u in browser.requested_urls() if not u.startswith(("data:", "file:"))]
    assert fetched == [], f"the report fetched {fetched}: it must open offline"
    expected = report_html.read_text(encoding="utf-8").count("<img")
    images = browser.evaluate(
        "[...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,"
        " w: i.getBoundingClientRect().width, h: i.getBoundingClientRect().height}))"
    )
    assert expected >= 1 and len(images) == expected
    for image in images:
        assert image["ok"], f"figure {image['alt']!r} did not decode"
        assert 0.5 * min(width, 1100) < image["w"] <= width and image["h"] > 100, image


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_tables_are_readable(browser: Browser, report_html: Path, viewport: str) -> None:
    width, height, mobile, scale = VIEWPORTS[viewport]
    browser.open(report_html.as_uri(), width, height, mobile=mobile, scale=scale)
    page = browser.evaluate(
        "({inner: window.innerWidth, scroll: document.documentElement.scrollWidth,"
        " tables: [...document.querySelectorAll('table')].map(t => {"
        "   const box = t.parentElement; const cs = getComputedStyle(box);"
        "   return {w: t.getBoundingClientRect().width, boxw: box.getBoundingClientRect().width,"
        "           scrolls: ['auto', 'scroll'].includes(cs.overflowX),"
        "           font: parseFloat(getComputedStyle(t.querySelector('td,th')).fontSize)}; })})"
    )
    assert page["inner"] == width  # the page lays out at the device width (viewport meta)
    assert page["scroll"] <= width, "the page scrolls sideways: a table or figure is wider than the screen"
    assert page["tables"]
    for table in page["tables"]:
        assert table["font"] >= 12, f"table text is {table['font']} px"
        # a table wider than the screen scrolls inside its own box; the page itself does not move
        assert table["w"] <= table["boxw"] + 1 or table["scrolls"], table


def test_japanese_text_is_drawn_with_a_japanese_font(browser: Browser, report_html: Path) -> None:
    browser.open(report_html.as_uri(), 1280, 900)
    found = browser.evaluate(
        "(() => { const cell = [...document.querySelectorAll('td')].find(td => td.textContent.includes('循環器'));"
        " if (!cell) return false; cell.setAttribute('data-ja', ''); return true; })()"
    )
    assert found, "the report shows no per-category row with the Japanese specialty name"
    fonts = browser.fonts_for("td[data-ja]")
    japanese = [f for f in fonts if any(f["familyName"].startswith(name) for name in JAPANESE_FONTS)]
    assert japanese and sum(f["glyphCount"] for f in japanese) >= 3, f"drawn with {fonts}"
