"""The MVM scheme: how inputs are applied and partial sums converted. The kernels compute it and the ledger prices
it from the same object, so the two cannot describe different circuits.

Input modes (inputs are signed codes c in [-L, L], L = 2^(dac_bits-1) - 1, after abs-max normalisation):
- `multi_bit`: one read cycle per vector; a multi-level DAC drives row i at V_read * c_i / L.
- `bit_serial`: one read cycle per magnitude bit of |c| (dac_bits - 1 cycles; sign-magnitude, as CrossSim's ISAAC
  configuration `SignMagnitudeDAC` with `input_bitslicing`, slice 1): in cycle b row i is driven at
  sign(c_i) * V_read if bit b of |c_i| is 1, else not at all (a 1-bit bipolar driver).

Conversions:
- `per_vector`: one ADC conversion per column per vector. With bit-serial inputs the column charge of every cycle
  is integrated with binary weights before the conversion (NeuRRAM's analog sample and integrate; Wan et al.,
  Nature 2022; hwcomponents-library wan.py `WanAnalogSample`, `WanAnalogIntegrator`); numerically this is the
  multi-bit MVM (read noise drawn once per conversion, output-referred).
- `per_cycle` (bit-serial only): the ADC converts every cycle's partial sum, clipped and rounded on its own, and a
  digital shift-and-add combines the cycles (ISAAC, Shafiee et al. ISCA 2016; CrossSim ISAAC.json
  `adc_per_ibit`); read noise is drawn per cycle.

ADC sharing: `columns_per_adc` columns share one ADC through a mux (1 = one ADC per column; 0 = one per tile, i.e.
all `tile_cols` columns). Sharing changes latency (conversions of the shared columns run one after the other), not
the number or energy of conversions.

Energy of the cells: V_read^2 * G * t of the cells actually conducting: per cycle, the cells of the rows driven in
that cycle (multi-bit: at (c/L)^2 of V_read^2), summed over the cells' programmed G+ and G- (`ConductanceSums`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "MVM_SCHEMES",
    "PRICED_BITS_IF_IDEAL",
    "ConductanceSums",
    "InputActivity",
    "MvmScheme",
    "bit_planes",
    "input_activity",
    "mvm_scheme",
]

InputMode = Literal["multi_bit", "bit_serial"]
Conversion = Literal["per_vector", "per_cycle"]

PRICED_BITS_IF_IDEAL = 8
"""Resolution an ideal converter (bits None) is priced at: the hardware still needs a converter; "ideal" only
switches off its quantisation error."""


@dataclass(frozen=True)
class MvmScheme:
    """Input application, conversion and ADC sharing of an MVM (module docstring)."""

    name: str
    input_mode: InputMode
    conversion: Conversion
    columns_per_adc: int
    """Columns sharing one ADC through a mux; 0 = one ADC per tile (all its columns)."""
    source: str

    def __post_init__(self) -> None:
        if self.input_mode not in ("multi_bit", "bit_serial"):
            raise ValueError(f"MvmScheme.input_mode must be 'multi_bit' or 'bit_serial', got {self.input_mode!r}")
        if self.conversion not in ("per_vector", "per_cycle"):
            raise ValueError(f"MvmScheme.conversion must be 'per_vector' or 'per_cycle', got {self.conversion!r}")
        if self.conversion == "per_cycle" and self.input_mode != "bit_serial":
            raise ValueError("MvmScheme.conversion 'per_cycle' needs input_mode 'bit_serial'")
        cols = self.columns_per_adc
        if isinstance(cols, bool) or not isinstance(cols, int) or cols < 0:
            raise ValueError(f"MvmScheme.columns_per_adc must be an int >= 0, got {cols!r}")

    @property
    def bit_serial(self) -> bool:
        return self.input_mode == "bit_serial"

    @property
    def per_cycle(self) -> bool:
        return self.conversion == "per_cycle"

    def cycles(self, dac_bits: int | None) -> int:
        """Read cycles per vector: 1 (multi-bit) or the magnitude bits of the input code (bit-serial)."""
        if not self.bit_serial:
            return 1
        return (dac_bits or PRICED_BITS_IF_IDEAL) - 1

    def conversions_per_column(self, dac_bits: int | None) -> int:
        """ADC conversions per column per vector."""
        return self.cycles(dac_bits) if self.per_cycle else 1

    def shared_columns(self, tile_cols: int) -> int:
        """Columns one ADC converts one after the other (per cycle)."""
        return tile_cols if self.columns_per_adc == 0 else min(self.columns_per_adc, tile_cols)


MVM_SCHEMES: dict[str, MvmScheme] = {
    "multi_bit": MvmScheme(
        name="multi_bit",
        input_mode="multi_bit",
        conversion="per_vector",
        columns_per_adc=1,
        source="multi-level DAC, one conversion per column per vector (the aihwkit/CrossSim default numerics)",
    ),
    "neurram": MvmScheme(
        name="neurram",
        input_mode="bit_serial",
        conversion="per_vector",
        columns_per_adc=1,
        source="Wan et al., Nature 608, 2022 (NeuRRAM): bit-serial input pulses integrated on the neuron, one "
        "conversion per output; hwcomponents-library wan.py WanAnalogSample/WanAnalogIntegrator",
    ),
    "neurosim": MvmScheme(
        name="neurosim",
        input_mode="bit_serial",
        conversion="per_cycle",
        columns_per_adc=8,
        source="DNN_NeuroSim V1.4/V2.1: one input bit per cycle, ADC per cycle, shift-add; numColMuxed 8 "
        "(NeuroSIM/Param.cpp)",
    ),
    "isaac": MvmScheme(
        name="isaac",
        input_mode="bit_serial",
        conversion="per_cycle",
        columns_per_adc=0,
        source="Shafiee et al., ISCA 2016 (ISAAC): 1-bit DAC per row, one 8-bit 1.2 GS/s ADC per 128x128 "
        "crossbar converting every input bit-cycle, shift-and-add; CrossSim configs/ISAAC.json (adc_per_ibit)",
    ),
}
"""Named MVM schemes; a device preset names one (`DeviceConfig.mvm_scheme`)."""


def mvm_scheme(name: str) -> MvmScheme:
    try:
        return MVM_SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown MVM scheme {name!r}; known: {sorted(MVM_SCHEMES)}") from None


# --- the numerics of bit-serial inputs ---------------------------------------------------------------------------


def bit_planes(applied: torch.Tensor, dac_levels: int, cycles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split DAC outputs (..., width) = code / L into `cycles` sign-magnitude bit planes.

    Returns (planes (cycles, ..., width) float32 in {-1, 0, 1}, weights (cycles,) float32 = 2^b / L), so that
    sum_b weights[b] * planes[b] == applied exactly (integers below 2^24 are exact in float32)."""
    if dac_levels <= 0:
        raise ValueError("bit-serial inputs need a quantising DAC (dac_bits not None)")
    codes = torch.round(applied.detach().to(torch.float64) * dac_levels).to(torch.int64)
    sign = torch.sign(codes).to(torch.float32)
    magnitude = codes.abs()
    planes = torch.stack([((magnitude >> b) & 1).to(torch.float32) * sign for b in range(cycles)])
    weights = torch.tensor([2.0**b / dac_levels for b in range(cycles)], dtype=torch.float32)
    return planes, weights


# --- what the ledger needs to price the cells actually conducting ----------------------------------------------


@dataclass(frozen=True)
class ConductanceSums:
    """Per physical row and per column, the summed G+ + G- (uS) of the array: the conductance a driven row (or,
    transposed, a driven column) draws current through."""

    row_us: np.ndarray
    """(d_in,) float64: sum over the row's cells in every column tile."""
    col_us: np.ndarray
    """(d_out,) float64: sum over the column's cells in every row tile."""

    @classmethod
    def of(cls, g_diff_us: np.ndarray, g_neg_us: np.ndarray, d_in: int) -> ConductanceSums:
        """From an ArrayState's (T, tile_rows, d_out) G+ - G- and G- (G+ + G- = (G+ - G-) + 2 G-)."""
        total = g_diff_us.astype(np.float64) + 2.0 * g_neg_us.astype(np.float64)
        rows = total.sum(axis=2).reshape(-1)[:d_in]
        cols = total.reshape(-1, total.shape[2])[:d_in].sum(axis=0)
        return cls(row_us=rows, col_us=cols)


@dataclass(frozen=True)
class InputActivity:
    """Per input line, summed over a batch: how often it was driven and with what energy weight."""

    drives: np.ndarray
    """(width,) float64: cycles in which the line was driven (bit-serial: 1-bits of |c|; multi-bit: c != 0)."""
    energy_weight: np.ndarray
    """(width,) float64: sum over cycles of (V / V_read)^2 (bit-serial: 1-bits; multi-bit: (c / L)^2)."""


def input_activity(x: torch.Tensor, dac_bits: int | None, scheme: MvmScheme) -> InputActivity:
    """The activity of a batch x (B, width) after the same abs-max normalisation and DAC rounding the kernels do
    (`crossbar.mvm_kernels.dac_tiles_kernel`: code = rint(x * (L / max|x|)) in float32). An ideal DAC (bits None)
    is taken as the multi-level drive at the exact value (bit-serial: at `PRICED_BITS_IF_IDEAL` bits)."""
    xs = x.detach().to(torch.float32).cpu().numpy()
    width = xs.shape[1]
    if xs.shape[0] == 0:
        zero = np.zeros(width)
        return InputActivity(zero, zero)
    scale = np.abs(xs).max(axis=1, keepdims=True)
    bits = dac_bits if dac_bits is not None else (PRICED_BITS_IF_IDEAL if scheme.bit_serial else None)
    if bits is None:
        applied = np.divide(xs, scale, out=np.zeros_like(xs), where=scale > 0).astype(np.float64)
        return InputActivity((applied != 0).sum(axis=0).astype(np.float64), (applied * applied).sum(axis=0))
    levels = (1 << (bits - 1)) - 1
    inv = np.divide(np.float32(levels), scale, out=np.zeros_like(scale), where=scale > 0).astype(np.float32)
    codes = np.rint(xs * inv).astype(np.int64)
    if scheme.bit_serial:
        magnitude = np.abs(codes)
        ones = np.zeros(width, dtype=np.float64)
        for b in range(scheme.cycles(bits)):
            ones += ((magnitude >> b) & 1).sum(axis=0)
        return InputActivity(ones, ones)
    fraction = codes.astype(np.float64) / levels
    return InputActivity((codes != 0).sum(axis=0).astype(np.float64), (fraction * fraction).sum(axis=0))
