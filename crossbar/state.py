"""Per-array simulator state, laid out by tile, at 12 bytes per weight.

A weight matrix W (d_out x d_in) lives on a differential pair of cells per weight, G+ and G-, in tiles of
`tile_rows` inputs. The state is stored in tile layout (n_tiles, tile_rows, d_out), which is also the operand
layout of the batched tile MVM (x_tiles @ G_tiles), so a forward pass needs no copy:

- `g_diff_us` float32: G+ - G- (uS), the MVM operand;
- `g_neg_us`  float32: G- (uS); G+ is g_diff + g_neg;
- `writes_pos`, `writes_neg` uint16: per-cell write-pulse counters. `STUCK` (65535) marks a stuck cell (a
  fabrication fault, or a cell past its endurance); it then keeps its conductance forever.

Counters count pulses exactly up to 65534. For devices whose endurance is higher, each counter step stands for
`pulses_per_count` pulses and pulse counts are rounded stochastically (unbiased) when added; see
`pulses_per_count`. Exact pulse totals always live in the ledger. Rows of the last tile beyond d_in are padding:
zero conductance difference, never written, not counted as cells. Inputs are spread evenly over the tiles a matrix
needs (`stored_tile_rows`), so padding stays below one row per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossbar.device import DeviceConfig

__all__ = ["MAX_COUNT", "STUCK", "ArrayState", "kernel_views", "pulses_per_count", "stored_tile_rows"]

STUCK = np.uint16(0xFFFF)
"""Counter value that marks a stuck cell."""

MAX_COUNT = 0xFFFE
"""Largest counter value of a working cell."""


def pulses_per_count(device: DeviceConfig) -> int:
    """Pulses one counter step stands for: 1 when the endurance fits in a uint16 counter (exact counting),
    otherwise the smallest integer that makes `endurance_pulses` reachable below `MAX_COUNT`."""
    if math.isinf(device.endurance_pulses) or device.endurance_pulses <= MAX_COUNT:
        return 1
    return int(math.ceil(device.endurance_pulses / MAX_COUNT))


def stored_tile_rows(d_in: int, device: DeviceConfig) -> int:
    """Rows used per tile: a matrix needing n = ceil(d_in / tile_rows) tiles is spread evenly over them,
    ceil(d_in / n) rows each (at most `tile_rows`). Unused rows of a physical tile hold nothing, so they are not
    stored: padding stays below n rows per matrix instead of up to a whole tile (e.g. 300 inputs on 256-row tiles
    use 2 x 150 rows, not 256 + 44)."""
    n_tiles = -(-d_in // device.tile_rows)
    return -(-d_in // n_tiles)


@dataclass
class ArrayState:
    """Conductances and wear of one weight matrix on differential-pair crossbar tiles."""

    d_in: int
    d_out: int
    tile_rows: int
    g_diff_us: np.ndarray
    g_neg_us: np.ndarray
    writes_pos: np.ndarray
    writes_neg: np.ndarray

    @classmethod
    def fresh(cls, d_in: int, d_out: int, device: DeviceConfig) -> ArrayState:
        """An unprogrammed array: every cell at g_min, no writes, no faults yet."""
        if d_in < 1 or d_out < 1:
            raise ValueError(f"array shape must be positive, got d_in={d_in}, d_out={d_out}")
        rows = stored_tile_rows(d_in, device)
        n_tiles = -(-d_in // rows)
        shape = (n_tiles, rows, d_out)
        g_neg = np.full(shape, device.g_min_us, dtype=np.float32)
        g_neg[-1, d_in - (n_tiles - 1) * rows :, :] = 0.0  # padding rows hold nothing
        return cls(
            d_in=d_in,
            d_out=d_out,
            tile_rows=rows,
            g_diff_us=np.zeros(shape, dtype=np.float32),
            g_neg_us=g_neg,
            writes_pos=np.zeros(shape, dtype=np.uint16),
            writes_neg=np.zeros(shape, dtype=np.uint16),
        )

    def copy(self) -> ArrayState:
        """An independent copy of every array."""
        return ArrayState(
            self.d_in, self.d_out, self.tile_rows, self.g_diff_us.copy(), self.g_neg_us.copy(),
            self.writes_pos.copy(), self.writes_neg.copy(),
        )  # fmt: skip

    @property
    def n_tiles(self) -> int:
        return self.g_diff_us.shape[0]

    @property
    def n_cells(self) -> int:
        """Real cells (two per weight), padding excluded."""
        return 2 * self.d_in * self.d_out

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.g_diff_us, self.g_neg_us, self.writes_pos, self.writes_neg))

    def valid_rows(self) -> np.ndarray:
        """Boolean (n_tiles, tile_rows, 1) mask of rows that hold real inputs (not padding)."""
        rows = np.arange(self.n_tiles * self.tile_rows).reshape(self.n_tiles, self.tile_rows, 1)
        return rows < self.d_in

    def g_pos_us(self) -> np.ndarray:
        return self.g_diff_us + self.g_neg_us

    def stuck_pos(self) -> np.ndarray:
        return self.writes_pos == STUCK

    def stuck_neg(self) -> np.ndarray:
        return self.writes_neg == STUCK

    def to_matrix(self, tiled: np.ndarray) -> np.ndarray:
        """(n_tiles, tile_rows, d_out) -> (d_out, d_in), dropping padding rows."""
        flat = tiled.reshape(self.n_tiles * self.tile_rows, self.d_out)[: self.d_in]
        return np.ascontiguousarray(flat.T)

    def to_tiles(self, matrix: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """(d_out, d_in) -> (n_tiles, tile_rows, d_out) float32, padding rows set to `fill`."""
        if matrix.shape != (self.d_out, self.d_in):
            raise ValueError(f"expected a ({self.d_out}, {self.d_in}) matrix, got {matrix.shape}")
        tiled = np.full((self.n_tiles * self.tile_rows, self.d_out), fill, dtype=np.float32)
        tiled[: self.d_in] = matrix.T
        return tiled.reshape(self.n_tiles, self.tile_rows, self.d_out)


def kernel_views(state: ArrayState, device: DeviceConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated 2-D (n_tiles * tile_rows, d_out) views of g_diff, g_neg, writes_pos, writes_neg: the layout the
    programming, drift and fault kernels (`crossbar.kernels`) update in place."""
    if not isinstance(state, ArrayState):
        raise ValueError(f"state must be an ArrayState, got {type(state).__name__}")
    if not isinstance(device, DeviceConfig):
        raise ValueError(f"device must be a DeviceConfig, got {type(device).__name__}")
    if state.tile_rows != stored_tile_rows(state.d_in, device):
        raise ValueError(
            f"state.tile_rows ({state.tile_rows}) does not fit device.tile_rows ({device.tile_rows}) "
            f"for d_in={state.d_in}"
        )
    n_tiles = -(-state.d_in // state.tile_rows)
    shape = (n_tiles, state.tile_rows, state.d_out)
    views = []
    for name, dtype in (("g_diff_us", np.float32), ("g_neg_us", np.float32), ("writes_pos", np.uint16),
                        ("writes_neg", np.uint16)):  # fmt: skip
        array = getattr(state, name)
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
            raise ValueError(
                f"state.{name} must be a {np.dtype(dtype).name} array of shape {shape}, got "
                f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
            )
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise ValueError(f"state.{name} must be C-contiguous and writeable")
        views.append(array.reshape(n_tiles * state.tile_rows, state.d_out))
    return views[0], views[1], views[2], views[3]
