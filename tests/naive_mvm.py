"""Plain NumPy twins of the MVM kernels (`crossbar.mvm_kernels`) and of the whole analog MVM.

Written independently of the library code, with the same float32 operations in the same order, so that the
kernels must agree with them bit for bit; loops are over tiles and vectors where that keeps the order obvious.
"""

from __future__ import annotations

import numpy as np

from crossbar.rng import normal_from_hash_np, splitmix64_np


def levels_of(bits: int | None) -> int:
    return 0 if bits is None else 2 ** (bits - 1) - 1


def naive_dac(x: np.ndarray, levels: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, D) float32 -> (applied (T, B, tile) zero-padded, sum of squares (T, B), scale (B,))."""
    x = np.asarray(x, dtype=np.float32)
    n_vec, d_in = x.shape
    n_tiles = -(-d_in // tile)
    applied = np.zeros((n_tiles, n_vec, tile), dtype=np.float32)
    sum_sq = np.zeros((n_tiles, n_vec), dtype=np.float32)
    scale = np.abs(x).max(axis=1) if d_in else np.zeros(n_vec, dtype=np.float32)
    for b in range(n_vec):
        m = np.float32(scale[b])
        for t in range(n_tiles):
            chunk = x[b, t * tile : (t + 1) * tile]
            if levels > 0:
                inv = np.float32(levels) / m if m > 0 else np.float32(0.0)
                codes = np.rint(chunk * inv)
                applied[t, b, : chunk.size] = codes * (np.float32(1.0) / np.float32(levels))
                total = int(np.sum(codes.astype(np.int64) ** 2))
                sum_sq[t, b] = np.float32(float(total) / (float(levels) * float(levels)))
            else:
                inv = np.float32(1.0) / m if m > 0 else np.float32(0.0)
                values = chunk * inv
                applied[t, b, : chunk.size] = values
                running = np.cumsum(values.astype(np.float64) ** 2)  # sequential, as the kernel adds
                sum_sq[t, b] = np.float32(running[-1] if running.size else 0.0)
    return applied, sum_sq, scale.astype(np.float32)


def naive_normals(key: int, n_tiles: int, n_vec: int, n_out: int) -> np.ndarray:
    """(T, B, N) unit normals: element (t, b, o) = lane o % 4 of splitmix64(key ^ ((t*B + b)*ceil(N/4) + o // 4))."""
    n_groups = (n_out + 3) // 4
    out = np.zeros((n_tiles, n_vec, n_out), dtype=np.float32)
    outputs = np.arange(n_out)
    for t in range(n_tiles):
        for b in range(n_vec):
            counters = np.uint64((t * n_vec + b) * n_groups) + (outputs // 4).astype(np.uint64)
            hashes = splitmix64_np(np.uint64(key) ^ counters)
            for lane in range(4):
                sel = outputs % 4 == lane
                out[t, b, sel] = normal_from_hash_np(hashes[sel], lane)
    return out


def naive_accumulate(
    partial: np.ndarray,
    sum_sq: np.ndarray,
    scale: np.ndarray,
    col_scale: np.ndarray,
    bias: np.ndarray,
    key: int,
    sigma_us: float,
    adc_levels: int,
    step_us: np.ndarray | float,
) -> np.ndarray:
    """Read noise + ADC + digital tile sum + scaling, tile by tile. step_us: the ADC step (uS) per (tile, column),
    or one value for all (then the codes are summed and scaled once, as the kernel's uniform path does)."""
    n_tiles, n_vec, n_out = partial.shape
    z = naive_normals(key, n_tiles, n_vec, n_out)
    sigma = np.float32(sigma_us)
    uniform = np.ndim(step_us) == 0
    step = np.broadcast_to(np.asarray(step_us, dtype=np.float32), (n_tiles, n_out))
    inv_step = np.float32(1.0) / step
    limit = np.float32(adc_levels)
    acc = np.zeros((n_vec, n_out), dtype=np.float32)
    for t in range(n_tiles):
        sigma_sqrt = (sigma * np.sqrt(sum_sq[t]))[:, None]
        if adc_levels > 0:
            value = partial[t] * inv_step[t][None, :]
            if sigma_us > 0:
                value = value + (sigma_sqrt * inv_step[t][None, :]) * z[t]
            codes = np.clip(np.rint(value), -limit, limit)
            acc = acc + (codes if uniform else codes * step[t][None, :])
        else:
            acc = acc + (partial[t] + sigma_sqrt * z[t] if sigma_us > 0 else partial[t])
    coef = step[0, 0] * scale if adc_levels > 0 and uniform else scale
    return (acc * coef[:, None]) * col_scale[None, :] + bias[None, :]


def naive_mvm(
    x: np.ndarray,
    weight_g_diff: np.ndarray,
    out_scale: np.ndarray,
    *,
    tile: int,
    dac_bits: int | None,
    adc_bits: int | None,
    adc_full_scale: float | np.ndarray,
    sigma_us: float,
    g_range_us: float,
    key: int,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """The whole analog MVM from a (d_out, d_in) conductance-difference matrix (uS), in NumPy."""
    d_out, d_in = weight_g_diff.shape
    applied, sum_sq, scale = naive_dac(x, levels_of(dac_bits), tile)
    n_tiles = applied.shape[0]
    partial = np.zeros((n_tiles, x.shape[0], d_out), dtype=np.float32)
    for t in range(n_tiles):
        rows = weight_g_diff[:, t * tile : (t + 1) * tile].T.astype(np.float32)
        partial[t] = applied[t, :, : rows.shape[0]] @ rows
    adc_levels = levels_of(adc_bits)
    if not adc_levels:
        step = np.float32(1.0)
    elif np.ndim(adc_full_scale) == 0:
        step = np.float32(adc_full_scale * g_range_us / adc_levels)
    else:
        step = (np.asarray(adc_full_scale, dtype=np.float64) * g_range_us / adc_levels).astype(np.float32)
    bias = np.zeros(d_out, dtype=np.float32) if bias is None else bias.astype(np.float32)
    return naive_accumulate(
        partial, sum_sq, scale, out_scale.astype(np.float32), bias, key, sigma_us, adc_levels, step
    )
