"""The analog matrix-vector multiply on a tiled crossbar array (DESIGN section 3): its settings and operands, shared
by the MVM engines (`crossbar.engine_numba` on the CPU, `crossbar.engine_torch` on any torch device).

    y = sum over input tiles t of ADC( DAC(x)_t . (G+ - G-)_t + read noise ) * input scale * out_scale  (+ bias)

Units: the DAC normalises each input vector by its max |x| (applied voltages |x| <= 1) and quantises it; the tile
matmul gives partial sums in uS; the ADC converts partial / (g_max - g_min) over [-full_scale, full_scale]
(normalised units: inputs |x| <= 1, conductances |G+ - G-| / (g_max - g_min) <= 1); digital logic adds the tiles'
codes, multiplies by the vector's input scale and the output's `out_scale` (weight units per uS) and adds the bias.

Numba engine: one numba pass writes the DAC output in tile layout (`dac_tiles_kernel`), one `torch.mm` per tile against
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

The plain-torch reference of the same computation (straight-through quantisers, differentiable) lives with the
NumPy twins in `tests/reference_mvm.py`.

MVM scheme (`crossbar.scheme`, named by `DeviceConfig.mvm_scheme`). Multi-bit inputs and bit-serial inputs with
one conversion per vector compute the path above. Bit-serial inputs with a conversion per input bit-cycle (ISAAC)
split each DAC code into sign-magnitude bit planes, convert every plane's tile partial sums on their own (read
noise drawn per cycle, clipped and rounded per cycle) and shift-add the codes digitally: the torch engine's
`per_cycle_accumulate`, which the numba engine runs on CPU tensors. `crossbar.pricing.record_mvm` prices the same
scheme.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from crossbar.device import DeviceConfig
from crossbar.ir_drop import ir_drop_conductances
from crossbar.nonideal import READ_NOISE_MODELS
from crossbar.periphery import quantizer_levels
from crossbar.rng import normal_from_hash_np, splitmix64_np
from crossbar.state import ArrayState

__all__ = [
    "MvmSettings",
    "as_matrix",
    "check_key",
    "forward_operands",
    "noise_terms",
    "noise_terms_tensor",
    "read_noise_normals",
    "stacked_forward_operand",
    "transposed_operands",
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


def stacked_forward_operand(state: ArrayState) -> torch.Tensor | None:
    """All input tiles' blocks as one (T, tile_rows, d_out) zero-copy view, for one batched matmul, when there are
    several tiles and every stored row holds an input (else None: per-tile matmuls skip the padding rows). A
    batched matmul gives each tile's partial sums bit for bit as its own matmul does (tests/test_mvm.py)."""
    if state.n_tiles < 2 or state.d_in != state.n_tiles * state.tile_rows:
        return None
    return torch.from_numpy(state.g_diff_us)


def transposed_operands(state: ArrayState, tile_cols: int) -> list[torch.Tensor]:
    """Per column tile, the (tile columns, d_in) block of (G+ - G-)^T as a zero-copy strided view."""
    if isinstance(tile_cols, bool) or not isinstance(tile_cols, int) or tile_cols < 1:
        raise ValueError(f"tile_cols must be an int >= 1, got {tile_cols!r}")
    g = torch.from_numpy(state.g_diff_us).reshape(state.n_tiles * state.tile_rows, state.d_out)[: state.d_in]
    return [g[:, lo : lo + tile_cols].T for lo in range(0, state.d_out, tile_cols)]


def as_matrix(x: torch.Tensor, width: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must have shape (batch, {width}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()  # the simulator runs on the CPU


def noise_terms(sum_sq: np.ndarray, settings: MvmSettings) -> tuple[np.ndarray, float]:
    """(sum_sq', sigma') with sigma' sqrt(sum_sq') = sqrt(sigma_pair^2 sum x^2 + sigma_out^2): output noise folds
    into the kernel's one draw per (tile, vector, output) without changing it."""
    if settings.out_noise_us <= 0:
        return sum_sq, float(settings.sigma_us)
    var = np.float64(settings.sigma_us) ** 2 * sum_sq.astype(np.float64) + np.float64(settings.out_noise_us) ** 2
    return var.astype(np.float32), 1.0


def noise_terms_tensor(sum_sq: torch.Tensor, settings: MvmSettings) -> tuple[torch.Tensor, float]:
    """`noise_terms` on a tensor, on its device (same float64 arithmetic)."""
    if settings.out_noise_us <= 0:
        return sum_sq, float(settings.sigma_us)
    var = float(settings.sigma_us) ** 2 * sum_sq.to(torch.float64) + float(settings.out_noise_us) ** 2
    return var.to(torch.float32), 1.0


def check_key(key: int) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) < 2**64:
        raise ValueError(f"key must be an int in [0, 2^64), got {key!r}")
    return int(key)


def read_noise_normals(key: int, n_tiles: int, n_vec: int, n_out: int) -> np.ndarray:
    """(T, B, N) float32 unit normals the fused kernel draws for `key`: element (t, b, o) is lane o % 4 of
    splitmix64(key ^ ((t * B + b) * ceil(N / 4) + o // 4)) looked up in NORMAL_TABLE."""
    n_groups = (n_out + 3) // 4
    counters = np.arange(n_tiles * n_vec * n_groups, dtype=np.uint64).reshape(n_tiles, n_vec, n_groups)
    hashes = splitmix64_np(np.uint64(check_key(key)) ^ counters)
    normals = np.stack([normal_from_hash_np(hashes, lane) for lane in range(4)], axis=-1)
    return np.ascontiguousarray(normals.reshape(n_tiles, n_vec, 4 * n_groups)[..., :n_out])
