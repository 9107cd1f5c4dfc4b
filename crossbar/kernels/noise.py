"""Kernels of `crossbar.noise`: drift of the programmed conductances and stuck-at fabrication faults.

The drift kernel computes each cell's sigma from the drift model's named parameter record
(`crossbar.nonideal.drift`), dispatched on the model's kernel id; an unknown id is an error. Twins:
`tests/naive_programming.py::drift_np`, `fault_np`.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.jit import inline, kernel
from crossbar.kernels.cells import INV_2_32, STUCK_COUNT, horner, read_pair, store_pair
from crossbar.nonideal.drift import KERNEL_CMO_HFOX, KERNEL_PER_CELL, KERNEL_WAN2022, CmoDriftStep, WanDriftStep
from crossbar.rng import normal_from_hash, splitmix64

__all__ = ["drift_kernel", "fault_kernel"]

# Positions of the drift records' fields in the float64 vector the kernel gets (the record's field order).
_WAN_W_FROM_LO, _WAN_W_FROM_HI, _WAN_FIT_FROM, _WAN_W_TO_LO, _WAN_W_TO_HI, _WAN_FIT_TO = (
    WanDriftStep._fields.index(name) for name in ("w_from_lo", "w_from_hi", "fit_from", "w_to_lo", "w_to_hi", "fit_to")
)
_CMO_S_FROM, _CMO_S_TO, _CMO_F_FROM, _CMO_F_TO, _CMO_HAS_FROM, _CMO_K = (
    CmoDriftStep._fields.index(name)
    for name in ("sigma_relax_from_us", "sigma_relax_to_us", "flicker_from", "flicker_to", "has_from", "k_read_us")
)


@inline
def _drift_sigma(g: float, model: int, params: np.ndarray, fits: np.ndarray, g_min: float, g_range: float) -> float:
    """sqrt(max(V(t_to, g) - V(t_from, g), 0)) for one cell at conductance g (`crossbar.nonideal.drift`): the
    built-in models by kernel id, their parameters by field name (`WanDriftStep`, `CmoDriftStep`). NaN for an id
    without a formula here (`drift_kernel` refuses those before its loop)."""
    if model == KERNEL_WAN2022:
        x = (g - g_min) / g_range
        i0 = int(params[_WAN_FIT_FROM])
        i1 = int(params[_WAN_FIT_TO])
        s_from = params[_WAN_W_FROM_LO] * horner(fits[i0], x) + params[_WAN_W_FROM_HI] * horner(fits[i0 + 1], x)
        s_to = params[_WAN_W_TO_LO] * horner(fits[i1], x) + params[_WAN_W_TO_HI] * horner(fits[i1 + 1], x)
        var = s_to * s_to - s_from * s_from
    elif model == KERNEL_CMO_HFOX:
        lg = np.log10(g if g > 1e-6 else 1e-6)
        r_from = params[_CMO_K] * lg * params[_CMO_F_FROM]
        r_to = params[_CMO_K] * lg * params[_CMO_F_TO]
        s_from = params[_CMO_S_FROM]
        s_to = params[_CMO_S_TO]
        var = s_to * s_to + r_to * r_to - params[_CMO_HAS_FROM] * (s_from * s_from + r_from * r_from)
    else:
        return np.nan
    return np.sqrt(var) if var > 0.0 else 0.0


@inline
def _drifted(
    g: float, k: int, r: int, c: int, h: np.uint64, model: int, mean_us: float, params: np.ndarray,
    fits: np.ndarray, moments: np.ndarray, g_min: float, g_range: float, table: np.ndarray,
) -> float:  # fmt: skip
    """Cell k (0: G+, 1: G-) of weight (r, c) after one drift step: max(g + mean + sigma z, 0), z from lane k of
    the weight's hash; mean and sigma from `moments[2k]`, `moments[2k + 1]` for a per-cell model, else the step's
    mean and `_drift_sigma`."""
    if model == KERNEL_PER_CELL:
        mean = moments[2 * k, r, c]
        sigma = moments[2 * k + 1, r, c]
    else:
        mean = mean_us
        sigma = _drift_sigma(g, model, params, fits, g_min, g_range)
    return max(g + mean + sigma * normal_from_hash(h, k, table), 0.0)


@kernel
def drift_kernel(
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    d_in: int,
    g_min: float,
    g_range: float,
    mean_us: float,
    model: int,
    params: np.ndarray,
    fits: np.ndarray,
    moments: np.ndarray,
    key: np.uint64,
    table: np.ndarray,
) -> None:
    """Move every working real cell of `views` ((g_diff, g_neg, writes_pos, writes_neg) as 2-D (rows, d_out)
    views, `crossbar.state.kernel_views`) from its own state G by mean + sigma(G) z, clamped at 0 uS.

    `model`: the drift model's kernel id (`crossbar.nonideal.drift.KERNEL_*`; any other raises ValueError before
    anything moves). Built-in ids: sigma(G) is the model's variance increment at the cell's conductance
    (`_drift_sigma`) from `params` (the step's record as float64, field order) and `fits` (the model's constant
    table), the mean `mean_us`. KERNEL_PER_CELL: `moments` (4, rows, d_out) float64 holds each cell's mean and
    sigma (G+ mean, G+ sigma, G- mean, G- sigma). Weight w = r * d_out + c draws hash(key ^ w): lane 0 for G+,
    lane 1 for G-. Stuck cells do not move.
    """
    if model != KERNEL_PER_CELL and model != KERNEL_WAN2022 and model != KERNEL_CMO_HFOX:
        raise ValueError("drift_kernel: unknown drift model id (crossbar.nonideal.drift.KERNEL_IDS lists them)")
    g_diff, g_neg, writes_pos, writes_neg = views
    d_out = g_diff.shape[1]
    for r in numba.prange(d_in):
        for c in range(d_out):
            gp0, gn0 = read_pair(g_diff, g_neg, r, c)
            h = splitmix64(key ^ np.uint64(r * d_out + c))
            gp = gp0
            gn = gn0
            if writes_pos[r, c] != STUCK_COUNT:
                gp = _drifted(gp0, 0, r, c, h, model, mean_us, params, fits, moments, g_min, g_range, table)
            if writes_neg[r, c] != STUCK_COUNT:
                gn = _drifted(gn0, 1, r, c, h, model, mean_us, params, fits, moments, g_min, g_range, table)
            store_pair(g_diff, g_neg, r, c, gp, gn, gp0, gn0)


@kernel
def fault_kernel(
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    d_in: int,
    g_min: float,
    g_max: float,
    rate_min: float,
    rate_max: float,
    key: np.uint64,
    new_faults: np.ndarray,
) -> None:
    """Fabrication faults: a working real cell with uniform u < rate_min is stuck at g_min (SA0), with
    rate_min <= u < rate_min + rate_max stuck at g_max (SA1); its counter becomes STUCK.

    Weight w = r * d_out + c draws hash(key ^ w): the low 32 bits give u for G+, the high 32 bits for G-.
    Cells already stuck stay as they are. new_faults[r] = cells of row r made stuck by this call. `views`: as
    `drift_kernel`.
    """
    g_diff, g_neg, writes_pos, writes_neg = views
    d_out = g_diff.shape[1]
    rate_any = rate_min + rate_max
    for r in numba.prange(d_in):
        n_new = 0
        for c in range(d_out):
            h = splitmix64(key ^ np.uint64(r * d_out + c))
            u_pos = float(h & np.uint64(0xFFFFFFFF)) * INV_2_32
            u_neg = float(h >> np.uint64(32)) * INV_2_32
            gp0, gn0 = read_pair(g_diff, g_neg, r, c)
            gp = gp0
            gn = gn0
            if writes_pos[r, c] != STUCK_COUNT and u_pos < rate_any:
                gp = g_min if u_pos < rate_min else g_max
                writes_pos[r, c] = STUCK_COUNT
                n_new += 1
            if writes_neg[r, c] != STUCK_COUNT and u_neg < rate_any:
                gn = g_min if u_neg < rate_min else g_max
                writes_neg[r, c] = STUCK_COUNT
                n_new += 1
            store_pair(g_diff, g_neg, r, c, gp, gn, gp0, gn0)
        new_faults[r] = n_new
