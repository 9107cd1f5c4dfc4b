"""The analog MVM in plain torch, differentiable: the reference the engines are tested against.

Same operations and draws as the engines of `crossbar` (`crossbar.engine_numba`, `crossbar.engine_torch`), with
the straight-through quantisers of `crossbar.periphery` so that gradients flow to the inputs. Slower (separate
passes, noise drawn in NumPy); for tests only. Its NumPy sibling (no autograd) is `naive_mvm.py`.
"""

from __future__ import annotations

import numpy as np
import torch

from crossbar.mvm import MvmSettings, forward_operands, noise_terms, noise_terms_tensor, read_noise_normals
from crossbar.mvm import transposed_operands as _transposed_operands
from crossbar.periphery import clamp_ste, dac_quantize, round_ste
from crossbar.scheme import bit_planes
from crossbar.state import ArrayState

_noise_terms = noise_terms


def _adc_round(value: torch.Tensor) -> torch.Tensor:
    """The ADC's rounding in the torch paths: one element = one conversion (tests count conversions here)."""
    return round_ste(value)


def per_cycle_accumulate(
    tiles: list[torch.Tensor],
    operands: list[torch.Tensor],
    settings: MvmSettings,
    key: int,
    scale: torch.Tensor,
    col_scale: np.ndarray | torch.Tensor,
    bias: np.ndarray | torch.Tensor | None,
    normals: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bit-serial inputs, one conversion per cycle: per tile t and cycle p, ADC(planes[p] . G_t + noise) in steps,
    shift-added with weight 2^p / L, summed over tiles, times the vector's input scale and the output scale.

    tiles[t] (B, k_t): the DAC outputs (code / L) of tile t; operands[t] (k_t, N). Read noise of cycle p of tile t
    is sigma * sqrt(number of driven rows) * z with z = read_noise_normals(key, T * P, B, N)[t * P + p]. Straight-
    through gradient: the output's gradient with respect to the tiles is that of the ideal product (x . G).
    Runs on the tensors' device; `normals` (those z, on that device) saves drawing them in NumPy."""
    n_cycles = settings.cycles
    n_vec = tiles[0].shape[0]
    n_out = operands[0].shape[1]
    where = operands[0].device
    if normals is None:
        normals = torch.from_numpy(read_noise_normals(key, len(operands) * n_cycles, n_vec, n_out))
    z = normals
    levels = settings.adc_levels
    steps, inv_steps = (torch.from_numpy(a).to(where) for a in settings.steps(len(operands), n_out))
    acc = torch.zeros((n_vec, n_out), dtype=torch.float32, device=where)
    ideal = torch.zeros((n_vec, n_out), dtype=torch.float32, device=where)
    for t, (applied, operand) in enumerate(zip(tiles, operands)):
        planes, weights = bit_planes(applied, settings.dac_levels, n_cycles)
        weights = weights.to(where)
        k = operand.shape[0]
        partial = (planes.reshape(n_cycles * n_vec, k) @ operand.detach()).reshape(n_cycles, n_vec, n_out)
        driven = (planes * planes).sum(dim=-1)  # (P, B): rows driven per cycle = sum of squared plane inputs
        sum_sq, sigma_t = noise_terms_tensor(driven, settings)  # read noise, plus output noise per conversion
        sigma_sqrt = (torch.tensor(sigma_t, dtype=torch.float32, device=where) * torch.sqrt(sum_sq))[..., None]
        z_t = z[t * n_cycles : (t + 1) * n_cycles]
        if levels > 0:  # each tile column converts with its own range: step[t] broadcasts over cycles and vectors
            noise = (sigma_sqrt * inv_steps[t]) * z_t  # in ADC steps
            codes = torch.clamp(_adc_round(partial * inv_steps[t] + noise), -float(levels), float(levels))
            acc = acc + (weights[:, None, None] * codes).sum(dim=0) * steps[t]
        else:
            acc = acc + (weights[:, None, None] * (partial + sigma_sqrt * z_t)).sum(dim=0)
        if applied.requires_grad:
            ideal = ideal + applied @ operand.detach()
    if any(a.requires_grad for a in tiles):
        acc = ideal + (acc - ideal).detach()
    y = acc * scale.reshape(n_vec, 1) * torch.as_tensor(col_scale, dtype=torch.float32, device=where)[None, :]
    if bias is not None:
        y = y + torch.as_tensor(bias, dtype=torch.float32, device=where)[None, :]
    return y


def analog_mvm_reference(
    x: torch.Tensor,
    state: ArrayState,
    out_scale: torch.Tensor,
    settings: MvmSettings,
    *,
    key: int,
    bias: torch.Tensor | None = None,
    transposed: bool = False,
    tile_cols: int = 0,
) -> torch.Tensor:
    """The MVM (or, with `transposed`, d @ W) in plain torch with the straight-through quantisers of
    `crossbar.periphery`: same operations and draws as the fast path, differentiable with respect to x.

    Slower (separate passes, noise drawn in NumPy); for tests and for autograd through the analog MVM."""
    if transposed:
        if x.dim() != 2 or x.shape[1] != state.d_out:
            raise ValueError(f"d must have shape (batch, {state.d_out}), got {tuple(x.shape)}")
        x = x.to(torch.float32) * torch.as_tensor(out_scale, dtype=torch.float32)[None, :]
        operands, tile, n_out = _transposed_operands(state, tile_cols), tile_cols, state.d_in
        col_scale = torch.ones(n_out, dtype=torch.float32)
    else:
        if x.dim() != 2 or x.shape[1] != state.d_in:
            raise ValueError(f"x must have shape (batch, {state.d_in}), got {tuple(x.shape)}")
        operands, tile, n_out = forward_operands(state, settings), state.tile_rows, state.d_out
        col_scale = torch.as_tensor(out_scale, dtype=torch.float32)
    applied, scale = dac_quantize(x, settings.dac_bits)
    n_vec = x.shape[0]
    if settings.per_cycle:
        tiles = []
        for t, operand in enumerate(operands):
            xt = torch.zeros((n_vec, tile), dtype=torch.float32)  # the fast path's tile layout
            xt[:, : operand.shape[0]] = applied[:, t * tile : t * tile + operand.shape[0]]
            tiles.append(xt[:, : operand.shape[0]])
        return per_cycle_accumulate(tiles, operands, settings, key, scale.reshape(-1), col_scale, bias)
    z = torch.from_numpy(read_noise_normals(key, len(operands), n_vec, n_out))
    levels = settings.adc_levels
    steps, inv_steps = (torch.from_numpy(a) for a in settings.steps(len(operands), n_out))
    acc = torch.zeros((n_vec, n_out), dtype=torch.float32)
    for t, operand in enumerate(operands):
        k = operand.shape[0]
        # Same layout as the fast path's tile buffer, so BLAS sums in the same order.
        xt = torch.zeros((n_vec, tile), dtype=torch.float32)
        xt[:, :k] = applied[:, t * tile : t * tile + k]
        partial = xt[:, :k] @ operand
        tile_sum_sq = _sum_sq(applied[:, t * tile : t * tile + k].detach(), settings.dac_levels).numpy()
        sum_sq, sigma_t = _noise_terms(tile_sum_sq, settings)
        sigma = torch.tensor(sigma_t, dtype=torch.float32)
        sigma_sqrt = (sigma * torch.sqrt(torch.from_numpy(sum_sq)))[:, None]
        if levels > 0:
            noise = (sigma_sqrt * inv_steps[t]) * z[t]  # in ADC steps
            codes = clamp_ste(_adc_round(partial * inv_steps[t] + noise), -float(levels), float(levels))
            acc = acc + codes * steps[t]
        else:
            acc = acc + (partial + sigma_sqrt * z[t])
    y = acc * scale.reshape(n_vec, 1) * col_scale[None, :]
    if bias is not None:
        y = y + bias.to(torch.float32)[None, :]
    return y


def _sum_sq(applied: torch.Tensor, levels: int) -> torch.Tensor:
    """Sum of squared applied inputs per vector, as the DAC kernel computes it (integer codes when quantised)."""
    if levels > 0:
        codes = torch.round(applied.double() * levels)
        return ((codes * codes).sum(dim=1) / float(levels * levels)).to(torch.float32)
    return (applied.double() ** 2).sum(dim=1).to(torch.float32)
