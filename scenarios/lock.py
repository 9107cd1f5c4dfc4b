"""A run directory's lock: one `crossbar-sim run` at a time per directory.

`fcntl.flock` on `<run>/.lock`, which also records the holder's pid, host and start time. The operating system
releases the lock when the holder exits, however it exits (a killed run leaves no stale lock).
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

from scenarios.errors import ScenarioError

__all__ = ["run_lock"]

LOCK_FILE = ".lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the lock of `run_dir` (created if needed); a ScenarioError naming the holder if another run holds it."""
    path = Path(run_dir) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for the lifetime of the lock
    except OSError as error:
        raise ScenarioError(f"{run_dir}: cannot write the run directory ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            raise ScenarioError(
                f"{run_dir}: another run is using this directory (pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        handle.write(json.dumps(stamp))
        handle.flush()
        yield
    finally:
        handle.close()
