"""First-order IR drop of the crossbar's wires, as a fixed correction of the conductance operand.

Circuit (per physical array: `tile_rows` rows x 2 * tile_cols physical columns, G+ and G- of a weight on adjacent
columns 2j, 2j + 1): each row is driven at its input voltage from the left end (before physical column 0) through
a wire of `wire_resistance_ohm` r per cell pitch; each column is held at virtual ground by its sense amplifier
below its last row, through a wire of r per cell pitch. Cell (i, c) conducts G_ic (V_row(i, c) - V_col(i, c)).

First order in r G: the ideal cell currents I_ic = G_ic x_i produce, along the row wire, a drop at node (i, c) of
r sum_{l <= c} sum_{c' >= l} I_ic' = r sum_c' I_ic' (min(c, c') + 1) and, along the column wire, a rise of
r sum_{k >= i} sum_{m <= k} I_mc = r sum_m I_mc (n - max(i, m)). Each cell's current is then G_ic (x_i - drop -
rise), so the column output is sum_i x_i G'_ic with the effective conductance

    G'_ic = G_ic (1 - r (B_ic + A_ic)),  B_ic = sum_c' G_ic' (min(c, c') + 1),  A_ic = sum_m G_mc (n - max(i, m)),

independent of the inputs (the circuit is linear). This is one Jacobi step of the nodal equations that CrossSim's
parasitic solver iterates to convergence (sandialabs/cross-sim `simulator/circuits/array/`, `Verr_th_mvm`), and the
same first-order physics as aihwkit's analytic `ir_drop` correction (src/rpucuda/rpu_forward_backward_pass.cpp
lines 406-431: output reduced by a current-dependent factor times a position-weighted MVM), here with both wires
and each cell's own position. Its error against the exact nodal solve grows as (r G n)^2; the tests and
benchmarks/fidelity.py measure it (`tests/naive_ir_drop.py` solves the circuit with scipy.sparse).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ir_drop_conductances"]


def _block(p: np.ndarray, r_ohm: float) -> np.ndarray:
    """Effective conductances (same units as p, uS) of one physical array p (n rows x m columns), float64."""
    n = p.shape[0]
    g = p * 1e-6  # S
    rows = np.arange(n, dtype=np.float64)[:, None]
    # Column wire: A_i = (n - i) sum_{m <= i} G_m + sum_{m > i} (n - m) G_m
    below = np.cumsum(g, axis=0)
    weighted = (n - rows) * g
    tail = np.cumsum(weighted[::-1], axis=0)[::-1] - weighted  # sum over m > i
    col_term = (n - rows) * below + tail
    # Row wire: B_c = sum_{c' <= c} (c' + 1) G_c' + (c + 1) sum_{c' > c} G_c'
    cols = np.arange(p.shape[1], dtype=np.float64)[None, :]
    left = np.cumsum((cols + 1.0) * g, axis=1)
    right = g.sum(axis=1, keepdims=True) - np.cumsum(g, axis=1)
    row_term = left + (cols + 1.0) * right
    return p * (1.0 - r_ohm * (row_term + col_term))


def ir_drop_conductances(
    g_pos_us: np.ndarray, g_neg_us: np.ndarray, r_ohm: float, tile_cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """First-order effective G+ and G- (uS, float64) of tile-layout (n_tiles, rows, d_out) conductances.

    Each input tile is its own physical array along the columns; along the outputs, every `tile_cols` weights
    (2 * tile_cols physical columns, G+ and G- interleaved) form one array with its own row drivers."""
    out_pos = np.empty(g_pos_us.shape, dtype=np.float64)
    out_neg = np.empty(g_neg_us.shape, dtype=np.float64)
    n_tiles, rows, d_out = g_pos_us.shape
    for t in range(n_tiles):
        for lo in range(0, d_out, tile_cols):
            hi = min(lo + tile_cols, d_out)
            block = np.empty((rows, 2 * (hi - lo)), dtype=np.float64)
            block[:, 0::2] = g_pos_us[t, :, lo:hi]
            block[:, 1::2] = g_neg_us[t, :, lo:hi]
            eff = _block(block, r_ohm)
            out_pos[t, :, lo:hi] = eff[:, 0::2]
            out_neg[t, :, lo:hi] = eff[:, 1::2]
    return out_pos, out_neg
