"""Fault injection for tests (`tests/test_scenario_run.py`, `tests/test_exit_codes.py`): a crashed worker.

Imported as a scenario plugin, it wraps every adaptation method registered so far. When the environment variable
`CROSSBAR_SIM_FAULT_KILL_ONCE` names a file that exists, the first adaptation to remove it writes its pid to
`<file>.killed` and kills its own process (SIGKILL), as a crashed worker would; otherwise the method runs as usual,
so a run with this plugin gives the results of a run without it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

from fusion import AdaptContext, AdaptResult
from fusion.registry import METHODS, MethodFn

FAULT_KILL_ONCE_ENV = "CROSSBAR_SIM_FAULT_KILL_ONCE"


def _kill_once() -> None:
    trigger = os.environ.get(FAULT_KILL_ONCE_ENV)
    if not trigger or not os.path.exists(trigger):
        return
    try:
        os.remove(trigger)  # exactly one process wins the removal
    except FileNotFoundError:
        return
    Path(f"{trigger}.killed").write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _killing(train: MethodFn) -> MethodFn:
    def train_or_die(ctx: AdaptContext) -> AdaptResult:
        _kill_once()
        return train(ctx)

    train_or_die.kills_once = True  # type: ignore[attr-defined]
    train_or_die.__doc__ = train.__doc__
    return train_or_die


for _name, _method in list(METHODS.items()):
    if not getattr(_method.train, "kills_once", False):
        METHODS[_name] = dataclasses.replace(_method, train=_killing(_method.train))
