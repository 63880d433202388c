"""Where shipped recipes, conversion profiles, calibration text and benchmark data live.

In a wheel they are package data under ``jmed_edge/_shipped``; in a source checkout (editable
install, tests) they are the top-level ``recipes/``, ``convert/``, ``benchmarks/`` and ``tui/``
folders. Callers never need to know which.
"""

from __future__ import annotations

import os
from pathlib import Path

from jmed_edge.errors import DataError

_PACKAGE = Path(__file__).resolve().parent
SHIPPED_TOPS = ("recipes", "convert", "benchmarks", "tui")


def shipped_root() -> Path:
    """Folder holding the shipped top-level data folders."""
    installed = _PACKAGE / "_shipped"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent


def shipped(relative: str) -> Path:
    """Path of a shipped file or folder, e.g. ``shipped("recipes/demo.yaml")``."""
    path = shipped_root() / relative
    if not path.exists():
        raise DataError(f"shipped file {relative} is missing from {shipped_root()}; reinstall jmed-edge")
    return path


def cache_home() -> Path:
    """Per-user cache for materialised models and built tools (``$JMED_EDGE_HOME`` overrides)."""
    if env := os.environ.get("JMED_EDGE_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jmed-edge"
