"""Write-verify kernels: every pulse and verify read of every cell (`write_verify_kernel`), and its Monte Carlo
table of expected pulses and energies for the statistical mode (`pulse_table_kernel`). Both run one pulse step,
`_pulse`, through one lane scheduler, `_stream_cells`. Twins: `tests/naive_programming.py`.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.jit import inline, kernel
from crossbar.kernels.cells import (
    DRAW_PULSE_SHIFT,
    ROW_START,
    STUCK_COUNT,
    ProgramSettings,
    add_cell,
    finish_weight,
    programmed_conductance,
    read_pair,
    row_totals,
)
from crossbar.rng import DOMAIN_D2D, normal_from_hash, splitmix64

__all__ = [
    "LANES",
    "PM_C0",
    "PM_C1",
    "PM_D2D",
    "PM_INCREMENTAL",
    "PM_MAX_STEP",
    "PM_SIGMA",
    "PM_SIZE",
    "pulse_table_kernel",
    "write_verify_kernel",
]

LANES = 32
"""Cells programmed together in one block of lanes (16 weights, G+ and G- interleaved)."""

# Indices into the pulse-model parameter array (float64), built by crossbar.programming.pulse_model_params.
PM_INCREMENTAL = 0  # 1.0: identical unit pulses (incremental); 0.0: ideal_jump (today's controller, kept as option)
PM_C0 = 1  # unit step at the bound it moves away from (uS): step = c0 - c1 * (distance moved from that bound)
PM_C1 = 2  # per-pulse decay of the step with the distance from the bound (NeuroSim nonlinearity; 0 = linear)
PM_MAX_STEP = 3  # ideal_jump: largest nominal step (uS)
PM_SIGMA = 4  # cycle-to-cycle noise per unit pulse (uS)
PM_D2D = 5  # device-to-device relative sigma of the unit step (fixed per cell)
PM_SIZE = 6


@inline
def _d2d_factor(d2d_key: np.uint64, cell: int, d2d_sigma: float, table: np.ndarray) -> float:
    """Fixed multiplier of a cell's unit step: exp(d2d_sigma z - d2d_sigma^2 / 2), z from hash(d2d_key ^ cell).

    Lognormal with mean 1 and relative spread ~d2d_sigma (aihwkit draws dw_min_dtod as a Gaussian relative spread,
    presets/devices.py 81): positive without a floor, so no cell is left unable to move."""
    if d2d_sigma == 0.0:
        return 1.0
    h = splitmix64(d2d_key ^ np.uint64(cell))
    return np.exp(d2d_sigma * normal_from_hash(h, 0, table) - 0.5 * d2d_sigma * d2d_sigma)


@inline
def _harmonic(a: float, b: float) -> float:
    """1 / mean(1/a, 1/b) = 2ab / (a + b): the conductance of NeuroSim's mean(R_old, R_new) (ProcessingUnit.cpp
    895), applied per pulse to the states before and after it; 0 if a + b = 0."""
    return 2.0 * a * b / max(a + b, 1e-300)  # a, b >= 0: 0 when both are 0, branch-free


@inline
def _pulse(
    g_old: float, target: float, d2d: float, z: float, incremental: bool, c0: float, c1: float, max_step: float,
    sigma: float, g_min: float, g_max: float,
) -> tuple[float, bool]:  # fmt: skip
    """(conductance after one pulse from g_old toward target, whether it is a SET: G < target), for a working
    cell with step multiplier d2d and the pulse's unit normal z; the pulse model (`PM_*`) unpacked.

    - incremental: an identical unit pulse; it moves G by d2d * (c0 - c1 * u) away from the bound it starts from,
      u = G - g_min for SET, g_max - G for RESET. c1 = 0 is NeuroSim V2.1's linear count (ProcessingUnit.cpp 865,
      892: steps of (g_max - g_min) / maxNumLevel); c1 > 0 is MLP NeuroSim's exponential nonlinearity
      G(p) = B (1 - exp(-p / A)) + g_min taken one pulse at a time (Cell.cpp 382-387), whose step falls linearly
      with G (the soft-bounds form of aihwkit `SoftBoundsDevice`);
    - ideal_jump: the nominal step clip(target - G, +-max_step) (today's controller, kept as an option);
    then cycle-to-cycle noise N(0, sigma) per unit pulse (MLP NeuroSim V3.0 Cell.cpp 318, 394: sigma sqrt(pulses)
    for a write of several pulses) and the physical window [g_min, g_max].
    """
    up = target > g_old
    if incremental:
        dist = g_old - g_min if up else g_max - g_old
        size = d2d * (c0 - c1 * dist)
        size = size if size > 0.0 else 0.0
        step = size if up else -size
    else:
        step = min(max(target - g_old, -max_step), max_step)
    return min(max(g_old + step + sigma * z, g_min), g_max), up


@inline
def _stream_cells(
    queue: np.ndarray,
    n_queue: int,
    cell_base: int,
    g_start: np.ndarray,
    g_target: np.ndarray,
    stuck: np.ndarray,
    key: np.uint64,
    d2d_key: np.uint64,
    tol: float,
    pm: np.ndarray,
    g_min: float,
    g_max: float,
    max_pulses: int,
    table: np.ndarray,
    g_end: np.ndarray,
    n_set: np.ndarray,
    n_reset: np.ndarray,
    s_set: np.ndarray,
    s_reset: np.ndarray,
    s_read: np.ndarray,
) -> None:
    """Pulse-and-verify loop of the items queue[:n_queue] (indices into the per-item arrays; item j is cell
    cell_base + j), each of which needs writing after its first verify read.

    Per item: pulses (`_pulse`; a stuck cell takes the pulse and does not move), each followed by a verify read,
    until within `tol` of the target or after `max_pulses`. Writes g_end (state after the last pulse) and adds to
    n_set / n_reset (its pulses), s_set / s_reset (the sum of each pulse's 1 / mean(1/G_old, 1/G_new), its energy
    per V^2 t, NeuroSim) and s_read (the sum of G at the verify reads after the pulses), which start at zero.

    Scheduling: the items stream through LANES lanes, stepped together one pulse at a time, so the cells' serial
    pulse chains (each ending at a random pulse, which a CPU mispredicts) overlap; a lane whose item finishes takes
    the next at once, so a slow cell (small device-to-device step) does not idle the others. Every draw is indexed
    by (cell, pulse), so the result equals simulating each cell alone (the NumPy twin does).
    """
    incremental = pm[PM_INCREMENTAL] > 0.5
    c0 = pm[PM_C0]
    c1 = pm[PM_C1]
    max_step = pm[PM_MAX_STEP]
    sigma = pm[PM_SIGMA]
    d2d_sigma = pm[PM_D2D]
    lane_item = np.full(LANES, -1, dtype=np.int64)
    lane_g = np.zeros(LANES)
    lane_d2d = np.ones(LANES)
    lane_base = np.zeros(LANES, dtype=np.uint64)
    lane_hash = np.zeros(LANES, dtype=np.uint64)
    lane_p = np.zeros(LANES, dtype=np.int64)
    next_item = 0
    busy = 0
    while next_item < n_queue or busy > 0:
        for b in range(LANES):
            j = lane_item[b]
            if j < 0:
                if next_item == n_queue:
                    continue
                j = queue[next_item]
                next_item += 1
                busy += 1
                cell = cell_base + j
                lane_item[b] = j
                lane_g[b] = g_start[j]
                lane_d2d[b] = _d2d_factor(d2d_key, cell, d2d_sigma, table)
                lane_base[b] = key ^ (np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT))
                lane_p[b] = 0
            p = lane_p[b]
            if (p & 3) == 0:
                lane_hash[b] = splitmix64(lane_base[b] ^ np.uint64(p >> 2))
            g_old = lane_g[b]
            target = g_target[j]
            z = normal_from_hash(lane_hash[b], p & 3, table)
            g_new, up = _pulse(g_old, target, lane_d2d[b], z, incremental, c0, c1, max_step, sigma, g_min, g_max)
            g_new = g_old if stuck[j] else g_new
            g_pulse = _harmonic(g_old, g_new)
            n_set[j] += up
            n_reset[j] += not up
            s_set[j] += g_pulse if up else 0.0
            s_reset[j] += 0.0 if up else g_pulse
            s_read[j] += g_new  # verify read after every pulse
            lane_g[b] = g_new
            lane_p[b] = p + 1
            if abs(g_new - target) <= tol or p + 1 >= max_pulses:
                g_end[j] = g_new
                lane_item[b] = -1
                busy -= 1


@inline
def _first_reads(
    g_diff: np.ndarray, g_neg: np.ndarray, writes_pos: np.ndarray, writes_neg: np.ndarray, target_pos: np.ndarray,
    target_neg: np.ndarray, changed: np.ndarray, settings: ProgramSettings, r: int, g_start: np.ndarray,
    g_end: np.ndarray, g_target: np.ndarray, stuck: np.ndarray, visited: np.ndarray, queue: np.ndarray,
) -> int:  # fmt: skip
    """The first verify read of every (changed) cell of row r: fills the per-cell arrays (cell j = 2c + k of the
    row; k = 0 G+, 1 G-) and queues the cells outside tolerance; returns how many it queued."""
    n_queue = 0
    for c in range(g_diff.shape[1]):
        if settings.use_changed and not changed[r, c]:
            continue
        gp0, gn0 = read_pair(g_diff, g_neg, r, c)
        for k in range(2):
            j = 2 * c + k
            if k == 1:
                g0 = gn0
                target = np.float64(target_neg[r, c])
                stuck[j] = writes_neg[r, c] == STUCK_COUNT
            else:
                g0 = gp0
                target = np.float64(target_pos[r, c])
                stuck[j] = writes_pos[r, c] == STUCK_COUNT
            visited[j] = True
            g_start[j] = g0
            g_end[j] = g0
            g_target[j] = target
            if abs(g0 - target) > settings.tol:
                queue[n_queue] = j
                n_queue += 1
    return n_queue


@kernel
def write_verify_kernel(
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    changed: np.ndarray,
    settings: ProgramSettings,
    pm: np.ndarray,
    d2d_key: np.uint64,
    error: tuple[float, float, np.ndarray],
    table: np.ndarray,
    pulses: tuple[np.ndarray, np.ndarray],
    totals: tuple[np.ndarray, np.ndarray],
) -> None:
    """Write-verify every real (changed) cell of 2-D (rows, d_out) state views, in place.

    Arguments: views = (g_diff, g_neg, writes_pos, writes_neg) (`crossbar.state.kernel_views`), targets = (G+,
    G-) float32 targets (uS), changed (bool, when `settings.use_changed`), the call's scalars, the pulse model
    (`PM_*`) and the key of the cells' device-to-device step factors, the fitted error (`SigmaPolynomial`), the
    normal table, and the outputs pulses = (pulses_pos, pulses_neg), totals = (counts, energies).

    Per cell: one verify read; within `tol` of the target -> no pulse; else up to `max_pulses` pulses
    (`_stream_cells`), each followed by a verify read, stopping within `tol`. Then every working cell that reached
    tolerance (with or without pulses) takes its programmed state (`programmed_conductance`); a cell that gave up
    keeps where its pulses left it. Stuck cells never move and take all `max_pulses`. Counters add the pulses.

    Write energy per pulse as NeuroSim V2.1 (ProcessingUnit.cpp 895): V^2 t / mean(R_old, R_new) with R_old, R_new
    the cell's resistance before and after that pulse, i.e. write_coef * harmonic mean of the two conductances.
    Per row r < d_in: counts[r] = (cells visited = first verify reads, SET pulses, RESET pulses, largest SET
    pulses of a cell, largest RESET pulses of a cell), energies[r] = (SET pJ, RESET pJ, verify-read pJ incl. first
    reads). With `record_pulses`, per-cell pulse counts go to pulses_pos / pulses_neg (uint8).
    """
    g_diff, g_neg, writes_pos, writes_neg = views
    target_pos, target_neg = targets
    poly_scale, poly_offset, coeffs = error
    pulses_pos, pulses_neg = pulses
    counts, energies = totals
    d_out = g_diff.shape[1]
    n_cells = 2 * d_out
    for r in numba.prange(settings.d_in):
        g_start = np.zeros(n_cells)
        g_end = np.zeros(n_cells)
        g_target = np.zeros(n_cells)
        stuck = np.zeros(n_cells, dtype=np.bool_)
        visited = np.zeros(n_cells, dtype=np.bool_)
        n_set = np.zeros(n_cells, dtype=np.int64)
        n_reset = np.zeros(n_cells, dtype=np.int64)
        s_set = np.zeros(n_cells)
        s_reset = np.zeros(n_cells)
        s_read = np.zeros(n_cells)
        queue = np.empty(n_cells, dtype=np.int64)
        n_queue = _first_reads(
            g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed, settings, r, g_start, g_end,
            g_target, stuck, visited, queue,
        )  # fmt: skip
        _stream_cells(
            queue, n_queue, 2 * r * d_out, g_start, g_target, stuck, settings.key, d2d_key, settings.tol, pm,
            settings.g_min, settings.g_max, settings.max_pulses, table, g_end, n_set, n_reset, s_set, s_reset, s_read,
        )  # fmt: skip
        # --- per weight: programmed state, sums, counters, write-back ---
        row = ROW_START
        row_s_read = 0.0
        for c in range(d_out):
            jp = 2 * c
            if not visited[jp]:
                continue
            cell = 2 * (r * d_out + c)
            for j in (jp, jp + 1):
                row = add_cell(row, n_set[j], n_reset[j], s_set[j], s_reset[j])
                row_s_read += g_start[j] + s_read[j]  # first read, then one per pulse
                if not stuck[j] and abs(g_end[j] - g_target[j]) <= settings.tol:
                    g_end[j] = programmed_conductance(
                        g_end[j], g_target[j], settings.key, cell + (j - jp), poly_scale, poly_offset, coeffs, table
                    )
            finish_weight(
                g_diff, g_neg, writes_pos, writes_neg, pulses_pos, pulses_neg, settings, r, c, cell, g_end[jp],
                g_end[jp + 1], g_start[jp], g_start[jp + 1], n_set[jp] + n_reset[jp], n_set[jp + 1] + n_reset[jp + 1],
            )  # fmt: skip
        row_totals(counts, energies, settings, r, row, row_s_read)


@kernel
def pulse_table_kernel(
    n_grid: int,
    n_samples: int,
    g_min: float,
    g_max: float,
    tol: float,
    pm: np.ndarray,
    max_pulses: int,
    key: np.uint64,
    table: np.ndarray,
) -> np.ndarray:
    """Monte Carlo of the write-verify model for a cell that needs writing, on a (G_start, G_target) grid.

    Grid: n_grid evenly spaced points on [g_min, g_max] for both axes. For point (i, j), n_samples seeded runs
    of `_stream_cells` from G_start = grid[i] to G_target = grid[j] with the first verify read skipped (every
    cell needs writing), each sample a cell with its own device-to-device step factor, give out[0, i, j] = mean
    pulses, out[1, i, j] = mean over the pulses of their harmonic-mean conductance (energy per V^2 t) and
    out[2, i, j] = mean G at the verify reads after the pulses. Point (i, j) uses cells
    (i * n_grid + j) * n_samples + s, summed in the order of s.
    """
    out = np.zeros((3, n_grid, n_grid), dtype=np.float64)
    span = g_max - g_min
    d2d_key = splitmix64(key ^ np.uint64(DOMAIN_D2D))
    for idx in numba.prange(n_grid * n_grid):
        i = idx // n_grid
        j = idx - i * n_grid
        g_start = np.full(n_samples, g_min + span * i / (n_grid - 1))
        g_target = np.full(n_samples, g_min + span * j / (n_grid - 1))
        g_end = np.zeros(n_samples)
        n_set = np.zeros(n_samples, dtype=np.int64)
        n_reset = np.zeros(n_samples, dtype=np.int64)
        s_set = np.zeros(n_samples)
        s_reset = np.zeros(n_samples)
        s_read = np.zeros(n_samples)
        _stream_cells(
            np.arange(n_samples), n_samples, idx * n_samples, g_start, g_target, np.zeros(n_samples, dtype=np.bool_),
            key, d2d_key, tol, pm, g_min, g_max, max_pulses, table, g_end, n_set, n_reset, s_set, s_reset, s_read,
        )  # fmt: skip
        total = 0
        g_pulse = 0.0
        g_read = 0.0
        for s in range(n_samples):
            total += n_set[s] + n_reset[s]
            g_pulse += s_set[s] + s_reset[s]
            g_read += s_read[s]
        out[0, i, j] = total / n_samples
        out[1, i, j] = g_pulse / total
        out[2, i, j] = g_read / total
    return out
