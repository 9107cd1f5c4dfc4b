"""Methods whose only job is to exercise the CLI's exit codes (`tests/test_exit_codes.py`).

- `always_fails` raises in every unit, so a run of it finishes with failed units (exit 1);
- `waits_for_signal` touches the file named by `CROSSBAR_SIM_TEST_STARTED` and then sleeps, so that a test can
  interrupt a run while a unit is running (exit 130).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from fusion import AdaptContext, AdaptResult, MethodConfig, register_method

STARTED_ENV = "CROSSBAR_SIM_TEST_STARTED"


@dataclass(frozen=True)
class _NoSettings(MethodConfig):
    """No settings."""


@register_method("always_fails", _NoSettings)
def always_fails(ctx: AdaptContext) -> AdaptResult:
    """Fail the unit, as a bug in a user's method would."""
    raise RuntimeError(f"always_fails on task {ctx.task}")


@register_method("waits_for_signal", _NoSettings)
def waits_for_signal(ctx: AdaptContext) -> AdaptResult:
    """Say that a unit is running, then wait to be interrupted (at most 120 s)."""
    Path(os.environ[STARTED_ENV]).touch()
    time.sleep(120)
    raise RuntimeError("was not interrupted")
