"""Write artifacts so that a crash never leaves a half-written one where a user would find it.

Everything is written into a hidden staging folder beside the destination and renamed into
place only when complete. Staging folders left by a killed process are recognisable by name
(``.<name>.partial-*``) and are removed by the next write to the same destination.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jmed_edge.errors import ArtifactError, DiskSpaceError
from jmed_edge.manifest import MANIFEST_NAME

PARTIAL_MARK = ".partial-"


def check_writable(parent: Path) -> None:
    """Create ``parent`` if needed; one clear line when it cannot be created or written."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(
            f"cannot create folder {parent}: {exc.strerror}; choose a writable location"
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"folder {parent} is not writable; choose a writable location")


def _remove_stale_partials(dest: Path) -> None:
    for stale in dest.parent.glob(f".{dest.name}{PARTIAL_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _refuse_existing(dest: Path, force: bool, *, foreign_ok: bool = False) -> None:
    if dest.exists() and not force:
        raise ArtifactError(f"{dest} already exists; pass --force to replace it or pick another --out")
    # --force replaces what jmed-edge wrote (a folder with a manifest), never a user's own folder.
    foreign = dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST_NAME).is_file()
    if force and foreign and not foreign_ok:
        raise ArtifactError(
            f"{dest} is a folder jmed-edge did not write (no {MANIFEST_NAME}); it will not be "
            "replaced: pick another --out"
        )


def refuse_overlap(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse an output folder that is, holds or sits inside one of its inputs (named in ``inputs``):
    replacing it would destroy what it is made from."""
    dest = Path(out).expanduser().resolve()
    for what, path in inputs.items():
        source = Path(path).expanduser().resolve()
        if dest == source or source.is_relative_to(dest) or dest.is_relative_to(source):
            raise ArtifactError(f"--out {out} overlaps the {what} {path}; write to a folder of its own")


def _disk_full(exc: OSError, where: Path) -> DiskSpaceError | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(f"disk full while writing {where}; free some space and run again")
    return None


@contextlib.contextmanager
def staging_dir(dest: Path, *, force: bool = False, foreign_ok: bool = False) -> Iterator[Path]:
    """Yield an empty folder; on success it becomes ``dest`` atomically, on failure it vanishes.

    ``force`` replaces an earlier artifact; a non-empty folder without a manifest is replaced only
    with ``foreign_ok`` (for caches jmed-edge owns)."""
    dest = Path(dest)
    check_writable(dest.parent)
    _refuse_existing(dest, force, foreign_ok=foreign_ok)
    _remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{PARTIAL_MARK}", dir=dest.parent))
    try:
        yield tmp
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = _disk_full(exc, dest)
        if full:
            raise full from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)
    if dest.exists():
        old = dest.with_name(f".{dest.name}{PARTIAL_MARK}old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)


@contextlib.contextmanager
def staging_file(dest: Path, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; renamed onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    check_writable(dest.parent)
    _refuse_existing(dest, force)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}{PARTIAL_MARK}", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        full = _disk_full(exc, dest)
        if full:
            raise full from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)


def write_text_atomic(dest: Path, text: str) -> None:
    with staging_file(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its closest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def ensure_free_space(path: Path, needed: int, what: str) -> None:
    """Fail before starting when ``needed`` bytes (plus 5% headroom) will not fit."""
    free = free_bytes(path)
    if free < needed * 1.05:
        raise DiskSpaceError(
            f"{what} needs about {human_bytes(needed)} at {path} but only {human_bytes(free)} is "
            "free; free some space or choose another --out"
        )


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """Parse '8GB', '512 MB', '1.5GiB' or a plain number of bytes."""
    units = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2,
             "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4,
             "TB": 1024**4, "TIB": 1024**4}  # fmt: skip
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num) :]
    try:
        return int(float(num) * units[unit])
    except (ValueError, KeyError):
        from jmed_edge.errors import ConfigError

        raise ConfigError(f'cannot read size "{text}"; write it like 8GB or 512MB') from None
