"""A numba pass at the memory-bandwidth floor of programming, for `benchmarks/programming.py`.

Kept apart from `crossbar.kernels` (the programming kernels) so that changing it never invalidates their numba
cache. Twin: `tests/naive_programming.store_state_np`.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.jit import kernel

__all__ = ["store_state_kernel"]


@kernel
def store_state_kernel(
    pos_us: np.ndarray,
    neg_us: np.ndarray,
    g_diff: np.ndarray,
    g_neg: np.ndarray,
    writes_pos: np.ndarray,
    writes_neg: np.ndarray,
) -> None:
    """The memory-bandwidth floor of programming, for `benchmarks/programming.py`: read every target once and
    write every state array once (G- = target-, G+ - G- = target+ - target-, one write per cell), in the same
    row-parallel layout as `write_verify_kernel`, with no pulses, noise or verify reads. All arrays (rows, d_out)."""
    n_rows, d_out = pos_us.shape
    for r in numba.prange(n_rows):
        for c in range(d_out):
            p = pos_us[r, c]
            q = neg_us[r, c]
            g_neg[r, c] = q
            g_diff[r, c] = p - q
            writes_pos[r, c] = 1
            writes_neg[r, c] = 1
