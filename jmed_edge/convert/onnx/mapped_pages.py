"""Give back the resident pages of the memory-mapped safetensors shards once their weights are used.

transformers 5 loads a checkpoint by memory-mapping its shards: a weight costs no RAM until it is
read, but every page read stays in the process's resident set until the whole shard's mapping is
closed, which happens only when the last tensor of that shard is freed. An export that reads each
weight once (to quantize or write it) therefore ends up with the whole checkpoint resident.
``madvise(MADV_DONTNEED)`` on a clean, file-backed mapping drops those pages from the process;
a later read faults them in again from the file (or the page cache), so no data can be lost.
Mappings holding anonymous pages (private copies made when a weight was written in place after
loading) are never touched: dropping those would revert the write. Dirty *file* pages (a
checkpoint written moments ago, not yet flushed) stay in the page cache and are safe to drop;
judging by "Private_Dirty" instead skipped them, and an export right after the model was saved
peaked at 1.79 GB instead of 0.84 GB (0.5B shape, int4). Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4  # <sys/mman.h> on Linux (every architecture)


@cache
def _madvise():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fn = libc.madvise
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def mapped_files(suffix: str = ".safetensors") -> list[tuple[int, int, str, int, int]]:
    """(start, end, path, resident bytes, anonymous bytes) of this process's mappings of
    files whose name ends with ``suffix``, read from ``/proc/self/smaps``."""
    found: list[tuple[int, int, str, int, int]] = []
    current: list | None = None
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                path = head[5].strip() if len(head) == 6 else ""
                if current is not None:
                    found.append(tuple(current))  # type: ignore[arg-type]
                current = None
                if path.endswith(suffix):
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    current = [start, end, path, 0, 0]
            elif current is not None and head[0] in ("Rss:", "Anonymous:"):
                current[3 if head[0] == "Rss:" else 4] = int(head[1]) * 1024
    if current is not None:
        found.append(tuple(current))  # type: ignore[arg-type]
    return found


def release_mapped_files(suffix: str = ".safetensors") -> int:
    """Drop the resident pages of clean mappings of ``*suffix`` files; returns the bytes dropped."""
    if not sys.platform.startswith("linux"):
        return 0
    dropped = 0
    for start, end, path, rss, anonymous in mapped_files(suffix):
        if rss == 0:
            continue
        if anonymous:
            log.debug("keeping %s resident: %d bytes of it were written after loading", path, anonymous)
            continue
        if _madvise()(start, end - start, _MADV_DONTNEED) == 0:
            dropped += rss
    return dropped
