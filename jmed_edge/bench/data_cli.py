"""``jmed-edge data check NAME:PATH``: read a benchmark without any model and show what was read."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

EXAMPLES = """examples:
  jmed-edge data check jmed-sample
  jmed-edge data check igakuqa:~/IgakuQA/data
  jmed-edge data check medqa:data_clean/questions/US/test.jsonl --json
  jmed-edge data list"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    check = sub.add_parser("check", help="load a benchmark and report records, languages and skipped lines")
    check.add_argument("spec", metavar="NAME[:PATH]", help="benchmark format and path (NAME alone: bundled)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    check.add_argument("--show", type=int, default=20, metavar="N", help="list at most N skipped records")
    check.set_defaults(func=run_check)
    listing = sub.add_parser("list", help="list the benchmark formats jmed-edge reads")
    listing.set_defaults(func=run_list)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)


def describe_benchmark(spec: str) -> dict[str, Any]:
    """What ``data check --json`` prints: counts by language, answer kinds, skipped records."""
    from jmed_edge.bench.registry import load_benchmark
    from jmed_edge.bench.scoring import rule

    bench = load_benchmark(spec, skip_bad=True)
    return {
        "benchmark": bench.name,
        "path": str(bench.path),
        "version": bench.version,
        "files": len(bench.files),
        "records": len(bench.records),
        "questions": len({q.id for q in bench.records}),
        "by_lang": bench.by_lang(),
        "dev": dict(sorted(Counter(q.lang for q in bench.dev).items())),
        "by_rule": dict(sorted(Counter(rule(q) for q in bench.records).items())),
        "multi_answer": sum(1 for q in bench.records if len(q.answer) > 1 and not q.accept_any),
        "choices": {str(k): v for k, v in sorted(Counter(len(q.choices) for q in bench.records).items())},
        "skipped": len(bench.skipped),
        "skipped_records": [{"where": s.where, "reason": s.reason} for s in bench.skipped],
        "repaired": sum(1 for q in bench.records if q.meta.get("repaired")),
        "repaired_records": [
            {"where": q.where, "lang": q.lang, "repair": q.meta["repaired"]}
            for q in bench.records
            if q.meta.get("repaired")
        ],
    }


def run_check(args: argparse.Namespace) -> int:
    report = describe_benchmark(args.spec)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 1 if report["skipped"] else 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"[bold]{report['benchmark']}[/] {report['path']}  ({report['files']} files, {report['version']})"
    )
    table = Table("language", "questions", "dev (shots)")
    for lang, n in report["by_lang"].items():
        table.add_row(lang, str(n), str(report["dev"].get(lang, 0)))
    console.print(table)
    rules = ", ".join(f"{k} {v}" for k, v in report["by_rule"].items())
    choices = ", ".join(f"{v}x{k}" for k, v in report["choices"].items())
    console.print(
        f"scoring rules: {rules}; multi-answer: {report['multi_answer']}; choices per question: {choices}"
    )
    if report["repaired"]:
        console.print(f"{report['repaired']} records repaired as they were read:")
        for item in report["repaired_records"][: args.show]:
            console.print(f"  {item['where']} ({item['lang']}): {item['repair']}", soft_wrap=True)
    if report["skipped"]:
        console.print(f"[yellow]{report['skipped']} records could not be read:[/]")
        for item in report["skipped_records"][: args.show]:
            console.print(f"  {item['where']}: {item['reason']}", soft_wrap=True)
        if report["skipped"] > args.show:
            console.print(f"  ... and {report['skipped'] - args.show} more (--show N, or --json)")
        console.print("bench fails on these unless run with --skip-bad, which skips and counts them")
        return 1
    console.print("[green]every record was read[/]")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from jmed_edge.bench.registry import BENCHMARKS, BUNDLED

    table = Table("name", "reads", "bundled")
    for entry in BENCHMARKS.entries():
        table.add_row(entry.name, entry.help, "yes" if entry.name in BUNDLED else "")
    Console().print(table)
    return 0
