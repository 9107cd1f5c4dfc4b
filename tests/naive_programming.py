"""Plain NumPy twins of the programming, drift and fault kernels of `crossbar.kernels`.

Each twin follows its kernel's model in the most direct vectorised form (a loop over pulses, fancy indexing over
cells) with the same counter-based random draws, so conductances, counters and pulse counts agree bit for bit and
energy sums (added in another order) to 1e-6. They are also the NumPy reference of benchmarks/programming.py.
Arguments are the kernels' 2-D (rows, d_out) views; arrays are updated in place; totals are returned.
"""

from __future__ import annotations

import numpy as np

from crossbar.kernels import (
    DRAW_COUNTER,
    DRAW_PULSE_SHIFT,
    DRAW_STATISTICAL,
    PM_C0,
    PM_C1,
    PM_D2D,
    PM_INCREMENTAL,
    PM_MAX_STEP,
    PM_SIGMA,
)
from crossbar.nonideal.drift import KERNEL_CMO_HFOX, KERNEL_PER_CELL, KERNEL_WAN2022
from crossbar.rng import DOMAIN_D2D, normal_from_hash_np, splitmix64_np, uniform_from_hash_np
from crossbar.state import MAX_COUNT, STUCK

_SHIFT = np.uint64(DRAW_PULSE_SHIFT)


def _hash(key: np.uint64, counters: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return splitmix64_np(np.uint64(key) ^ counters.astype(np.uint64))


def d2d_factor_np(d2d_key, cells, d2d_sigma):
    """Twin of `_d2d_factor`: fixed per-cell lognormal step multipliers exp(d2d_sigma z - d2d_sigma^2 / 2)."""
    if d2d_sigma == 0.0:
        return np.ones(cells.shape[0])
    z = normal_from_hash_np(_hash(d2d_key, cells), 0).astype(np.float64)
    return np.exp(d2d_sigma * z - 0.5 * d2d_sigma * d2d_sigma)


def harmonic_np(a, b):
    """Twin of `_harmonic`: 2ab / (a + b), 0 when both are 0."""
    return 2.0 * a * b / np.maximum(a + b, 1e-300)


def write_verify_cells_np(g, g_target, stuck, active, cells, d2d, *, key, tol, pm, g_min, g_max, max_pulses):
    """Pulse-and-verify loop for flat float64 cell arrays; `active` = needs writing after the first verify read.

    Returns (state after the pulses, SET pulses, RESET pulses, sum of harmonic-mean G over SET pulses, same for
    RESET, sum of G at the verify reads after pulses).
    """
    incremental = pm[PM_INCREMENTAL] > 0.5
    g = np.array(g, dtype=np.float64)
    n = g.shape[0]
    n_set = np.zeros(n, dtype=np.int64)
    n_reset = np.zeros(n, dtype=np.int64)
    s_set = np.zeros(n)
    s_reset = np.zeros(n)
    s_read = np.zeros(n)
    hashes = np.zeros(n, dtype=np.uint64)
    base = np.uint64(key) ^ (cells.astype(np.uint64) << _SHIFT)
    idx = np.flatnonzero(active)
    for p in range(max_pulses):
        if idx.size == 0:
            break
        if p % 4 == 0:
            with np.errstate(over="ignore"):
                hashes[idx] = splitmix64_np(base[idx] ^ np.uint64(p >> 2))
        z = normal_from_hash_np(hashes[idx], p % 4).astype(np.float64)
        g_old = g[idx]
        target = g_target[idx]
        up = target > g_old
        if incremental:
            dist = np.where(up, g_old - g_min, g_max - g_old)
            size = np.maximum(d2d[idx] * (pm[PM_C0] - pm[PM_C1] * dist), 0.0)
            step = np.where(up, size, -size)
        else:
            step = np.minimum(np.maximum(target - g_old, -pm[PM_MAX_STEP]), pm[PM_MAX_STEP])
        g_new = np.minimum(np.maximum(g_old + step + pm[PM_SIGMA] * z, g_min), g_max)
        g_new = np.where(stuck[idx], g_old, g_new)
        g_pulse = harmonic_np(g_old, g_new)
        n_set[idx] += up
        n_reset[idx] += ~up
        s_set[idx] += np.where(up, g_pulse, 0.0)
        s_reset[idx] += np.where(up, 0.0, g_pulse)
        s_read[idx] += g_new
        g[idx] = g_new
        idx = idx[np.abs(g_new - target) > tol]
    return g, n_set, n_reset, s_set, s_reset, s_read


def programmed_np(g_end, target, cells, *, key, poly_scale, poly_offset, coeffs):
    """Twin of `programmed_conductance`: max(target + sigma(target) z, 0), or g_end without a fitted error."""
    if coeffs.shape[0] == 0:
        return g_end
    h = _hash(key, (cells.astype(np.uint64) << _SHIFT) | np.uint64(DRAW_STATISTICAL))
    z = normal_from_hash_np(h, 0).astype(np.float64)
    return np.maximum(target + sigma_poly_np(target, poly_scale, poly_offset, coeffs) * z, 0.0)


def _row_latency_counts(cells, n_set, n_reset, d_in):
    """Per row: (max SET pulses of a cell, max RESET pulses of a cell, 1 if any cell visited)."""
    rows = np.concatenate([cells["rows"], cells["rows"]])
    max_set = np.zeros(d_in, dtype=np.int64)
    max_reset = np.zeros(d_in, dtype=np.int64)
    np.maximum.at(max_set, rows, n_set)
    np.maximum.at(max_reset, rows, n_reset)
    visited = np.zeros(d_in, dtype=np.int64)
    visited[rows] = 1
    return int(max_set.sum()), int(max_reset.sum()), int(visited.sum())


def wear_np(count, pulses, *, ppc, endurance, key, cells):
    """Twin of `wear`: counters after adding pulses (stochastic rounding when ppc > 1), STUCK past endurance."""
    count = count.astype(np.int64)
    pulses = pulses.astype(np.int64)
    if ppc == 1:
        inc = pulses
    else:
        u = uniform_from_hash_np(_hash(key, (cells.astype(np.uint64) << _SHIFT) | np.uint64(DRAW_COUNTER)))
        inc = np.floor(pulses / ppc + u).astype(np.int64)
    new = np.minimum(count + inc, MAX_COUNT)
    new = np.where(new * ppc >= endurance, STUCK, new)
    keep = (count == STUCK) | (pulses == 0)
    return np.where(keep, count, new).astype(np.uint16)


def _gather(g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed, d_in):
    d_out = g_diff.shape[1]
    mask = np.ones((d_in, d_out), dtype=bool) if changed is None else changed[:d_in].copy()
    rows, cols = np.nonzero(mask)
    g_neg32 = g_neg[rows, cols]
    g_pos32 = g_diff[rows, cols] + g_neg32  # float32, as ArrayState.g_pos_us
    weights = (rows * d_out + cols).astype(np.int64)
    return {
        "rows": rows,
        "cols": cols,
        "g0": np.concatenate([g_pos32.astype(np.float64), g_neg32.astype(np.float64)]),
        "target": np.concatenate([target_pos[rows, cols], target_neg[rows, cols]]).astype(np.float64),
        "count": np.concatenate([writes_pos[rows, cols], writes_neg[rows, cols]]),
        "cells": np.concatenate([2 * weights, 2 * weights + 1]),
    }


def _scatter(cells, g_final, pulses, count_new, g_diff, g_neg, writes_pos, writes_neg, shape, record):
    rows, cols = cells["rows"], cells["cols"]
    n = rows.shape[0]
    gp0, gn0 = cells["g0"][:n], cells["g0"][n:]
    gp, gn = g_final[:n], g_final[n:]
    moved = (gp != gp0) | (gn != gn0)
    gn32 = gn[moved].astype(np.float32)
    g_neg[rows[moved], cols[moved]] = gn32
    g_diff[rows[moved], cols[moved]] = gp[moved].astype(np.float32) - gn32
    writes_pos[rows, cols] = count_new[:n]
    writes_neg[rows, cols] = count_new[n:]
    pulses_pos = np.zeros(shape, dtype=np.uint8)
    pulses_neg = np.zeros(shape, dtype=np.uint8)
    if record:
        pulses_pos[rows, cols] = pulses[:n]
        pulses_neg[rows, cols] = pulses[n:]
    return pulses_pos, pulses_neg


def write_verify_np(
    g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed, d_in, *, g_min, g_max, tol, pm,
    d2d_key, max_pulses, endurance, ppc, key, poly_scale, poly_offset, coeffs, write_coef, read_coef, record=True,
):  # fmt: skip
    """Twin of `write_verify_kernel`. Returns (totals dict, pulses_pos, pulses_neg)."""
    cells = _gather(g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed, d_in)
    g0, target = cells["g0"], cells["target"]
    stuck = cells["count"] == STUCK
    active = np.abs(g0 - target) > tol  # first verify read
    d2d = d2d_factor_np(d2d_key, cells["cells"], pm[PM_D2D])
    g, n_set, n_reset, s_set, s_reset, s_read = write_verify_cells_np(
        g0, target, stuck, active, cells["cells"], d2d, key=key, tol=tol, pm=pm, g_min=g_min, g_max=g_max,
        max_pulses=max_pulses,
    )  # fmt: skip
    done = ~stuck & (np.abs(g - target) <= tol)
    final = programmed_np(g, target, cells["cells"], key=key, poly_scale=poly_scale, poly_offset=poly_offset,
                          coeffs=coeffs)  # fmt: skip
    g = np.where(done, final, g)
    pulses = n_set + n_reset
    count_new = wear_np(cells["count"], pulses, ppc=ppc, endurance=endurance, key=key, cells=cells["cells"])
    pp, pn = _scatter(cells, g, pulses, count_new, g_diff, g_neg, writes_pos, writes_neg, g_diff.shape, record)
    row_set, row_reset, rows = _row_latency_counts(cells, n_set, n_reset, d_in)
    totals = {
        "cells": int(g0.shape[0]),
        "set": int(n_set.sum()),
        "reset": int(n_reset.sum()),
        "row_set": row_set,
        "row_reset": row_reset,
        "rows": rows,
        "e_set": write_coef * float(s_set.sum()),
        "e_reset": write_coef * float(s_reset.sum()),
        "e_read": read_coef * float(g0.sum() + s_read.sum()),
    }
    return totals, pp, pn


def pulse_table_np(n_grid, n_samples, *, g_min, g_max, tol, pm, max_pulses, key):
    """Twin of `pulse_table_kernel` (first verify skipped: every cell starts active)."""
    span = g_max - g_min
    grid_i, grid_j = np.divmod(np.arange(n_grid * n_grid), n_grid)
    point = np.repeat(np.arange(n_grid * n_grid), n_samples)
    g_start = g_min + span * np.repeat(grid_i, n_samples) / (n_grid - 1)
    g_target = g_min + span * np.repeat(grid_j, n_samples) / (n_grid - 1)
    cells = point * n_samples + np.tile(np.arange(n_samples), n_grid * n_grid)
    n = cells.shape[0]
    d2d_key = splitmix64_np(np.uint64(key) ^ np.uint64(DOMAIN_D2D))
    d2d = d2d_factor_np(d2d_key, cells, pm[PM_D2D])
    _, n_set, n_reset, s_set, s_reset, s_read = write_verify_cells_np(
        g_start, g_target, np.zeros(n, dtype=bool), np.ones(n, dtype=bool), cells, d2d, key=key, tol=tol, pm=pm,
        g_min=g_min, g_max=g_max, max_pulses=max_pulses,
    )  # fmt: skip
    total = (n_set + n_reset).reshape(n_grid * n_grid, n_samples).sum(axis=1)
    g_pulse = (s_set + s_reset).reshape(n_grid * n_grid, n_samples).sum(axis=1)
    g_read = s_read.reshape(n_grid * n_grid, n_samples).sum(axis=1)
    out = np.stack([total / n_samples, g_pulse / total, g_read / total])
    return out.reshape(3, n_grid, n_grid)


def sigma_poly_np(g, scale, offset, coeffs):
    if coeffs.shape[0] == 0:
        return np.zeros(np.shape(g))
    x = g * scale + offset
    acc = np.full(g.shape, coeffs[-1], dtype=np.float64)
    for k in range(coeffs.shape[0] - 2, -1, -1):
        acc = acc * x + coeffs[k]
    return np.where(acc < 0.0, 0.0, acc)


def bilinear_np(grid, u_start, u_target):
    k = grid.shape[1] - 1
    x = np.minimum(np.maximum(u_start * float(k), 0.0), float(k))
    y = np.minimum(np.maximum(u_target * float(k), 0.0), float(k))
    i = np.minimum(x.astype(np.int64), k - 1)
    j = np.minimum(y.astype(np.int64), k - 1)
    fx = x - i
    fy = y - j
    w00 = (1.0 - fx) * (1.0 - fy)
    w10 = fx * (1.0 - fy)
    w01 = (1.0 - fx) * fy
    w11 = fx * fy
    return [
        grid[m, i, j] * w00 + grid[m, i + 1, j] * w10 + grid[m, i, j + 1] * w01 + grid[m, i + 1, j + 1] * w11
        for m in range(3)
    ]


def statistical_np(
    g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed, d_in, *, g_min, g_max, tol, max_pulses,
    endurance, ppc, key, poly_scale, poly_offset, coeffs, pulse_table, write_coef, read_coef, record=True,
):  # fmt: skip
    """Twin of `statistical_kernel`. Returns (totals dict, pulses_pos, pulses_neg)."""
    cells = _gather(g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed, d_in)
    g0, target = cells["g0"], cells["target"]
    stuck = cells["count"] == STUCK
    write = np.abs(g0 - target) > tol
    is_set = target > g0
    h = _hash(key, (cells["cells"].astype(np.uint64) << _SHIFT) | np.uint64(DRAW_STATISTICAL))
    g_end = programmed_np(target, target, cells["cells"], key=key, poly_scale=poly_scale, poly_offset=poly_offset,
                          coeffs=coeffs)  # fmt: skip
    inv_span = 1.0 / (g_max - g_min)
    expected, g_per_pulse, g_per_read = bilinear_np(pulse_table, (g0 - g_min) * inv_span, (target - g_min) * inv_span)
    n = expected.astype(np.int64)
    n += (h >> np.uint64(16)).astype(np.float64) * (1.0 / 281474976710656.0) < expected - n
    n = np.clip(n, 1, max_pulses)
    sum_pulse = n * g_per_pulse
    sum_read = n * g_per_read
    n = np.where(stuck, max_pulses, n)
    sum_pulse = np.where(stuck, max_pulses * g0, sum_pulse)
    sum_read = np.where(stuck, max_pulses * g0, sum_read)
    g_end = np.where(stuck, g0, g_end)
    n = np.where(write, n, 0)
    sum_pulse = np.where(write, sum_pulse, 0.0)
    sum_read = np.where(write, sum_read, 0.0)
    within = ~write & ~stuck & (coeffs.shape[0] > 0)
    g_final = np.where(write | within, g_end, g0)
    count_new = wear_np(cells["count"], n, ppc=ppc, endurance=endurance, key=key, cells=cells["cells"])
    pp, pn = _scatter(cells, g_final, n, count_new, g_diff, g_neg, writes_pos, writes_neg, g_diff.shape, record)
    row_set, row_reset, rows = _row_latency_counts(cells, np.where(is_set, n, 0), np.where(is_set, 0, n), d_in)
    totals = {
        "cells": int(g0.shape[0]),
        "set": int(n[is_set].sum()),
        "reset": int(n[~is_set].sum()),
        "row_set": row_set,
        "row_reset": row_reset,
        "rows": rows,
        "e_set": write_coef * float(sum_pulse[is_set].sum()),
        "e_reset": write_coef * float(sum_pulse[~is_set].sum()),
        "e_read": read_coef * float(g0.sum() + sum_read.sum()),
    }
    return totals, pp, pn


def _real_weights(g_diff, d_in):
    d_out = g_diff.shape[1]
    rows, cols = np.divmod(np.arange(d_in * d_out), d_out)
    return rows, cols, np.arange(d_in * d_out, dtype=np.int64)


def drift_sigma_np(g, *, model, step, fits, g_min, g_range):
    """Twin of `_drift_sigma`: `model` a built-in kernel id, `step` its named record, `fits` its constant table."""
    if model == KERNEL_WAN2022:
        x = (g - g_min) / g_range

        def poly(row):
            return sigma_poly_np(x, 1.0, 0.0, fits[row])

        i0, i1 = int(step.fit_from), int(step.fit_to)
        s_from = step.w_from_lo * poly(i0) + step.w_from_hi * poly(i0 + 1)
        s_to = step.w_to_lo * poly(i1) + step.w_to_hi * poly(i1 + 1)
        var = s_to * s_to - s_from * s_from
    elif model == KERNEL_CMO_HFOX:
        lg = np.log10(np.where(g > 1e-6, g, 1e-6))
        r_from = step.k_read_us * lg * step.flicker_from
        r_to = step.k_read_us * lg * step.flicker_to
        s_from, s_to = step.sigma_relax_from_us, step.sigma_relax_to_us
        var = s_to * s_to + r_to * r_to - step.has_from * (s_from * s_from + r_from * r_from)
    else:
        raise ValueError(f"no built-in drift formula for kernel id {model!r}")
    return np.sqrt(np.where(var > 0.0, var, 0.0))


def _references_np(ref, g_min):
    return g_min + np.maximum(ref, 0.0), g_min + np.maximum(-ref, 0.0)


def drift_origin_np(g_diff, g_neg, writes_pos, writes_neg, d_in, *, g_min, sigma_idle, key):
    """Twin of `drift_origin_kernel`: returns the origin (3, rows, d_out) float32 (latent G+, latent G-, signed
    reference)."""
    rows, cols, weights = _real_weights(g_diff, d_in)
    h = _hash(key, weights)
    gn = g_neg[rows, cols].astype(np.float64)
    gp = (g_diff[rows, cols] + g_neg[rows, cols]).astype(np.float64)
    origin = np.zeros((3, *g_diff.shape), dtype=np.float32)
    origin[2, rows, cols] = np.where(gp >= gn, np.maximum(gp - g_min, 0.0), -np.maximum(gn - g_min, 0.0))
    for k, (g, writes) in enumerate(((gp, writes_pos), (gn, writes_neg))):
        z = normal_from_hash_np(h, k).astype(np.float64)
        keep = (g > 0.0) | (writes[rows, cols] == STUCK)
        origin[k, rows, cols] = np.where(keep, g, -np.abs(sigma_idle * z))
    return origin


def drift_np(
    g_diff, g_neg, writes_pos, writes_neg, d_in, *, origin, g_min, g_range, model, step, fits, key, moments=None
):
    """Twin of `drift_kernel`: `origin` (3, rows, d_out) float32 is updated in place; `model` the kernel id, `step`
    the model's record, `fits` its table; for KERNEL_PER_CELL, `moments(ref)` gives each cell's (mean, sigma)."""
    rows, cols, weights = _real_weights(g_diff, d_in)
    h = _hash(key, weights)
    gn32 = g_neg[rows, cols]
    gp0 = (g_diff[rows, cols] + gn32).astype(np.float64)
    gn0 = gn32.astype(np.float64)
    ref_p, ref_n = _references_np(origin[2, rows, cols].astype(np.float64), g_min)
    if model == KERNEL_PER_CELL:
        (mp, sp), (mn, sn) = moments(ref_p), moments(ref_n)
    else:
        kw = {"model": model, "step": step, "fits": fits, "g_min": g_min, "g_range": g_range}
        mp = mn = step.mean_us
        sp, sn = drift_sigma_np(ref_p, **kw), drift_sigma_np(ref_n, **kw)
    new = []
    for k, (g0, mean, sigma, writes) in enumerate(((gp0, mp, sp, writes_pos), (gn0, mn, sn, writes_neg))):
        working = writes[rows, cols] != STUCK
        latent = origin[k, rows, cols].astype(np.float64) + mean + sigma * normal_from_hash_np(h, k).astype(np.float64)
        origin[k, rows[working], cols[working]] = latent[working].astype(np.float32)
        new.append(np.where(working, np.maximum(latent, 0.0), g0))
    gp, gn = new
    moved = (gp != gp0) | (gn != gn0)
    new_neg = gn[moved].astype(np.float32)
    g_neg[rows[moved], cols[moved]] = new_neg
    g_diff[rows[moved], cols[moved]] = gp[moved].astype(np.float32) - new_neg


def apply_drift_np(state, device, *, t_from_s, t_to_s, seed, stream, origin=None):
    """Twin of `crossbar.noise.apply_drift` on an `ArrayState`, through the twins above; returns the origin (3,
    n_tiles, tile_rows, d_out) float32 (`DriftOrigin.cells`), updated in place when given."""
    from crossbar.noise import drift_step, programming_sigma_us
    from crossbar.rng import DOMAIN_DRIFT, DOMAIN_DRIFT_ORIGIN, domain_key

    rows = state.n_tiles * state.tile_rows
    arrays = (state.g_diff_us, state.g_neg_us, state.writes_pos, state.writes_neg)
    views = [a.reshape(rows, state.d_out) for a in arrays]
    g_min = float(device.g_min_us)
    if origin is None:
        sigma_idle = float(programming_sigma_us(np.array([g_min]), device)[0])
        origin = drift_origin_np(*views, state.d_in, g_min=g_min, sigma_idle=sigma_idle,
                                 key=domain_key(seed, stream, DOMAIN_DRIFT_ORIGIN))  # fmt: skip
        origin = origin.reshape(3, *state.g_diff_us.shape)
    call = drift_step(device, t_from_s, t_to_s)
    if call is None:
        return origin
    model, step = call
    moments = None if model.cell_moments is None else (lambda g: model.cell_moments(g, step, device))
    drift_np(*views, state.d_in, origin=origin.reshape(3, rows, state.d_out), g_min=g_min,
             g_range=float(device.g_range_us),
             model=model.kernel_id, step=step, fits=model.kernel_fits(), key=domain_key(seed, stream, DOMAIN_DRIFT),
             moments=moments)  # fmt: skip
    return origin


def fault_np(g_diff, g_neg, writes_pos, writes_neg, d_in, *, g_min, g_max, rate_min, rate_max, key):
    """Twin of `fault_kernel`; returns the number of new stuck cells."""
    rows, cols, weights = _real_weights(g_diff, d_in)
    h = _hash(key, weights)
    u_pos = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
    u_neg = (h >> np.uint64(32)).astype(np.float64) * (1.0 / 4294967296.0)
    gn32 = g_neg[rows, cols]
    gp0 = (g_diff[rows, cols] + gn32).astype(np.float64)
    gn0 = gn32.astype(np.float64)
    rate_any = rate_min + rate_max
    hit_pos = (writes_pos[rows, cols] != STUCK) & (u_pos < rate_any)
    hit_neg = (writes_neg[rows, cols] != STUCK) & (u_neg < rate_any)
    gp = np.where(hit_pos, np.where(u_pos < rate_min, g_min, g_max), gp0)
    gn = np.where(hit_neg, np.where(u_neg < rate_min, g_min, g_max), gn0)
    writes_pos[rows[hit_pos], cols[hit_pos]] = STUCK
    writes_neg[rows[hit_neg], cols[hit_neg]] = STUCK
    moved = (gp != gp0) | (gn != gn0)
    new_neg = gn[moved].astype(np.float32)
    g_neg[rows[moved], cols[moved]] = new_neg
    g_diff[rows[moved], cols[moved]] = gp[moved].astype(np.float32) - new_neg
    return int(hit_pos.sum() + hit_neg.sum())


def store_state_np(pos_us: np.ndarray, neg_us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Twin of `store_state_kernel` (the bandwidth floor of programming): (g_diff, g_neg, writes_pos, writes_neg)."""
    ones = np.ones(pos_us.shape, dtype=np.uint16)
    return (pos_us - neg_us).astype(np.float32), neg_us.copy(), ones, ones.copy()
