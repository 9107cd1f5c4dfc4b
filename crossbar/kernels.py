"""numba kernels of cell programming (write-verify and statistical), drift and fabrication faults.

Kernels take only arrays and scalars; `crossbar.programming` and `crossbar.noise` validate and convert. Every
kernel has a plain NumPy twin in `tests/naive_programming.py`, and tests check they agree bit for bit
(conductances, counters, pulse counts) and to 1e-6 (energy sums, which are added in a different order).

Layout: the state arrays arrive as 2-D views (n_tiles * tile_rows, d_out) of the tile layout, so global row r is
input r and rows >= d_in are padding, never touched. Parallelism is over rows (`prange`); per-row partial sums go
to arrays indexed by row and are reduced after the loop, in a fixed order, so totals do not depend on the number
of threads and there are no races.

Random numbers: every draw is a pure function of (key, cell, draw index) through the counter-based SplitMix64 hash
of `crossbar.rng`, so results do not depend on thread count or on which other cells are programmed. Cell ids:
weight w = r * d_out + c has cells 2w (G+) and 2w + 1 (G-). The hash counter of draw j of a cell is
`(cell << 7) | j`, XOR-ed with the call's key:

- j in [0, 64): normals of write-verify pulses 4j .. 4j + 3 (16 bits each, lane p % 4 of hash p // 4),
- j = 64: the uniform of the stochastic rounding of a counter increment (when pulses_per_count > 1),
- j = 65: statistical mode: lane 0 is the residual's normal, bits 16..63 the pulse-count rounding uniform.

Drift and fault kernels use one hash per weight (counter = weight index; lanes 0/1 or 32-bit halves for the two
cells) under their own keys.

Energies: a pulse or read of width t at voltage V across conductance G dissipates E = V^2 * G * t
(`energy.pulse_energy_pj`). E is linear in G, so the kernels add up conductances (the mean of G before and after
for a pulse, G at the read for a verify read) and multiply each row's sum by `write_coef_pj_per_us` =
pulse_energy_pj(V_write, 1 uS, t_write) or `read_coef_pj_per_us` = pulse_energy_pj(V_read, 1 uS, t_read): the
same formula, evaluated inline once per row.

Conductances are carried in float64 inside the kernels and stored as float32 (G- directly, G+ as
g_diff = G+ - G-, see `crossbar.state`); a weight whose cells did not move is not written back, so untouched
weights keep their stored bits exactly. No fastmath: the kernels must agree bit for bit with their twins.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.rng import splitmix64, uniform_from_hash

__all__ = [
    "LANES",
    "DRAW_COUNTER",
    "DRAW_PULSE_SHIFT",
    "DRAW_STATISTICAL",
    "drift_kernel",
    "fault_kernel",
    "pulse_table_kernel",
    "statistical_kernel",
    "write_verify_kernel",
]

DRAW_PULSE_SHIFT = 7
"""A cell owns hash counters (cell << 7) | j, j < 128."""
DRAW_COUNTER = 64
"""Draw index of the counter-increment rounding uniform."""
DRAW_STATISTICAL = 65
"""Draw index of the statistical mode's residual normal and pulse-count rounding uniform."""

_STUCK = 0xFFFF  # crossbar.state.STUCK
_MAX_COUNT = 0xFFFE  # crossbar.state.MAX_COUNT
_INV_2_48 = 1.0 / 281474976710656.0  # 2^-48
_INV_2_32 = 1.0 / 4294967296.0  # 2^-32


@numba.njit(cache=True, inline="always")
def _clip(g: float, g_min: float, g_max: float) -> float:
    if g < g_min:
        return g_min
    if g > g_max:
        return g_max
    return g


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


@numba.njit(cache=True, inline="always")
def _d2d_factor(d2d_key: np.uint64, cell: int, d2d_sigma: float, table: np.ndarray) -> float:
    """Fixed multiplier of a cell's unit step: exp(d2d_sigma z - d2d_sigma^2 / 2), z from hash(d2d_key ^ cell).

    Lognormal with mean 1 and relative spread ~d2d_sigma (aihwkit draws dw_min_dtod as a Gaussian relative spread,
    presets/devices.py 81): positive without a floor, so no cell is left unable to move."""
    if d2d_sigma == 0.0:
        return 1.0
    h = splitmix64(d2d_key ^ np.uint64(cell))
    return np.exp(d2d_sigma * table[np.int64(h & np.uint64(0xFFFF))] - 0.5 * d2d_sigma * d2d_sigma)


@numba.njit(cache=True, inline="always")
def _harmonic(a: float, b: float) -> float:
    """1 / mean(1/a, 1/b) = 2ab / (a + b): the conductance of NeuroSim's mean(R_old, R_new) (ProcessingUnit.cpp
    895), applied per pulse to the states before and after it; 0 if a + b = 0."""
    return 2.0 * a * b / max(a + b, 1e-300)  # a, b >= 0: 0 when both are 0, branch-free


@numba.njit(cache=True, inline="always")
def _write_verify_lanes(
    g: np.ndarray,
    g_target: np.ndarray,
    stuck: np.ndarray,
    active: np.ndarray,
    base: np.ndarray,
    d2d: np.ndarray,
    hashes: np.ndarray,
    n_set: np.ndarray,
    n_reset: np.ndarray,
    g_sum_set: np.ndarray,
    g_sum_reset: np.ndarray,
    g_sum_read: np.ndarray,
    tol: float,
    pm: np.ndarray,
    g_min: float,
    g_max: float,
    max_pulses: int,
    table: np.ndarray,
) -> None:
    """Pulse-and-verify loop of a block of cells (lanes), in place on the lane arrays.

    On entry: g = conductance after the first verify read, active = lane still needs writing, base = the lane's
    hash base key ^ (cell << 7), d2d = the lane's fixed step multiplier, counters and sums zeroed (the caller
    counts the first read). On exit g is the state after the last pulse, n_set / n_reset count the lane's pulses,
    g_sum_set / g_sum_reset add each pulse's 1 / mean(1/G_old, 1/G_new) (its energy per V^2 t, NeuroSim) and
    g_sum_read the G of each verify read after a pulse.

    A pulse (SET when G < target, RESET otherwise):
    - incremental: an identical unit pulse; it moves G by d2d * (c0 - c1 * u) away from the bound it starts from,
      u = G - g_min for SET, g_max - G for RESET. c1 = 0 is NeuroSim V2.1's linear count (ProcessingUnit.cpp 865,
      892: steps of (g_max - g_min) / maxNumLevel); c1 > 0 is MLP NeuroSim's exponential nonlinearity
      G(p) = B (1 - exp(-p / A)) + g_min taken one pulse at a time (Cell.cpp 382-387), whose step falls linearly
      with G (the soft-bounds form of aihwkit `SoftBoundsDevice`);
    - ideal_jump: the nominal step clip(target - G, +-max_step) (today's controller, kept as an option);
    then cycle-to-cycle noise N(0, sigma) per unit pulse (MLP NeuroSim V3.0 Cell.cpp 318, 394: sigma sqrt(pulses)
    for a write of several pulses) and the physical window [g_min, g_max]; a stuck cell takes the pulse and does
    not move. A verify read follows every pulse; the lane stops within tol or after max_pulses.

    Why lanes: one cell's pulses form a serial chain ending at a random pulse, which a CPU mispredicts. Stepping a
    block of cells together, branch-free, with finished lanes idle, lets the chains overlap; an idle lane adds
    exactly 0 to its sums, so the result equals simulating each cell alone.
    """
    incremental = pm[PM_INCREMENTAL] > 0.5
    c0 = pm[PM_C0]
    c1 = pm[PM_C1]
    max_step = pm[PM_MAX_STEP]
    sigma = pm[PM_SIGMA]
    n_lanes = g.shape[0]
    any_active = False
    for b in range(n_lanes):
        any_active |= active[b]
    p = 0
    while any_active and p < max_pulses:
        lane = p & 3
        if lane == 0:
            for b in range(n_lanes):
                hashes[b] = splitmix64(base[b] ^ np.uint64(p >> 2))
        shift = np.uint64(16 * lane)
        any_active = False
        for b in range(n_lanes):
            on = active[b]
            g_old = g[b]
            target = g_target[b]
            up = target > g_old
            if incremental:
                dist = g_old - g_min if up else g_max - g_old
                size = d2d[b] * (c0 - c1 * dist)
                size = size if size > 0.0 else 0.0
                step = size if up else -size
            else:
                step = min(max(target - g_old, -max_step), max_step)
            z = table[np.int64((hashes[b] >> shift) & np.uint64(0xFFFF))]
            g_new = min(max(g_old + step + sigma * z, g_min), g_max)
            g_new = g_new if (on and not stuck[b]) else g_old
            g_pulse = _harmonic(g_old, g_new)
            n_set[b] += on and up
            n_reset[b] += on and not up
            g_sum_set[b] += g_pulse if (on and up) else 0.0
            g_sum_reset[b] += g_pulse if (on and not up) else 0.0
            g_sum_read[b] += g_new if on else 0.0  # verify read after every pulse
            g[b] = g_new
            still = on and abs(g_new - target) > tol
            active[b] = still
            any_active |= still
        p += 1


@numba.njit(cache=True, inline="always")
def _wear(count: int, pulses: int, ppc: int, endurance: float, key: np.uint64, cell: int) -> int:
    """New counter value after `pulses` pulses: +pulses/ppc (stochastically rounded, unbiased, when ppc > 1),
    saturating at MAX_COUNT; STUCK once count * ppc reaches the endurance. A stuck cell stays STUCK."""
    if count == _STUCK or pulses == 0:
        return count
    if ppc == 1:
        inc = pulses
    else:
        # floor(pulses / ppc + u), u ~ U[0, 1): the next integer up with probability frac(pulses / ppc)
        h = splitmix64(key ^ ((np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT)) | np.uint64(DRAW_COUNTER)))
        inc = int(np.floor(pulses / ppc + uniform_from_hash(h)))
    new = count + inc
    if new > _MAX_COUNT:
        new = _MAX_COUNT
    if new * ppc >= endurance:
        return _STUCK
    return new


@numba.njit(cache=True, inline="always")
def _programmed(
    g_end: float, target: float, key: np.uint64, cell: int, scale: float, offset: float, coeffs: np.ndarray,
    table: np.ndarray,
) -> float:
    """Final conductance of a programmed cell: max(target + sigma(target) z, 0) with the fitted sigma (the
    residual 1 s after write-verify that the preset cites, applied to every programmed cell, clamped at 0 uS as
    aihwkit and CrossSim do), or the state the pulses left when the device has no fitted error (sigma model none,
    flagged by an empty `coeffs`)."""
    if coeffs.shape[0] == 0:
        return g_end
    h = splitmix64(key ^ ((np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT)) | np.uint64(DRAW_STATISTICAL)))
    z = table[np.int64(h & np.uint64(0xFFFF))]
    g = target + _sigma_poly(target, scale, offset, coeffs) * z
    return g if g > 0.0 else 0.0


@numba.njit(cache=True, parallel=True)
def write_verify_kernel(
    g_diff: np.ndarray,
    g_neg: np.ndarray,
    writes_pos: np.ndarray,
    writes_neg: np.ndarray,
    target_pos: np.ndarray,
    target_neg: np.ndarray,
    changed: np.ndarray,
    use_changed: bool,
    d_in: int,
    g_min: float,
    g_max: float,
    tol: float,
    pm: np.ndarray,
    d2d_key: np.uint64,
    max_pulses: int,
    endurance: float,
    ppc: int,
    key: np.uint64,
    table: np.ndarray,
    poly_scale: float,
    poly_offset: float,
    coeffs: np.ndarray,
    write_coef_pj_per_us: float,
    read_coef_pj_per_us: float,
    pulses_pos: np.ndarray,
    pulses_neg: np.ndarray,
    record_pulses: bool,
    counts: np.ndarray,
    energies: np.ndarray,
) -> None:
    """Write-verify every real (changed) cell of 2-D (rows, d_out) state views, in place.

    Per cell: one verify read; within `tol` of the target -> no pulse; else up to `max_pulses` pulses (the pulse
    model of `_write_verify_lanes`), each followed by a verify read, stopping within `tol`. Then every working cell
    that reached tolerance (with or without pulses) takes its programmed state (`_programmed`); a cell that gave
    up keeps where its pulses left it. Stuck cells never move and take all `max_pulses`. Counters add the pulses.

    Write energy per pulse as NeuroSim V2.1 (ProcessingUnit.cpp 895): V^2 t / mean(R_old, R_new) with R_old, R_new
    the cell's resistance before and after that pulse, i.e. write_coef * harmonic mean of the two conductances.
    Per row r < d_in: counts[r] = (cells visited = first verify reads, SET pulses, RESET pulses, largest SET
    pulses of a cell, largest RESET pulses of a cell), energies[r] = (SET pJ, RESET pJ, verify-read pJ incl. first
    reads). With `record_pulses`, per-cell pulse counts go to pulses_pos / pulses_neg (uint8).

    Scheduling: the cells of a row that need pulses stream through LANES lanes; a lane whose cell finishes takes
    the next cell at once, so a slow cell (small device-to-device step) does not idle the other lanes. Every draw
    is indexed by (cell, pulse), so the result equals simulating each cell alone (the NumPy twin does).
    """
    d_out = g_diff.shape[1]
    n_cells = 2 * d_out
    incremental = pm[PM_INCREMENTAL] > 0.5
    c0 = pm[PM_C0]
    c1 = pm[PM_C1]
    max_step = pm[PM_MAX_STEP]
    sigma = pm[PM_SIGMA]
    d2d_sigma = pm[PM_D2D]
    for r in numba.prange(d_in):
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
        n_queue = 0
        for c in range(d_out):
            on = True
            if use_changed:
                on = changed[r, c]
            if not on:
                continue
            gn32 = g_neg[r, c]
            for k in range(2):
                j = 2 * c + k
                if k == 1:
                    g0 = np.float64(gn32)
                    target = np.float64(target_neg[r, c])
                    stuck[j] = writes_neg[r, c] == _STUCK
                else:
                    g0 = np.float64(g_diff[r, c] + gn32)  # G+ = g_diff + g_neg in float32, as ArrayState
                    target = np.float64(target_pos[r, c])
                    stuck[j] = writes_pos[r, c] == _STUCK
                visited[j] = True
                g_start[j] = g0
                g_end[j] = g0
                g_target[j] = target
                if abs(g0 - target) > tol:  # first verify read
                    queue[n_queue] = j
                    n_queue += 1
        # --- stream the cells that need pulses through the lanes ---
        lane_cell = np.full(LANES, -1, dtype=np.int64)
        lane_g = np.zeros(LANES)
        lane_target = np.zeros(LANES)
        lane_d2d = np.ones(LANES)
        lane_base = np.zeros(LANES, dtype=np.uint64)
        lane_hash = np.zeros(LANES, dtype=np.uint64)
        lane_p = np.zeros(LANES, dtype=np.int64)
        lane_stuck = np.zeros(LANES, dtype=np.bool_)
        lane_set = np.zeros(LANES, dtype=np.int64)
        lane_reset = np.zeros(LANES, dtype=np.int64)
        lane_s_set = np.zeros(LANES)
        lane_s_reset = np.zeros(LANES)
        lane_s_read = np.zeros(LANES)
        next_item = 0
        busy = 0
        for b in range(LANES):
            if next_item < n_queue:
                j = queue[next_item]
                next_item += 1
                busy += 1
                cell = 2 * r * d_out + j
                lane_cell[b] = j
                lane_g[b] = g_start[j]
                lane_target[b] = g_target[j]
                lane_d2d[b] = _d2d_factor(d2d_key, cell, d2d_sigma, table)
                lane_base[b] = key ^ (np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT))
                lane_p[b] = 0
                lane_stuck[b] = stuck[j]
        while busy > 0:
            for b in range(LANES):
                if lane_cell[b] < 0:
                    continue
                p = lane_p[b]
                if (p & 3) == 0:
                    lane_hash[b] = splitmix64(lane_base[b] ^ np.uint64(p >> 2))
                g_old = lane_g[b]
                target = lane_target[b]
                up = target > g_old
                if incremental:
                    dist = g_old - g_min if up else g_max - g_old
                    size = lane_d2d[b] * (c0 - c1 * dist)
                    size = size if size > 0.0 else 0.0
                    step = size if up else -size
                else:
                    step = min(max(target - g_old, -max_step), max_step)
                z = table[np.int64((lane_hash[b] >> np.uint64(16 * (p & 3))) & np.uint64(0xFFFF))]
                g_new = min(max(g_old + step + sigma * z, g_min), g_max)
                g_new = g_old if lane_stuck[b] else g_new
                g_pulse = _harmonic(g_old, g_new)
                lane_set[b] += up
                lane_reset[b] += not up
                lane_s_set[b] += g_pulse if up else 0.0
                lane_s_reset[b] += 0.0 if up else g_pulse
                lane_s_read[b] += g_new  # verify read after every pulse
                lane_g[b] = g_new
                lane_p[b] = p + 1
                if abs(g_new - target) <= tol or p + 1 >= max_pulses:
                    j = lane_cell[b]
                    g_end[j] = g_new
                    n_set[j] = lane_set[b]
                    n_reset[j] = lane_reset[b]
                    s_set[j] = lane_s_set[b]
                    s_reset[j] = lane_s_reset[b]
                    s_read[j] = lane_s_read[b]
                    lane_set[b] = 0
                    lane_reset[b] = 0
                    lane_s_set[b] = 0.0
                    lane_s_reset[b] = 0.0
                    lane_s_read[b] = 0.0
                    if next_item < n_queue:
                        j = queue[next_item]
                        next_item += 1
                        cell = 2 * r * d_out + j
                        lane_cell[b] = j
                        lane_g[b] = g_start[j]
                        lane_target[b] = g_target[j]
                        lane_d2d[b] = _d2d_factor(d2d_key, cell, d2d_sigma, table)
                        lane_base[b] = key ^ (np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT))
                        lane_p[b] = 0
                        lane_stuck[b] = stuck[j]
                    else:
                        lane_cell[b] = -1
                        busy -= 1
        # --- per weight: programmed state, sums, counters, write-back ---
        row_cells = 0
        row_set = 0
        row_reset = 0
        row_max_set = 0
        row_max_reset = 0
        row_e_set = 0.0
        row_e_reset = 0.0
        row_s_read = 0.0
        for c in range(d_out):
            jp = 2 * c
            if not visited[jp]:
                continue
            cell = 2 * (r * d_out + c)
            for j in (jp, jp + 1):
                row_cells += 1
                row_set += n_set[j]
                row_reset += n_reset[j]
                row_max_set = max(row_max_set, n_set[j])
                row_max_reset = max(row_max_reset, n_reset[j])
                row_e_set += s_set[j]
                row_e_reset += s_reset[j]
                row_s_read += g_start[j] + s_read[j]  # first read, then one per pulse
                if not stuck[j] and abs(g_end[j] - g_target[j]) <= tol:
                    g_end[j] = _programmed(g_end[j], g_target[j], key, cell + (j - jp), poly_scale, poly_offset,
                                           coeffs, table)  # fmt: skip
            p_pos = n_set[jp] + n_reset[jp]
            p_neg = n_set[jp + 1] + n_reset[jp + 1]
            if record_pulses:
                pulses_pos[r, c] = p_pos
                pulses_neg[r, c] = p_neg
            writes_pos[r, c] = _wear(np.int64(writes_pos[r, c]), p_pos, ppc, endurance, key, cell)
            writes_neg[r, c] = _wear(np.int64(writes_neg[r, c]), p_neg, ppc, endurance, key, cell + 1)
            if g_end[jp] != g_start[jp] or g_end[jp + 1] != g_start[jp + 1]:
                gn_new = np.float32(g_end[jp + 1])
                g_neg[r, c] = gn_new
                g_diff[r, c] = np.float32(g_end[jp]) - gn_new
        counts[r, 0] = row_cells
        counts[r, 1] = row_set
        counts[r, 2] = row_reset
        counts[r, 3] = row_max_set
        counts[r, 4] = row_max_reset
        energies[r, 0] = write_coef_pj_per_us * row_e_set
        energies[r, 1] = write_coef_pj_per_us * row_e_reset
        energies[r, 2] = read_coef_pj_per_us * row_s_read


@numba.njit(cache=True, parallel=True)
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
    of `_write_verify_lanes` from G_start = grid[i] to G_target = grid[j] with the first verify read skipped (every
    lane starts active), each sample a cell with its own device-to-device step factor, give out[0, i, j] = mean
    pulses, out[1, i, j] = mean over the pulses of their harmonic-mean conductance (energy per V^2 t) and
    out[2, i, j] = mean G at the verify reads after the pulses. Point (i, j) uses cells
    (i * n_grid + j) * n_samples + s; n_samples must be a multiple of LANES.
    """
    out = np.zeros((3, n_grid, n_grid), dtype=np.float64)
    span = g_max - g_min
    d2d_key = splitmix64(key ^ np.uint64(0x44324444))
    for idx in numba.prange(n_grid * n_grid):
        i = idx // n_grid
        j = idx - i * n_grid
        g_start = g_min + span * i / (n_grid - 1)
        g_end = g_min + span * j / (n_grid - 1)
        g = np.zeros(LANES)
        g_target = np.full(LANES, g_end)
        stuck = np.zeros(LANES, dtype=np.bool_)
        active = np.zeros(LANES, dtype=np.bool_)
        base = np.zeros(LANES, dtype=np.uint64)
        d2d = np.ones(LANES)
        hashes = np.zeros(LANES, dtype=np.uint64)
        n_set = np.zeros(LANES, dtype=np.int64)
        n_reset = np.zeros(LANES, dtype=np.int64)
        s_set = np.zeros(LANES)
        s_reset = np.zeros(LANES)
        s_read = np.zeros(LANES)
        total = 0
        g_pulse = 0.0
        g_read = 0.0
        for s0 in range(0, n_samples, LANES):
            for b in range(LANES):
                cell = idx * n_samples + s0 + b
                g[b] = g_start
                active[b] = True
                base[b] = key ^ (np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT))
                d2d[b] = _d2d_factor(d2d_key, cell, pm[PM_D2D], table)
                n_set[b] = 0
                n_reset[b] = 0
                s_set[b] = 0.0
                s_reset[b] = 0.0
                s_read[b] = 0.0
            _write_verify_lanes(
                g, g_target, stuck, active, base, d2d, hashes, n_set, n_reset, s_set, s_reset, s_read, tol, pm,
                g_min, g_max, max_pulses, table,
            )  # fmt: skip
            for b in range(LANES):
                total += n_set[b] + n_reset[b]
                g_pulse += s_set[b] + s_reset[b]
                g_read += s_read[b]
        out[0, i, j] = total / n_samples
        out[1, i, j] = g_pulse / total
        out[2, i, j] = g_read / total
    return out


@numba.njit(cache=True, inline="always")
def _sigma_poly(g: float, scale: float, offset: float, coeffs: np.ndarray) -> float:
    """max(sum_k coeffs[k] x^k, 0) with x = g * scale + offset (Horner; see crossbar.noise)."""
    if coeffs.shape[0] == 0:
        return 0.0
    x = g * scale + offset
    acc = coeffs[coeffs.shape[0] - 1]
    for k in range(coeffs.shape[0] - 2, -1, -1):
        acc = acc * x + coeffs[k]
    if acc < 0.0:
        return 0.0
    return acc


@numba.njit(cache=True, inline="always")
def _bilinear(grid: np.ndarray, u_start: float, u_target: float) -> tuple[float, float, float]:
    """Bilinear interpolation of the three pulse-table planes at normalised (start, target) in [0, 1]."""
    k = grid.shape[1] - 1
    kf = float(k)
    x = _clip(u_start * kf, 0.0, kf)
    y = _clip(u_target * kf, 0.0, kf)
    i = int(x)
    j = int(y)
    if i > k - 1:
        i = k - 1
    if j > k - 1:
        j = k - 1
    fx = x - i
    fy = y - j
    w00 = (1.0 - fx) * (1.0 - fy)
    w10 = fx * (1.0 - fy)
    w01 = (1.0 - fx) * fy
    w11 = fx * fy
    p = grid[0, i, j] * w00 + grid[0, i + 1, j] * w10 + grid[0, i, j + 1] * w01 + grid[0, i + 1, j + 1] * w11
    gp = grid[1, i, j] * w00 + grid[1, i + 1, j] * w10 + grid[1, i, j + 1] * w01 + grid[1, i + 1, j + 1] * w11
    gr = grid[2, i, j] * w00 + grid[2, i + 1, j] * w10 + grid[2, i, j + 1] * w01 + grid[2, i + 1, j + 1] * w11
    return p, gp, gr


@numba.njit(cache=True, inline="always")
def _statistical_cell(
    g: float,
    g_target: float,
    stuck: bool,
    key: np.uint64,
    cell: int,
    tol: float,
    g_min: float,
    g_max: float,
    inv_span: float,
    max_pulses: int,
    table: np.ndarray,
    poly_scale: float,
    poly_offset: float,
    coeffs: np.ndarray,
    pulse_table: np.ndarray,
) -> tuple[float, int, bool, float, float]:
    """Statistical programming of one cell whose first verify read the caller has counted.

    Returns (final G, pulses, is SET, sum over the pulses of their harmonic-mean conductance (energy per V^2 t),
    sum of G over the verify reads after the pulses); both sums at the write-verify model's means per pulse and
    per read for this (G_start, G_target), from the pulse table, so that energy follows the drawn pulse count.
    The pulse count is the write-verify model's expectation for this (G_start, G_target) from the pulse table,
    stochastically rounded; every working cell ends programmed
    (`_programmed`), also one within tolerance at its first read.
    """
    is_set = g_target > g
    if stuck:
        if abs(g - g_target) <= tol:
            return g, 0, is_set, 0.0, 0.0
        # A stuck cell never reaches its target: it takes every pulse and verify read at its fixed G.
        return g, max_pulses, is_set, max_pulses * g, max_pulses * g
    g_end = _programmed(g_target, g_target, key, cell, poly_scale, poly_offset, coeffs, table)
    if abs(g - g_target) <= tol:
        return g_end if coeffs.shape[0] > 0 else g, 0, is_set, 0.0, 0.0
    h = splitmix64(key ^ ((np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT)) | np.uint64(DRAW_STATISTICAL)))
    expected, g_per_pulse, g_per_read = _bilinear(pulse_table, (g - g_min) * inv_span, (g_target - g_min) * inv_span)
    n = int(expected)
    if float(h >> np.uint64(16)) * _INV_2_48 < expected - n:
        n += 1  # unbiased stochastic rounding of the expected pulse count
    if n > max_pulses:
        n = max_pulses
    if n < 1:
        n = 1
    return g_end, n, is_set, n * g_per_pulse, n * g_per_read


@numba.njit(cache=True, parallel=True)
def statistical_kernel(
    g_diff: np.ndarray,
    g_neg: np.ndarray,
    writes_pos: np.ndarray,
    writes_neg: np.ndarray,
    target_pos: np.ndarray,
    target_neg: np.ndarray,
    changed: np.ndarray,
    use_changed: bool,
    d_in: int,
    g_min: float,
    g_max: float,
    tol: float,
    max_pulses: int,
    endurance: float,
    ppc: int,
    key: np.uint64,
    table: np.ndarray,
    poly_scale: float,
    poly_offset: float,
    coeffs: np.ndarray,
    pulse_table: np.ndarray,
    write_coef_pj_per_us: float,
    read_coef_pj_per_us: float,
    pulses_pos: np.ndarray,
    pulses_neg: np.ndarray,
    record_pulses: bool,
    counts: np.ndarray,
    energies: np.ndarray,
) -> None:
    """Statistical programming: G = max(G_target + sigma(G_target) z, 0), pulses from the pulse table.

    Same arguments, outputs and verify-first rule as `write_verify_kernel`; `poly_*`/`coeffs` give sigma(G)
    (empty coeffs: no fitted error, G = G_target) and `pulse_table` the expected pulses and mean G per verify read
    (see `pulse_table_kernel`).
    """
    d_out = g_diff.shape[1]
    inv_span = 1.0 / (g_max - g_min)
    for r in numba.prange(d_in):
        n_cells = 0
        n_set = 0
        n_reset = 0
        max_set = 0
        max_reset = 0
        e_set = 0.0
        e_reset = 0.0
        s_read = 0.0
        for c in range(d_out):
            if use_changed and not changed[r, c]:
                continue
            gn32 = g_neg[r, c]
            gp32 = g_diff[r, c] + gn32
            g0 = (np.float64(gp32), np.float64(gn32))
            w0 = (np.int64(writes_pos[r, c]), np.int64(writes_neg[r, c]))
            t0 = (np.float64(target_pos[r, c]), np.float64(target_neg[r, c]))
            cell = 2 * (r * d_out + c)
            gp, p_pos, set_pos, hm_pos, rd_pos = _statistical_cell(
                g0[0], t0[0], w0[0] == _STUCK, key, cell, tol, g_min, g_max, inv_span,
                max_pulses, table, poly_scale, poly_offset, coeffs, pulse_table,
            )  # fmt: skip
            gn, p_neg, set_neg, hm_neg, rd_neg = _statistical_cell(
                g0[1], t0[1], w0[1] == _STUCK, key, cell + 1, tol, g_min, g_max, inv_span,
                max_pulses, table, poly_scale, poly_offset, coeffs, pulse_table,
            )  # fmt: skip
            n_cells += 2
            if set_pos:
                n_set += p_pos
                max_set = max(max_set, p_pos)
                e_set += hm_pos
            else:
                n_reset += p_pos
                max_reset = max(max_reset, p_pos)
                e_reset += hm_pos
            if set_neg:
                n_set += p_neg
                max_set = max(max_set, p_neg)
                e_set += hm_neg
            else:
                n_reset += p_neg
                max_reset = max(max_reset, p_neg)
                e_reset += hm_neg
            s_read += g0[0] + g0[1] + rd_pos + rd_neg
            if record_pulses:
                pulses_pos[r, c] = p_pos
                pulses_neg[r, c] = p_neg
            writes_pos[r, c] = _wear(w0[0], p_pos, ppc, endurance, key, cell)
            writes_neg[r, c] = _wear(w0[1], p_neg, ppc, endurance, key, cell + 1)
            if gp != g0[0] or gn != g0[1]:
                gn_new = np.float32(gn)
                g_neg[r, c] = gn_new
                g_diff[r, c] = np.float32(gp) - gn_new
        counts[r, 0] = n_cells
        counts[r, 1] = n_set
        counts[r, 2] = n_reset
        counts[r, 3] = max_set
        counts[r, 4] = max_reset
        energies[r, 0] = write_coef_pj_per_us * e_set
        energies[r, 1] = write_coef_pj_per_us * e_reset
        energies[r, 2] = read_coef_pj_per_us * s_read


@numba.njit(cache=True, inline="always")
def _poly_row(coeffs: np.ndarray, row: int, x: float) -> float:
    """max(sum_k coeffs[row, k] x^k, 0) (Horner)."""
    n = coeffs.shape[1]
    acc = coeffs[row, n - 1]
    for k in range(n - 2, -1, -1):
        acc = acc * x + coeffs[row, k]
    return acc if acc > 0.0 else 0.0


@numba.njit(cache=True, inline="always")
def _drift_sigma(
    g: float, model: int, params: np.ndarray, wan: np.ndarray, k_read: float, g_min: float, g_range: float
) -> float:
    """sqrt(max(V(t_to, g) - V(t_from, g), 0)) for one cell at conductance g (see crossbar.noise.drift_moments)."""
    if model == 1:
        x = (g - g_min) / g_range
        i0 = int(params[2])
        i1 = int(params[5])
        s_from = params[0] * _poly_row(wan, i0, x) + params[1] * _poly_row(wan, i0 + 1, x)
        s_to = params[3] * _poly_row(wan, i1, x) + params[4] * _poly_row(wan, i1 + 1, x)
        var = s_to * s_to - s_from * s_from
    else:
        lg = np.log10(g if g > 1e-6 else 1e-6)
        r_from = k_read * lg * params[2]
        r_to = k_read * lg * params[3]
        var = params[1] * params[1] + r_to * r_to - params[4] * (params[0] * params[0] + r_from * r_from)
    return np.sqrt(var) if var > 0.0 else 0.0


@numba.njit(cache=True, parallel=True)
def drift_kernel(
    g_diff: np.ndarray,
    g_neg: np.ndarray,
    writes_pos: np.ndarray,
    writes_neg: np.ndarray,
    d_in: int,
    g_min: float,
    g_range: float,
    mean_us: float,
    model: int,
    params: np.ndarray,
    wan: np.ndarray,
    k_read: float,
    key: np.uint64,
    table: np.ndarray,
) -> None:
    """Move every working real cell from its own state G by mean_us + sigma(G) z, clamped at 0 uS.

    sigma(G) is the model's variance increment at the cell's conductance (`_drift_sigma`). Weight
    w = r * d_out + c draws hash(key ^ w): lane 0 for G+, lane 1 for G-. Stuck cells do not move.
    """
    d_out = g_diff.shape[1]
    for r in numba.prange(d_in):
        for c in range(d_out):
            gn32 = g_neg[r, c]
            gp0 = np.float64(g_diff[r, c] + gn32)
            gn0 = np.float64(gn32)
            h = splitmix64(key ^ np.uint64(r * d_out + c))
            gp = gp0
            gn = gn0
            if writes_pos[r, c] != _STUCK:
                sigma = _drift_sigma(gp0, model, params, wan, k_read, g_min, g_range)
                gp = max(gp0 + mean_us + sigma * table[np.int64(h & np.uint64(0xFFFF))], 0.0)
            if writes_neg[r, c] != _STUCK:
                sigma = _drift_sigma(gn0, model, params, wan, k_read, g_min, g_range)
                z = table[np.int64((h >> np.uint64(16)) & np.uint64(0xFFFF))]
                gn = max(gn0 + mean_us + sigma * z, 0.0)
            if gp != gp0 or gn != gn0:
                gn_new = np.float32(gn)
                g_neg[r, c] = gn_new
                g_diff[r, c] = np.float32(gp) - gn_new


@numba.njit(cache=True, parallel=True)
def fault_kernel(
    g_diff: np.ndarray,
    g_neg: np.ndarray,
    writes_pos: np.ndarray,
    writes_neg: np.ndarray,
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
    Cells already stuck stay as they are. new_faults[r] = cells of row r made stuck by this call.
    """
    d_out = g_diff.shape[1]
    rate_any = rate_min + rate_max
    for r in numba.prange(d_in):
        n_new = 0
        for c in range(d_out):
            h = splitmix64(key ^ np.uint64(r * d_out + c))
            u_pos = float(h & np.uint64(0xFFFFFFFF)) * _INV_2_32
            u_neg = float(h >> np.uint64(32)) * _INV_2_32
            gn32 = g_neg[r, c]
            gp0 = np.float64(g_diff[r, c] + gn32)
            gn0 = np.float64(gn32)
            gp = gp0
            gn = gn0
            if writes_pos[r, c] != _STUCK and u_pos < rate_any:
                gp = g_min if u_pos < rate_min else g_max
                writes_pos[r, c] = _STUCK
                n_new += 1
            if writes_neg[r, c] != _STUCK and u_neg < rate_any:
                gn = g_min if u_neg < rate_min else g_max
                writes_neg[r, c] = _STUCK
                n_new += 1
            if gp != gp0 or gn != gn0:
                gn_new = np.float32(gn)
                g_neg[r, c] = gn_new
                g_diff[r, c] = np.float32(gp) - gn_new
        new_faults[r] = n_new
