"""Kernels of `crossbar.noise`: drift of the programmed conductances and stuck-at fabrication faults.

Drift follows each cell's unclamped conductance (its latent state) from a fixed reference, both set once after
programming (`drift_origin_kernel`); what the array reads is the latent clamped at 0 uS. The drift kernel computes
each cell's sigma at its reference from the drift model's named parameter record (`crossbar.nonideal.drift`),
dispatched on the model's kernel id; an unknown id is an error. Twins: `tests/naive_programming.py::drift_np`,
`drift_origin_np`, `fault_np`.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.jit import inline, kernel
from crossbar.kernels.cells import INV_2_32, STUCK_COUNT, horner, read_pair, store_pair
from crossbar.nonideal.drift import KERNEL_CMO_HFOX, KERNEL_PER_CELL, KERNEL_WAN2022, CmoDriftStep, WanDriftStep
from crossbar.rng import normal_from_hash, splitmix64

__all__ = [
    "ORIGIN_LATENT_NEG",
    "ORIGIN_LATENT_POS",
    "ORIGIN_REF",
    "drift_kernel",
    "drift_origin_kernel",
    "fault_kernel",
]

ORIGIN_LATENT_POS, ORIGIN_LATENT_NEG, ORIGIN_REF = 0, 1, 2
"""Planes of a drift origin (3, rows, d_out) float32: latent G+ and G- (uS, unclamped), and the signed reference
of the pair's active cell above g_min (uS; >= 0: G+ is active, G- idle at g_min; < 0: the reverse)."""

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
def _reference(ref: float, k: int, g_min: float) -> float:
    """Reference conductance (uS) of cell k (0: G+, 1: G-) from the pair's signed reference: the active cell's
    programmed conductance, g_min for the idle one."""
    if k == 0:
        return g_min + (ref if ref > 0.0 else 0.0)
    return g_min + (-ref if ref < 0.0 else 0.0)


@inline
def _drift_increment(
    k: int, r: int, c: int, h: np.uint64, ref: float, model: int, mean_us: float, params: np.ndarray,
    fits: np.ndarray, moments: np.ndarray, g_min: float, g_range: float, table: np.ndarray,
) -> float:  # fmt: skip
    """Latent move of cell k of weight (r, c) over one step: mean + sigma z, z from lane k of the weight's hash;
    mean and sigma from `moments[2k]`, `moments[2k + 1]` for a per-cell model, else the step's mean and
    `_drift_sigma` at the cell's reference."""
    if model == KERNEL_PER_CELL:
        mean = moments[2 * k, r, c]
        sigma = moments[2 * k + 1, r, c]
    else:
        mean = mean_us
        sigma = _drift_sigma(_reference(ref, k, g_min), model, params, fits, g_min, g_range)
    return mean + sigma * normal_from_hash(h, k, table)


@kernel
def drift_kernel(
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    origin: np.ndarray,
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
    """One drift step of every working real cell of `views` ((g_diff, g_neg, writes_pos, writes_neg) as 2-D
    (rows, d_out) views, `crossbar.state.kernel_views`): its latent (`origin`, (3, rows, d_out) float32, see
    ORIGIN_*) moves by mean + sigma z, and the array then holds max(latent, 0).

    sigma is the model's variance increment V(t_to, ref) - V(t_from, ref) evaluated at the cell's fixed reference
    (built-in ids, `_drift_sigma`, from `params` (the step's record as float64, field order) and `fits` (the
    model's constant table), the mean `mean_us`), so the increments of successive steps add up to the model's
    variance at the last time: the state at t does not depend on how many steps reached it. KERNEL_PER_CELL:
    `moments` (4, rows, d_out) float64 holds each cell's mean and sigma (G+ mean, G+ sigma, G- mean, G- sigma),
    evaluated at the references. Any other id raises ValueError before anything moves. Weight w = r * d_out + c
    draws hash(key ^ w): lane 0 for G+, lane 1 for G-. Stuck cells do not move.
    """
    if model != KERNEL_PER_CELL and model != KERNEL_WAN2022 and model != KERNEL_CMO_HFOX:
        raise ValueError("drift_kernel: unknown drift model id (crossbar.nonideal.drift.KERNEL_IDS lists them)")
    g_diff, g_neg, writes_pos, writes_neg = views
    d_out = g_diff.shape[1]
    for r in numba.prange(d_in):
        for c in range(d_out):
            gp0, gn0 = read_pair(g_diff, g_neg, r, c)
            h = splitmix64(key ^ np.uint64(r * d_out + c))
            ref = np.float64(origin[ORIGIN_REF, r, c])
            gp = gp0
            gn = gn0
            if writes_pos[r, c] != STUCK_COUNT:
                latent = np.float64(origin[ORIGIN_LATENT_POS, r, c]) + _drift_increment(
                    0, r, c, h, ref, model, mean_us, params, fits, moments, g_min, g_range, table
                )
                origin[ORIGIN_LATENT_POS, r, c] = np.float32(latent)
                gp = max(latent, 0.0)
            if writes_neg[r, c] != STUCK_COUNT:
                latent = np.float64(origin[ORIGIN_LATENT_NEG, r, c]) + _drift_increment(
                    1, r, c, h, ref, model, mean_us, params, fits, moments, g_min, g_range, table
                )
                origin[ORIGIN_LATENT_NEG, r, c] = np.float32(latent)
                gn = max(latent, 0.0)
            store_pair(g_diff, g_neg, r, c, gp, gn, gp0, gn0)


@inline
def _latent_at_origin(g: float, stuck: bool, z: float, sigma_idle: float) -> float:
    """A cell's latent conductance right after programming: what it reads, except that a working cell reading
    exactly 0 uS (clamped) lies somewhere below 0: -|sigma_idle z|, the clamped half of N(g_min, sigma_idle^2)."""
    if g > 0.0 or stuck:
        return g
    return -abs(sigma_idle * z)


@kernel
def drift_origin_kernel(
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    d_in: int,
    g_min: float,
    sigma_idle: float,
    key: np.uint64,
    table: np.ndarray,
    origin: np.ndarray,
) -> None:
    """Fill `origin` (3, rows, d_out) float32 (ORIGIN_*) from the just-programmed array `views` (as
    `drift_kernel`): the reference of each pair is its larger cell's conductance above g_min, signed by which
    cell it is (the other is the idle cell, whose target was g_min); the latents are the cells' conductances,
    with cells clamped at 0 uS redrawn below 0 (`_latent_at_origin`, `sigma_idle` the programming spread at g_min,
    uS). Weight w draws hash(key ^ w): lane 0 for G+, lane 1 for G-. Padding rows are left as they are."""
    g_diff, g_neg, writes_pos, writes_neg = views
    d_out = g_diff.shape[1]
    for r in numba.prange(d_in):
        for c in range(d_out):
            gp, gn = read_pair(g_diff, g_neg, r, c)
            h = splitmix64(key ^ np.uint64(r * d_out + c))
            if gp >= gn:
                ref = gp - g_min if gp > g_min else 0.0
            else:
                ref = -(gn - g_min) if gn > g_min else 0.0
            origin[ORIGIN_REF, r, c] = np.float32(ref)
            z_pos = normal_from_hash(h, 0, table)
            z_neg = normal_from_hash(h, 1, table)
            origin[ORIGIN_LATENT_POS, r, c] = np.float32(
                _latent_at_origin(gp, writes_pos[r, c] == STUCK_COUNT, z_pos, sigma_idle)
            )
            origin[ORIGIN_LATENT_NEG, r, c] = np.float32(
                _latent_at_origin(gn, writes_neg[r, c] == STUCK_COUNT, z_neg, sigma_idle)
            )


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
