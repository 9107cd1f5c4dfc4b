"""numba kernels of cell programming (write-verify and statistical), drift and fabrication faults.

Modules: `write_verify` (the pulse-level model and its expected-pulse table), `statistical`, `noise` (drift and
faults), and `cells`, the helpers they share (a weight's pair of cells, counter wear, the programmed state).

Kernels take only arrays and scalars; `crossbar.programming` and `crossbar.noise` validate and convert. Every
kernel has a plain NumPy twin in `tests/naive_programming.py`, and tests check they agree bit for bit
(conductances, counters, pulse counts) and to 1e-6 (energy sums, which are added in a different order). numba
options: `crossbar.jit` (no fastmath: the kernels must agree bit for bit with their twins).

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
cells) under their own keys. The drift kernel computes each cell's sigma from the drift model's named parameter
record (`crossbar.nonideal.drift`), dispatched on the model's kernel id; an unknown id is an error.

Energies: a pulse or read of width t at voltage V across conductance G dissipates E = V^2 * G * t
(`energy.pulse_energy_pj`). E is linear in G, so the kernels add up conductances (the mean of G before and after
for a pulse, G at the read for a verify read) and multiply each row's sum by `write_coef_pj_per_us` =
pulse_energy_pj(V_write, 1 uS, t_write) or `read_coef_pj_per_us` = pulse_energy_pj(V_read, 1 uS, t_read): the
same formula, evaluated inline once per row.

Conductances are carried in float64 inside the kernels and stored as float32 (G- directly, G+ as
g_diff = G+ - G-, see `crossbar.state`); a weight whose cells did not move is not written back, so untouched
weights keep their stored bits exactly.
"""

from crossbar.kernels.cells import DRAW_COUNTER, DRAW_PULSE_SHIFT, DRAW_STATISTICAL, ProgramSettings
from crossbar.kernels.noise import (
    ORIGIN_LATENT_NEG,
    ORIGIN_LATENT_POS,
    ORIGIN_REF,
    drift_kernel,
    drift_origin_kernel,
    fault_kernel,
)
from crossbar.kernels.statistical import statistical_kernel
from crossbar.kernels.write_verify import (
    LANES,
    PM_C0,
    PM_C1,
    PM_D2D,
    PM_INCREMENTAL,
    PM_MAX_STEP,
    PM_SIGMA,
    PM_SIZE,
    pulse_table_kernel,
    write_verify_kernel,
)

__all__ = [
    "DRAW_COUNTER",
    "DRAW_PULSE_SHIFT",
    "DRAW_STATISTICAL",
    "LANES",
    "ORIGIN_LATENT_NEG",
    "ORIGIN_LATENT_POS",
    "ORIGIN_REF",
    "PM_C0",
    "PM_C1",
    "PM_D2D",
    "PM_INCREMENTAL",
    "PM_MAX_STEP",
    "PM_SIGMA",
    "PM_SIZE",
    "ProgramSettings",
    "drift_kernel",
    "drift_origin_kernel",
    "fault_kernel",
    "pulse_table_kernel",
    "statistical_kernel",
    "write_verify_kernel",
]
