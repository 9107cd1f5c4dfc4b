"""Read-noise models: the noise of every analog MVM read, as the MVM kernels apply it.

Interface: output-referred Gaussian noise, exact for independent Gaussian cell noise (`crossbar.mvm`): per (tile,
vector, output) N(0, sigma_pair^2 * sum_i x_i^2 + sigma_out^2), x the applied inputs (|x| <= 1). An entry turns a
device into the two sigmas (`ReadNoiseParams`); every MVM path (numba, torch, reference, per-cycle) draws with
them. `DeviceConfig.read_noise_model` names an entry of `READ_NOISE_MODELS`. NumPy twin of the kernel side:
`tests/naive_mvm.py::naive_accumulate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from crossbar.nonideal.registry import DeviceFields, Registry

__all__ = ["PAIR_OF_CELLS", "READ_NOISE_MODELS", "ReadNoiseModel", "ReadNoiseParams"]

PAIR_OF_CELLS = math.sqrt(2.0)
"""A weight reads as G+ - G- of two cells with independent noise: its sigma is sqrt(2) times one cell's. So
aihwkit's `w_noise` (the weight's noise relative to the range) is sqrt(2) * `read_noise_frac`."""


class ReadNoiseParams(NamedTuple):
    """What the MVM kernels get."""

    sigma_pair_us: float
    """Read-noise sigma of one weight's conductance difference (the pair) per read (uS); 0 = off."""
    out_noise_us: float
    """Output noise sigma per tile column and vector, as a partial sum (uS); 0 = off."""


@dataclass(frozen=True)
class ReadNoiseModel:
    """A read-noise model (module docstring), with its source."""

    name: str
    source: str
    params: Callable[[Any], ReadNoiseParams]
    """device -> the two sigmas the kernels draw with."""
    twin: str = "tests/naive_mvm.py::naive_accumulate"
    """The NumPy twin of the kernel side (`file::function`)."""
    fidelity_rows: tuple[str, ...] = ()
    """Row groups of `benchmarks/fidelity.py` that check this model against its source."""


def _gaussian(device: DeviceFields) -> ReadNoiseParams:
    return ReadNoiseParams(
        sigma_pair_us=PAIR_OF_CELLS * device.read_noise_frac * device.g_range_us,
        out_noise_us=device.out_noise_frac * device.g_range_us,
    )


READ_NOISE_MODELS: Registry[ReadNoiseModel] = Registry(
    "read_noise_model",
    "read-noise model",
    (
        ReadNoiseModel(
            "gaussian",
            "independent Gaussian noise per cell read, sigma = read_noise_frac * (g_max - g_min) (aihwkit "
            "w_noise = sqrt(2) read_noise_frac: rpu_forward_backward_pass.cpp 341-349, ~0.01 for ReRAM per "
            "inference/noise/reram.py 40-42), plus output noise out_noise_frac (aihwkit IOParameters.out_noise)",
            _gaussian,
            fidelity_rows=("read noise (weight sigma / range)",),
        ),
    ),
)
"""Read-noise models by name (`DeviceConfig.read_noise_model`)."""
