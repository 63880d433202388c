"""One exception hierarchy for every user-facing failure.

The CLI prints ``str(error)`` as a single line and exits non-zero, so each message states what
was expected, what was found and what to do next. Anything that is *not* a ``JmedError`` is a
bug and gets a traceback under ``--debug``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class JmedError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(JmedError):
    """A recipe, preset or command-line option is invalid."""


class DataError(JmedError):
    """A data or benchmark file is missing, empty or malformed."""


class ModelError(JmedError):
    """A model folder, GGUF or ONNX file is missing, corrupt or unsupported."""


class ArtifactError(JmedError):
    """An artifact folder or its manifest is missing, incomplete or mismatched."""


class VerificationError(JmedError):
    """A conversion or merge failed its checks against the source."""


class DependencyError(JmedError):
    """A required library, tool or hardware feature is not available."""


class DiskSpaceError(JmedError):
    """Not enough free space to write an artifact."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""
