"""RAM checks made before a stage starts, from the model's size, so that a stage that cannot fit
fails at once with the figure it needs instead of being killed halfway by the kernel.

The budget is the memory available now (``MemAvailable``), or ``JMED_EDGE_RAM_BUDGET`` (e.g.
``8GB``) where a machine is shared and a user wants to stay within a share of it.
"""

from __future__ import annotations

import os

from jmed_edge.errors import DependencyError
from jmed_edge.fsutil import human_bytes, parse_bytes

BUDGET_ENV = "JMED_EDGE_RAM_BUDGET"
# Python, torch and transformers imported, before any weight: 0.55-0.64 GB measured on the
# 135M-shape runs of benchmarks/perf/scale.py.
RUNTIME_BYTES = 640 * 1024**2


def ram_budget() -> int:
    """Bytes a stage may use: ``JMED_EDGE_RAM_BUDGET`` when set, else the memory available now."""
    raw = os.environ.get(BUDGET_ENV)
    if raw:
        return parse_bytes(raw)
    import psutil

    return psutil.virtual_memory().available


def ensure_ram(needed: int, what: str, hint: str) -> None:
    """Fail before starting when ``needed`` bytes exceed the budget; ``hint`` says what to do."""
    budget = ram_budget()
    if needed > budget:
        source = f"{BUDGET_ENV}={os.environ[BUDGET_ENV]}" if os.environ.get(BUDGET_ENV) else "available now"
        raise DependencyError(
            f"{what} needs about {human_bytes(needed)} of RAM but only {human_bytes(budget)} is {source}; {hint}"
        )
