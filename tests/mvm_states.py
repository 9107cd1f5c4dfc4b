"""Array states with given or random conductances, for the MVM tests of the numba and the torch paths."""

from __future__ import annotations

import numpy as np
import torch

from crossbar.device import DeviceConfig
from crossbar.state import ArrayState


def state_of(g_diff_matrix: np.ndarray, tile_rows: int) -> ArrayState:
    """An ArrayState holding a given (d_out, d_in) conductance difference (uS), G- at 0."""
    d_out, d_in = g_diff_matrix.shape
    state = ArrayState.fresh(d_in, d_out, DeviceConfig(tile_rows=tile_rows))
    state.g_diff_us[...] = state.to_tiles(g_diff_matrix.astype(np.float32))
    return state


def random_state(rng: np.random.Generator, d_in: int, d_out: int, tile_rows: int) -> tuple[ArrayState, np.ndarray]:
    """A state with conductance differences uniform in +-40 uS, and that (d_out, d_in) matrix."""
    g = rng.uniform(-40, 40, size=(d_out, d_in)).astype(np.float32)
    return state_of(g, tile_rows), g


def random_mvm_case(
    rng: np.random.Generator, tile_rows: int, d_in: int = 70, d_out: int = 21, batch: int = 6
) -> tuple[ArrayState, np.ndarray, torch.Tensor, torch.Tensor]:
    """A random MVM: (state, its (d_out, d_in) matrix, out_scale (d_out,) in 0.001-0.01, x (batch, d_in) normal),
    drawn from `rng` in that order."""
    state, g = random_state(rng, d_in, d_out, tile_rows)
    out_scale = torch.from_numpy(rng.uniform(0.001, 0.01, size=d_out).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((batch, d_in)).astype(np.float32))
    return state, g, out_scale, x
