"""Device non-idealities of the stored conductances: programming error sigma(G), stuck-at faults, drift.

- `programming_sigma_us`: the fitted spread of the programmed conductance around its target (1 s after
  programming), which both programming modes give every programmed cell (`crossbar.programming`).
- `fabricate_faults`: stuck-at-0 (g_min) and stuck-at-1 (g_max) cells sampled once per array from a seed.
- `apply_drift`: conductance relaxation after programming, from each device's own data (`drift_model`): the Wan
  et al. 2022 fits at 1 s / 1 day / 2 days for `wan2022`, the CMO/HfOx fit (mean, sigma, 1/f) for `cmo_hfox`.

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
    "CMO_HFOX_DRIFT_MEAN_US_PER_LN_S",
    "CMO_HFOX_DRIFT_SIGMA_US",
    "CMO_HFOX_SIGMA_COEFFS_US",
    "WAN2022_DRIFT_COEFFS_US",
    "drift_moments",
    "drift_sigma_total_us",
    "MILO2021_SIGMA_COEFFS_US",
    "WAN2022_SIGMA_COEFFS_US",
    "apply_drift",
    "domain_key",
    "fabricate_faults",
    "programming_sigma_us",
    "sigma_polynomial",
    "state_views",
    "wan_drift_coeff_table",
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
WAN2022_G_MAX_REFERENCE_US = 40.0
"""uS, the G_max the Wan 2022 polynomial was fitted against (aihwkit `prog_coeff_g_max_reference`, src)."""

# Salts that separate the random streams of different processes drawn from the same (seed, stream).
DOMAIN_PROGRAM = 0x50524F47  # "PROG"
DOMAIN_DRIFT = 0x44524654  # "DRFT"
DOMAIN_FAULT = 0x46414C54  # "FALT"
DOMAIN_TABLE = 0x5441424C  # "TABL"
DOMAIN_D2D = 0x44324444  # "D2DD": device-to-device spread of the pulse step, fixed per cell


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


def drift_sigma_total_us(g_us: np.ndarray, device: DeviceConfig, t_s: float) -> np.ndarray:
    """Total spread (uS, float64) of the conductance around its target at `t_s` seconds after programming, as the
    device's drift model fits it (the programming spread at 1 s included); 0 for t_s = 0 is not special-cased here.

    - `wan2022`: the Wan et al. 2022 sigma(G) polynomials aihwkit ships at 1 s, 1 day and 2 days
      (`inference/noise/reram.py` lines 89-93, `WAN2022_DRIFT_COEFFS_US`), interpolated linearly in ln t between
      them; t < 1 s counts as 1 s; beyond 2 days the 2-day fit is held (no data past 2 days; the 1-day and 2-day
      fits differ by < 3 %, i.e. the spread has saturated).
    - `cmo_hfox`: aihwkit `ReRamCMONoiseModel` (reram.py lines 239-241, 306-315): relaxation sigma
      0.0420 ln t + 0.4118 uS plus the 1/f term K log10(G) sqrt(ln((t + t_read) / (2 t_read))), K = 0.0277,
      t_read = 1 us, added in quadrature; the programming spread sigma_prog(G) (`programming_sigma_us`) comes on
      top, as in aihwkit, which adds the relaxation to the programmed conductance. t < 1 s counts as 1 s.
    """
    g = np.asarray(g_us, dtype=np.float64)
    t = max(float(t_s), 1.0)
    if device.drift_model == "wan2022":
        return _wan_sigma_at(g, device, t)
    if device.drift_model == "cmo_hfox":
        prog = programming_sigma_us(g, device)
        return np.sqrt(prog * prog + _cmo_drift_variance(g, t))
    return programming_sigma_us(g, device)


def _wan_poly(g: np.ndarray, device: DeviceConfig, coeffs: tuple[float, ...]) -> np.ndarray:
    x = (g - device.g_min_us) / device.g_range_us
    acc = np.full(x.shape, coeffs[-1], dtype=np.float64)
    for c in coeffs[-2::-1]:
        acc = acc * x + c
    return np.maximum(acc, 0.0)


def _wan_sigma_at(g: np.ndarray, device: DeviceConfig, t_s: float) -> np.ndarray:
    times = sorted(WAN2022_DRIFT_COEFFS_US)
    log_t = math.log(max(t_s, times[0]))
    if t_s >= times[-1]:
        return _wan_poly(g, device, WAN2022_DRIFT_COEFFS_US[times[-1]])
    for lo, hi in zip(times[:-1], times[1:], strict=True):
        if t_s <= hi:
            w = (log_t - math.log(lo)) / (math.log(hi) - math.log(lo))
            s_lo = _wan_poly(g, device, WAN2022_DRIFT_COEFFS_US[lo])
            s_hi = _wan_poly(g, device, WAN2022_DRIFT_COEFFS_US[hi])
            return (1.0 - w) * s_lo + w * s_hi
    raise AssertionError("unreachable")


def _cmo_drift_variance(g: np.ndarray, t_s: float) -> np.ndarray:
    """Relaxation plus 1/f variance (uS^2) of the CMO/HfOx model at t_s >= 1 s (aihwkit reram.py 308-314)."""
    sigma_relax = CMO_HFOX_DRIFT_SIGMA_US[0] * math.log(t_s) + CMO_HFOX_DRIFT_SIGMA_US[1]
    t_read = CMO_HFOX_READ_T_S
    log_g = np.log10(np.maximum(g, 1e-6))
    sigma_read = CMO_HFOX_READ_K * log_g * math.sqrt(math.log((t_s + t_read) / (2.0 * t_read)))
    return sigma_relax * sigma_relax + sigma_read * sigma_read


def drift_moments(device: DeviceConfig, t_from_s: float, t_to_s: float) -> tuple[float, int, np.ndarray]:
    """What the drift kernel needs for one step t_from_s -> t_to_s: (mean shift uS, model id, parameters).

    The kernel moves each working cell from its own state G by mean + sqrt(max(V(t_to, G) - V(t_from, G), 0)) z,
    where V(t, G) is the model's drift variance at t evaluated at the cell's present conductance (the target is not
    stored; the difference is second order), and clamps at 0 uS. V(0) = 0 (just programmed: the programming spread
    is already in the state). Model ids: 0 none, 1 wan2022 (V = sigma_t(G)^2 - sigma_1s(G)^2 from the Wan fits,
    interpolated in ln t, held past 2 days), 2 cmo_hfox (V = relaxation + 1/f variance, mean -0.089 ln t uS).
    Parameters (float64): [w_from_lo, w_from_hi, idx_from, w_to_lo, w_to_hi, idx_to, ln t_from, ln t_to,
    has_from, has_to] for wan2022; [sigma_relax_from, sigma_relax_to, f_from, f_to, has_from, has_to] for
    cmo_hfox, f = sqrt(ln((t + t_read) / (2 t_read))).
    """
    for name, value in (("t_from_s", t_from_s), ("t_to_s", t_to_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if t_to_s < t_from_s:
        raise ValueError(f"t_to_s ({t_to_s}) must be >= t_from_s ({t_from_s}): drift only runs forward in time")
    if device.drift_model == "none" or t_to_s == t_from_s or t_to_s == 0:
        return 0.0, 0, np.zeros(1)
    has_from = 1.0 if t_from_s > 0 else 0.0
    t0, t1 = max(float(t_from_s), 1.0), max(float(t_to_s), 1.0)
    if device.drift_model == "wan2022":
        w0 = _wan_weights(t0)
        w1 = _wan_weights(t1)
        return 0.0, 1, np.array([*w0, *w1, has_from, 1.0])
    mean = CMO_HFOX_DRIFT_MEAN_US_PER_LN_S * (math.log(t1) - math.log(t0))
    t_read = CMO_HFOX_READ_T_S
    s0 = CMO_HFOX_DRIFT_SIGMA_US[0] * math.log(t0) + CMO_HFOX_DRIFT_SIGMA_US[1]
    s1 = CMO_HFOX_DRIFT_SIGMA_US[0] * math.log(t1) + CMO_HFOX_DRIFT_SIGMA_US[1]
    f0 = math.sqrt(math.log((t0 + t_read) / (2.0 * t_read)))
    f1 = math.sqrt(math.log((t1 + t_read) / (2.0 * t_read)))
    return mean, 2, np.array([s0, s1, f0, f1, has_from, 1.0])


def _wan_weights(t_s: float) -> tuple[float, float, float]:
    """(weight of the lower fit, weight of the upper fit, index of the lower fit) for ln-t interpolation."""
    times = sorted(WAN2022_DRIFT_COEFFS_US)
    if t_s >= times[-1]:
        return 0.0, 1.0, float(len(times) - 2)
    for k, (lo, hi) in enumerate(zip(times[:-1], times[1:], strict=True)):
        if t_s <= hi:
            w = (math.log(t_s) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return 1.0 - w, w, float(k)
    raise AssertionError("unreachable")


def wan_drift_coeff_table(device: DeviceConfig) -> np.ndarray:
    """(3, 5) float64: the Wan sigma polynomials at 1 s, 1 day, 2 days (rows in time order), for the kernel."""
    return np.array([WAN2022_DRIFT_COEFFS_US[t] for t in sorted(WAN2022_DRIFT_COEFFS_US)], dtype=np.float64)


def apply_drift(
    state: ArrayState, device: DeviceConfig, *, t_from_s: float, t_to_s: float, seed: int, stream: int
) -> None:
    """Relax every working real cell from t_from_s to t_to_s seconds after programming, in place.

    Each cell moves from its own state by an independent Gaussian increment (see `drift_moments`), clamped at
    0 uS only (the physical bound, as aihwkit's Wan model and CrossSim do; the CMO window clamp of aihwkit belongs
    to its single-device mapping and would make the idle cell of a pair unable to follow the common relaxation,
    shrinking every weight). Stuck cells and padding rows never move. Draws are a pure function of
    (seed, stream, cell).
    """
    g_diff, g_neg, writes_pos, writes_neg = state_views(state, device)
    _check_int("seed", seed)
    _check_int("stream", stream)
    mean, model, params = drift_moments(device, t_from_s, t_to_s)
    if model == 0:
        return
    drift_kernel(
        g_diff, g_neg, writes_pos, writes_neg, state.d_in, float(device.g_min_us), float(device.g_range_us),
        mean, model, params, wan_drift_coeff_table(device), CMO_HFOX_READ_K, domain_key(seed, stream, DOMAIN_DRIFT),
        NORMAL_TABLE,
    )  # fmt: skip


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
