"""The analog matrix-vector multiply on a tiled crossbar array (DESIGN section 3).

    y = sum over input tiles t of ADC( DAC(x)_t . (G+ - G-)_t + read noise ) * input scale * out_scale  (+ bias)

Units: the DAC normalises each input vector by its max |x| (applied voltages |x| <= 1) and quantises it; the tile
matmul gives partial sums in uS; the ADC converts partial / (g_max - g_min) over [-full_scale, full_scale]
(normalised units: inputs |x| <= 1, conductances |G+ - G-| / (g_max - g_min) <= 1); digital logic adds the tiles'
codes, multiplies by the vector's input scale and the output's `out_scale` (weight units per uS) and adds the bias.

Fast path: one numba pass writes the DAC output in tile layout (`dac_tiles_kernel`), one `torch.mm` per tile against
a zero-copy view of the state's `g_diff_us` computes the partial sums, and one fused numba pass adds read noise,
converts, sums tiles and scales (`adc_accumulate_kernel`). Read noise is output-referred and exact for independent
Gaussian cell noise: per (tile, vector, output) N(0, sigma_pair^2 * sum_i x_i^2 + sigma_out^2), drawn from the
counter-based hash of `crossbar.rng` under a key the caller draws per call. Convention: `read_noise_frac` is the
sigma of ONE cell relative to (g_max - g_min), independent per cell, so a weight's pair G+ - G- reads with
sigma_pair = sqrt(2) * read_noise_frac * (g_max - g_min); aihwkit's `w_noise` (the weight's noise relative to the
range) is sqrt(2) * read_noise_frac. sigma_out = out_noise_frac * (g_max - g_min) is aihwkit's `out_noise` (one
draw per tile column and vector, in the ADC's normalised units), off unless a preset cites it.

IR drop (forward only, `wire_resistance_ohm` > 0): the operand is the first-order effective conductance of
`crossbar.ir_drop` instead of G+ - G- (the circuit is linear, so it is a fixed matrix), recomputed per call;
the transposed MVM ignores wire resistance.

Transposed MVM (d @ W, shape (..., d_out) -> (..., d_in), for backward passes done on the array): the array is
driven from its columns and read on its rows. Inputs then tile along d_out in `tile_cols` chunks (the physical
arrays' columns) and every physical array converts its `tile_rows` row sums with its own row ADCs; the digital sum
runs over the column tiles. The per-output weight scale is applied digitally to d before the DAC (d * out_scale),
and the transposed direction has its own ADC ranges (same default; calibrated separately).

ADC ranges: every tile column's ADC has its own range (`MvmSettings.adc_ranges`, (tiles, outputs) float32 in
normalised units; one value everywhere when fixed), set by the calibration phase (`crossbar.calibration`). The
kernel converts tile t's column o with step_us[t, o] = range[t, o] * (g_max - g_min) / L and sums the tiles'
converted values (uS) digitally.

`analog_mvm_reference` is the same computation in plain torch with the straight-through quantisers of
`crossbar.periphery`, differentiable, for tests and for users who need autograd through the analog MVM.

MVM scheme (`crossbar.scheme`, named by `DeviceConfig.mvm_scheme`). Multi-bit inputs and bit-serial inputs with
one conversion per vector compute the path above. Bit-serial inputs with a conversion per input bit-cycle (ISAAC)
split each DAC code into sign-magnitude bit planes, convert every plane's tile partial sums on their own (read
noise drawn per cycle, clipped and rounded per cycle) and shift-add the codes digitally: one torch implementation
(`per_cycle_accumulate`) serves both the fast and the reference path. `record_mvm` prices the same scheme.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from crossbar.device import DeviceConfig
from crossbar.ir_drop import ir_drop_conductances
from crossbar.mvm_kernels import adc_accumulate_kernel, dac_tiles_kernel, input_activity_kernel
from crossbar.nonideal import READ_NOISE_MODELS
from crossbar.periphery import clamp_ste, dac_quantize, quantizer_levels, round_ste
from crossbar.rng import NORMAL_TABLE, normal_from_hash_np, splitmix64_np
from crossbar.scheme import PRICED_BITS_IF_IDEAL, ConductanceSums, InputActivity, MvmScheme, bit_planes
from crossbar.state import ArrayState
from energy import CostTable, LedgerScope, pulse_energy_pj

__all__ = [
    "PRICED_BITS_IF_IDEAL",
    "ArrayOperands",
    "MvmPricing",
    "MvmTally",
    "MvmSettings",
    "adc_inputs",
    "analog_mvm",
    "analog_mvm_reference",
    "analog_mvm_transposed",
    "conductance_sums",
    "fast_input_activity",
    "read_noise_normals",
    "record_mvm",
]


@dataclass(frozen=True)
class MvmSettings:
    """Periphery and read noise of one MVM direction, derived from a `DeviceConfig`."""

    dac_bits: int | None
    adc_bits: int | None
    adc_full_scale: float
    """ADC range in normalised units (partial sum / (g_max - g_min), inputs |x| <= 1) of every tile column, unless
    `adc_ranges` gives one per tile column."""
    sigma_us: float
    """Read noise sigma of one weight's conductance difference (the pair, sqrt(2) x one cell) per read (uS)."""
    g_range_us: float
    out_noise_us: float = 0.0
    """Output noise sigma per tile column and vector, as a partial sum (uS); 0 = off."""
    wire_resistance_ohm: float = 0.0
    """Wire resistance per cell pitch (Ohm); > 0 applies the first-order IR drop to the forward operand."""
    tile_cols: int = 256
    """Weights per physical array along the outputs (row-wire length for the IR drop)."""
    cycles: int = 1
    """Input bit-cycles converted one by one (bit-serial inputs with a conversion per cycle); 1 = one conversion
    per vector."""
    adc_ranges: np.ndarray | None = field(default=None, compare=False, repr=False)
    """(input tiles, outputs) float32: the ADC range of each tile column in normalised units (calibrated, see
    `crossbar.calibration`); transposed MVMs: (column tiles, d_in). None = `adc_full_scale` everywhere."""

    @classmethod
    def from_device(
        cls, device: DeviceConfig, adc_full_scale: float | None = None, adc_ranges: np.ndarray | None = None
    ) -> MvmSettings:
        full_scale = device.adc_full_scale if adc_full_scale is None else float(adc_full_scale)
        if not np.isfinite(full_scale) or full_scale <= 0:
            raise ValueError(f"adc_full_scale must be finite and > 0, got {full_scale!r}")
        noise = READ_NOISE_MODELS[device.read_noise_model].params(device)
        return cls(
            dac_bits=device.dac_bits,
            adc_bits=device.adc_bits,
            adc_full_scale=full_scale,
            sigma_us=noise.sigma_pair_us,
            g_range_us=device.g_range_us,
            out_noise_us=noise.out_noise_us,
            wire_resistance_ohm=device.wire_resistance_ohm,
            tile_cols=device.tile_cols,
            cycles=device.scheme.cycles(device.dac_bits) if device.scheme.per_cycle else 1,
            adc_ranges=adc_ranges,
        )

    def __post_init__(self) -> None:
        # Derived once (the forward path reads them on every call): converter steps per sign and the ADC step.
        dac_levels = quantizer_levels(self.dac_bits, "dac_bits")
        adc_levels = quantizer_levels(self.adc_bits, "adc_bits")
        step = np.float32(self.adc_full_scale * self.g_range_us / adc_levels) if adc_levels else np.float32(1.0)
        object.__setattr__(self, "dac_levels", dac_levels)
        object.__setattr__(self, "adc_levels", adc_levels)
        object.__setattr__(self, "step_us", step)
        if self.adc_ranges is not None:
            ranges = np.ascontiguousarray(self.adc_ranges, dtype=np.float32)
            if ranges.ndim != 2 or not np.isfinite(ranges).all() or (ranges <= 0).any():
                raise ValueError("adc_ranges must be a 2-D (tiles, outputs) array of finite values > 0")
            object.__setattr__(self, "adc_ranges", ranges)
        object.__setattr__(self, "_steps", {})

    dac_levels: int = field(init=False, repr=False, compare=False)
    """DAC steps per sign, 2^(bits-1) - 1; 0 = ideal DAC."""
    adc_levels: int = field(init=False, repr=False, compare=False)
    """ADC steps per sign; 0 = ideal ADC."""
    step_us: np.float32 = field(init=False, repr=False, compare=False)
    """ADC step as a partial sum in uS for `adc_full_scale` (float32); 1 for an ideal ADC."""

    @property
    def per_cycle(self) -> bool:
        return self.cycles > 1

    def steps(self, n_tiles: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        """(step_us, inv_step), each (n_tiles, n_out) float32: the ADC step of every tile column in uS and its
        float32 reciprocal (ones for an ideal ADC). Computed once per shape."""
        cache = self._steps
        if (n_tiles, n_out) not in cache:
            if self.adc_levels == 0:
                step = np.ones((n_tiles, n_out), dtype=np.float32)
            elif self.adc_ranges is None:
                step = np.full((n_tiles, n_out), self.step_us, dtype=np.float32)
            else:
                if self.adc_ranges.shape != (n_tiles, n_out):
                    raise ValueError(
                        f"adc_ranges has shape {self.adc_ranges.shape}, the MVM has {(n_tiles, n_out)} tile columns"
                    )
                step = (self.adc_ranges.astype(np.float64) * self.g_range_us / self.adc_levels).astype(np.float32)
            cache[(n_tiles, n_out)] = (step, (np.float32(1.0) / step).astype(np.float32))
        return cache[(n_tiles, n_out)]


# --- operands --------------------------------------------------------------------------------------------------


def forward_operands(state: ArrayState, settings: MvmSettings | None = None) -> list[torch.Tensor]:
    """Per input tile, the (real rows, d_out) block of G+ - G- as a zero-copy torch view (with IR drop on: of the
    first-order effective conductance difference, `crossbar.ir_drop`)."""
    if settings is not None and settings.wire_resistance_ohm > 0:
        pos, neg = ir_drop_conductances(state.g_pos_us(), state.g_neg_us, settings.wire_resistance_ohm,
                                        settings.tile_cols)  # fmt: skip
        g = torch.from_numpy((pos - neg).astype(np.float32))
    else:
        g = torch.from_numpy(state.g_diff_us)
    rows = [min(state.tile_rows, state.d_in - t * state.tile_rows) for t in range(state.n_tiles)]
    return [g[t, :k] for t, k in enumerate(rows)]


def _stacked_forward_operand(state: ArrayState) -> torch.Tensor | None:
    """All input tiles' blocks as one (T, tile_rows, d_out) zero-copy view, for one batched matmul, when there are
    several tiles and every stored row holds an input (else None: per-tile matmuls skip the padding rows). A
    batched matmul gives each tile's partial sums bit for bit as its own matmul does (tests/test_mvm.py)."""
    if state.n_tiles < 2 or state.d_in != state.n_tiles * state.tile_rows:
        return None
    return torch.from_numpy(state.g_diff_us)


def _transposed_operands(state: ArrayState, tile_cols: int) -> list[torch.Tensor]:
    """Per column tile, the (tile columns, d_in) block of (G+ - G-)^T as a zero-copy strided view."""
    if isinstance(tile_cols, bool) or not isinstance(tile_cols, int) or tile_cols < 1:
        raise ValueError(f"tile_cols must be an int >= 1, got {tile_cols!r}")
    g = torch.from_numpy(state.g_diff_us).reshape(state.n_tiles * state.tile_rows, state.d_out)[: state.d_in]
    return [g[:, lo : lo + tile_cols].T for lo in range(0, state.d_out, tile_cols)]


@dataclass(frozen=True, eq=False)
class ArrayOperands:
    """What every MVM of one array multiplies by, built once: the per-tile zero-copy views of `g_diff_us` (forward
    and transposed), `out_scale` as a NumPy view, and the constant unit/zero vectors. Valid while the array's
    buffers are the same tensors (the programming, drift and fault kernels change them in place, which the views
    see); a layer rebuilds it when a buffer is replaced (`AnalogLinear._operands`)."""

    state: ArrayState
    out_scale: torch.Tensor
    tile_cols: int
    forward: list[torch.Tensor]
    forward_stacked: torch.Tensor | None
    transposed: list[torch.Tensor]
    col_scale: np.ndarray
    zeros_out: np.ndarray
    ones_in: np.ndarray
    zeros_in: np.ndarray

    @classmethod
    def of(cls, state: ArrayState, out_scale: torch.Tensor, tile_cols: int) -> ArrayOperands:
        col_scale = _vector(out_scale, state.d_out, 1.0, "out_scale")
        if col_scale.ctypes.data != out_scale.data_ptr():
            raise ValueError("out_scale must be a contiguous float32 CPU tensor to be shared with the kernels")
        return cls(
            state=state, out_scale=out_scale, tile_cols=tile_cols, forward=forward_operands(state),
            forward_stacked=_stacked_forward_operand(state),
            transposed=_transposed_operands(state, tile_cols), col_scale=col_scale,
            zeros_out=np.zeros(state.d_out, dtype=np.float32), ones_in=np.ones(state.d_in, dtype=np.float32),
            zeros_in=np.zeros(state.d_in, dtype=np.float32),
        )  # fmt: skip

    def valid_for(self, state: ArrayState, out_scale: torch.Tensor) -> bool:
        return self.state is state and self.out_scale is out_scale


def _as_matrix(x: torch.Tensor, width: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must have shape (batch, {width}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()  # the simulator runs on the CPU


def _dac_tiles(x: torch.Tensor, levels: int, tile: int, name: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """DAC into tile layout: (xq (T, B, tile) torch, sum_sq (T, B), scale (B,))."""
    x_np = x.numpy()
    n_vec, width = x_np.shape
    n_tiles = -(-width // tile)
    xq = np.empty((n_tiles, n_vec, tile), dtype=np.float32)
    sum_sq = np.empty((n_tiles, n_vec), dtype=np.float32)
    scale = np.empty(n_vec, dtype=np.float32)
    bad = np.empty(n_vec, dtype=np.uint8)
    dac_tiles_kernel(x_np, x_np.view(np.int32), levels, xq, sum_sq, scale, bad)
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf")
    return torch.from_numpy(xq), sum_sq, scale


# Batches from this many vectors up run per-tile matmuls rather than one batched matmul when the tile count is not
# a multiple of torch's thread count: torch's CPU bmm shares the tiles out between threads whole, so 3 tiles on 2
# threads leave one idle a third of the time, while each matmul of its own uses every thread. Measured 2026-12-06
# (2-core AMD EPYC, MKL): 3 tiles of 256 x 768, batch 256: bmm 2.03 ms, per-tile mm 1.80 ms; batch 32: 0.28 vs
# 0.29 ms; batch 1: 0.03 vs 0.06 ms. Both give the same bits (tests/test_mvm.py).
PER_TILE_MATMUL_MIN_VECTORS = 64


def _partial_sums(xq: torch.Tensor, operands: list[torch.Tensor], stacked: torch.Tensor | None = None) -> torch.Tensor:
    """(T, B, N) tile partial sums in uS, straight into the output buffer: one batched matmul over the tiles when
    `stacked` (the operands as one (T, K, N) tensor) is given and the tiles share out evenly between threads (or
    the batch is small), else one BLAS matmul per tile."""
    n_out = operands[0].shape[1]
    n_vec = xq.shape[1]
    partial = torch.empty((len(operands), n_vec, n_out), dtype=torch.float32)
    if stacked is not None and (n_vec < PER_TILE_MATMUL_MIN_VECTORS or len(operands) % torch.get_num_threads() == 0):
        return torch.bmm(xq, stacked, out=partial)
    for t, operand in enumerate(operands):
        torch.mm(xq[t, :, : operand.shape[0]], operand, out=partial[t])
    return partial


def _accumulate(
    partial: torch.Tensor,
    sum_sq: np.ndarray,
    scale: np.ndarray,
    col_scale: np.ndarray,
    bias: np.ndarray,
    settings: MvmSettings,
    key: int,
) -> torch.Tensor:
    out = np.empty((partial.shape[1], partial.shape[2]), dtype=np.float32)
    sum_sq, sigma = _noise_terms(sum_sq, settings)
    step, inv_step = settings.steps(partial.shape[0], partial.shape[2])
    adc_accumulate_kernel(
        partial.numpy(), sum_sq, scale, col_scale, bias, np.uint64(key), sigma, settings.adc_levels, step, inv_step,
        settings.adc_ranges is None, NORMAL_TABLE, out,
    )  # fmt: skip
    return torch.from_numpy(out)


def _noise_terms(sum_sq: np.ndarray, settings: MvmSettings) -> tuple[np.ndarray, float]:
    """(sum_sq', sigma') with sigma' sqrt(sum_sq') = sqrt(sigma_pair^2 sum x^2 + sigma_out^2): output noise folds
    into the kernel's one draw per (tile, vector, output) without changing it."""
    if settings.out_noise_us <= 0:
        return sum_sq, float(settings.sigma_us)
    var = np.float64(settings.sigma_us) ** 2 * sum_sq.astype(np.float64) + np.float64(settings.out_noise_us) ** 2
    return var.astype(np.float32), 1.0


def _vector(value: torch.Tensor | None, n: int, fill: float, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, fill, dtype=np.float32)
    array = value.detach().to(torch.float32).contiguous().numpy()
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    return array


def _check_key(key: int) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) < 2**64:
        raise ValueError(f"key must be an int in [0, 2^64), got {key!r}")
    return int(key)


# --- public MVMs -----------------------------------------------------------------------------------------------


def analog_mvm(
    x: torch.Tensor,
    state: ArrayState,
    out_scale: torch.Tensor,
    settings: MvmSettings,
    *,
    key: int,
    bias: torch.Tensor | None = None,
    prepared: ArrayOperands | None = None,
) -> torch.Tensor:
    """x (B, d_in) -> (B, d_out) float32 through DAC, tiles, read noise, ADC, digital tile sum and scaling.

    `key` (a 64-bit int, drawn fresh per call by the caller) selects the read-noise draws. `prepared`, the
    array's `ArrayOperands` (built for this `state` and `out_scale`), saves rebuilding the tile views per call."""
    x = _as_matrix(x, state.d_in, "x")
    key = _check_key(key)
    xq, sum_sq, scale = _dac_tiles(x, settings.dac_levels, state.tile_rows, "x")
    stacked = None
    if prepared is not None and prepared.valid_for(state, out_scale) and settings.wire_resistance_ohm <= 0:
        col_scale, operands, stacked = prepared.col_scale, prepared.forward, prepared.forward_stacked
        bias_np = prepared.zeros_out if bias is None else _vector(bias, state.d_out, 0.0, "bias")
    else:
        col_scale = _vector(out_scale, state.d_out, 1.0, "out_scale")
        bias_np = _vector(bias, state.d_out, 0.0, "bias")
        operands = forward_operands(state, settings)
    if settings.per_cycle:
        tiles = [xq[t, :, : op.shape[0]] for t, op in enumerate(operands)]
        return per_cycle_accumulate(tiles, operands, settings, key, torch.from_numpy(scale), col_scale, bias_np)
    partial = _partial_sums(xq, operands, stacked)
    return _accumulate(partial, sum_sq, scale, col_scale, bias_np, settings, key)


def prepared_forward_mvm(
    x: torch.Tensor, prepared: ArrayOperands, settings: MvmSettings, bias: np.ndarray, key: int
) -> torch.Tensor:
    """`analog_mvm` without its checks, for a caller that made them once (`AnalogLinear`'s cached forward plan):
    x (B, d_in) a contiguous float32 CPU tensor, `prepared` valid for the array, `bias` (d_out,) float32 (zeros for
    none), `settings` without IR drop and with one conversion per vector, `key` in [0, 2^64). Same result."""
    xq, sum_sq, scale = _dac_tiles(x, settings.dac_levels, prepared.state.tile_rows, "x")
    partial = _partial_sums(xq, prepared.forward, prepared.forward_stacked)
    return _accumulate(partial, sum_sq, scale, prepared.col_scale, bias, settings, key)


def analog_mvm_transposed(
    d: torch.Tensor,
    state: ArrayState,
    out_scale: torch.Tensor,
    settings: MvmSettings,
    *,
    key: int,
    tile_cols: int,
    prepared: ArrayOperands | None = None,
) -> torch.Tensor:
    """d (B, d_out) -> d @ W (B, d_in) float32 on the array, driven from its columns (see the module docstring);
    `prepared` as in `analog_mvm`."""
    d = _as_matrix(d, state.d_out, "d")
    key = _check_key(key)
    if prepared is not None and prepared.valid_for(state, out_scale) and prepared.tile_cols == tile_cols:
        col_scale, operands, ones, zeros = prepared.col_scale, prepared.transposed, prepared.ones_in, prepared.zeros_in
    else:
        col_scale = _vector(out_scale, state.d_out, 1.0, "out_scale")
        operands = _transposed_operands(state, tile_cols)
        ones = np.ones(state.d_in, dtype=np.float32)
        zeros = np.zeros(state.d_in, dtype=np.float32)
    scaled = (d * torch.from_numpy(col_scale)[None, :]).contiguous()
    dq, sum_sq, scale = _dac_tiles(scaled, settings.dac_levels, tile_cols, "d")
    if settings.per_cycle:
        tiles = [dq[t, :, : op.shape[0]] for t, op in enumerate(operands)]
        return per_cycle_accumulate(tiles, operands, settings, key, torch.from_numpy(scale), ones, zeros)
    partial = _partial_sums(dq, operands)
    return _accumulate(partial, sum_sq, scale, ones, zeros, settings, key)


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


def noise_terms_tensor(sum_sq: torch.Tensor, settings: MvmSettings) -> tuple[torch.Tensor, float]:
    """`_noise_terms` on a tensor, on its device (same float64 arithmetic)."""
    if settings.out_noise_us <= 0:
        return sum_sq, float(settings.sigma_us)
    var = float(settings.sigma_us) ** 2 * sum_sq.to(torch.float64) + float(settings.out_noise_us) ** 2
    return var.to(torch.float32), 1.0


def adc_inputs(
    x: torch.Tensor,
    state: ArrayState,
    out_scale: torch.Tensor,
    settings: MvmSettings,
    *,
    transposed: bool = False,
    tile_cols: int = 0,
) -> np.ndarray:
    """What every tile column's ADC converts for batch `x`, noise-free, in the ADC's normalised units (partial sum
    / (g_max - g_min)): (T, M, N) float32, one value per conversion, M = vectors (one conversion per vector) or
    cycles x vectors (a conversion per input bit-cycle). Transposed: T = column tiles, N = d_in. What ADC ranges are
    calibrated from (`crossbar.calibration`)."""
    if transposed:
        d = _as_matrix(x, state.d_out, "d")
        scaled = (d * torch.as_tensor(out_scale, dtype=torch.float32)[None, :]).contiguous()
        xq, _, _ = _dac_tiles(scaled, settings.dac_levels, tile_cols, "d")
        operands = _transposed_operands(state, tile_cols)
    else:
        xq, _, _ = _dac_tiles(_as_matrix(x, state.d_in, "x"), settings.dac_levels, state.tile_rows, "x")
        operands = forward_operands(state, settings)
    if settings.per_cycle:  # the ADC sees each bit-cycle's partial sum
        per_tile = []
        for t, operand in enumerate(operands):
            planes, _ = bit_planes(xq[t, :, : operand.shape[0]], settings.dac_levels, settings.cycles)
            per_tile.append((planes @ operand).reshape(-1, operand.shape[1]))
        partial = torch.stack(per_tile)
    else:
        partial = _partial_sums(xq, operands)
    return (partial / settings.g_range_us).numpy().astype(np.float32, copy=False)


def read_noise_normals(key: int, n_tiles: int, n_vec: int, n_out: int) -> np.ndarray:
    """(T, B, N) float32 unit normals the fused kernel draws for `key`: element (t, b, o) is lane o % 4 of
    splitmix64(key ^ ((t * B + b) * ceil(N / 4) + o // 4)) looked up in NORMAL_TABLE."""
    n_groups = (n_out + 3) // 4
    counters = np.arange(n_tiles * n_vec * n_groups, dtype=np.uint64).reshape(n_tiles, n_vec, n_groups)
    hashes = splitmix64_np(np.uint64(_check_key(key)) ^ counters)
    normals = np.stack([normal_from_hash_np(hashes, lane) for lane in range(4)], axis=-1)
    return np.ascontiguousarray(normals.reshape(n_tiles, n_vec, 4 * n_groups)[..., :n_out])


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


# --- ledger ----------------------------------------------------------------------------------------------------


def conductance_sums(state: ArrayState) -> ConductanceSums:
    """Per row and per column, the summed G+ + G- (uS) of an array's real cells (what driven lines conduct)."""
    return ConductanceSums.of(state.g_diff_us, state.g_neg_us, state.d_in)


def fast_input_activity(x: torch.Tensor, dac_bits: int | None, scheme: MvmScheme) -> InputActivity:
    """`crossbar.scheme.input_activity` (the definition and NumPy twin) in one numba pass: equal bit for bit."""
    return _kernel_activity(x, _activity_levels(dac_bits, scheme), scheme.bit_serial)


def _activity_levels(dac_bits: int | None, scheme: MvmScheme) -> int:
    """DAC steps per sign the input activity is counted at (0: an ideal multi-level DAC, the exact value)."""
    bits = dac_bits if dac_bits is not None else (PRICED_BITS_IF_IDEAL if scheme.bit_serial else None)
    return 0 if bits is None else (1 << (bits - 1)) - 1


def _kernel_activity(x: torch.Tensor, levels: int, bit_serial: bool, into: InputActivity | None = None
                     ) -> InputActivity:  # fmt: skip
    """The activity of x, or (`into`) x's activity added to `into`'s sums in place."""
    xs = x.detach()
    if xs.dtype != torch.float32 or xs.device.type != "cpu":
        xs = xs.to(device="cpu", dtype=torch.float32)
    xs = xs.numpy()
    if not xs.flags.c_contiguous:
        xs = np.ascontiguousarray(xs)
    if into is None:
        into = InputActivity(np.zeros(xs.shape[1], dtype=np.float64), np.zeros(xs.shape[1], dtype=np.float64))
    input_activity_kernel(xs, xs.view(np.int32), levels, bit_serial, into.drives, into.energy_weight)
    return into


def record_mvm(
    ledger: LedgerScope,
    *,
    layer: str,
    device: DeviceConfig,
    d_in: int,
    d_out: int,
    n_vectors: int,
    conductance: ConductanceSums,
    inputs: torch.Tensor | None = None,
    transposed: bool = False,
    bias: bool = False,
) -> None:
    """Record the hardware events of `n_vectors` MVMs (or transposed MVMs) of a d_out x d_in array under the
    device's MVM scheme (`crossbar.scheme`), the one the kernels compute.

    `inputs` (n_vectors, d_in), or (n_vectors, d_out) transposed, as the DAC sees them (transposed: d * out_scale):
    the cell-read energy counts the cells actually conducting. Without them every line is taken as driven at full
    scale in every cycle (an upper bound, for read-outs whose inputs are not at hand).
    - cell_read: count = cell-cycles conducting (the cells of every driven line, G+ and G-); energy =
      V_read^2 * t_read * sum over cycles and driven lines of (V / V_read)^2 * (G+ + G-) of the line's cells.
      Latency: cycles x `mvm_cycle_ns` per vector (all tiles in parallel).
    - dac_conversion: bit-serial, every line of every physical array in every cycle at `dac_row_cycle_pj` (the
      drivers are clocked whatever the bit); multi-bit, every line per vector at `dac_conversion_pj(bits)`. Its
      time overlaps the read cycles.
    - adc_conversion: every column of every input tile, per vector (one conversion per vector) or per cycle (ISAAC),
      at `adc_conversion_pj(bits)`. Latency: conversions per column x columns sharing an ADC x `adc_conversion_ns`
      per vector, not overlapped with the reads (an upper bound).
    - shift_add: one per conversion (digital tile sum, and the shift-add of bit-cycles), pipelined (no latency).
    - digital_mult: one per input (abs-max normalisation) and two per output (input and weight scale) per vector;
      digital_add: the bias, one per output. Priced at the cost table's datapath precision.
    Converters with bits None are priced at `PRICED_BITS_IF_IDEAL`.

    A layer that records on every call keeps the `MvmPricing` of each direction and calls its `record` instead.
    """
    pricing = MvmPricing.of(device, ledger.costs, d_in=d_in, d_out=d_out, transposed=transposed, bias=bias)
    pricing.record(ledger, layer=layer, n_vectors=n_vectors, conductance=conductance, inputs=inputs)


@dataclass(frozen=True)
class MvmPricing:
    """The per-vector part of `record_mvm` for one array, direction and cost table: everything but the input
    activity, computed once (a layer keeps one per direction while its config and cost table stay the same)."""

    device: DeviceConfig
    costs: CostTable
    """The cost table the unit costs below were taken from (compared by identity before reuse)."""
    transposed: bool
    bias: bool
    n_inputs: int
    n_outputs: int
    cells_per_line: int
    cycles: int
    dac_per_vector: int
    dac_unit_pj: float
    adc_per_vector: int
    adc_unit_pj: float
    adc_latency_factor: int
    """Conversions per column x columns sharing an ADC: latency per vector in units of `adc_conversion_ns`."""
    dac_bits: int | None
    bit_serial: bool
    levels: int
    """DAC steps per sign the activity is counted at (0: the exact value, an ideal multi-level DAC)."""
    # The cost table's unit costs, as `energy.Ledger` prices events recorded without an energy or latency:
    cell_read_ns: float
    """`mvm_cycle_ns`: one read cycle of a tile (a vector takes `cycles` of them)."""
    adc_ns: float
    """`adc_conversion_ns`."""
    shift_add_pj: float
    mult_pj: float
    mult_ns: float
    add_pj: float
    add_ns: float

    @classmethod
    def of(cls, device: DeviceConfig, costs: CostTable, *, d_in: int, d_out: int, transposed: bool, bias: bool
           ) -> MvmPricing:  # fmt: skip
        scheme = device.scheme
        dac_bits = device.dac_bits or PRICED_BITS_IF_IDEAL
        adc_bits = device.adc_bits or PRICED_BITS_IF_IDEAL
        if transposed:
            n_inputs, n_outputs, in_tile, out_tile = d_out, d_in, device.tile_cols, device.tile_rows
        else:
            n_inputs, n_outputs, in_tile, out_tile = d_in, d_out, device.tile_rows, device.tile_cols
        cells_per_line = 2 * n_outputs  # the G+ and G- cell of every weight on a driven line
        in_tiles = -(-n_inputs // in_tile)
        out_tiles = -(-n_outputs // out_tile)
        cycles = scheme.cycles(device.dac_bits)
        if scheme.bit_serial:
            dac_per_vector, dac_unit_pj = n_inputs * out_tiles * cycles, costs.dac_row_cycle_pj
        else:
            dac_per_vector, dac_unit_pj = n_inputs * out_tiles, costs.dac_conversion_pj(dac_bits)
        per_column = scheme.conversions_per_column(device.dac_bits)
        return cls(
            device=device, costs=costs, transposed=transposed, bias=bias, n_inputs=n_inputs, n_outputs=n_outputs,
            cells_per_line=cells_per_line, cycles=cycles, dac_per_vector=dac_per_vector, dac_unit_pj=dac_unit_pj,
            adc_per_vector=n_outputs * in_tiles * per_column, adc_unit_pj=costs.adc_conversion_pj(adc_bits),
            adc_latency_factor=per_column * scheme.shared_columns(min(out_tile, n_outputs)), dac_bits=device.dac_bits,
            bit_serial=scheme.bit_serial, levels=_activity_levels(device.dac_bits, scheme),
            cell_read_ns=costs.mvm_cycle_ns, adc_ns=costs.adc_conversion_ns, shift_add_pj=float(costs.shift_add_pj),
            mult_pj=float(costs.mult_pj), mult_ns=float(costs.digital_op_ns), add_pj=float(costs.add_pj),
            add_ns=float(costs.digital_op_ns),
        )  # fmt: skip

    def matches(self, device: DeviceConfig, costs: CostTable) -> bool:
        return self.costs is costs and (self.device is device or self.device == device)

    def activity(self, inputs: torch.Tensor) -> InputActivity:
        """`fast_input_activity` with this pricing's DAC levels."""
        return _kernel_activity(inputs, self.levels, self.bit_serial)

    def record(
        self,
        ledger: LedgerScope,
        *,
        layer: str,
        n_vectors: int,
        conductance: ConductanceSums,
        inputs: torch.Tensor | None = None,
    ) -> None:
        """Record `n_vectors` MVMs with `inputs` as the DAC sees them (None: every line at full scale). The unit
        costs are those of the cost table this pricing was made for (`matches`)."""
        if n_vectors == 0:
            return
        self.record_activity(ledger, layer=layer, n_vectors=n_vectors, conductance=conductance,
                             activity=self._activity_of(n_vectors, inputs))  # fmt: skip

    def _activity_of(self, n_vectors: int, inputs: torch.Tensor | None, into: InputActivity | None = None
                     ) -> InputActivity:  # fmt: skip
        """The input activity of `n_vectors` MVMs with `inputs` (None: every line at full scale in every cycle),
        or added to `into` in place."""
        if inputs is not None:
            if tuple(inputs.shape) != (n_vectors, self.n_inputs):
                raise ValueError(f"inputs must have shape ({n_vectors}, {self.n_inputs}), got {tuple(inputs.shape)}")
            return _kernel_activity(inputs, self.levels, self.bit_serial, into)
        full = np.full(self.n_inputs, float(n_vectors * self.cycles))
        if into is None:
            return InputActivity(full, full.copy())
        into.drives += full
        into.energy_weight += full
        return into

    def record_activity(
        self, ledger: LedgerScope, *, layer: str, n_vectors: int, conductance: ConductanceSums, activity: InputActivity
    ) -> None:
        """Record `n_vectors` MVMs whose inputs drove the lines with `activity` (summed over the vectors). Every
        event is linear in the vectors and the activity, so MVMs added up first (`MvmTally`) and recorded once
        cost what recording each would (up to float rounding)."""
        if n_vectors == 0:
            return
        line_g_us = conductance.col_us if self.transposed else conductance.row_us
        device = self.device
        dacs = self.dac_per_vector * n_vectors
        adcs = self.adc_per_vector * n_vectors
        mults = float((self.n_inputs + 2 * self.n_outputs) * n_vectors)
        events = [
            ("cell_read", float(activity.drives.sum()) * self.cells_per_line,
             pulse_energy_pj(device.read_voltage_v, float(activity.energy_weight @ line_g_us), device.read_pulse_ns),
             n_vectors * self.cycles * self.cell_read_ns),
            ("dac_conversion", dacs, dacs * self.dac_unit_pj, 0),
            ("adc_conversion", adcs, adcs * self.adc_unit_pj, n_vectors * self.adc_latency_factor * self.adc_ns),
            ("shift_add", adcs, float(adcs) * self.shift_add_pj, 0.0),
            ("digital_mult", mults, mults * self.mult_pj, mults * self.mult_ns),
        ]  # fmt: skip
        if self.bias:
            adds = float(self.n_outputs * n_vectors)
            events.append(("digital_add", adds, adds * self.add_pj, adds * self.add_ns))
        ledger.record_many(events, layer=layer)


@dataclass
class MvmTally:
    """MVMs of one array and direction added up instead of recorded one by one (`AnalogLinear`'s deferred
    recording, `crossbar.deferred_mvm_records`): their count and summed input activity, under one pricing, ledger
    scope and conductance summary. `record` prices them as `MvmPricing.record` would have priced each, in one
    ledger call; a layer records its tally before adding an MVM under another scope, pricing or conductance."""

    pricing: MvmPricing
    scope: LedgerScope
    conductance: ConductanceSums
    n_vectors: int = 0
    activity: InputActivity | None = None

    def holds(self, pricing: MvmPricing, scope: LedgerScope, conductance: ConductanceSums) -> bool:
        """Whether MVMs under these may be added to this tally (the same objects: same prices, same cells)."""
        return self.pricing is pricing and self.scope is scope and self.conductance is conductance

    def add(self, n_vectors: int, inputs: torch.Tensor | None) -> None:
        if n_vectors:
            self.activity = self.pricing._activity_of(n_vectors, inputs, self.activity)
            self.n_vectors += n_vectors

    def record(self, layer: str) -> None:
        if self.n_vectors:
            self.pricing.record_activity(self.scope, layer=layer, n_vectors=self.n_vectors,
                                         conductance=self.conductance, activity=self.activity)  # fmt: skip
        self.n_vectors, self.activity = 0, None
