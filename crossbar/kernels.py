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


@numba.njit(cache=True, inline="always")
def _write_verify_lanes(
    g: np.ndarray,
    g_target: np.ndarray,
    stuck: np.ndarray,
    active: np.ndarray,
    base: np.ndarray,
    hashes: np.ndarray,
    n_set: np.ndarray,
    n_reset: np.ndarray,
    g_sum_set: np.ndarray,
    g_sum_reset: np.ndarray,
    g_sum_read: np.ndarray,
    tol: float,
    max_step: float,
    sigma: float,
    g_min: float,
    g_max: float,
    max_pulses: int,
    table: np.ndarray,
) -> None:
    """Pulse-and-verify loop of a block of cells (lanes), in place on the lane arrays.

    On entry: g = conductance after the first verify read, active = lane still needs writing, base = the lane's
    hash base key ^ (cell << 7), counters and sums zeroed (the caller counts the first read). On exit g is final,
    n_set / n_reset count the lane's pulses, g_sum_set / g_sum_reset add the mean G over each pulse and
    g_sum_read the G of each verify read after a pulse.

    Why lanes: one cell's pulses form a serial chain (the next step depends on the last verify read) ending at a
    random pulse, which a CPU mispredicts. Stepping a block of cells together, branch-free, with finished lanes
    idle, lets the cells' chains overlap; the work per cell is unchanged (an idle lane adds exactly 0.0 to its
    sums), so the result equals simulating each cell alone.
    """
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
            # Nominal step: the controller aims at the target, one pulse moves at most max_step.
            step = min(max(target - g_old, -max_step), max_step)
            z = table[np.int64((hashes[b] >> shift) & np.uint64(0xFFFF))]
            # Cycle-to-cycle noise of the pulse (MLP NeuroSim V3.0 Cell.cpp sigmaCtoC), then the physical range;
            # a stuck cell takes the pulse and does not move.
            g_new = min(max(g_old + step + sigma * z, g_min), g_max)
            g_new = g_new if (on and not stuck[b]) else g_old
            g_mean = 0.5 * (g_old + g_new)
            up = on and target > g_old  # SET raises G, RESET lowers it
            down = on and not target > g_old
            n_set[b] += up
            n_reset[b] += down
            g_sum_set[b] += g_mean if up else 0.0
            g_sum_reset[b] += g_mean if down else 0.0
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
    max_step: float,
    sigma: float,
    max_pulses: int,
    endurance: float,
    ppc: int,
    key: np.uint64,
    table: np.ndarray,
    write_coef_pj_per_us: float,
    read_coef_pj_per_us: float,
    pulses_pos: np.ndarray,
    pulses_neg: np.ndarray,
    record_pulses: bool,
    counts: np.ndarray,
    energies: np.ndarray,
) -> None:
    """Write-verify every real (changed) cell of 2-D (rows, d_out) state views, in place.

    Per cell: one verify read; within `tol` of the target -> done, 0 pulses; else up to `max_pulses` pulses (see
    `_write_verify_lanes`), each followed by a verify read, stopping within `tol`. Stuck cells (counter STUCK)
    never move and so take all `max_pulses`. Counters then add the pulses (`_wear`).

    Per row r < d_in: counts[r] = (cells visited = first verify reads, SET pulses, RESET pulses),
    energies[r] = (SET pJ, RESET pJ, verify-read pJ incl. first reads). With `record_pulses`, per-cell pulse
    counts go to pulses_pos / pulses_neg (uint8, same 2-D layout); otherwise those may be dummies.
    """
    d_out = g_diff.shape[1]
    half = LANES // 2
    n_blocks = (d_out + half - 1) // half
    for r in numba.prange(d_in):
        g = np.zeros(LANES)
        g_start = np.zeros(LANES)
        g_target = np.zeros(LANES)
        stuck = np.zeros(LANES, dtype=np.bool_)
        active = np.zeros(LANES, dtype=np.bool_)
        visited = np.zeros(LANES, dtype=np.bool_)
        base = np.zeros(LANES, dtype=np.uint64)
        hashes = np.zeros(LANES, dtype=np.uint64)
        n_set = np.zeros(LANES, dtype=np.int64)
        n_reset = np.zeros(LANES, dtype=np.int64)
        s_set = np.zeros(LANES)
        s_reset = np.zeros(LANES)
        s_read = np.zeros(LANES)
        row_cells = 0
        row_set = 0
        row_reset = 0
        row_s_set = 0.0
        row_s_reset = 0.0
        row_s_read = 0.0
        for block in range(n_blocks):
            c0 = block * half
            for b in range(LANES):
                c = c0 + (b >> 1)
                on = c < d_out
                if on and use_changed:
                    on = changed[r, c]
                if on:
                    gn32 = g_neg[r, c]
                    if b & 1:
                        g0 = np.float64(gn32)
                        target = np.float64(target_neg[r, c])
                        stuck[b] = writes_neg[r, c] == _STUCK
                    else:
                        g0 = np.float64(g_diff[r, c] + gn32)  # G+ = g_diff + g_neg in float32, as ArrayState
                        target = np.float64(target_pos[r, c])
                        stuck[b] = writes_pos[r, c] == _STUCK
                    active[b] = abs(g0 - target) > tol  # first verify read
                else:
                    g0 = 0.0
                    target = 0.0
                    stuck[b] = False
                    active[b] = False
                visited[b] = on
                g[b] = g0
                g_start[b] = g0
                g_target[b] = target
                base[b] = key ^ (np.uint64(2 * (r * d_out + c0) + b) << np.uint64(DRAW_PULSE_SHIFT))
                n_set[b] = 0
                n_reset[b] = 0
                s_set[b] = 0.0
                s_reset[b] = 0.0
                s_read[b] = 0.0
            _write_verify_lanes(
                g, g_target, stuck, active, base, hashes, n_set, n_reset, s_set, s_reset, s_read,
                tol, max_step, sigma, g_min, g_max, max_pulses, table,
            )  # fmt: skip
            for i in range(half):
                c = c0 + i
                bp = 2 * i
                bn = bp + 1
                if not visited[bp]:
                    continue
                row_cells += 2
                row_set += n_set[bp] + n_set[bn]
                row_reset += n_reset[bp] + n_reset[bn]
                row_s_set += s_set[bp] + s_set[bn]
                row_s_reset += s_reset[bp] + s_reset[bn]
                row_s_read += g_start[bp] + g_start[bn] + s_read[bp] + s_read[bn]  # first reads, then per pulse
                p_pos = n_set[bp] + n_reset[bp]
                p_neg = n_set[bn] + n_reset[bn]
                if record_pulses:
                    pulses_pos[r, c] = p_pos
                    pulses_neg[r, c] = p_neg
                cell = 2 * (r * d_out + c)
                writes_pos[r, c] = _wear(np.int64(writes_pos[r, c]), p_pos, ppc, endurance, key, cell)
                writes_neg[r, c] = _wear(np.int64(writes_neg[r, c]), p_neg, ppc, endurance, key, cell + 1)
                if g[bp] != g_start[bp] or g[bn] != g_start[bn]:
                    gn_new = np.float32(g[bn])
                    g_neg[r, c] = gn_new
                    g_diff[r, c] = np.float32(g[bp]) - gn_new
        counts[r, 0] = row_cells
        counts[r, 1] = row_set
        counts[r, 2] = row_reset
        energies[r, 0] = write_coef_pj_per_us * row_s_set
        energies[r, 1] = write_coef_pj_per_us * row_s_reset
        energies[r, 2] = read_coef_pj_per_us * row_s_read


@numba.njit(cache=True, parallel=True)
def pulse_table_kernel(
    n_grid: int,
    n_samples: int,
    g_min: float,
    g_max: float,
    tol: float,
    max_step: float,
    sigma: float,
    max_pulses: int,
    key: np.uint64,
    table: np.ndarray,
) -> np.ndarray:
    """Monte Carlo of the write-verify model for a cell that needs writing, on a (G_start, G_target) grid.

    Grid: n_grid evenly spaced points on [g_min, g_max] for both axes. For point (i, j), n_samples seeded runs
    of `_write_verify_lanes` from G_start = grid[i] to G_target = grid[j] with the first verify read skipped (the
    cell is known to need writing: every lane starts active) give out[0, i, j] = mean pulses, out[1, i, j] = mean
    over those pulses of the cell's mean G during a pulse, out[2, i, j] = mean over the verify reads after the
    pulses of G at the read. Point (i, j) uses cells (i * n_grid + j) * n_samples + s; n_samples must be a
    multiple of LANES.
    """
    out = np.zeros((3, n_grid, n_grid), dtype=np.float64)
    span = g_max - g_min
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
                g[b] = g_start
                active[b] = True
                base[b] = key ^ (np.uint64(idx * n_samples + s0 + b) << np.uint64(DRAW_PULSE_SHIFT))
                n_set[b] = 0
                n_reset[b] = 0
                s_set[b] = 0.0
                s_reset[b] = 0.0
                s_read[b] = 0.0
            _write_verify_lanes(
                g, g_target, stuck, active, base, hashes, n_set, n_reset, s_set, s_reset, s_read,
                tol, max_step, sigma, g_min, g_max, max_pulses, table,
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

    Returns (final G, pulses, is SET, sum of mean G over the pulses, sum of G over the verify reads after them).
    The n pulses and their verify reads are priced at the write-verify model's mean G per pulse and per read for
    this (G_start, G_target), from the pulse table, so that energy follows the drawn pulse count and is unbiased.
    """
    if abs(g - g_target) <= tol:
        return g, 0, False, 0.0, 0.0
    is_set = g_target > g
    if stuck:
        # A stuck cell never reaches its target: it takes every pulse and verify read at its fixed G.
        return g, max_pulses, is_set, max_pulses * g, max_pulses * g
    h = splitmix64(key ^ ((np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT)) | np.uint64(DRAW_STATISTICAL)))
    z = table[np.int64(h & np.uint64(0xFFFF))]
    sigma = _sigma_poly(g_target, poly_scale, poly_offset, coeffs)
    g_end = _clip(g_target + sigma * z, g_min, g_max)
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
    """Statistical programming: G = clip(G_target + sigma(G_target) z), pulses from the pulse table.

    Same arguments, outputs and verify-first rule as `write_verify_kernel`; `poly_*`/`coeffs` give sigma(G) and
    `pulse_table` the expected pulses and mean conductances per pulse and per read (see `pulse_table_kernel`).
    """
    d_out = g_diff.shape[1]
    inv_span = 1.0 / (g_max - g_min)
    for r in numba.prange(d_in):
        n_cells = 0
        n_set = 0
        n_reset = 0
        s_set = 0.0
        s_reset = 0.0
        s_read = 0.0
        for c in range(d_out):
            if use_changed and not changed[r, c]:
                continue
            gn32 = g_neg[r, c]
            gp32 = g_diff[r, c] + gn32
            gp0 = np.float64(gp32)
            gn0 = np.float64(gn32)
            wp = np.int64(writes_pos[r, c])
            wn = np.int64(writes_neg[r, c])
            cell = 2 * (r * d_out + c)
            gp, p_pos, set_pos, a_spulse, a_sread = _statistical_cell(
                gp0, np.float64(target_pos[r, c]), wp == _STUCK, key, cell, tol, g_min, g_max, inv_span,
                max_pulses, table, poly_scale, poly_offset, coeffs, pulse_table,
            )  # fmt: skip
            gn, p_neg, set_neg, b_spulse, b_sread = _statistical_cell(
                gn0, np.float64(target_neg[r, c]), wn == _STUCK, key, cell + 1, tol, g_min, g_max, inv_span,
                max_pulses, table, poly_scale, poly_offset, coeffs, pulse_table,
            )  # fmt: skip
            n_cells += 2
            if set_pos:
                n_set += p_pos
                s_set += a_spulse
            else:
                n_reset += p_pos
                s_reset += a_spulse
            if set_neg:
                n_set += p_neg
                s_set += b_spulse
            else:
                n_reset += p_neg
                s_reset += b_spulse
            s_read += gp0 + gn0 + a_sread + b_sread
            if record_pulses:
                pulses_pos[r, c] = p_pos
                pulses_neg[r, c] = p_neg
            writes_pos[r, c] = _wear(wp, p_pos, ppc, endurance, key, cell)
            writes_neg[r, c] = _wear(wn, p_neg, ppc, endurance, key, cell + 1)
            if gp != gp0 or gn != gn0:
                gn_new = np.float32(gn)
                g_neg[r, c] = gn_new
                g_diff[r, c] = np.float32(gp) - gn_new
        counts[r, 0] = n_cells
        counts[r, 1] = n_set
        counts[r, 2] = n_reset
        energies[r, 0] = write_coef_pj_per_us * s_set
        energies[r, 1] = write_coef_pj_per_us * s_reset
        energies[r, 2] = read_coef_pj_per_us * s_read


@numba.njit(cache=True, parallel=True)
def drift_kernel(
    g_diff: np.ndarray,
    g_neg: np.ndarray,
    writes_pos: np.ndarray,
    writes_neg: np.ndarray,
    d_in: int,
    g_min: float,
    g_max: float,
    mean_us: float,
    sigma_us: float,
    key: np.uint64,
    table: np.ndarray,
) -> None:
    """Add an independent N(mean_us, sigma_us^2) increment to every working real cell, clipped to the range.

    Weight w = r * d_out + c draws hash(key ^ w): lane 0 for G+, lane 1 for G-. Stuck cells do not move.
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
                gp = _clip(gp0 + mean_us + sigma_us * table[np.int64(h & np.uint64(0xFFFF))], g_min, g_max)
            if writes_neg[r, c] != _STUCK:
                z = table[np.int64((h >> np.uint64(16)) & np.uint64(0xFFFF))]
                gn = _clip(gn0 + mean_us + sigma_us * z, g_min, g_max)
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
