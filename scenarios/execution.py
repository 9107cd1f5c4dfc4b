"""Where the units of a run execute: in this process (`--serial`) or on Dask distributed (DESIGN section 11).

The runner hands an `Executor` pure functions and their arguments (which may be handles of earlier submissions,
e.g. a unit depends on its programmed arrays); the executor resolves the dependencies and yields finished work in
whatever order it finishes. Results never depend on that order: the runner files them by key.

- `SerialExecutor`: runs each function when it is submitted, in this process (debugging, profiles).
- `DaskExecutor`: a `distributed.Client` on an existing cluster (`--scheduler ADDRESS` or the environment
  variable `CROSSBAR_SIM_SCHEDULER`), or on a `LocalCluster` it starts and closes itself with one single-threaded
  worker process per core (`--workers N` to choose). A worker that dies mid-task is replaced by its nanny and
  the task rerun elsewhere (Dask's `allowed-failures`); the functions are deterministic, so the rerun gives the
  same result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEDULER_ENV", "DaskExecutor", "Executor", "Handle", "SerialExecutor", "default_workers", "open_executor"]

log = logging.getLogger("crossbar_sim.execution")

SCHEDULER_ENV = "CROSSBAR_SIM_SCHEDULER"
"""Environment variable naming the address of an existing Dask scheduler (e.g. tcp://10.0.0.5:8786)."""


@dataclass
class Handle:
    """One submitted piece of work: its key, and (once finished) its value or the exception it raised."""

    key: str
    future: Any = None
    value: Any = None
    error: BaseException | None = None
    done: bool = False
    tags: dict[str, Any] = field(default_factory=dict)


class Executor:
    """Interface the runner uses; see the module docstring."""

    description = "executor"

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0, **tags: Any) -> Handle:
        """Run `fn(*args)` (handles among `args` resolved to their values). `priority`: work with a higher value
        starts first when several pieces are ready (executors that run at submission ignore it)."""
        raise NotImplementedError

    def constant(self, value: Any, *, key: str) -> Handle:
        """A handle for a value the driver already has (a phase loaded from the cache)."""
        return Handle(key=key, value=value, done=True)

    def as_completed(self, handles: Iterable[Handle]) -> Iterator[Handle]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Run everything in this process, at submission."""

    description = "serial (this process)"

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0, **tags: Any) -> Handle:
        handle = Handle(key=key, tags=tags)
        failed = next((a for a in args if isinstance(a, Handle) and a.error is not None), None)
        if failed is not None:
            handle.error, handle.done = failed.error, True
            return handle
        try:
            handle.value = fn(*(a.value if isinstance(a, Handle) else a for a in args))
        except Exception as error:  # reported by the runner, which goes on with the other units
            handle.error = error
        except SystemExit as error:  # plugin code calling sys.exit() fails its unit; it does not end the run
            handle.error = RuntimeError(f"called sys.exit({error.code!r})")
        handle.done = True
        return handle

    def as_completed(self, handles: Iterable[Handle]) -> Iterator[Handle]:
        yield from handles


class DaskExecutor(Executor):
    """Submit to a Dask distributed cluster (an existing one by address, or a LocalCluster of our own)."""

    def __init__(self, *, scheduler: str | None = None, workers: int | None = None) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from None
            self.description = f"Dask cluster at {scheduler}"
        else:
            from scenarios.dask_worker import LostWorkerNotice, quiet_resource_tracker

            n_workers = workers or default_workers()
            quiet_resource_tracker()
            self.cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,  # the runner reports each failure itself, in one line
                preload=["scenarios.dask_worker"],  # workers leave Ctrl-C to the driver
            )
            self.lost_workers = LostWorkerNotice()
            self.cluster.scheduler.add_plugin(self.lost_workers)
            self.client = Client(self.cluster)
            self.description = f"Dask LocalCluster, {n_workers} single-threaded worker process(es)"
        link = getattr(self.client, "dashboard_link", None)
        log.info("executing on %s%s", self.description, f"; dashboard {link}" if link else "")
        self.dashboard = link

    def constant(self, value: Any, *, key: str) -> Handle:
        # A task that returns the value, rather than `scatter`: the value then lives in the task graph, so when the
        # worker holding it dies the scheduler recomputes it (scattered data would be lost for good).
        future = self.client.submit(_identity, value, key=key, pure=False)
        return Handle(key=key, future=future, value=value, done=True)

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0, **tags: Any) -> Handle:
        resolved = [a.future if isinstance(a, Handle) and a.future is not None else _plain(a) for a in args]
        future = self.client.submit(fn, *resolved, key=key, pure=False, priority=priority)
        return Handle(key=key, future=future, tags=tags)

    def as_completed(self, handles: Iterable[Handle]) -> Iterator[Handle]:
        from distributed import as_completed

        pending = {}
        for handle in handles:
            if handle.done:
                yield handle
            else:
                pending[handle.future.key] = handle
        if not pending:
            return
        for future in as_completed([h.future for h in pending.values()]):
            handle = pending[future.key]
            if future.status == "error":
                handle.error = future.exception()
            elif future.status == "cancelled":
                handle.error = RuntimeError("cancelled by the Dask scheduler")
            else:
                handle.value = future.result()
            handle.done = True
            yield handle

    def close(self) -> None:
        if self.cluster is not None:
            self.lost_workers.closing = True
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _identity(value: Any) -> Any:
    return value


def _plain(arg: Any) -> Any:
    if isinstance(arg, Handle):
        if arg.error is not None:
            raise arg.error
        return arg.value
    return arg


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def open_executor(*, serial: bool = False, scheduler: str | None = None, workers: int | None = None) -> Executor:
    """The executor the CLI options ask for: serial, an existing cluster (argument or environment), or local."""
    if serial:
        return SerialExecutor()
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    return DaskExecutor(scheduler=scheduler, workers=workers)
