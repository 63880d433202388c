"""Screenshot of an HTML report in headless Chromium, as the README shows it.

    python tests/report_screenshot.py runs/demo/report/report.html --out tui/screenshots/report-html.png
    python tests/report_screenshot.py --sample --out tui/screenshots/report-html.png

``--sample`` builds the report the browser test uses (three artifacts of a 7B-sized model on an
IgakuQA-shaped benchmark, Japanese specialty names) instead of reading one. Needs Chromium:
``tests/install-chromium.sh``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", type=Path, help="a report.html")
    parser.add_argument("--sample", action="store_true", help="build the browser test's sample report")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()

    from jmed_edge.testing.browser import Browser

    with tempfile.TemporaryDirectory() as work:
        report = args.report
        if args.sample:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from test_report_browser import report_html

            class _Factory:
                def mktemp(self, name: str) -> Path:
                    path = Path(work) / name
                    path.mkdir()
                    return path

            report = report_html.__wrapped__(_Factory())
        if report is None:
            parser.error("pass a report.html or --sample")
        with Browser() as browser:
            browser.open(Path(report).resolve().as_uri(), args.width, args.height)
            browser.screenshot(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
