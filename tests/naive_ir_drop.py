"""Exact nodal solve of a small crossbar with wire resistance (scipy.sparse): the reference of the first-order
IR-drop model in `crossbar.ir_drop`. Same circuit: rows driven from the left end through r per cell pitch,
columns at virtual ground below the last row through r per cell pitch, cell (i, c) of conductance G_ic between
row node (i, c) and column node (i, c)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def nodal_column_currents(g_us: np.ndarray, x_v: np.ndarray, r_ohm: float) -> np.ndarray:
    """Column output currents (uA for x in V and G in uS) of one array g (n x m) for inputs x (batch, n)."""
    n, m = g_us.shape
    g = g_us * 1e-6
    gw = 1.0 / r_ohm
    n_nodes = 2 * n * m

    def row_node(i, c):
        return i * m + c

    def col_node(i, c):
        return n * m + i * m + c

    rows, cols, vals = [], [], []

    def add(a, b, value):
        rows.append(a)
        cols.append(b)
        vals.append(value)

    for i in range(n):
        for c in range(m):
            a, b = row_node(i, c), col_node(i, c)
            # row node: wire to the left (driver at c = 0), wire to the right, cell
            diag = gw + g[i, c] + (gw if c < m - 1 else 0.0)
            add(a, a, diag)
            if c > 0:
                add(a, row_node(i, c - 1), -gw)
            if c < m - 1:
                add(a, row_node(i, c + 1), -gw)
            add(a, b, -g[i, c])
            # column node: wire up, wire down (to ground below the last row), cell
            diag = gw + g[i, c] + (gw if i > 0 else 0.0)
            add(b, b, diag)
            if i > 0:
                add(b, col_node(i - 1, c), -gw)
            if i < n - 1:
                add(b, col_node(i + 1, c), -gw)
            add(b, a, -g[i, c])
    matrix = sp.csc_matrix((vals, (rows, cols)), shape=(n_nodes, n_nodes))
    solver = spla.splu(matrix)
    x = np.atleast_2d(np.asarray(x_v, dtype=np.float64))
    rhs = np.zeros((n_nodes, x.shape[0]))
    for i in range(n):
        rhs[row_node(i, 0)] = gw * x[:, i]
    volts = solver.solve(rhs)
    bottom = volts[[col_node(n - 1, c) for c in range(m)]]  # (m, batch)
    return (bottom * gw).T * 1e6  # uA


def nodal_weight_outputs(g_pos_us: np.ndarray, g_neg_us: np.ndarray, x_v: np.ndarray, r_ohm: float) -> np.ndarray:
    """(batch, d_out) differential outputs I(G+) - I(G-) of one array, G+ and G- on interleaved columns."""
    n, d_out = g_pos_us.shape
    block = np.empty((n, 2 * d_out))
    block[:, 0::2] = g_pos_us
    block[:, 1::2] = g_neg_us
    currents = nodal_column_currents(block, x_v, r_ohm)
    return currents[:, 0::2] - currents[:, 1::2]
