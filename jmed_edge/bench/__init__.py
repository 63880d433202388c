"""The bench stage: read medical benchmarks in their published formats and score any artifact.

Public API::

    from jmed_edge.bench import BenchSettings, run_benchmark, load_benchmark
    bench = load_benchmark("igakuqa:path/to/IgakuQA/data")    # records + skipped
    summary = run_benchmark("runs/gguf/Q4_K_M", "jmed-sample", "runs/bench", BenchSettings())

Names are imported lazily so that ``import jmed_edge.bench`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jmed_edge.bench.records import Benchmark, Question, Skipped
    from jmed_edge.bench.registry import load_benchmark
    from jmed_edge.bench.runner import run_benchmark
    from jmed_edge.bench.settings import BenchProgress, BenchSettings, Summary

_EXPORTS = {
    "Benchmark": "jmed_edge.bench.records",
    "Question": "jmed_edge.bench.records",
    "Skipped": "jmed_edge.bench.records",
    "load_benchmark": "jmed_edge.bench.registry",
    "run_benchmark": "jmed_edge.bench.runner",
    "BenchProgress": "jmed_edge.bench.settings",
    "BenchSettings": "jmed_edge.bench.settings",
    "Summary": "jmed_edge.bench.settings",
}
__all__ = [
    "BenchProgress",
    "BenchSettings",
    "Benchmark",
    "Question",
    "Skipped",
    "Summary",
    "load_benchmark",
    "run_benchmark",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jmed_edge.bench' has no attribute {name!r}")
