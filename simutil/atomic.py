"""Atomic file writes: readers (and a resumed run) never see half a file.

A file is written to a temporary sibling, flushed to disk and renamed over its path. The temporary file is made by
`tempfile.mkstemp`, which creates it readable by its owner only (0600); it is given the mode an ordinary `open()`
would have given it (0666 less the process's umask) before the rename, so a shared results folder stays readable
to colleagues as their umask intends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> None:
    """Call `write(handle)` on a temporary text file beside `path`, then rename it over `path`."""
    _atomic(Path(path), "w", write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    _atomic(Path(path), "wb", lambda handle: handle.write(data))


def _atomic(path: Path, mode: str, write: Callable[[IO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
