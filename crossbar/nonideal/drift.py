"""Drift models: conductance relaxation after programming, from each device's own data.

One step t_from -> t_to (seconds after programming) moves every working cell's latent (unclamped) conductance by
mean + sigma(G_ref) z, z ~ N(0, 1), with sigma^2 the model's variance increment at the cell's fixed reference
G_ref, and the array reads the latent clamped at 0 uS (`crossbar.noise.apply_drift`, `DriftOrigin`,
`crossbar.kernels.drift_kernel`): the state at t does not depend on the steps taken.
An entry gives, per step, a named record of its parameters (`step`, every field a float; `mean_us` the mean
shift), and either a built-in kernel id (`kernel_id`: the per-cell sigma is computed inside the numba kernel from
the record, flattened to a float64 vector in field order, plus the entry's constant table `fits_us`) or a NumPy
function `cell_moments(g_us, step, device) -> (mean_us, sigma_us)` evaluated at every cell's reference before the
kernel draws (plug-ins; costs 32 bytes per weight while it runs). `DeviceConfig.drift_model` names an entry of
`DRIFT_MODELS`.
NumPy twins of the kernel side: `tests/naive_programming.py::drift_sigma_np`, `drift_np`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from crossbar.nonideal.programming_noise import PROGRAMMING_NOISE_MODELS, WAN2022_SIGMA_COEFFS_US
from crossbar.nonideal.registry import DeviceFields, Registry

__all__ = [
    "CMO_HFOX_DRIFT_MEAN_US_PER_LN_S",
    "CMO_HFOX_DRIFT_SIGMA_US",
    "CMO_HFOX_READ_K",
    "CMO_HFOX_READ_T_S",
    "DRIFT_MODELS",
    "KERNEL_CMO_HFOX",
    "KERNEL_IDS",
    "KERNEL_PER_CELL",
    "KERNEL_WAN2022",
    "WAN2022_DRIFT_COEFFS_US",
    "CmoDriftStep",
    "DriftModel",
    "WanDriftStep",
]

WAN2022_DRIFT_COEFFS_US: dict[float, tuple[float, ...]] = {
    1.0: WAN2022_SIGMA_COEFFS_US,
    86400.0: (0.701, 22.086, -50.773, 47.095, -16.458),
    172800.0: (0.782, 20.274, -43.507, 37.062, -11.934),
}
"""sigma(g) polynomials (uS, g = G / 40 uS) of Wan et al. 2022 at t = 1 s, 1 day and 2 days after programming:
aihwkit `inference/noise/reram.py` lines 89-93 `ReRamWan2022NoiseModel.coeff_dic` (src). No mean shift: aihwkit
redraws G = G_target + sigma_t(G_target) z at each time (reram.py 163), clamped at 0 (reram.py 109, 165)."""
CMO_HFOX_DRIFT_MEAN_US_PER_LN_S = -0.08900206
"""Mean conductance change per ln(t / 1 s) (uS), CMO/HfOx ReRAM: aihwkit reram.py line 241 decay_dict["mean"]."""
CMO_HFOX_DRIFT_SIGMA_US: tuple[float, float] = (0.04201137, 0.41183342)
"""Relaxation sigma(t) = 0.0420 ln t + 0.4118 uS (total, as fitted; at 1 s it is 0.41 uS): aihwkit reram.py line
241 decay_dict["std"], applied at reram.py 308-309."""
CMO_HFOX_READ_K = 0.0277316483
"""1/f read-noise coefficient K (uS per decade of G in uS): aihwkit reram.py line 239 read_dict["K"], used at
reram.py 310-314 as K log10(G) sqrt(ln((t + t_read) / (2 t_read)))."""
CMO_HFOX_READ_T_S = 1e-6
"""t_read (s) of the CMO 1/f term: aihwkit reram.py line 239 read_dict["t_read"]."""

KERNEL_PER_CELL = 0
"""Kernel id of a model whose per-cell mean and sigma come from its `cell_moments` (NumPy), not the kernel."""
KERNEL_WAN2022 = 1
"""Kernel id of the Wan 2022 fits (`crossbar.kernels._drift_sigma`)."""
KERNEL_CMO_HFOX = 2
"""Kernel id of the CMO/HfOx relaxation + 1/f model (`crossbar.kernels._drift_sigma`)."""
KERNEL_IDS = (KERNEL_PER_CELL, KERNEL_WAN2022, KERNEL_CMO_HFOX)
"""Every id `crossbar.kernels.drift_kernel` knows; any other is an error there."""


class WanDriftStep(NamedTuple):
    """One `wan2022` step: V(t, G) = sigma_t(G)^2 - sigma_1s(G)^2, sigma_t interpolated linearly in ln t between
    the fits at 1 s, 1 day and 2 days (held past 2 days), at t_from and t_to."""

    mean_us: float
    """Mean shift (uS): 0, the Wan fits have none."""
    w_from_lo: float
    """Weight of fit `fit_from` at t_from."""
    w_from_hi: float
    """Weight of fit `fit_from` + 1 at t_from."""
    fit_from: float
    """Row of `WAN2022_DRIFT_COEFFS_US` (in time order) below t_from, as a float64."""
    w_to_lo: float
    w_to_hi: float
    fit_to: float


class CmoDriftStep(NamedTuple):
    """One `cmo_hfox` step: V(t, G) = sigma_relax(t)^2 + (K log10(G) f(t))^2, f(t) = sqrt(ln((t + t_read) /
    (2 t_read))), from V(t_from) (times `has_from`) to V(t_to)."""

    mean_us: float
    """-0.089 uS per ln t between t_from and t_to."""
    sigma_relax_from_us: float
    sigma_relax_to_us: float
    flicker_from: float
    """f(t_from) (dimensionless)."""
    flicker_to: float
    has_from: float
    """0 at t_from = 0 (just programmed: V(0) = 0), else 1."""
    k_read_us: float
    """K, uS per decade of G."""


@dataclass(frozen=True)
class DriftModel:
    """A drift model (module docstring), with its source."""

    name: str
    source: str
    step: Callable[[Any, float, float], NamedTuple] | None
    """(device, t_from_s, t_to_s) -> the step's named record, 0 <= t_from_s < t_to_s; None: no drift."""
    kernel_id: int = KERNEL_PER_CELL
    cell_moments: Callable[[np.ndarray, Any, Any], tuple[np.ndarray, np.ndarray]] | None = None
    """Plug-ins: (G (uS, float64), step record, device) -> (mean uS, sigma uS), NumPy, broadcastable to G."""
    fits_us: tuple[tuple[float, ...], ...] = ()
    """The kernel's constant table of this model (uS), one row per fit; () if it has none."""
    total_sigma_us: Callable[[np.ndarray, Any, float], np.ndarray] | None = None
    """(G (uS), device, t_s) -> the total spread around the target at t_s, programming spread included."""
    twin: str = "tests/naive_programming.py::drift_sigma_np"
    """The NumPy twin of the kernel side (`file::function`)."""
    fidelity_rows: tuple[str, ...] = ()
    """Row groups of `benchmarks/fidelity.py` that check this model against its source."""

    def __post_init__(self) -> None:
        where = f"drift model {self.name!r}"
        if self.kernel_id not in KERNEL_IDS:
            raise ValueError(f"{where}: kernel_id must be one of {KERNEL_IDS}, got {self.kernel_id!r}")
        per_cell = self.kernel_id == KERNEL_PER_CELL
        if self.step is None and (self.cell_moments is not None or not per_cell):
            raise ValueError(f"{where}: a model without `step` (no drift) takes no kernel_id or cell_moments")
        if self.step is not None and per_cell != (self.cell_moments is not None):
            raise ValueError(f"{where}: give exactly one of a built-in kernel_id and a NumPy cell_moments")

    def kernel_fits(self) -> np.ndarray:
        """`fits_us` as the kernel's 2-D float64 table ((1, 1) zeros when the model has none)."""
        return np.array(self.fits_us, dtype=np.float64) if self.fits_us else np.zeros((1, 1))


def _clamped(t_s: float) -> float:
    """Fitted times start at 1 s: an earlier time counts as 1 s."""
    return max(float(t_s), 1.0)


def _programming_sigma(g: np.ndarray, device: DeviceFields) -> np.ndarray:
    return PROGRAMMING_NOISE_MODELS[device.programming_noise].sigma_us(g, device)


# --- wan2022 ---------------------------------------------------------------------------------------------------
_WAN_TIMES = sorted(WAN2022_DRIFT_COEFFS_US)


def _wan_weights(t_s: float) -> tuple[float, float, float]:
    """(weight of the lower fit, weight of the upper fit, index of the lower fit) for ln-t interpolation."""
    if t_s >= _WAN_TIMES[-1]:
        return 0.0, 1.0, float(len(_WAN_TIMES) - 2)
    for k, (lo, hi) in enumerate(zip(_WAN_TIMES[:-1], _WAN_TIMES[1:], strict=True)):
        if t_s <= hi:
            w = (math.log(t_s) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return 1.0 - w, w, float(k)
    raise AssertionError("unreachable")


def _wan_step(device: DeviceFields, t_from_s: float, t_to_s: float) -> WanDriftStep:
    return WanDriftStep(0.0, *_wan_weights(_clamped(t_from_s)), *_wan_weights(_clamped(t_to_s)))


def _wan_poly(g: np.ndarray, device: DeviceFields, coeffs: tuple[float, ...]) -> np.ndarray:
    x = (g - device.g_min_us) / device.g_range_us
    acc = np.full(x.shape, coeffs[-1], dtype=np.float64)
    for c in coeffs[-2::-1]:
        acc = acc * x + c
    return np.maximum(acc, 0.0)


def _wan_total_sigma(g_us: np.ndarray, device: DeviceFields, t_s: float) -> np.ndarray:
    """The Wan fits at 1 s, 1 day and 2 days interpolated linearly in ln t; t < 1 s counts as 1 s; past 2 days
    the 2-day fit is held (no data past 2 days; the 1-day and 2-day fits differ by < 3 %: saturated)."""
    g, t = np.asarray(g_us, dtype=np.float64), _clamped(t_s)
    if t >= _WAN_TIMES[-1]:
        return _wan_poly(g, device, WAN2022_DRIFT_COEFFS_US[_WAN_TIMES[-1]])
    w_lo, w_hi, k = _wan_weights(t)
    s_lo = _wan_poly(g, device, WAN2022_DRIFT_COEFFS_US[_WAN_TIMES[int(k)]])
    s_hi = _wan_poly(g, device, WAN2022_DRIFT_COEFFS_US[_WAN_TIMES[int(k) + 1]])
    return w_lo * s_lo + w_hi * s_hi


# --- cmo_hfox --------------------------------------------------------------------------------------------------
def _cmo_relax_sigma(t_s: float) -> float:
    return CMO_HFOX_DRIFT_SIGMA_US[0] * math.log(t_s) + CMO_HFOX_DRIFT_SIGMA_US[1]


def _cmo_flicker(t_s: float) -> float:
    return math.sqrt(math.log((t_s + CMO_HFOX_READ_T_S) / (2.0 * CMO_HFOX_READ_T_S)))


def _cmo_step(device: DeviceFields, t_from_s: float, t_to_s: float) -> CmoDriftStep:
    t0, t1 = _clamped(t_from_s), _clamped(t_to_s)
    mean = CMO_HFOX_DRIFT_MEAN_US_PER_LN_S * (math.log(t1) - math.log(t0))
    return CmoDriftStep(mean, _cmo_relax_sigma(t0), _cmo_relax_sigma(t1), _cmo_flicker(t0), _cmo_flicker(t1),
                        1.0 if t_from_s > 0 else 0.0, CMO_HFOX_READ_K)  # fmt: skip


def _cmo_total_sigma(g_us: np.ndarray, device: DeviceFields, t_s: float) -> np.ndarray:
    """Relaxation sigma and the 1/f term added in quadrature (aihwkit reram.py 306-315), the programming spread
    on top (aihwkit adds the relaxation to the programmed conductance); t < 1 s counts as 1 s."""
    g, t = np.asarray(g_us, dtype=np.float64), _clamped(t_s)
    sigma_read = CMO_HFOX_READ_K * np.log10(np.maximum(g, 1e-6)) * _cmo_flicker(t)
    relax = _cmo_relax_sigma(t)
    prog = _programming_sigma(g, device)
    return np.sqrt(prog * prog + (relax * relax + sigma_read * sigma_read))


DRIFT_MODELS: Registry[DriftModel] = Registry(
    "drift_model",
    "drift model",
    (
        DriftModel("none", "no drift: the conductances stay as programmed", None,
                   total_sigma_us=lambda g, device, t_s: _programming_sigma(np.asarray(g, np.float64), device)),
        DriftModel(
            "wan2022",
            "Wan et al., Nature 608, 2022: sigma(G) fits at 1 s, 1 day, 2 days via aihwkit inference/noise/"
            "reram.py 89-93 (ReRamWan2022NoiseModel.coeff_dic), no mean shift",
            _wan_step, KERNEL_WAN2022,
            fits_us=tuple(WAN2022_DRIFT_COEFFS_US[t] for t in _WAN_TIMES),
            total_sigma_us=_wan_total_sigma,
            fidelity_rows=("drift sigma reram_wan2022", "drift mean G reram_wan2022"),
        ),
        DriftModel(
            "cmo_hfox",
            "CMO/HfOx ReRAM via aihwkit inference/noise/reram.py 239-241, 306-315 (ReRamCMONoiseModel): mean "
            "-0.089 uS per ln t, relaxation sigma 0.042 ln t + 0.412 uS and a 1/f term K log10(G)",
            _cmo_step, KERNEL_CMO_HFOX,
            total_sigma_us=_cmo_total_sigma,
            fidelity_rows=("drift sigma reram_cmo_hfox", "drift mean reram_cmo_hfox"),
        ),
    ),
)  # fmt: skip
"""Drift models by name (`DeviceConfig.drift_model`)."""
