"""The numba MVM engine: the analog MVM of `crossbar.mvm` on CPU arrays with the kernels of `crossbar.mvm_kernels`.

One numba pass writes the DAC output in tile layout (`dac_tiles_kernel`, which also adds the inputs' line activity
to the ledger's tally), one `torch.mm` per tile (or one batched matmul) against a zero-copy view of the state's
`g_diff_us` computes the partial sums, and one fused numba pass adds read noise, converts, sums tiles and scales
(`adc_accumulate_kernel`). Bit-serial schemes with a conversion per input cycle run the torch engine's
`per_cycle_accumulate` on the CPU tensors. The functions (`analog_mvm`, `analog_mvm_transposed`, `adc_inputs`)
take an `ArrayState`; `NumbaEngine` runs them for an array, with its tile views and settings kept per generation
(`crossbar.engine`), and a layer's forward through `_FusedForward` (every check made once per generation, buffers
kept per batch size) and its exact backward through `scaled_activity_kernel` and one matmul. Twins:
`tests/naive_mvm.py` (NumPy) and `tests/reference_mvm.py` (plain torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from crossbar.engine import MvmEngine
from crossbar.engine_torch import per_cycle_accumulate
from crossbar.mvm import (
    MvmSettings,
    as_matrix,
    check_key,
    forward_operands,
    noise_terms,
    stacked_forward_operand,
    transposed_operands,
)
from crossbar.mvm_kernels import adc_accumulate_kernel, dac_tiles_kernel, scaled_activity_kernel
from crossbar.rng import NORMAL_TABLE
from crossbar.scheme import bit_planes
from crossbar.state import ArrayState

if TYPE_CHECKING:
    from crossbar.array import AnalogArray
    from crossbar.pricing import MvmTally

__all__ = [
    "PER_TILE_MATMUL_MIN_VECTORS",
    "ArrayOperands",
    "NumbaEngine",
    "adc_inputs",
    "analog_mvm",
    "analog_mvm_transposed",
]


@dataclass(frozen=True, eq=False)
class ArrayOperands:
    """What every MVM of one array multiplies by, built once: the per-tile zero-copy views of `g_diff_us` (forward
    and transposed), `out_scale` as a NumPy view, and the constant unit/zero vectors. Valid while the array's
    buffers are the same tensors (the programming, drift and fault kernels change them in place, which the views
    see); `NumbaEngine` builds it once per generation of the array."""

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
            forward_stacked=stacked_forward_operand(state),
            transposed=transposed_operands(state, tile_cols), col_scale=col_scale,
            zeros_out=np.zeros(state.d_out, dtype=np.float32), ones_in=np.ones(state.d_in, dtype=np.float32),
            zeros_in=np.zeros(state.d_in, dtype=np.float32),
        )  # fmt: skip

    def valid_for(self, state: ArrayState, out_scale: torch.Tensor) -> bool:
        return self.state is state and self.out_scale is out_scale


def _dac_tiles(x: torch.Tensor, levels: int, tile: int, name: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """DAC into tile layout: (xq (T, B, tile) torch, sum_sq (T, B), scale (B,))."""
    x_np = x.numpy()
    n_vec, width = x_np.shape
    n_tiles = -(-width // tile)
    xq = np.empty((n_tiles, n_vec, tile), dtype=np.float32)
    sum_sq = np.empty((n_tiles, n_vec), dtype=np.float32)
    scale = np.empty(n_vec, dtype=np.float32)
    bad = np.empty(n_vec, dtype=np.uint8)
    if dac_tiles_kernel(x_np, x_np.view(np.int32), levels, xq, sum_sq, scale, bad, 0, False, _NONE, _NONE):
        raise ValueError(f"{name} contains NaN or inf")
    return torch.from_numpy(xq), sum_sq, scale


_NONE = np.zeros(0, dtype=np.float64)
"""Empty activity sums: the DAC kernel counts no activity."""


# Batches from this many vectors up run per-tile matmuls rather than one batched matmul when the tile count is not
# a multiple of torch's thread count: torch's CPU bmm shares the tiles out between threads whole, so 3 tiles on 2
# threads leave one idle a third of the time, while each matmul of its own uses every thread. Measured 2026-12-06
# (2-core AMD EPYC, MKL): 3 tiles of 256 x 768, batch 256: bmm 2.03 ms, per-tile mm 1.80 ms; batch 32: 0.28 vs
# 0.29 ms; batch 1: 0.03 vs 0.06 ms. Both give the same bits (tests/test_mvm.py).
PER_TILE_MATMUL_MIN_VECTORS = 64


def _partial_sums(
    xq: torch.Tensor, operands: list[torch.Tensor], stacked: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(T, B, N) tile partial sums in uS, straight into `out` (or a new buffer): one batched matmul over the tiles
    when `stacked` (the operands as one (T, K, N) tensor) is given and the tiles share out evenly between threads
    (or the batch is small), else one BLAS matmul per tile."""
    n_out = operands[0].shape[1]
    n_vec = xq.shape[1]
    partial = torch.empty((len(operands), n_vec, n_out), dtype=torch.float32) if out is None else out
    if _batched(stacked, n_vec):
        return torch.bmm(xq, stacked, out=partial)
    for t, operand in enumerate(operands):
        torch.mm(xq[t, :, : operand.shape[0]], operand, out=partial[t])
    return partial


def _batched(stacked: torch.Tensor | None, n_vec: int) -> bool:
    """Whether the tile matmuls of n_vec vectors run as one batched matmul over `stacked` (see
    `PER_TILE_MATMUL_MIN_VECTORS`)."""
    return stacked is not None and (
        n_vec < PER_TILE_MATMUL_MIN_VECTORS or stacked.shape[0] % torch.get_num_threads() == 0
    )


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
    sum_sq, sigma = noise_terms(sum_sq, settings)
    step, inv_step = settings.steps(partial.shape[0], partial.shape[2])
    adc_accumulate_kernel(
        partial.numpy(), sum_sq, scale, col_scale, bias, np.uint64(key), sigma, settings.adc_levels, step, inv_step,
        settings.adc_ranges is None, NORMAL_TABLE, out,
    )  # fmt: skip
    return torch.from_numpy(out)


def _vector(value: torch.Tensor | None, n: int, fill: float, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, fill, dtype=np.float32)
    array = value.detach().to(torch.float32).contiguous().numpy()
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    return array


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
    x = as_matrix(x, state.d_in, "x")
    key = check_key(key)
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
    d = as_matrix(d, state.d_out, "d")
    key = check_key(key)
    if prepared is not None and prepared.valid_for(state, out_scale) and prepared.tile_cols == tile_cols:
        col_scale, operands, ones, zeros = prepared.col_scale, prepared.transposed, prepared.ones_in, prepared.zeros_in
    else:
        col_scale = _vector(out_scale, state.d_out, 1.0, "out_scale")
        operands = transposed_operands(state, tile_cols)
        ones = np.ones(state.d_in, dtype=np.float32)
        zeros = np.zeros(state.d_in, dtype=np.float32)
    scaled = (d * torch.from_numpy(col_scale)[None, :]).contiguous()
    dq, sum_sq, scale = _dac_tiles(scaled, settings.dac_levels, tile_cols, "d")
    if settings.per_cycle:
        tiles = [dq[t, :, : op.shape[0]] for t, op in enumerate(operands)]
        return per_cycle_accumulate(tiles, operands, settings, key, torch.from_numpy(scale), ones, zeros)
    partial = _partial_sums(dq, operands)
    return _accumulate(partial, sum_sq, scale, ones, zeros, settings, key)


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
        d = as_matrix(x, state.d_out, "d")
        scaled = (d * torch.as_tensor(out_scale, dtype=torch.float32)[None, :]).contiguous()
        xq, _, _ = _dac_tiles(scaled, settings.dac_levels, tile_cols, "d")
        operands = transposed_operands(state, tile_cols)
    else:
        xq, _, _ = _dac_tiles(as_matrix(x, state.d_in, "x"), settings.dac_levels, state.tile_rows, "x")
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


@dataclass(frozen=True, eq=False)
class _Plan:
    """One generation's CPU operands of an array: its state (NumPy views, or a CPU copy of arrays living
    elsewhere), `out_scale` as the kernels read it, the tile views, and the bias as a NumPy view (None where the
    bias is absent or cannot be shared)."""

    state: ArrayState
    out_scale: torch.Tensor
    prepared: ArrayOperands
    bias: np.ndarray | None

    @classmethod
    def of(cls, array: AnalogArray) -> _Plan:
        state = array.cpu_state()
        out_scale = array.out_scale
        if out_scale.device.type != "cpu" or out_scale.dtype != torch.float32 or not out_scale.is_contiguous():
            out_scale = out_scale.detach().to(device="cpu", dtype=torch.float32).contiguous()
        bias = array.bias
        shared = bias is not None and bias.dtype == torch.float32 and bias.device.type == "cpu" and bias.is_contiguous()
        bias_np = bias.detach().numpy() if shared else None  # shares the bias's memory (in-place changes are seen)
        return cls(state, out_scale, ArrayOperands.of(state, out_scale, array.array_config.tile_cols), bias_np)


SCRATCH_MAX_FLOATS = 1 << 16
"""Batches whose DAC output and partial sums each hold at most this many floats (256 KiB) reuse buffers kept per
batch size (`_FusedForward`); larger ones allocate theirs per call, where the allocation is small against the
work and kept buffers would hold memory in every layer of a large model."""
SCRATCH_SHAPES = 2
"""Batch sizes whose buffers one array keeps (a training loop has one or two: the batch and the last one). So an
array keeps at most 2 x 2 x 256 KiB of batch scratch, whatever its size (tests/test_memory_scale.py)."""


@dataclass(eq=False)
class _FusedForward:
    """One generation's forward MVM of an array with its own settings, every check made once: the operands, the
    ADC steps, the bias view and reusable DAC/partial-sum buffers per batch size. `run` is one DAC kernel (which
    also counts the ledger's input activity), the tile matmuls and the fused noise/ADC kernel: the numbers of
    `analog_mvm`, bit for bit."""

    plan: _Plan
    settings: MvmSettings
    adc_args: tuple
    """The fused kernel's arguments after the per-call key: sigma, ADC levels, steps, their reciprocals, whether
    every step is equal, the normal table."""
    scratch: dict[int, tuple]

    @classmethod
    def of(cls, plan: _Plan, settings: MvmSettings) -> _FusedForward | None:
        """None where the fused path does not apply (IR drop, a conversion per input cycle)."""
        if settings.wire_resistance_ohm > 0 or settings.per_cycle:
            return None
        step, inv_step = settings.steps(plan.state.n_tiles, plan.state.d_out)
        sigma = float(settings.sigma_us)  # as `noise_terms` gives it without output noise (else per call)
        args = (sigma, settings.adc_levels, step, inv_step, settings.adc_ranges is None, NORMAL_TABLE)
        return cls(plan, settings, args, {})

    def buffers(self, n_vec: int) -> tuple:
        """(xq as NumPy, sum_sq, scale, bad, partial as NumPy, matmuls) for a batch of n_vec vectors: `matmuls`
        computes the tile partial sums from xq into partial (`_partial_sums`, with its views made once)."""
        kept = self.scratch.get(n_vec)
        if kept is not None:
            return kept
        state, prepared = self.plan.state, self.plan.prepared
        xq = torch.empty((state.n_tiles, n_vec, state.tile_rows), dtype=torch.float32)
        partial = torch.empty((state.n_tiles, n_vec, state.d_out), dtype=torch.float32)
        stacked = prepared.forward_stacked
        if _batched(stacked, n_vec):
            matmuls = [(torch.bmm, xq, stacked, partial)]
        else:
            matmuls = [(torch.mm, xq[t, :, : op.shape[0]], op, partial[t]) for t, op in enumerate(prepared.forward)]
        buffers = (xq.numpy(), np.empty((state.n_tiles, n_vec), dtype=np.float32), np.empty(n_vec, dtype=np.float32),
                   np.empty(n_vec, dtype=np.uint8), partial.numpy(), matmuls)  # fmt: skip
        if max(xq.numel(), partial.numel()) <= SCRATCH_MAX_FLOATS and len(self.scratch) < SCRATCH_SHAPES:
            self.scratch[n_vec] = buffers  # (torch's thread count is read at the first call of a batch size)
        return buffers

    def run(self, array: AnalogArray, x: torch.Tensor, bias: np.ndarray, tally: MvmTally | None) -> torch.Tensor:
        """x (B, d_in) contiguous float32 CPU -> (B, d_out); `bias` (d_out,) float32 (zeros for none); the
        activity of x added to `tally`."""
        n_vec = x.shape[0]
        xq, sum_sq, scale, bad, partial, matmuls = self.buffers(n_vec)
        x_np = x.detach().numpy()
        activity = (0, False, _NONE, _NONE) if tally is None else tally.kernel_sums()
        if dac_tiles_kernel(x_np, x_np.view(np.int32), self.settings.dac_levels, xq, sum_sq, scale, bad, *activity):
            raise ValueError("x contains NaN or inf")
        if tally is not None:
            tally.n_vectors += n_vec
        for matmul, a, b, into in matmuls:
            matmul(a, b, out=into)
        args = self.adc_args
        if self.settings.out_noise_us > 0:
            sum_sq, sigma = noise_terms(sum_sq, self.settings)
            args = (sigma, *args[1:])
        out = np.empty((n_vec, self.plan.state.d_out), dtype=np.float32)
        adc_accumulate_kernel(partial, sum_sq, scale, self.plan.prepared.col_scale, bias, np.uint64(array.next_key()),
                              *args, out)  # fmt: skip
        return torch.from_numpy(out)


class NumbaEngine(MvmEngine):
    """The numba kernels on the CPU (arrays elsewhere are copied to the CPU once per generation)."""

    kind = "numba"

    def plan(self, array: AnalogArray) -> _Plan:
        """The array's operands for this generation."""
        derived = self.derived(array)
        plan = derived.get("numba")
        if plan is None:
            plan = derived["numba"] = _Plan.of(array)
        return plan

    def fused(self, array: AnalogArray) -> _FusedForward | None:
        """The array's fused forward for this generation (None where it does not apply)."""
        derived = self.derived(array)
        if "fused" not in derived:
            derived["fused"] = _FusedForward.of(self.plan(array), self.settings(array, transposed=False))
        return derived["fused"]

    def forward(
        self, array: AnalogArray, x2: torch.Tensor, *, bias: torch.Tensor | None = None, tally: MvmTally | None = None
    ) -> torch.Tensor:
        fused = self.fused(array)
        if fused is not None and x2.dtype is torch.float32 and x2.is_cpu and x2.is_contiguous():
            plan = fused.plan
            bias_np = plan.prepared.zeros_out if bias is None else (plan.bias if bias is array.bias else None)
            if bias_np is not None:  # every check made: the kernels directly
                return fused.run(array, x2, bias_np, tally)
        plan = self.plan(array)
        y = analog_mvm(x2, plan.state, plan.out_scale, self.settings(array, transposed=False), key=array.next_key(),
                       bias=None if bias is None else bias.detach().cpu(), prepared=plan.prepared)  # fmt: skip
        if tally is not None:
            tally.add(x2.shape[0], x2)
        return y

    def backward_exact(self, array: AnalogArray, d2: torch.Tensor, tally: MvmTally | None) -> torch.Tensor:
        g_t, _ = self.exact_operands(array)
        if not (d2.dtype is torch.float32 and d2.is_cpu and d2.is_contiguous() and g_t.is_cpu):
            return super().backward_exact(array, d2, tally)
        d_np = d2.detach().numpy()
        scaled = np.empty(d_np.shape, dtype=np.float32)
        levels, serial, drives, weights = (0, False, _NONE, _NONE) if tally is None else tally.kernel_sums()
        scaled_activity_kernel(d_np, self.plan(array).prepared.col_scale, levels, serial, scaled, scaled.view(np.int32),
                               drives, weights)  # fmt: skip
        if tally is not None:
            tally.n_vectors += d_np.shape[0]
        return torch.mm(torch.from_numpy(scaled), g_t)  # bit for bit `exact_transposed`

    def run(
        self, array: AnalogArray, x2: torch.Tensor, settings: MvmSettings, *, transposed: bool,
        bias: torch.Tensor | None, kept: bool,
    ) -> torch.Tensor:  # fmt: skip
        plan = self.plan(array)
        if transposed:
            tile_cols = array.array_config.tile_cols
            return analog_mvm_transposed(x2, plan.state, plan.out_scale, settings, key=array.next_key(),
                                         tile_cols=tile_cols, prepared=plan.prepared)  # fmt: skip
        if kept:  # the array's own settings: the fused forward where it applies
            return self.forward(array, x2, bias=bias)
        bias = bias.detach().cpu() if bias is not None else None
        return analog_mvm(x2, plan.state, plan.out_scale, settings, key=array.next_key(), bias=bias,
                          prepared=plan.prepared)  # fmt: skip
