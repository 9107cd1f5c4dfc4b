"""A drift model as a user would add one, outside the packages: a toy whose mean shift and spread grow linearly in
log10 of the time since programming (t0 = 1 s; earlier times count as t0).

Per step t_from -> t_to it moves every working cell by mean + sigma z with mean = MEAN_US_PER_DECADE * d and
sigma = SIGMA_FRAC_PER_DECADE * d * G, d = log10(t_to / t0) - log10(t_from / t0): NumPy, evaluated on every cell
before the package's kernel draws z. `tests/test_nonideal.py` names this file in a scenario's `plugins:`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from crossbar.nonideal import DRIFT_MODELS, DriftModel

T0_S = 1.0
"""s: the time the toy's log-time axis starts at."""
MEAN_US_PER_DECADE = -0.5
"""uS per decade of time: a common-mode shift of both cells of a pair."""
SIGMA_FRAC_PER_DECADE = 0.1
"""Spread per decade of time, relative to the cell's conductance (dimensionless)."""


class LogDriftStep(NamedTuple):
    """The toy's parameters of one step."""

    decades: float
    """log10(t_to / t0) - log10(t_from / t0), times clamped at t0."""


def _decades(t_s: float) -> float:
    return math.log10(max(t_s, T0_S) / T0_S)


def step(device: object, t_from_s: float, t_to_s: float) -> LogDriftStep:
    return LogDriftStep(_decades(t_to_s) - _decades(t_from_s))


def cell_moments(g_us: np.ndarray, step: LogDriftStep, device: object) -> tuple[float, np.ndarray]:
    return MEAN_US_PER_DECADE * step.decades, SIGMA_FRAC_PER_DECADE * step.decades * g_us


DRIFT_MODELS.register(
    DriftModel(
        "log_toy",
        "a test toy: mean and sigma linear in log10(t / 1 s) (tests/plugins/log_drift_plugin.py)",
        step,
        cell_moments=cell_moments,
        twin="tests/plugins/log_drift_plugin.py::cell_moments",
    )
)
