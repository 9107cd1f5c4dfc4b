"""The torch MVM engine: the analog MVM in pure torch, on whatever torch device the arrays live on (CUDA, MPS, ...).

The numba engine (`crossbar.engine_numba`) is the CPU path; this one computes the same function with torch
operations on the arrays' own device, so a layer moved with `.to("cuda")` runs there:

- DAC: per-vector abs-max scale, float32 rounding half to even (`torch.round` = `np.rint`), the codes' squares
  summed as integers, as `dac_tiles_kernel` does;
- tile partial sums: one matmul per tile against the (rows, d_out) block of G+ - G- (transposed: per column tile);
- read (and output) noise: the same counter-based draws as the kernel, SplitMix64 on int64 tensors (wrapping
  multiplies; logical right shifts done as arithmetic shifts masked to the low bits), looked up in
  `crossbar.rng.NORMAL_TABLE`, so the same key gives the same normals on every device;
- ADC: round, clip and add the tile codes in tile order, then input scale, output scale and bias in the kernel's
  float32 order;
- bit-serial schemes with a conversion per input cycle: `per_cycle_accumulate` (the numba engine runs it too, on
  CPU tensors: it has no per-cycle kernel).

Numerics equal the references (`tests/naive_mvm.py`, `tests/reference_mvm.py`) up to the order in
which BLAS sums a tile's products (1-ulp partial sums): tests force this path on the CPU and compare. IR drop
(`wire_resistance_ohm` > 0) computes its effective operand on the CPU (`crossbar.ir_drop`, NumPy) and moves it
to the device. No gradient flows through here (the layer's autograd function handles the backward). `TorchEngine`
runs it for an array, with the tile views and settings kept per generation (`crossbar.engine`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from crossbar.engine import MvmEngine
from crossbar.mvm import MvmSettings, forward_operands, noise_terms_tensor
from crossbar.rng import LANE_BITS, NORMAL_TABLE, SPLITMIX64_GAMMA, SPLITMIX64_MIX1, SPLITMIX64_MIX2
from crossbar.scheme import bit_planes
from crossbar.state import ArrayState

if TYPE_CHECKING:
    from crossbar.array import AnalogArray

__all__ = ["TorchEngine", "analog_mvm_torch", "per_cycle_accumulate", "read_noise_normals_torch", "splitmix64_torch"]


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(SPLITMIX64_GAMMA)
_M1 = _signed(SPLITMIX64_MIX1)
_M2 = _signed(SPLITMIX64_MIX2)
_LANE_MASK = (1 << LANE_BITS) - 1
_TABLES: dict[torch.device, torch.Tensor] = {}


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> on int64 is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64_torch(x: torch.Tensor) -> torch.Tensor:
    """`crossbar.rng.splitmix64` on int64 tensors holding uint64 bit patterns (two's-complement wrap-around)."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _normal_table(device: torch.device) -> torch.Tensor:
    table = _TABLES.get(device)
    if table is None:
        table = _TABLES[device] = torch.from_numpy(NORMAL_TABLE).to(device)
    return table


def read_noise_normals_torch(key: int, n_tiles: int, n_vec: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(T, B, N) float32 on `device`: the same normals as `crossbar.mvm.read_noise_normals(key, T, B, N)`."""
    n_groups = (n_out + 3) // 4
    counters = torch.arange(n_tiles * n_vec * n_groups, dtype=torch.int64, device=device)
    hashes = splitmix64_torch(counters ^ _signed(int(key)))
    lanes = torch.stack([(hashes >> (LANE_BITS * lane)) & _LANE_MASK for lane in range(4)], dim=-1)
    index = lanes.reshape(n_tiles, n_vec, 4 * n_groups)[..., :n_out]
    return _normal_table(device)[index]


def _dac(x: torch.Tensor, levels: int, tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, D) float32 -> (xq (T, B, tile) zero-padded, sum_sq (T, B) float32, scale (B,)), as `dac_tiles_kernel`."""
    n_vec, width = x.shape
    n_tiles = -(-width // tile)
    scale = x.abs().amax(dim=1) if width else torch.zeros(n_vec, dtype=torch.float32, device=x.device)
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("x contains NaN or inf")
    positive = scale > 0
    padded = torch.zeros((n_vec, n_tiles * tile), dtype=torch.float32, device=x.device)
    if levels > 0:
        inv = torch.where(positive, torch.tensor(float(levels), dtype=torch.float32) / scale, 0.0)
        codes = torch.round(x * inv[:, None])
        padded[:, :width] = codes * (np.float32(1.0) / np.float32(levels))
        icodes = torch.zeros((n_vec, n_tiles * tile), dtype=torch.int64, device=x.device)
        icodes[:, :width] = codes.to(torch.int64)
        total = (icodes * icodes).reshape(n_vec, n_tiles, tile).sum(dim=2)
        sum_sq = (total.to(torch.float64) / (float(levels) * float(levels))).to(torch.float32)
    else:
        inv = torch.where(positive, torch.tensor(1.0, dtype=torch.float32) / scale, 0.0)
        padded[:, :width] = x * inv[:, None]
        sum_sq = (padded.to(torch.float64) ** 2).reshape(n_vec, n_tiles, tile).sum(dim=2).to(torch.float32)
    xq = padded.reshape(n_vec, n_tiles, tile).transpose(0, 1).contiguous()
    return xq, sum_sq.T.contiguous(), scale


def tile_operands(
    g_diff: torch.Tensor, g_neg: torch.Tensor | None, d_in: int, settings: MvmSettings, transposed: bool,
    tile_cols: int,
) -> list[torch.Tensor]:  # fmt: skip
    """Per tile, the block of G+ - G- an MVM multiplies by, on g_diff's device (views; with IR drop, the effective
    operand computed on the CPU); transposed: per column tile, (tile columns, d_in) views of its transpose."""
    n_tiles, rows, d_out = g_diff.shape
    if transposed:
        flat = g_diff.reshape(n_tiles * rows, d_out)[:d_in]
        return [flat[:, lo : lo + tile_cols].T for lo in range(0, d_out, tile_cols)]
    if settings.wire_resistance_ohm > 0:  # the first-order IR-drop operand is computed in NumPy, on the CPU
        if g_neg is None:
            raise ValueError("IR drop needs G- (g_neg) as well as G+ - G-")
        cpu = [t.detach().cpu().numpy() for t in (g_diff, g_neg)]
        blank = np.zeros(cpu[0].shape, dtype=np.uint16)
        state = ArrayState(d_in, d_out, rows, cpu[0], cpu[1], blank, blank)
        return [op.to(g_diff.device) for op in forward_operands(state, settings)]
    return [g_diff[t, : min(rows, d_in - t * rows)] for t in range(n_tiles)]


@torch.no_grad()
def analog_mvm_torch(
    x: torch.Tensor,
    g_diff_us: torch.Tensor,
    d_in: int,
    out_scale: torch.Tensor,
    settings: MvmSettings,
    *,
    key: int,
    bias: torch.Tensor | None = None,
    g_neg_us: torch.Tensor | None = None,
    transposed: bool = False,
    tile_cols: int = 0,
    operands: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The analog MVM (or, `transposed`, d @ W) of `crossbar.mvm` on the device of `g_diff_us`.

    g_diff_us (T, tile_rows, d_out) float32: the arrays' G+ - G- in tile layout (`AnalogLinear.g_diff_us`);
    x (B, d_in), or (B, d_out) transposed; out_scale (d_out,); key: the call's 64-bit read-noise key; `operands`:
    the tile blocks `tile_operands` gives for these arguments (kept by `TorchEngine`), else made here. Returns
    (B, d_out), or (B, d_in), float32 on that device."""
    device = g_diff_us.device
    d_out = g_diff_us.shape[2]
    width, n_out = (d_out, d_in) if transposed else (d_in, d_out)
    if x.dim() != 2 or x.shape[1] != width:
        raise ValueError(f"{'d' if transposed else 'x'} must have shape (batch, {width}), got {tuple(x.shape)}")
    if transposed and (isinstance(tile_cols, bool) or not isinstance(tile_cols, int) or tile_cols < 1):
        raise ValueError(f"tile_cols must be an int >= 1, got {tile_cols!r}")
    x = x.detach().to(device=device, dtype=torch.float32)
    out_scale = out_scale.detach().to(device=device, dtype=torch.float32)
    if transposed:
        x = x * out_scale[None, :]  # the per-output weight scale, digitally, before the DAC
        col_scale = torch.ones(n_out, dtype=torch.float32, device=device)
        bias_vec = torch.zeros(n_out, dtype=torch.float32, device=device)
        tile = tile_cols
    else:
        col_scale = out_scale
        bias_vec = (
            torch.zeros(n_out, dtype=torch.float32, device=device)
            if bias is None
            else bias.detach().to(device=device, dtype=torch.float32)
        )
        tile = g_diff_us.shape[1]
    if operands is None:
        operands = tile_operands(g_diff_us, g_neg_us, d_in, settings, transposed, tile_cols)
    xq, sum_sq, scale = _dac(x.contiguous(), settings.dac_levels, tile)
    n_tiles, n_vec = len(operands), x.shape[0]
    if settings.per_cycle:
        tiles = [xq[t, :, : op.shape[0]] for t, op in enumerate(operands)]
        return per_cycle_accumulate(tiles, operands, settings, key, scale, col_scale, bias_vec)
    levels = settings.adc_levels
    sum_sq, sigma = noise_terms_tensor(sum_sq, settings)
    noisy = sigma > 0
    z = read_noise_normals_torch(key, n_tiles, n_vec, n_out, device) if noisy else None
    acc = torch.zeros((n_vec, n_out), dtype=torch.float32, device=device)
    if settings.adc_ranges is not None and levels > 0:  # a range per tile column (calibrated): codes x step[t]
        steps, inv_steps = (torch.from_numpy(a).to(device) for a in settings.steps(n_tiles, n_out))
        for t, operand in enumerate(operands):
            value = (xq[t, :, : operand.shape[0]] @ operand) * inv_steps[t]
            if noisy:
                sigma_sqrt = torch.tensor(sigma, dtype=torch.float32, device=device) * torch.sqrt(sum_sq[t])
                value = value + (sigma_sqrt[:, None] * inv_steps[t]) * z[t]
            acc = acc + torch.clamp(torch.round(value), -float(levels), float(levels)) * steps[t]
        return acc * scale[:, None] * col_scale[None, :] + bias_vec[None, :]
    step = torch.tensor(settings.step_us, dtype=torch.float32)
    inv_step = (torch.tensor(1.0, dtype=torch.float32) / step if levels > 0 else torch.tensor(1.0)).to(device)
    step = step.to(device)
    for t, operand in enumerate(operands):
        partial = xq[t, :, : operand.shape[0]] @ operand
        value = partial * inv_step if levels > 0 else partial
        if noisy:
            noise_scale = torch.tensor(sigma, dtype=torch.float32, device=device) * torch.sqrt(sum_sq[t]) * inv_step
            value = value + noise_scale[:, None] * z[t]
        if levels > 0:
            value = torch.clamp(torch.round(value), -float(levels), float(levels))
        acc = acc + value
    coef = step * scale if levels > 0 else scale
    return acc * coef[:, None] * col_scale[None, :] + bias_vec[None, :]


def per_cycle_accumulate(
    tiles: list[torch.Tensor],
    operands: list[torch.Tensor],
    settings: MvmSettings,
    key: int,
    scale: torch.Tensor,
    col_scale: np.ndarray | torch.Tensor,
    bias: np.ndarray | torch.Tensor | None,
) -> torch.Tensor:
    """Bit-serial inputs, one conversion per cycle: per tile t and cycle p, ADC(planes[p] . G_t + noise) in steps,
    shift-added with weight 2^p / L, summed over tiles, times the vector's input scale and the output scale.

    tiles[t] (B, k_t): the DAC outputs (code / L) of tile t; operands[t] (k_t, N). Read noise of cycle p of tile t
    is sigma * sqrt(number of driven rows) * z with z = read_noise_normals(key, T * P, B, N)[t * P + p]. Runs on
    the operands' device; no gradient (the reference with straight-through gradients: `tests/reference_mvm.py`)."""
    n_cycles = settings.cycles
    n_vec = tiles[0].shape[0]
    n_out = operands[0].shape[1]
    where = operands[0].device
    z = read_noise_normals_torch(key, len(operands) * n_cycles, n_vec, n_out, where)
    levels = settings.adc_levels
    steps, inv_steps = (torch.from_numpy(a).to(where) for a in settings.steps(len(operands), n_out))
    acc = torch.zeros((n_vec, n_out), dtype=torch.float32, device=where)
    for t, (applied, operand) in enumerate(zip(tiles, operands)):
        planes, weights = bit_planes(applied, settings.dac_levels, n_cycles)
        weights = weights.to(where)
        k = operand.shape[0]
        partial = (planes.reshape(n_cycles * n_vec, k) @ operand).reshape(n_cycles, n_vec, n_out)
        driven = (planes * planes).sum(dim=-1)  # (P, B): rows driven per cycle = sum of squared plane inputs
        sum_sq, sigma_t = noise_terms_tensor(driven, settings)  # read noise, plus output noise per conversion
        sigma_sqrt = (torch.tensor(sigma_t, dtype=torch.float32, device=where) * torch.sqrt(sum_sq))[..., None]
        z_t = z[t * n_cycles : (t + 1) * n_cycles]
        if levels > 0:  # each tile column converts with its own range: step[t] broadcasts over cycles and vectors
            noise = (sigma_sqrt * inv_steps[t]) * z_t  # in ADC steps
            codes = torch.clamp(torch.round(partial * inv_steps[t] + noise), -float(levels), float(levels))
            acc = acc + (weights[:, None, None] * codes).sum(dim=0) * steps[t]
        else:
            acc = acc + (weights[:, None, None] * (partial + sigma_sqrt * z_t)).sum(dim=0)
    y = acc * scale.reshape(n_vec, 1) * torch.as_tensor(col_scale, dtype=torch.float32, device=where)[None, :]
    if bias is not None:
        y = y + torch.as_tensor(bias, dtype=torch.float32, device=where)[None, :]
    return y


class TorchEngine(MvmEngine):
    """Pure torch on the arrays' own device (also on the CPU when forced: `AnalogLinear.mvm_backend = "torch"`)."""

    kind = "torch"

    def run(
        self, array: AnalogArray, x2: torch.Tensor, settings: MvmSettings, *, transposed: bool,
        bias: torch.Tensor | None, kept: bool,
    ) -> torch.Tensor:  # fmt: skip
        tile_cols = array.array_config.tile_cols
        operands = None
        if kept:  # the tile views of this generation (IR drop: its effective operand, made once)
            derived = self.derived(array)
            operands = derived.get(("operands", transposed))
            if operands is None:
                operands = tile_operands(array.g_diff_us, array.g_neg_us, array.in_features, settings, transposed,
                                         tile_cols)  # fmt: skip
                derived[("operands", transposed)] = operands
        return analog_mvm_torch(
            x2, array.g_diff_us, array.in_features, array.out_scale, settings, key=array.next_key(), bias=bias,
            g_neg_us=array.g_neg_us, transposed=transposed, tile_cols=tile_cols, operands=operands,
        )  # fmt: skip
