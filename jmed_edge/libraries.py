"""What third-party libraries may do in a jmed-edge process: no hub lookups, no noise on stderr.

Two jobs, both done before the libraries are imported (through the environment and
``sys.modules``, so nothing heavy loads here):

* ``keep_offline`` stops dependencies from looking for code or data on a hub at run time.
  bitsandbytes' CPU backend, on a CPU with AVX-512 BF16, asks the ``kernels`` package to fetch
  compiled code from the Hugging Face hub (``kernels-community/quantization-bitsandbytes``);
  online it downloads and runs it, offline it warns. Neither bitsandbytes (0.50) nor ``kernels``
  (0.19) documents a switch for that call, and transformers 5 requires ``kernels``, so it cannot
  be left uninstalled: the import is blocked instead, and bitsandbytes takes its built-in CPU
  kernels (its own ``except`` path). transformers' own hub kernels have a documented switch,
  ``USE_HUB_KERNELS=OFF``.
* ``route_library_output`` keeps what a user reads to the project's own lines: library log
  records and Python warnings (deprecations, hub-offline notices) go to a log file, transformers'
  loaders draw no tqdm bars, and the project's own warnings print as ``warning: ...``. With
  ``--debug`` everything goes to stderr, as the libraries wrote it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# Loggers of libraries that write notices a user cannot act on. transformers is absent: it
# installs its own stderr handler, and is quietened through its documented environment variable.
LIBRARY_LOGGERS = (
    "accelerate",
    "bitsandbytes",
    "datasets",
    "filelock",
    "huggingface_hub",
    "kernels",
    "onnxruntime",
    "peft",
    "py.warnings",  # every warnings.warn(), once logging.captureWarnings is on
    "torch",
    "urllib3",
)
HUB_MODULES_BLOCKED = ("kernels",)


def keep_offline() -> None:
    """Make dependencies take their built-in code paths instead of fetching code from a hub."""
    os.environ.setdefault("USE_HUB_KERNELS", "OFF")  # transformers' switch for hub kernels
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in HUB_MODULES_BLOCKED:
        # None in sys.modules makes `import kernels` raise ImportError and find_spec() return None,
        # which is how transformers' is_kernels_available() and bitsandbytes' fallback test for it.
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def log_file() -> Path:
    from jmed_edge.resources import cache_home

    return cache_home() / "logs" / "jmed-edge.log"


class _ProjectFormatter(logging.Formatter):
    """``warning: ...`` / ``error: ...`` lines, the way the CLI prints its own errors."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def route_library_output(debug: bool = False, path: Path | None = None) -> Path | None:
    """Configure logging for a jmed-edge command; returns the log file libraries write to.

    Idempotent: a second call (the TUI starting a stage) replaces the handlers it added.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" tqdm bars
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_jmed_edge", False)]:
        root.removeHandler(handler)
    stderr = logging.StreamHandler()
    stderr._jmed_edge = True  # type: ignore[attr-defined]
    if debug:
        stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.DEBUG)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
    else:
        stderr.setFormatter(_ProjectFormatter())
        root.setLevel(logging.WARNING)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    root.addHandler(stderr)
    logging.captureWarnings(True)
    if debug:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).propagate = True
        return None
    target = path or log_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(target, delay=True, encoding="utf-8")
    except OSError:  # a read-only cache: the notices are dropped rather than printed
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_jmed_edge", False)]:
            logger.removeHandler(old)
        handler._jmed_edge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return target
