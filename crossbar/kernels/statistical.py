"""The statistical programming kernel: every programmed cell ends at max(G_target + sigma(G_target) z, 0), its
pulses and energies drawn from the write-verify model's expectations (`crossbar.kernels.write_verify`'s pulse
table). Twin: `tests/naive_programming.py::statistical_np`.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.jit import inline, kernel
from crossbar.kernels.cells import (
    DRAW_PULSE_SHIFT,
    DRAW_STATISTICAL,
    INV_2_48,
    ROW_START,
    STUCK_COUNT,
    ProgramSettings,
    add_cell,
    finish_weight,
    programmed_conductance,
    read_pair,
    row_totals,
)
from crossbar.rng import splitmix64

__all__ = ["statistical_kernel"]


@inline
def _clip(g: float, g_min: float, g_max: float) -> float:
    if g < g_min:
        return g_min
    if g > g_max:
        return g_max
    return g


@inline
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


@inline
def _statistical_cell(
    g: float, g_target: float, stuck: bool, cell: int, settings: ProgramSettings, inv_span: float,
    poly_scale: float, poly_offset: float, coeffs: np.ndarray, table: np.ndarray, pulse_table: np.ndarray,
) -> tuple[float, int, bool, float, float]:  # fmt: skip
    """Statistical programming of one cell whose first verify read the caller has counted.

    Returns (final G, pulses, is SET, sum over the pulses of their harmonic-mean conductance (energy per V^2 t),
    sum of G over the verify reads after the pulses); both sums at the write-verify model's means per pulse and
    per read for this (G_start, G_target), from the pulse table, so that energy follows the drawn pulse count.
    The pulse count is the write-verify model's expectation for this (G_start, G_target) from the pulse table,
    stochastically rounded; every working cell ends programmed (`programmed_conductance`), also one within
    tolerance at its first read.
    """
    is_set = g_target > g
    max_pulses = settings.max_pulses
    if stuck:
        if abs(g - g_target) <= settings.tol:
            return g, 0, is_set, 0.0, 0.0
        # A stuck cell never reaches its target: it takes every pulse and verify read at its fixed G.
        return g, max_pulses, is_set, max_pulses * g, max_pulses * g
    key = settings.key
    g_end = programmed_conductance(g_target, g_target, key, cell, poly_scale, poly_offset, coeffs, table)
    if abs(g - g_target) <= settings.tol:
        return g_end if coeffs.shape[0] > 0 else g, 0, is_set, 0.0, 0.0
    h = splitmix64(key ^ ((np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT)) | np.uint64(DRAW_STATISTICAL)))
    u_start = (g - settings.g_min) * inv_span
    expected, g_per_pulse, g_per_read = _bilinear(pulse_table, u_start, (g_target - settings.g_min) * inv_span)
    n = int(expected)
    if float(h >> np.uint64(16)) * INV_2_48 < expected - n:
        n += 1  # unbiased stochastic rounding of the expected pulse count
    if n > max_pulses:
        n = max_pulses
    if n < 1:
        n = 1
    return g_end, n, is_set, n * g_per_pulse, n * g_per_read


@kernel
def statistical_kernel(
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    changed: np.ndarray,
    settings: ProgramSettings,
    pulse_table: np.ndarray,
    error: tuple[float, float, np.ndarray],
    table: np.ndarray,
    pulses: tuple[np.ndarray, np.ndarray],
    totals: tuple[np.ndarray, np.ndarray],
) -> None:
    """Statistical programming: G = max(G_target + sigma(G_target) z, 0), pulses from the pulse table.

    Same arguments, outputs and verify-first rule as `crossbar.kernels.write_verify.write_verify_kernel` (empty
    error coefficients: no fitted error, G = G_target), with `pulse_table`, the expected pulses and mean G per
    pulse and per verify read (`pulse_table_kernel`), in place of the pulse model.
    """
    g_diff, g_neg, writes_pos, writes_neg = views
    target_pos, target_neg = targets
    poly_scale, poly_offset, coeffs = error
    pulses_pos, pulses_neg = pulses
    counts, energies = totals
    d_out = g_diff.shape[1]
    inv_span = 1.0 / (settings.g_max - settings.g_min)
    for r in numba.prange(settings.d_in):
        row = ROW_START
        s_read = 0.0
        for c in range(d_out):
            if settings.use_changed and not changed[r, c]:
                continue
            gp0, gn0 = read_pair(g_diff, g_neg, r, c)
            cell = 2 * (r * d_out + c)
            gp, p_pos, set_pos, hm_pos, rd_pos = _statistical_cell(
                gp0, np.float64(target_pos[r, c]), writes_pos[r, c] == STUCK_COUNT, cell, settings, inv_span,
                poly_scale, poly_offset, coeffs, table, pulse_table,
            )  # fmt: skip
            gn, p_neg, set_neg, hm_neg, rd_neg = _statistical_cell(
                gn0, np.float64(target_neg[r, c]), writes_neg[r, c] == STUCK_COUNT, cell + 1, settings, inv_span,
                poly_scale, poly_offset, coeffs, table, pulse_table,
            )  # fmt: skip
            for p, is_set, hm in ((p_pos, set_pos, hm_pos), (p_neg, set_neg, hm_neg)):  # one direction per cell
                if is_set:
                    row = add_cell(row, p, 0, hm, 0.0)
                else:
                    row = add_cell(row, 0, p, 0.0, hm)
            s_read += gp0 + gn0 + rd_pos + rd_neg
            finish_weight(
                g_diff, g_neg, writes_pos, writes_neg, pulses_pos, pulses_neg, settings, r, c, cell, gp, gn, gp0, gn0,
                p_pos, p_neg,
            )  # fmt: skip
        row_totals(counts, energies, settings, r, row, s_read)
