"""Weights <-> differential conductance pairs.

A weight w of output row o is normalised by that row's largest magnitude, u = w / max_i |W[o, i]| in [-1, 1],
quantised to the device's levels, and placed on one cell of the pair: G+ = g_min + u+ * (g_max - g_min),
G- = g_min + u- * (g_max - g_min) with u+ = max(u, 0), u- = max(-u, 0). The array then computes
sum_i x_i (G+ - G-)_oi = (g_max - g_min) / w_max_o * sum_i x_i w_oi, so `out_scale_o = w_max_o / (g_max - g_min)`
turns its output back into weight units (a digital multiply per output).

Fixed scale (`weight_bound`): a designer fixes the weight range an array represents before anything is trained,
u = clip(w / weight_bound, -1, 1), the same for every row, and `out_scale = weight_bound / (g_max - g_min)` never
changes. Per-row normalisation suits weights known at programming time (the base, the bank); an array rewritten
during training (a LoRA trained in situ, an array reused across task switches) needs the fixed scale, or the first
tiny update of a zero row maps to full scale and every change of a row's maximum moves every cell of that row.
Weights beyond the bound clip (counted in `Targets.clipped`).
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
    clipped: int = 0
    """Weights beyond a fixed `weight_bound` (mapped to the bound); always 0 with per-row normalisation."""


def quantize_levels(u: np.ndarray, levels: int | None) -> np.ndarray:
    """Round values in [0, 1] to `levels` evenly spaced levels (None: unchanged)."""
    if levels is None:
        return u
    steps = levels - 1
    return np.round(u * steps) / steps


def map_weights(
    weight: np.ndarray, device: DeviceConfig, state: ArrayState, *, weight_bound: float | np.ndarray | None = None
) -> Targets:
    """Targets for programming `weight` (d_out x d_in) into `state`'s tiles: per-row normalisation, or with
    `weight_bound` (weight units, > 0; one number, or one per output row) the fixed scale |w| = weight_bound <->
    g_max - g_min (see the module doc)."""
    weight = np.asarray(weight, dtype=np.float32)
    if weight.shape != (state.d_out, state.d_in):
        raise ValueError(f"weight shape {weight.shape} does not fit a ({state.d_out}, {state.d_in}) array")
    if not np.all(np.isfinite(weight)):
        raise ValueError("weights must be finite")
    clipped = 0
    if weight_bound is None:
        w_max = np.abs(weight).max(axis=1)
        w_max = np.where(w_max > 0, w_max, 1.0).astype(np.float32)
        u = weight / w_max[:, None]
    else:
        bound = np.zeros(0) if isinstance(weight_bound, bool) else np.asarray(weight_bound, dtype=np.float64)
        if bound.ndim == 0:
            bound = np.full(state.d_out, float(bound))
        if bound.shape != (state.d_out,) or not (np.all(np.isfinite(bound)) and np.all(bound > 0)):
            raise ValueError(
                f"weight_bound must be a finite number > 0 (weight units) or one per output row, got {weight_bound!r}"
            )
        w_max = bound.astype(np.float32)
        u = weight / w_max[:, None]
        clipped = int(np.count_nonzero(np.abs(u) > 1.0 + 1e-6))  # beyond float32 rounding of the bound
        u = np.clip(u, -1.0, 1.0)
    u_pos = quantize_levels(np.maximum(u, 0.0), device.levels)
    u_neg = quantize_levels(np.maximum(-u, 0.0), device.levels)
    span = device.g_range_us
    pos = state.to_tiles(device.g_min_us + u_pos * span, fill=0.0)
    neg = state.to_tiles(device.g_min_us + u_neg * span, fill=0.0)
    return Targets(pos_us=pos, neg_us=neg, out_scale=(w_max / span).astype(np.float32), clipped=clipped)


def state_weights(state: ArrayState, out_scale: np.ndarray) -> np.ndarray:
    """What the array really holds, as weights (d_out x d_in): (G+ - G-) * out_scale, noise-free."""
    return state.to_matrix(state.g_diff_us) * out_scale[:, None]
