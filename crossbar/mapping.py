"""Weights <-> differential conductance pairs.

A weight w of output row o is normalised by that row's largest magnitude, u = w / max_i |W[o, i]| in [-1, 1],
quantised to the device's levels, and placed on one cell of the pair: G+ = g_min + u+ * (g_max - g_min),
G- = g_min + u- * (g_max - g_min) with u+ = max(u, 0), u- = max(-u, 0). The array then computes
sum_i x_i (G+ - G-)_oi = (g_max - g_min) / w_max_o * sum_i x_i w_oi, so `out_scale_o = w_max_o / (g_max - g_min)`
turns its output back into weight units (a digital multiply per output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar.device import DeviceConfig
from crossbar.state import ArrayState

__all__ = ["Targets", "map_weights", "quantize_levels", "state_weights"]


@dataclass
class Targets:
    """Programming targets in tile layout, and the per-output scale back to weight units."""

    pos_us: np.ndarray
    neg_us: np.ndarray
    out_scale: np.ndarray
    """(d_out,) float32: weight units per uS of conductance difference."""


def quantize_levels(u: np.ndarray, levels: int | None) -> np.ndarray:
    """Round values in [0, 1] to `levels` evenly spaced levels (None: unchanged)."""
    if levels is None:
        return u
    steps = levels - 1
    return np.round(u * steps) / steps


def map_weights(weight: np.ndarray, device: DeviceConfig, state: ArrayState) -> Targets:
    """Targets for programming `weight` (d_out x d_in) into `state`'s tiles."""
    weight = np.asarray(weight, dtype=np.float32)
    if weight.shape != (state.d_out, state.d_in):
        raise ValueError(f"weight shape {weight.shape} does not fit a ({state.d_out}, {state.d_in}) array")
    if not np.all(np.isfinite(weight)):
        raise ValueError("weights must be finite")
    w_max = np.abs(weight).max(axis=1)
    w_max = np.where(w_max > 0, w_max, 1.0).astype(np.float32)
    u = weight / w_max[:, None]
    u_pos = quantize_levels(np.maximum(u, 0.0), device.levels)
    u_neg = quantize_levels(np.maximum(-u, 0.0), device.levels)
    span = device.g_range_us
    pos = state.to_tiles(device.g_min_us + u_pos * span, fill=0.0)
    neg = state.to_tiles(device.g_min_us + u_neg * span, fill=0.0)
    return Targets(pos_us=pos, neg_us=neg, out_scale=(w_max / span).astype(np.float32))


def state_weights(state: ArrayState, out_scale: np.ndarray) -> np.ndarray:
    """What the array really holds, as weights (d_out x d_in): (G+ - G-) * out_scale, noise-free."""
    return state.to_matrix(state.g_diff_us) * out_scale[:, None]
