from __future__ import annotations

import numpy as np
import pytest

from crossbar import device_preset
from crossbar.state import ArrayState, stored_tile_rows


@pytest.mark.parametrize(
    "d_in, tile_rows, expected_rows, expected_tiles",
    [
        (64, 256, 64, 1),
        (256, 256, 256, 1),
        (300, 256, 150, 2),
        (1024, 256, 256, 4),
        (2816, 256, 256, 11),
        (70, 32, 24, 3),
    ],  # fmt: skip
)
def test_inputs_spread_evenly_over_the_tiles_they_need(d_in, tile_rows, expected_rows, expected_tiles) -> None:
    device = device_preset("reram_wan2022", tile_rows=tile_rows)
    assert stored_tile_rows(d_in, device) == expected_rows
    state = ArrayState.fresh(d_in, 8, device)
    assert state.n_tiles == expected_tiles == -(-d_in // tile_rows)
    assert state.tile_rows <= tile_rows
    padding = state.n_tiles * state.tile_rows - d_in
    assert 0 <= padding < state.n_tiles


def test_state_is_twelve_bytes_per_weight_and_round_trips() -> None:
    device = device_preset("reram_wan2022")
    state = ArrayState.fresh(512, 64, device)
    assert state.nbytes == 12 * 512 * 64
    matrix = np.random.default_rng(0).normal(size=(64, 512)).astype(np.float32)
    np.testing.assert_array_equal(state.to_matrix(state.to_tiles(matrix)), matrix)
    assert state.valid_rows().sum() == 512
