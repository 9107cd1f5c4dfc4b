"""Array peripherals as differentiable torch functions: the input DAC and the column ADC.

Both are signed, symmetric uniform quantisers with `2^(bits-1) - 1` steps per sign (zero is a level; the most
negative code of a two's-complement converter is left unused, as in aihwkit's `out_res = 1 / (2^bits - 2)`).

- DAC: each input vector is scaled by its own largest magnitude (aihwkit-style abs-max noise management) so the
  applied row voltages satisfy |x| <= 1, then rounded to the DAC levels. The scale is a digital number the output
  is multiplied by again after the ADC.
- ADC: a tile column's partial sum is clipped to [-full_scale, full_scale] and rounded to the ADC levels.

Rounding is half-to-even (`torch.round`, like `np.rint` in the kernels). Gradients pass straight through (the
straight-through estimator, Bengio et al. 2013): rounding and clipping count as identity in the backward pass,
and the abs-max scale is treated as a constant. These functions serve the differentiable torch reference of the
MVM (`tests/reference_mvm.py`); the MVM engines do the same arithmetic in numba (`crossbar.mvm_kernels`) or
plain torch (`crossbar.engine_torch`), and `AnalogLinear`'s backward applies the same estimator explicitly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

__all__ = [
    "ADC_GRANULARITIES",
    "adc_quantize",
    "check_adc_calibration",
    "clamp_ste",
    "dac_quantize",
    "pooled_ranges",
    "quantizer_levels",
    "round_ste",
]


def quantizer_levels(bits: int | None, name: str = "bits") -> int:
    """Steps per sign of a signed `bits`-bit converter, 2^(bits-1) - 1; 0 for None (an ideal converter)."""
    if bits is None:
        return 0
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 24:
        raise ValueError(f"{name} must be None or an int in [2, 24], got {bits!r}")
    return (1 << (bits - 1)) - 1


class _RoundSTE(torch.autograd.Function):
    """Round half to even; gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, value: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return torch.round(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad


class _ClampSTE(torch.autograd.Function):
    """Clamp to [low, high]; gradient passes through unchanged (also where the value was clipped)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, low: float, high: float) -> torch.Tensor:  # noqa: ANN001
        return torch.clamp(value, low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        return grad, None, None


def round_ste(value: torch.Tensor) -> torch.Tensor:
    """`torch.round` (half to even) with a straight-through gradient."""
    return _RoundSTE.apply(value)


def clamp_ste(value: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`torch.clamp` with a straight-through gradient (identity also where clipped)."""
    return _ClampSTE.apply(value, low, high)


def dac_quantize(x: torch.Tensor, bits: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise each vector (last dim) by its max |x| and quantise it with a signed `bits`-bit DAC.

    Returns (applied, scale): applied inputs in [-1, 1] (float32) and the per-vector scale (..., 1), so that
    x ~= applied * scale. bits None: normalisation only. A zero vector gives zeros and scale 0. The arithmetic is the
    one of `crossbar.mvm_kernels.dac_tiles_kernel`: code = round(x * (levels / scale)), applied = code * (1/levels).
    """
    levels = quantizer_levels(bits, "dac_bits")
    x = x.to(torch.float32)
    scale = x.detach().abs().amax(dim=-1, keepdim=True)
    nonzero = scale > 0
    if levels > 0:
        inv = torch.where(nonzero, torch.tensor(float(levels), dtype=torch.float32) / scale, torch.zeros_like(scale))
        inv_levels = torch.tensor(1.0 / levels, dtype=torch.float32)
        return round_ste(x * inv) * inv_levels, scale
    inv = torch.where(nonzero, 1.0 / scale, torch.zeros_like(scale))
    return x * inv, scale


def adc_quantize(partial: torch.Tensor, bits: int | None, full_scale: float) -> torch.Tensor:
    """Convert partial sums with a signed `bits`-bit ADC of range [-full_scale, full_scale] (same units as
    `partial`): clip, then round to a multiple of full_scale / (2^(bits-1) - 1). bits None: unchanged."""
    levels = quantizer_levels(bits, "adc_bits")
    if levels == 0:
        return partial
    if not full_scale > 0:
        raise ValueError(f"full_scale must be > 0, got {full_scale!r}")
    step = torch.tensor(full_scale / levels, dtype=torch.float32)
    inv_step = torch.tensor(1.0, dtype=torch.float32) / step
    return clamp_ste(round_ste(partial * inv_step), -float(levels), float(levels)) * step


# --- ADC ranges from a calibration set (`crossbar.calibration`) ------------------------------------------------

AdcGranularity = Literal["column", "tile", "layer"]
ADC_GRANULARITIES: tuple[str, ...] = ("column", "tile", "layer")


def check_adc_calibration(percentile: float, granularity: str) -> None:
    """Raise ValueError naming the argument unless percentile is in (0, 100] and granularity is known."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if granularity not in ADC_GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(ADC_GRANULARITIES)}, got {granularity!r}")


def pooled_ranges(values: np.ndarray, percentile: float, granularity: str, group: int, fallback: float) -> np.ndarray:
    """(T, N) float32 ADC ranges from the ADC inputs `values` (T, M, N) (normalised units, one per conversion): the
    `percentile` of |values| per tile column, per group of `group` columns of a tile (`tile`) or over all
    (`layer`). A range that comes out 0 (a column whose inputs were all zero) is `fallback`."""
    check_adc_calibration(percentile, granularity)
    n_tiles, _, n_out = values.shape
    magnitude = np.abs(values.astype(np.float64, copy=False))
    if magnitude.shape[1] == 0:
        raise ValueError("the calibration set is empty")
    if granularity == "column":
        ranges = np.percentile(magnitude, percentile, axis=1)  # (T, N)
    elif granularity == "tile":
        ranges = np.empty((n_tiles, n_out))
        for lo in range(0, n_out, group):
            block = magnitude[:, :, lo : lo + group].reshape(n_tiles, -1)
            ranges[:, lo : lo + group] = np.percentile(block, percentile, axis=1)[:, None]
    else:
        ranges = np.full((n_tiles, n_out), np.percentile(magnitude, percentile))
    ranges = np.where(ranges > 0, ranges, fallback)
    return ranges.astype(np.float32)
