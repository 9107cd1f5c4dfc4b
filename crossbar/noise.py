"""Device non-idealities of the stored conductances: programming noise sigma(G), stuck-at faults, drift.

- `programming_sigma_us`: the fitted spread of the programmed conductance around its target, used by the
  statistical programming mode (`crossbar.programming`).
- `fabricate_faults`: stuck-at-0 (g_min) and stuck-at-1 (g_max) cells sampled once per array from a seed.
- `apply_drift`: conductance relaxation between two times after programming (log-time model).

Read noise is per MVM and lives with the MVM path (`crossbar.mvm`), not here.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar.device import DeviceConfig
from crossbar.kernels import drift_kernel, fault_kernel
from crossbar.rng import NORMAL_TABLE, mix_seed, splitmix64_np
from crossbar.state import ArrayState, stored_tile_rows

__all__ = [
    "CMO_HFOX_SIGMA_COEFFS_US",
    "MILO2021_SIGMA_COEFFS_US",
    "WAN2022_SIGMA_COEFFS_US",
    "apply_drift",
    "domain_key",
    "drift_increment",
    "fabricate_faults",
    "programming_sigma_us",
    "sigma_polynomial",
    "state_views",
]

# --- fitted programming noise, sigma in uS ------------------------------------------------------------------------
WAN2022_SIGMA_COEFFS_US: tuple[float, ...] = (0.348, 16.030, -43.853, 45.393, -16.815)
"""sigma(g) = sum_k c_k g^k uS, g = G / G_max_ref, G_max_ref = 40 uS: Wan et al., Nature 2022, fitted at t = 1 s
after programming by aihwkit `inference/noise/reram.py` `ReRamWan2022NoiseModel.coeff_dic[1.0]` (src). Here g runs
0..1 over the device's [g_min, g_max] (for reram_wan2022, 0-40 uS, this is exactly aihwkit's g = G / 40 uS); the
sigma itself is not rescaled, as in aihwkit (whose `coeff_g_max_reference` equals the converter's g_max)."""
MILO2021_SIGMA_COEFFS_US: tuple[float, ...] = (4.782, -0.009107)
"""sigma(G) = max(4.782 - 0.009107 G, 0) uS, G in uS (50-225 uS): Milo et al., IRPS 2021, as fitted in CrossSim
`simulator/devices/custom/RRAM_Milo.py` (src)."""
CMO_HFOX_SIGMA_COEFFS_US: tuple[float, ...] = (0.0112185391, 0.01129027418)
"""sigma(G) = 0.0112 + 0.0113 G uS, G in uS: CMO/HfOx ReRAM with a 2 % acceptance range of the program-and-verify
loop, aihwkit `inference/noise/reram.py` `ReRamCMONoiseModel.coeff_dict[2]` (src; Falcone et al., in review)."""
WAN2022_G_MAX_REFERENCE_US = 40.0
"""uS, the G_max the Wan 2022 polynomial was fitted against (aihwkit `prog_coeff_g_max_reference`, src)."""

# Salts that separate the random streams of different processes drawn from the same (seed, stream).
DOMAIN_PROGRAM = 0x50524F47  # "PROG"
DOMAIN_DRIFT = 0x44524654  # "DRFT"
DOMAIN_FAULT = 0x46414C54  # "FALT"
DOMAIN_TABLE = 0x5441424C  # "TABL"


def domain_key(seed: int, stream: int, domain: int) -> np.uint64:
    """64-bit kernel key of one random process (programming, drift, faults) of one (seed, stream)."""
    with np.errstate(over="ignore"):
        return np.uint64(splitmix64_np(mix_seed(seed, stream) ^ np.uint64(domain)))


def sigma_polynomial(device: DeviceConfig) -> tuple[float, float, np.ndarray]:
    """(scale, offset, coeffs) with sigma(G) = max(sum_k coeffs[k] x^k, 0) uS, x = G * scale + offset.

    The one description of `device.programming_noise` shared by `programming_sigma_us` and the statistical
    programming kernel.
    """
    model = device.programming_noise
    if model == "wan2022":
        # x = (G - g_min) / (g_max - g_min): 0..1 over the device range (see WAN2022_SIGMA_COEFFS_US)
        scale = 1.0 / device.g_range_us
        return scale, -device.g_min_us * scale, np.array(WAN2022_SIGMA_COEFFS_US, dtype=np.float64)
    if model == "milo2021":
        return 1.0, 0.0, np.array(MILO2021_SIGMA_COEFFS_US, dtype=np.float64)
    if model == "cmo_hfox":
        return 1.0, 0.0, np.array(CMO_HFOX_SIGMA_COEFFS_US, dtype=np.float64)
    if model == "none":
        return 1.0, 0.0, np.zeros(1, dtype=np.float64)
    raise ValueError(f"device.programming_noise {model!r} has no sigma model")  # DeviceConfig validates already


def programming_sigma_us(g_us: np.ndarray, device: DeviceConfig) -> np.ndarray:
    """Spread (uS, float64, same shape) of the programmed conductance around a target `g_us` (uS) for the
    device's fitted `programming_noise` model (constants and sources: the *_SIGMA_COEFFS_US above)."""
    scale, offset, coeffs = sigma_polynomial(device)
    x = np.asarray(g_us, dtype=np.float64) * scale + offset
    acc = np.full(x.shape, coeffs[-1], dtype=np.float64)
    for c in coeffs[-2::-1]:  # Horner, in the same order as the kernel
        acc = acc * x + c
    return np.maximum(acc, 0.0)


def state_views(state: ArrayState, device: DeviceConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated 2-D (n_tiles * tile_rows, d_out) views of g_diff, g_neg, writes_pos, writes_neg for the kernels."""
    if not isinstance(state, ArrayState):
        raise ValueError(f"state must be an ArrayState, got {type(state).__name__}")
    if not isinstance(device, DeviceConfig):
        raise ValueError(f"device must be a DeviceConfig, got {type(device).__name__}")
    if state.tile_rows != stored_tile_rows(state.d_in, device):
        raise ValueError(
            f"state.tile_rows ({state.tile_rows}) does not fit device.tile_rows ({device.tile_rows}) "
            f"for d_in={state.d_in}"
        )
    n_tiles = -(-state.d_in // state.tile_rows)
    shape = (n_tiles, state.tile_rows, state.d_out)
    views = []
    for name, dtype in (("g_diff_us", np.float32), ("g_neg_us", np.float32), ("writes_pos", np.uint16),
                        ("writes_neg", np.uint16)):  # fmt: skip
        array = getattr(state, name)
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
            raise ValueError(
                f"state.{name} must be a {np.dtype(dtype).name} array of shape {shape}, got "
                f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
            )
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise ValueError(f"state.{name} must be C-contiguous and writeable")
        views.append(array.reshape(n_tiles * state.tile_rows, state.d_out))
    return views[0], views[1], views[2], views[3]


def fabricate_faults(state: ArrayState, device: DeviceConfig, *, seed: int) -> int:
    """Sample stuck-at faults of a freshly fabricated array, in place; returns the number of new stuck cells.

    Each working real cell independently becomes stuck at g_min (SA0) with probability `stuck_at_min_rate` or at
    g_max (SA1) with probability `stuck_at_max_rate`; its counter is set to STUCK and it never moves again. The
    draws are a pure function of (seed, cell), so calling twice with the same seed adds no new faults.
    """
    g_diff, g_neg, writes_pos, writes_neg = state_views(state, device)
    _check_int("seed", seed)
    new_faults = np.zeros(state.d_in, dtype=np.int64)
    if device.stuck_at_min_rate == 0 and device.stuck_at_max_rate == 0:
        return 0
    fault_kernel(
        g_diff, g_neg, writes_pos, writes_neg, state.d_in, float(device.g_min_us), float(device.g_max_us),
        float(device.stuck_at_min_rate), float(device.stuck_at_max_rate), domain_key(seed, 0, DOMAIN_FAULT),
        new_faults,
    )  # fmt: skip
    return int(new_faults.sum())


def drift_increment(device: DeviceConfig, t_from_s: float, t_to_s: float) -> tuple[float, float]:
    """(mean, sigma) in uS of the conductance change of one cell between t_from_s and t_to_s after programming.

    Log-time relaxation (aihwkit `ReRamCMONoiseModel`: mean -0.089 ln t uS, sigma 0.042 ln t uS on top of the
    programming spread, src), with L(t) = ln(max(t, 1 s)): increments are independent, with mean
    drift_mean_us_per_ln_s * (L(t_to) - L(t_from)) and variance drift_sigma_us_per_ln_s^2 * (L(t_to)^2 -
    L(t_from)^2), so the total change from 1 s to t has mean m ln t and sigma s ln t, and drifting 1 -> 10 -> 100 s
    equals 1 -> 100 s in distribution (up to the clipping at g_min/g_max). The fit starts at 1 s after programming:
    t = 0 means "just programmed" and any t < 1 s counts as 1 s, i.e. no drift yet.
    """
    for name, value in (("t_from_s", t_from_s), ("t_to_s", t_to_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if t_to_s < t_from_s:
        raise ValueError(f"t_to_s ({t_to_s}) must be >= t_from_s ({t_from_s}): drift only runs forward in time")
    if device.drift_model == "none":
        return 0.0, 0.0
    log_from = math.log(max(float(t_from_s), 1.0))
    log_to = math.log(max(float(t_to_s), 1.0))
    mean = device.drift_mean_us_per_ln_s * (log_to - log_from)
    sigma = device.drift_sigma_us_per_ln_s * math.sqrt(log_to * log_to - log_from * log_from)
    return mean, sigma


def apply_drift(
    state: ArrayState, device: DeviceConfig, *, t_from_s: float, t_to_s: float, seed: int, stream: int
) -> None:
    """Relax every working real cell from t_from_s to t_to_s seconds after programming, in place.

    Each cell gets an independent Gaussian increment (see `drift_increment`), clipped to [g_min, g_max]. Stuck cells
    and padding rows never move. Draws are a pure function of (seed, stream, cell).
    """
    g_diff, g_neg, writes_pos, writes_neg = state_views(state, device)
    _check_int("seed", seed)
    _check_int("stream", stream)
    mean, sigma = drift_increment(device, t_from_s, t_to_s)
    if mean == 0.0 and sigma == 0.0:
        return
    drift_kernel(
        g_diff, g_neg, writes_pos, writes_neg, state.d_in, float(device.g_min_us), float(device.g_max_us), mean,
        sigma, domain_key(seed, stream, DOMAIN_DRIFT), NORMAL_TABLE,
    )  # fmt: skip


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
