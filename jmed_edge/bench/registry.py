"""The benchmark registry: format name -> loader, and ``load_benchmark("NAME:PATH")``.

A spec is ``NAME:PATH`` (a published file or folder in that format) or ``NAME`` alone for a
benchmark bundled with jmed-edge (``jmed-sample``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jmed_edge.bench.records import Benchmark, Collector, LoadedSet, hash_files
from jmed_edge.errors import DataError
from jmed_edge.registry import Registry

_L = "jmed_edge.bench.loaders."
# name -> loader (``(path, collector) -> LoadedSet``), imported on first use.
BENCHMARKS: Registry[Callable[[Path, Collector], LoadedSet]] = Registry("benchmark", error=DataError)
for _name, _target, _help in (
    ("jmed-sample", _L + "igakuqa:load_igakuqa", "bundled 48-question ja/en sample in IgakuQA layout"),
    (
        "igakuqa",
        _L + "igakuqa:load_igakuqa",
        "IgakuQA folder of {exam}-{block}.jsonl (+ _translate, _metadata)",
    ),
    ("jjsimqa", _L + "igakuqa:load_igakuqa", "a JSONL file in the IgakuQA record layout"),
    ("medqa", _L + "medqa:load_medqa", "MedQA JSONL: question, options, answer_idx"),
    ("medmcqa", _L + "medqa:load_medmcqa", "MedMCQA JSONL: question, opa..opd, cop"),
    ("pubmedqa", _L + "pubmedqa:load_pubmedqa", "PubMedQA ori_pqal.json (+ test_ground_truth.json)"),
    ("mmlu", _L + "mmlu:load_mmlu", "MMLU CSV files, medical subjects"),
    ("jmmlu", _L + "mmlu:load_jmmlu", "JMMLU CSV files, medical subjects"),
):
    BENCHMARKS.add(_name, _target, _help)

# Benchmarks shipped with jmed-edge: a spec of NAME alone reads these.
BUNDLED = {"jmed-sample": "benchmarks/data/jmed-sample"}


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """``"igakuqa:data/2022"`` -> ("igakuqa", Path("data/2022")); ``"jmed-sample"`` -> (name, None)."""
    name, sep, rest = spec.strip().partition(":")
    if not name:
        raise DataError(f'benchmark spec "{spec}" names no benchmark; write NAME:PATH, e.g. medqa:test.jsonl')
    return name.strip().lower(), (Path(rest).expanduser() if sep and rest.strip() else None)


def load_benchmark(spec: str, *, skip_bad: bool = False, label: str | None = None) -> Benchmark:
    """Read a benchmark; every unreadable record fails naming ``file:line`` unless ``skip_bad``."""
    from jmed_edge.resources import shipped

    name, path = parse_spec(spec)
    loader = BENCHMARKS.get(name)
    if path is None:
        if name not in BUNDLED:
            raise DataError(f"benchmark {name} is not bundled; give its files: --benchmark {name}:PATH")
        path = shipped(BUNDLED[name])
    if not path.exists():
        raise DataError(f"benchmark path {path} does not exist; check the path after {name}:")
    collector = Collector(skip_bad)
    loaded = loader(path, collector)
    if not loaded.records:
        raise DataError(
            f"{path} holds no readable {name} questions ({len(collector.skipped)} records skipped)"
        )
    root = path if path.is_dir() else path.parent
    return Benchmark(
        name=name,
        label=label or name,
        path=path,
        records=loaded.records,
        dev=loaded.dev,
        skipped=collector.skipped,
        files=loaded.files,
        content_hash=hash_files(loaded.files, root),
    )
