"""Set-up of the worker processes of crossbar-sim's own Dask LocalCluster (a Dask preload module).

Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the driver and every worker process.
The driver is the one that answers it (it closes the cluster and exits 130 with one line); a worker that also
raised KeyboardInterrupt would print a traceback of its own. So each worker ignores SIGINT, and is stopped by its
nanny when the driver closes the cluster.

The driver's side of the same quiet: the cluster's own logs are silenced (each failed unit is reported once, in
one line, by the runner), and `LostWorkerNotice` says in one line when a worker process dies mid-run (Dask then
reruns its work elsewhere), instead of the tracebacks its peers would log about the closed connection.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tqdm import tqdm

__all__ = ["LostWorkerNotice", "dask_setup", "quiet_resource_tracker"]


def dask_setup(worker: Any) -> None:
    """Called by Dask in each worker process as it starts (`LocalCluster(preload=[__name__])`)."""
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class LostWorkerNotice(SchedulerPlugin):
    """Scheduler plugin (in the driver's process, on our own LocalCluster): one line on stderr per worker that
    leaves while the run is still going on. `closing` is set by the executor before it closes the cluster."""

    name = "crossbar-sim-lost-worker"

    def __init__(self) -> None:
        self.closing = False

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        if not self.closing:  # tqdm.write: on a line of its own, above the progress bar
            tqdm.write(f"crossbar-sim: lost Dask worker {worker}; its work is rerun on the others", file=sys.stderr)


def quiet_resource_tracker() -> None:
    """Silence multiprocessing's resource tracker about semaphores of worker processes that their nanny had to
    terminate (a unit interrupted mid-computation by Ctrl-C): the tracker frees them itself, and its warning would
    be the only line besides the driver's. Set through the environment, which the tracker process inherits when
    the cluster starts it."""
    rule = "ignore::UserWarning:multiprocessing.resource_tracker"
    current = os.environ.get("PYTHONWARNINGS", "")
    if rule not in current.split(","):
        os.environ["PYTHONWARNINGS"] = f"{current},{rule}" if current else rule
