"""A run directory's lock: one `crossbar-sim run` at a time per directory.

`fcntl.flock` on `<run>/.lock`, which also records the holder's pid, host and start time. The operating system
releases the lock when the holder exits, however it exits (a killed run leaves no stale lock, only a stale file,
which the next run takes over). The holder removes the file when it leaves the `with` block (finished, failed or
interrupted). A run that opened the file just before it was removed would hold a lock on a name nobody sees, so
after taking the lock a run checks that the file it locked is still the one at `<run>/.lock`, and tries again if
not.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from scenarios.errors import ScenarioError

__all__ = ["run_lock"]

LOCK_FILE = ".lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the lock of `run_dir` (created if needed); a ScenarioError naming the holder if another run holds it."""
    path = Path(run_dir) / LOCK_FILE
    handle = _acquire(run_dir, path)
    try:
        handle.seek(0)
        handle.truncate()
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        handle.write(json.dumps(stamp))
        handle.flush()
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # still holding the lock: nobody else can be using this file now
        except OSError:
            pass
        handle.close()


def _acquire(run_dir: Path, path: Path, attempts: int = 5) -> IO[str]:
    """Open and lock `path`; retried when the file was removed by its previous holder while we waited for it."""
    for _ in range(attempts):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # noqa: SIM115 - held for the lifetime of the lock
        except OSError as error:
            raise ScenarioError(f"{run_dir}: cannot write the run directory ({error.strerror or error})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            raise ScenarioError(
                f"{run_dir}: another run is using this directory (pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it or choose another --out"
            ) from None
        if _same_file(handle, path):
            return handle
        handle.close()
    raise ScenarioError(f"{run_dir}: its lock file keeps being replaced by other runs; try again")


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False
