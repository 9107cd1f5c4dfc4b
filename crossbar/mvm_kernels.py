"""numba kernels of the analog MVM path: the input DAC into tile layout, the fused read-noise / ADC / digital
tile-sum / scaling pass that follows the tile matmul, and the per-line input activity the ledger prices.

Kernels take only arrays and scalars; `crossbar.mvm` validates and converts. Each has a plain NumPy twin in
`tests/naive_mvm.py`, and tests check they agree bit for bit (same float32 operations in the same order; no
fastmath, so LLVM does not reassociate or contract them).

Normalised units. The DAC scales each input vector by its largest magnitude m (aihwkit-style abs-max noise
management) so the applied voltages satisfy |x| <= 1, and quantises them to `levels` = 2^(bits-1) - 1 steps per
sign. The tile matmul then gives partial sums P = x_q . (G+ - G-) in uS. The ADC of a column converts P / (g_max -
g_min) over [-full_scale, full_scale] into `adc_levels` = 2^(bits-1) - 1 steps per sign; the kernel works with the
equivalent step in uS, `step_us` = full_scale * (g_max - g_min) / adc_levels, one per tile column (each column of
each tile has its own ADC range: fixed, or calibrated per column, per tile or per layer).

Read noise. Independent Gaussian noise of sigma_cell (uS) on each cell read of a tile column adds
sum_i x_i * n_i to the column current: exactly N(0, sigma_cell^2 * sum_i x_i^2). So one draw per (tile, vector,
output), scaled by sqrt(sum of squared applied inputs of that tile), is statistically exact and costs
n_tiles * batch * d_out draws instead of one per cell. Draw k of a (tile, vector) row uses lane k % 4 of the
SplitMix64 hash of counter ((tile * batch + vector) * ceil(d_out / 4) + k // 4) XOR the call's key, looked up in
`crossbar.rng.NORMAL_TABLE`: the noise does not depend on the thread count and is fresh for every call (new key).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from crossbar.jit import inline, kernel, serial_kernel
from crossbar.rng import normal_from_hash, splitmix64

__all__ = ["adc_accumulate_kernel", "dac_tiles_kernel", "input_activity_kernel", "scaled_activity_kernel"]

_ABS_MASK = 0x7FFFFFFF  # float32 sign bit cleared
_EXP_INF = 0x7F800000  # float32 exponent all ones: inf or NaN


@inline
def _float32_from_bits(bits: int) -> float:
    """The float32 whose (non-negative, finite) bit pattern is `bits`, exactly (ldexp of the integer mantissa)."""
    exponent = bits >> 23
    mantissa = bits & 0x7FFFFF
    if exponent == 0:
        return math.ldexp(float(mantissa), -149)
    return math.ldexp(float(mantissa | 0x800000), exponent - 150)


@kernel
def dac_tiles_kernel(
    x: np.ndarray,
    x_bits: np.ndarray,
    levels: int,
    xq: np.ndarray,
    sum_sq: np.ndarray,
    scale: np.ndarray,
    bad: np.ndarray,
    activity_levels: int,
    bit_serial: bool,
    drives: np.ndarray,
    energy_weight: np.ndarray,
) -> int:
    """Input DAC, writing the applied inputs in tile layout, and (for the ledger) the inputs' line activity.

    x (B, D) float32 and x_bits, the same memory viewed as int32; levels: DAC steps per sign (0 = ideal DAC,
    inputs only normalised). Writes xq (T, B, tile) float32, the normalised quantised inputs of each tile (rows past
    D zero); sum_sq (T, B) float32, sum of xq^2 over each tile; scale (B,) float32, each vector's max |x|; bad (B,)
    uint8, 1 where a vector holds NaN or inf. Returns the number of bad vectors. When drives and energy_weight
    (D,) float64 are not empty and no vector is bad, adds the batch's activity to them exactly as
    `input_activity_kernel(x, x_bits, activity_levels, bit_serial, drives, energy_weight)` does (the same helper
    after the same max |x|; the MVM's inputs are what the ledger prices, so one pass reads them for both).
    """
    n_vec, d_in = x.shape
    n_tiles, _, tile = xq.shape
    small_codes = np.int64(levels) * np.int64(levels) * np.int64(tile) < np.int64(2**31 - 1)
    abs_mask = np.int32(_ABS_MASK)
    for b in prange(n_vec):
        # Loops run over 1-D row views (x[b], xq[t, b]): indexing the 2-D and 3-D arrays inside them kept LLVM from
        # vectorising (3.5x slower at 768 inputs, about 1.5x at 64; one thread, measured 2026-12-06).
        x_row = x[b]
        bits_row = x_bits[b]
        # The largest |x| compared as integers: the bit patterns of non-negative floats sort like their values, so
        # this reduction is exact and vectorises, in int32 lanes (an int32 & a Python int would widen to int64);
        # NaN and inf have the largest patterns.
        m_bits = np.int32(0)
        for i in range(d_in):
            m_bits = max(m_bits, bits_row[i] & abs_mask)
        bad[b] = 1 if m_bits >= _EXP_INF else 0
        m = np.float32(_float32_from_bits(m_bits)) if m_bits < _EXP_INF else np.float32(0.0)
        scale[b] = m
        for t in range(n_tiles):
            lo = t * tile
            n_rows = min(tile, d_in - lo)
            source = x_row[lo : lo + n_rows]
            applied = xq[t, b]
            if levels > 0:
                inv = np.float32(levels) / m if m > 0 else np.float32(0.0)
                inv_levels = np.float32(1.0) / np.float32(levels)
                # Integer codes: their squares add exactly (and in any order), so the sum vectorises. In 32 bits
                # when no sum can overflow them (every DAC up to 12 bits with 256-row tiles; each step cast back
                # to int32, as numba widens int32 products and sums): AVX2 has no 64-bit vector multiply, and the
                # 64-bit loop runs scalar there.
                if small_codes:
                    total32 = np.int32(0)
                    for i in range(n_rows):
                        code = np.rint(source[i] * inv)
                        applied[i] = code * inv_levels
                        icode32 = np.int32(code)
                        total32 = np.int32(total32 + np.int32(icode32 * icode32))
                    total = np.int64(total32)
                else:
                    total = np.int64(0)
                    for i in range(n_rows):
                        code = np.rint(source[i] * inv)
                        applied[i] = code * inv_levels
                        icode = np.int64(code)
                        total += icode * icode
                sum_sq[t, b] = np.float32(np.float64(total) / (np.float64(levels) * np.float64(levels)))
            else:
                inv = np.float32(1.0) / m if m > 0 else np.float32(0.0)
                total_f = 0.0
                for i in range(n_rows):
                    value = source[i] * inv
                    applied[i] = value
                    total_f += np.float64(value) * np.float64(value)
                sum_sq[t, b] = np.float32(total_f)
            for i in range(n_rows, tile):
                applied[i] = np.float32(0.0)
    n_bad = 0
    for b in range(n_vec):
        n_bad += np.int64(bad[b])
    if n_bad == 0 and drives.shape[0] > 0:
        for b in range(n_vec):  # sequential: the vectors add to the sums in batch order
            _add_activity(x[b], scale[b], activity_levels, bit_serial, drives, energy_weight)
    return n_bad


@kernel
def adc_accumulate_kernel(
    partial: np.ndarray,
    sum_sq: np.ndarray,
    scale: np.ndarray,
    col_scale: np.ndarray,
    bias: np.ndarray,
    key: np.uint64,
    sigma_us: float,
    adc_levels: int,
    step_us: np.ndarray,
    inv_step: np.ndarray,
    uniform: bool,
    table: np.ndarray,
    out: np.ndarray,
) -> None:
    """Read noise, ADC and digital tile sum in one pass over the tile partial sums.

    partial (T, B, N) float32: x_q . (G+ - G-) per tile, uS; sum_sq (T, B): sum of x_q^2 per tile; scale (B,):
    per-vector input scale; col_scale (N,): per-output digital scale (weight units per uS); bias (N,). sigma_us: read
    noise per cell (0 = off); adc_levels: ADC steps per sign (0 = ideal ADC). step_us (T, N) float32: the ADC step
    of tile t's column o in uS (each tile column has its own range, `crossbar.mvm.MvmSettings.adc_ranges`), and
    inv_step (T, N) its float32 reciprocal (both ignored for an ideal ADC). Writes out (B, N):
    out[b, o] = (sum_t ADC_t,o(partial[t, b, o] + noise) * scale[b]) * col_scale[o] + bias[o], where
    ADC_t,o(p) = clip(rint(p * inv_step[t, o]), -L, L) * step_us[t, o]. `uniform` (every step equal): the codes are
    summed first and scaled once by step * scale[b] (one multiply per output instead of one per tile).
    """
    n_tiles, n_vec, n_out = partial.shape
    n_groups = (n_out + 3) // 4
    sigma = np.float32(sigma_us)
    limit = np.float32(adc_levels)
    noisy = sigma_us > 0
    for b in prange(n_vec):
        acc = np.zeros(n_out, dtype=np.float32)
        z = np.empty(4 * n_groups, dtype=np.float32)
        for t in range(n_tiles):
            row = partial[t, b]
            step = step_us[t]
            inv = inv_step[t]
            if noisy:
                # Output-referred read noise of this tile row: sigma_cell * sqrt(sum x^2) (uS; times 1 / step in
                # ADC steps) times unit normals, four per hash, looked up as soon as the hash is made (scalar
                # table reads beat vector gathers with per-lane shifts); then noise, ADC and tile sum in a loop
                # of its own, which vectorises.
                noise_us = sigma * np.sqrt(sum_sq[t, b])
                counter0 = np.uint64((t * n_vec + b) * n_groups)
                for g in range(n_groups):
                    h = splitmix64(key ^ (counter0 + np.uint64(g)))
                    z[4 * g] = normal_from_hash(h, 0, table)
                    z[4 * g + 1] = normal_from_hash(h, 1, table)
                    z[4 * g + 2] = normal_from_hash(h, 2, table)
                    z[4 * g + 3] = normal_from_hash(h, 3, table)
                if adc_levels > 0 and uniform:
                    noise_steps = noise_us * inv[0]
                    for o in range(n_out):
                        code = np.rint(row[o] * inv[o] + noise_steps * z[o])
                        acc[o] += min(max(code, -limit), limit)
                elif adc_levels > 0:
                    for o in range(n_out):
                        code = np.rint(row[o] * inv[o] + (noise_us * inv[o]) * z[o])
                        acc[o] += min(max(code, -limit), limit) * step[o]
                else:
                    for o in range(n_out):
                        acc[o] += row[o] + noise_us * z[o]
            elif adc_levels > 0 and uniform:
                for o in range(n_out):
                    code = np.rint(row[o] * inv[o])
                    acc[o] += min(max(code, -limit), limit)
            elif adc_levels > 0:
                for o in range(n_out):
                    code = np.rint(row[o] * inv[o])
                    acc[o] += min(max(code, -limit), limit) * step[o]
            else:
                for o in range(n_out):
                    acc[o] += row[o]
        # Digital: the tiles' converted sums (uS; uniform steps: codes, times the step) times the vector's input
        # scale and the output's weight scale, plus bias.
        coef = step_us[0, 0] * scale[b] if adc_levels > 0 and uniform else scale[b]
        for o in range(n_out):
            out[b, o] = acc[o] * coef * col_scale[o] + bias[o]


@inline
def _popcount(value: np.int32) -> np.int32:
    """Number of 1-bits of a non-negative int32 (a DAC code), branch-free (SWAR) in 32-bit lanes, so that the loop
    around it vectorises (also on AVX2, which has no 64-bit vector multiply)."""
    v = np.uint32(value)
    v = v - ((v >> np.uint32(1)) & np.uint32(0x55555555))
    v = (v & np.uint32(0x33333333)) + ((v >> np.uint32(2)) & np.uint32(0x33333333))
    v = (v + (v >> np.uint32(4))) & np.uint32(0x0F0F0F0F)
    return np.int32(((v * np.uint32(0x01010101)) & np.uint32(0xFFFFFFFF)) >> np.uint32(24))  # numba widens uint32


@serial_kernel
def input_activity_kernel(
    x: np.ndarray, x_bits: np.ndarray, levels: int, bit_serial: bool, drives: np.ndarray, energy_weight: np.ndarray
) -> None:
    """Per input line, summed over the batch, how often it is driven and with what energy weight (the ledger's
    cell-read pricing; twin: `crossbar.scheme.input_activity`, which defines the quantities).

    x (B, W) float32 as the DAC sees it, and x_bits, the same memory viewed as int32 (the per-vector max |x| is
    taken on the bit patterns, exactly and vectorised, as in `dac_tiles_kernel`); levels: DAC steps per sign (0 =
    ideal DAC: the exact normalised value); bit_serial: one cycle per magnitude bit of the code (drives = energy
    weight = number of 1-bits), else one multi-level drive (drives = codes != 0, energy weight = (code / L)^2).
    Adds to drives and energy_weight (W,) float64 (zero them first for one batch's activity), the vectors in batch
    order (as NumPy's axis-0 sum does), so both agree bit for bit. Sequential: called on small per-call batches,
    where a parallel launch costs more than the work. `dac_tiles_kernel` adds the same activity in its DAC pass.
    """
    n_vec, width = x.shape
    for b in range(n_vec):
        m_bits = 0
        for i in range(width):
            m_bits = max(m_bits, x_bits[b, i] & _ABS_MASK)
        _add_activity(x[b], np.float32(_float32_from_bits(m_bits)), levels, bit_serial, drives, energy_weight)


@inline
def _add_activity(
    row: np.ndarray, m: np.float32, levels: int, bit_serial: bool, drives: np.ndarray, energy_weight: np.ndarray
) -> None:
    """Add one vector's line activity (its max |x| is m) to drives and energy_weight; the loops over lines are
    branch-free so that they vectorise."""
    width = row.shape[0]
    if levels > 0:
        inv = np.float32(levels) / m if m > 0 else np.float32(0.0)
        if bit_serial:
            for i in range(width):
                ones = np.float64(_popcount(abs(np.int32(np.rint(row[i] * inv)))))  # |code| <= levels < 2^31
                drives[i] += ones
                energy_weight[i] += ones
        else:
            for i in range(width):
                code = np.rint(row[i] * inv)  # an integer held exactly in float32 (no int64 conversion,
                fraction = np.float64(code) / np.float64(levels)  # which AVX2 cannot vectorise)
                drives[i] += np.float64(code != 0)
                energy_weight[i] += fraction * fraction
    else:
        for i in range(width):
            applied = np.float64(row[i] / m) if m > 0 else 0.0
            drives[i] += np.float64(applied != 0)
            energy_weight[i] += applied * applied


@serial_kernel
def scaled_activity_kernel(
    d: np.ndarray,
    col_scale: np.ndarray,
    levels: int,
    bit_serial: bool,
    scaled: np.ndarray,
    scaled_bits: np.ndarray,
    drives: np.ndarray,
    energy_weight: np.ndarray,
) -> None:
    """The input of a transposed MVM as its DAC sees it, and (for the ledger) its line activity, in one pass.

    d (B, W) float32: output gradients; col_scale (W,) float32: each output's weight scale. Writes scaled (B, W)
    float32 = d * col_scale (one float32 multiply per element, as torch's), scaled_bits being the same memory viewed
    as int32. When drives and energy_weight (W,) float64 are not empty, adds scaled's activity to them exactly as
    `input_activity_kernel(scaled, scaled_bits, levels, bit_serial, drives, energy_weight)` does. Twin: NumPy's
    d * col_scale and `crossbar.scheme.input_activity`."""
    n_vec, width = d.shape
    count = drives.shape[0] > 0
    for b in range(n_vec):
        source = d[b]
        row = scaled[b]
        for i in range(width):
            row[i] = source[i] * col_scale[i]
        if count:
            bits_row = scaled_bits[b]
            m_bits = 0
            for i in range(width):
                m_bits = max(m_bits, bits_row[i] & _ABS_MASK)
            _add_activity(row, np.float32(_float32_from_bits(m_bits)), levels, bit_serial, drives, energy_weight)
