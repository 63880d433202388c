"""The append-only predictions file that makes a benchmark run resumable, even after ``kill -9``.

Each prediction is one JSON line, written and fsync'ed as soon as it is known. On restart the
file is read back: complete lines are kept (a repeated (id, lang) keeps its first line), and a
torn last line (the write a kill interrupted) is cut off, so the run continues with no lost and
no duplicated lines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jmed_edge.errors import ArtifactError

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Complete prediction rows of ``path`` in file order.

    A last line without its newline or not parseable is a torn write: with ``repair`` the file
    is truncated to the end of the last complete line. A bad line anywhere else means the file
    was edited or damaged, and is an error.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    good_end = 0
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        end = offset + len(raw) + (0 if last else 1)
        if last and not raw:
            break
        try:
            row = json.loads(raw)
            complete = not last and isinstance(row, dict) and "id" in row and "lang" in row
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = False
        if not complete:
            if not last:
                raise ArtifactError(
                    f"{path}:{number} is not a complete prediction line; the file was edited or damaged: "
                    "use a new --out or --force to start over"
                )
            log.warning("dropping a torn last line of %s (%d bytes)", path, len(raw))
            break
        key = (str(row["id"]), str(row["lang"]))
        if key not in seen:
            seen.add(key)
            rows.append(row)
        good_end = end
        offset = end
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return rows


class PredictionLog:
    """Append rows durably: each ``write`` is on disk (fsync) before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "ab")  # noqa: SIM115 - held open for the whole run

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        payload = b"".join(
            json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n" for row in rows
        )
        if not payload:
            return
        self._fh.write(payload)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
