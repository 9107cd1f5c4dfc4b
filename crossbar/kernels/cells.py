"""numba helpers shared by the kernels of `crossbar.kernels`: a weight's pair of cells (read, store), the
fitted-error polynomial, the final programmed state, counter wear, and the per-row totals of a programming call.

Public (no underscore) because several kernel modules inline them; not part of the package's API.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from crossbar.jit import inline
from crossbar.rng import normal_from_hash, splitmix64, uniform_from_hash
from crossbar.state import MAX_COUNT, STUCK

__all__ = [
    "DRAW_COUNTER",
    "DRAW_PULSE_SHIFT",
    "DRAW_STATISTICAL",
    "INV_2_32",
    "INV_2_48",
    "ROW_START",
    "STUCK_COUNT",
    "ProgramSettings",
    "add_cell",
    "finish_weight",
    "horner",
    "programmed_conductance",
    "read_pair",
    "row_totals",
    "sigma_poly",
    "store_pair",
    "wear",
]

DRAW_PULSE_SHIFT = 7
"""A cell owns hash counters (cell << 7) | j, j < 128."""
DRAW_COUNTER = 64
"""Draw index of the counter-increment rounding uniform."""
DRAW_STATISTICAL = 65
"""Draw index of the statistical mode's residual normal and pulse-count rounding uniform."""
STUCK_COUNT = int(STUCK)
"""`crossbar.state.STUCK` as the kernels compare it with int64 counters."""
INV_2_48 = 1.0 / 281474976710656.0
"""2^-48: 48 random bits as a uniform in [0, 1)."""
INV_2_32 = 1.0 / 4294967296.0
"""2^-32: 32 random bits as a uniform in [0, 1)."""


class ProgramSettings(NamedTuple):
    """The scalars both programming kernels take from one `crossbar.programming.program_state` call, by name
    (numba passes a NamedTuple of scalars through as a record, also into its parallel loops)."""

    d_in: int
    """Real rows; rows >= d_in are padding, never touched."""
    use_changed: bool
    """Program only the weights `changed` marks (else every real weight)."""
    g_min: float
    g_max: float
    tol: float
    """Verify tolerance (uS)."""
    max_pulses: int
    endurance: float
    """Pulses a cell survives (may be inf)."""
    ppc: int
    """Pulses per counter step (`crossbar.state.pulses_per_count`)."""
    key: np.uint64
    """The call's random key (`crossbar.rng.DOMAIN_PROGRAM`)."""
    write_coef_pj_per_us: float
    """Energy of one write pulse per uS of harmonic-mean conductance (pJ / uS)."""
    read_coef_pj_per_us: float
    """Energy of one verify read per uS (pJ / uS)."""
    record_pulses: bool
    """Write per-cell pulse counts (uint8) to the `pulses` arrays."""


@inline
def read_pair(g_diff: np.ndarray, g_neg: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """(G+, G-) of weight (r, c) in float64; G+ = g_diff + g_neg in float32, as `ArrayState.g_pos_us`."""
    gn32 = g_neg[r, c]
    return np.float64(g_diff[r, c] + gn32), np.float64(gn32)


@inline
def store_pair(
    g_diff: np.ndarray, g_neg: np.ndarray, r: int, c: int, gp: float, gn: float, gp0: float, gn0: float
) -> None:
    """Write weight (r, c)'s new (G+, G-) back as float32, only if a cell moved from (gp0, gn0)."""
    if gp != gp0 or gn != gn0:
        gn_new = np.float32(gn)
        g_neg[r, c] = gn_new
        g_diff[r, c] = np.float32(gp) - gn_new


@inline
def horner(coeffs: np.ndarray, x: float) -> float:
    """max(sum_k coeffs[k] x^k, 0) (Horner); 0 for no coefficients."""
    if coeffs.shape[0] == 0:
        return 0.0
    acc = coeffs[coeffs.shape[0] - 1]
    for k in range(coeffs.shape[0] - 2, -1, -1):
        acc = acc * x + coeffs[k]
    if acc < 0.0:
        return 0.0
    return acc


@inline
def sigma_poly(g: float, scale: float, offset: float, coeffs: np.ndarray) -> float:
    """The fitted programming error sigma(g) = max(poly(g * scale + offset), 0) (`SigmaPolynomial`)."""
    if coeffs.shape[0] == 0:
        return 0.0
    return horner(coeffs, g * scale + offset)


@inline
def wear(count: int, pulses: int, ppc: int, endurance: float, key: np.uint64, cell: int) -> int:
    """New counter value after `pulses` pulses: +pulses/ppc (stochastically rounded, unbiased, when ppc > 1),
    saturating at MAX_COUNT; STUCK once count * ppc reaches the endurance. A stuck cell stays STUCK."""
    if count == STUCK_COUNT or pulses == 0:
        return count
    if ppc == 1:
        inc = pulses
    else:
        # floor(pulses / ppc + u), u ~ U[0, 1): the next integer up with probability frac(pulses / ppc)
        h = splitmix64(key ^ ((np.uint64(cell) << np.uint64(DRAW_PULSE_SHIFT)) | np.uint64(DRAW_COUNTER)))
        inc = int(np.floor(pulses / ppc + uniform_from_hash(h)))
    new = count + inc
    if new > MAX_COUNT:
        new = MAX_COUNT
    if new * ppc >= endurance:
        return STUCK_COUNT
    return new


@inline
def finish_weight(
    g_diff: np.ndarray, g_neg: np.ndarray, writes_pos: np.ndarray, writes_neg: np.ndarray, pulses_pos: np.ndarray,
    pulses_neg: np.ndarray, settings: ProgramSettings, r: int, c: int, cell: int, gp: float, gn: float, gp0: float,
    gn0: float, p_pos: int, p_neg: int,
) -> None:  # fmt: skip
    """After programming weight (r, c) (cells `cell`, `cell` + 1) from (gp0, gn0) to (gp, gn) with p_pos, p_neg
    pulses: record its pulses, wear its counters and store its new conductances."""
    if settings.record_pulses:
        pulses_pos[r, c] = p_pos
        pulses_neg[r, c] = p_neg
    ppc, endurance, key = settings.ppc, settings.endurance, settings.key
    writes_pos[r, c] = wear(np.int64(writes_pos[r, c]), p_pos, ppc, endurance, key, cell)
    writes_neg[r, c] = wear(np.int64(writes_neg[r, c]), p_neg, ppc, endurance, key, cell + 1)
    store_pair(g_diff, g_neg, r, c, gp, gn, gp0, gn0)


ROW_START = (0, 0, 0, 0, 0, 0.0, 0.0)
"""A row's running totals before its first cell (`add_cell`)."""


@inline
def add_cell(
    row: tuple[int, int, int, int, int, float, float], n_set: int, n_reset: int, g_set: float, g_reset: float
) -> tuple[int, int, int, int, int, float, float]:
    """A row's running totals (cells, SET pulses, RESET pulses, largest SET and largest RESET pulses of a cell,
    sum of the SET and of the RESET pulses' harmonic-mean G) after one more cell (a tuple: kept in registers)."""
    return (
        row[0] + 1, row[1] + n_set, row[2] + n_reset, max(row[3], n_set), max(row[4], n_reset), row[5] + g_set,
        row[6] + g_reset,
    )  # fmt: skip


@inline
def row_totals(
    counts: np.ndarray, energies: np.ndarray, settings: ProgramSettings, r: int,
    row: tuple[int, int, int, int, int, float, float], g_read: float,
) -> None:  # fmt: skip
    """Row r's counts (cells visited, SET pulses, RESET pulses, largest SET and RESET pulses of a cell) and
    energies (SET pJ, RESET pJ, verify-read pJ) from its totals (`add_cell`) and the sum of G at its reads."""
    counts[r, 0] = row[0]
    counts[r, 1] = row[1]
    counts[r, 2] = row[2]
    counts[r, 3] = row[3]
    counts[r, 4] = row[4]
    energies[r, 0] = settings.write_coef_pj_per_us * row[5]
    energies[r, 1] = settings.write_coef_pj_per_us * row[6]
    energies[r, 2] = settings.read_coef_pj_per_us * g_read


@inline
def programmed_conductance(
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
    g = target + sigma_poly(target, scale, offset, coeffs) * normal_from_hash(h, 0, table)
    return g if g > 0.0 else 0.0
