"""The ReRAM device and array configuration: one frozen, validated dataclass with units in its field names.

Every field documents its unit; presets with cited values live in `crossbar.presets`. The same config drives the
mapping (levels, range), programming (write-verify pulse model or statistical residual), non-idealities (read noise,
drift, stuck-at faults, endurance), peripherals (DAC/ADC) and tiling.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Literal

from crossbar.nonideal import DRIFT_MODELS, PROGRAMMING_NOISE_MODELS, READ_NOISE_MODELS
from simutil import replace_fields

__all__ = ["DeviceConfig"]

ProgrammingMode = Literal["write_verify", "statistical"]
PulseScheme = Literal["incremental", "ideal_jump"]
AdcRange = Literal["fixed", "calibrated"]
_CHOICES = {"programming_mode": ProgrammingMode, "pulse_scheme": PulseScheme, "adc_range": AdcRange}
"""Fields with a fixed set of values (their Literal type lists them)."""
_MODELS = {"programming_noise": PROGRAMMING_NOISE_MODELS, "drift_model": DRIFT_MODELS,
           "read_noise_model": READ_NOISE_MODELS}  # fmt: skip
"""Fields naming a non-ideality model: valid names are those registered (`crossbar.nonideal`)."""


@dataclass(frozen=True)
class DeviceConfig:
    """A ReRAM cell, its programming scheme, its non-idealities and the array's peripherals."""

    name: str = "custom"
    # --- cell ---
    g_min_us: float = 0.0
    """Lowest programmable conductance (uS): high-resistance state."""
    g_max_us: float = 40.0
    """Highest programmable conductance (uS): low-resistance state."""
    levels: int | None = 32
    """Programmable conductance levels per cell, evenly spaced in [g_min_us, g_max_us]; None = continuous."""
    # --- bit-sliced weights (crossbar.sliced) ---
    weight_bits: int | None = None
    """Weight precision of bit-sliced weights (bits of |w|; sign-magnitude, the sign picks the cell of each pair):
    |w| is quantised per output row to 2^weight_bits - 1 steps of max |w| and split into base-2^bits_per_cell
    digits, one array (of differential pairs) per digit, whose column outputs are shift-added digitally
    (`crossbar.sliced.SlicedAnalogLinear`, built by `convert_to_analog`). None = unsliced: one analog weight per
    cell pair (an `AnalogLinear` built directly is always unsliced)."""
    bits_per_cell: int = 2
    """Bits of a sliced weight one cell holds: its slice programs 2^bits_per_cell levels; read only when
    `weight_bits` is set (slices = ceil(weight_bits / bits_per_cell)). 2: ISAAC's cells (Shafiee et al. ISCA 2016
    Table 6)."""
    # --- programming: write-verify pulse model ---
    programming_mode: ProgrammingMode = "write_verify"
    """`write_verify` simulates every pulse and verify read per cell; `statistical` samples the residual error
    from `programming_noise` and counts the expected number of pulses instead (fast)."""
    write_voltage_v: float = 2.0
    """SET/RESET pulse amplitude (V). Pulse energy V^2 t / mean(R_old, R_new) per pulse (NeuroSim V2.1)."""
    write_pulse_ns: float = 50.0
    """SET/RESET pulse width (ns)."""
    read_voltage_v: float = 0.5
    """Read (verify and MVM) voltage (V)."""
    read_pulse_ns: float = 10.0
    """Read pulse width (ns), per verify read and per MVM input-bit cycle."""
    pulse_scheme: PulseScheme = "incremental"
    """`incremental`: identical unit pulses of (g_max - g_min) / pulse_levels with a verify read after each
    (NeuroSim's pulse count); `ideal_jump`: one pulse aims straight at the target (at most max_step_frac of the
    range), the controller before the incremental model, kept to show the difference."""
    pulse_levels: int = 32
    """Identical unit pulses of a full linear swing g_min -> g_max (NeuroSim maxNumLevelLTP/LTD)."""
    pulse_nl_a: float | None = None
    """NeuroSim nonlinearity of the pulse response: A / pulse_levels of G(p) = B (1 - exp(-p / A)) + g_min (MLP
    NeuroSim Cell.cpp); None = linear (identical steps)."""
    d2d_step_sigma_frac: float = 0.0
    """Device-to-device spread of the unit step: relative sigma of a lognormal factor fixed per cell (seeded hash
    of the layer seed and the cell index, so nothing is stored)."""
    max_step_frac: float = 0.25
    """ideal_jump only: largest nominal conductance change of one pulse, as a fraction of (g_max - g_min)."""
    c2c_sigma_frac: float = 0.035
    """Cycle-to-cycle noise per unit pulse: sigma as a fraction of (g_max - g_min), independent per pulse (so a
    write of n pulses spreads by sigma sqrt(n), MLP NeuroSim V3.0 Cell.cpp)."""
    verify_tolerance_frac: float = 0.025
    """Write-verify stops once |G - G_target| <= this fraction of (g_max - g_min)."""
    max_pulses: int = 255
    """Pulses after which write-verify gives up on a cell (at most 255)."""
    programming_noise: str = "wan2022"
    """Fitted programming error sigma(G) (1 s after write-verify) that every programmed cell ends with, in both
    modes, by name from `crossbar.nonideal.PROGRAMMING_NOISE_MODELS` (`wan2022`, `milo2021`, `cmo_hfox`, or a
    plug-in's); `none`: the state the pulses leave is final."""
    # --- non-idealities ---
    read_noise_frac: float = 0.01 / math.sqrt(2.0)
    """Per-cell Gaussian read noise per MVM: sigma as a fraction of (g_max - g_min), independent per cell, so a
    weight's pair (G+ - G-) reads with sqrt(2) times it. aihwkit's w_noise is the pair's (the weight's) noise
    relative to the range: w_noise = sqrt(2) * read_noise_frac."""
    out_noise_frac: float = 0.0
    """Output noise per tile column and MVM (aihwkit IOParameters.out_noise): sigma in the ADC's normalised units
    (inputs |x| <= 1, one weight of magnitude 1 = g_max - g_min); 0 = off."""
    read_noise_model: str = "gaussian"
    """How `read_noise_frac` and `out_noise_frac` become the MVM's read noise, by name from
    `crossbar.nonideal.READ_NOISE_MODELS` (`gaussian`: independent Gaussian noise per cell read, or a plug-in's)."""
    drift_model: str = "wan2022"
    """Conductance relaxation after programming, from the device's own data (`crossbar.noise.apply_drift`), by
    name from `crossbar.nonideal.DRIFT_MODELS`: `wan2022` (Wan et al. 2022 fits at 1 s / 1 day / 2 days, no mean
    shift), `cmo_hfox` (CMO/HfOx fit: mean, sigma and 1/f term), `none`, or a plug-in's."""
    stuck_at_min_rate: float = 0.0
    """Fraction of cells stuck at g_min (SA0), sampled per array at fabrication."""
    stuck_at_max_rate: float = 0.0
    """Fraction of cells stuck at g_max (SA1), sampled per array at fabrication."""
    endurance_pulses: float = 1e6
    """Write pulses a cell survives; past it the cell is stuck where it is. math.inf = no wear-out."""
    wire_resistance_ohm: float = 0.0
    """Wire resistance of one cell pitch of a row or column line (Ohm); > 0 enables the first-order IR drop in
    the forward MVM (`crossbar.ir_drop`). 0 = off (presets without wire data)."""
    wire_cap_ff_per_cell: float = 0.0
    """Wire capacitance of one cell pitch of a row or column line (fF); > 0 prices the charging of every line a
    write pulse or an MVM drives, C V^2 per cell pitch, as the `line_charge` ledger event (`crossbar.lines`).
    0 = off (presets whose source has no wire model)."""
    # --- peripherals ---
    dac_bits: int | None = 8
    """Input DAC resolution (signed, bits); None = ideal inputs. Inputs are scaled per vector by max |x|."""
    adc_bits: int | None = 8
    """ADC resolution per tile column (signed, bits); None = ideal partial sums."""
    adc_range: AdcRange = "fixed"
    """`fixed`: every tile column's ADC converts over [-adc_full_scale, adc_full_scale]; `calibrated`: one range per
    tile column (or per tile, or per layer), set after programming from a calibration set of the base task's training
    data (`crossbar.calibration`, the scenario's `calibration:` section); an MVM before that raises."""
    adc_full_scale: float = 12.0
    """ADC full scale in normalised units (inputs scaled to |x| <= 1, weights to |w| <= 1 per output)."""
    mvm_scheme: str = "multi_bit"
    """How inputs are applied and partial sums converted, by name from `crossbar.scheme.MVM_SCHEMES` (multi-bit
    or bit-serial inputs, conversion per vector or per input bit-cycle, ADC sharing); the kernels compute and the
    ledger prices this scheme."""
    # --- tiling ---
    tile_rows: int = 256
    """Inputs per tile (array rows); partial sums of each tile are converted by its ADC and summed digitally."""
    tile_cols: int = 256
    """Outputs per tile (array columns); columns are independent, so this affects cost accounting only."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "name":
                if not isinstance(value, str) or not value:
                    raise ValueError(f"DeviceConfig.name must be a non-empty string, got {value!r}")
                continue
            if f.type == "float" or (f.type == "float | None" and value is not None):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"DeviceConfig.{f.name} must be a number, got {value!r}")
                if math.isnan(value) or (math.isinf(value) and f.name != "endurance_pulses"):
                    raise ValueError(f"DeviceConfig.{f.name} must be finite, got {value!r}")
        self._check_range()
        self._check_choices()

    def _check_range(self) -> None:
        def need(condition: bool, field: str, expected: str) -> None:
            if not condition:
                raise ValueError(f"DeviceConfig.{field} must be {expected}, got {getattr(self, field)!r}")

        need(self.g_min_us >= 0, "g_min_us", ">= 0")
        need(self.g_max_us > self.g_min_us, "g_max_us", f"> g_min_us ({self.g_min_us})")
        need(self.levels is None or (_is_int(self.levels) and self.levels >= 2), "levels", "None or an int >= 2")
        for field in ("write_voltage_v", "write_pulse_ns", "read_voltage_v", "read_pulse_ns"):
            need(getattr(self, field) > 0, field, "> 0")
        need(0 < self.max_step_frac <= 1, "max_step_frac", "in (0, 1]")
        need(_is_int(self.pulse_levels) and 1 <= self.pulse_levels <= 4096, "pulse_levels", "an int in [1, 4096]")
        need(
            self.pulse_nl_a is None
            or (isinstance(self.pulse_nl_a, (int, float)) and not isinstance(self.pulse_nl_a, bool)
                and math.isfinite(self.pulse_nl_a) and self.pulse_nl_a > 0),
            "pulse_nl_a", "None or a finite number > 0",
        )  # fmt: skip
        need(0 <= self.d2d_step_sigma_frac <= 1, "d2d_step_sigma_frac", "in [0, 1]")
        need(0 <= self.out_noise_frac <= 10, "out_noise_frac", "in [0, 10]")
        need(self.wire_resistance_ohm >= 0, "wire_resistance_ohm", ">= 0")
        need(self.wire_cap_ff_per_cell >= 0, "wire_cap_ff_per_cell", ">= 0")
        need(0 <= self.c2c_sigma_frac <= 1, "c2c_sigma_frac", "in [0, 1]")
        need(0 < self.verify_tolerance_frac < 1, "verify_tolerance_frac", "in (0, 1)")
        need(_is_int(self.max_pulses) and 1 <= self.max_pulses <= 255, "max_pulses", "an int in [1, 255]")
        need(0 <= self.read_noise_frac <= 1, "read_noise_frac", "in [0, 1]")
        need(0 <= self.stuck_at_min_rate <= 1, "stuck_at_min_rate", "in [0, 1]")
        need(0 <= self.stuck_at_max_rate <= 1, "stuck_at_max_rate", "in [0, 1]")
        need(self.stuck_at_min_rate + self.stuck_at_max_rate <= 1, "stuck_at_max_rate", "<= 1 - stuck_at_min_rate")
        need(self.endurance_pulses >= 1, "endurance_pulses", ">= 1")
        for field in ("dac_bits", "adc_bits"):
            value = getattr(self, field)
            need(value is None or (_is_int(value) and 2 <= value <= 24), field, "None or an int in [2, 24]")
        need(self.adc_full_scale > 0, "adc_full_scale", "> 0")
        need(self.weight_bits is None or (_is_int(self.weight_bits) and 1 <= self.weight_bits <= 24), "weight_bits",
             "None or an int in [1, 24] (float32 holds the quantised magnitudes exactly)")  # fmt: skip
        need(_is_int(self.bits_per_cell) and 1 <= self.bits_per_cell <= 8, "bits_per_cell", "an int in [1, 8]")
        need(self.weight_bits is None or self.levels is None or self.levels >= 2**self.bits_per_cell,
             "bits_per_cell", f"<= log2(levels) = log2({self.levels}) for sliced weights")  # fmt: skip
        need(_is_int(self.tile_rows) and self.tile_rows >= 1, "tile_rows", "an int >= 1")
        need(_is_int(self.tile_cols) and self.tile_cols >= 1, "tile_cols", "an int >= 1")
        from crossbar.scheme import MVM_SCHEMES  # imports nothing of crossbar: no cycle

        need(self.mvm_scheme in MVM_SCHEMES, "mvm_scheme", f"one of {sorted(MVM_SCHEMES)}")
        per_cycle = MVM_SCHEMES[self.mvm_scheme].per_cycle
        need(not (per_cycle and self.dac_bits is None), "dac_bits", f"an int for the per-cycle {self.mvm_scheme!r}")

    def _check_choices(self) -> None:
        for field, choices in _CHOICES.items():
            allowed = list(typing.get_args(choices))
            if getattr(self, field) not in allowed:
                raise ValueError(f"DeviceConfig.{field} must be one of {allowed}, got {getattr(self, field)!r}")
        for field, registry in _MODELS.items():
            if getattr(self, field) not in registry:
                raise ValueError(f"DeviceConfig.{field} must be a registered {registry.kind}, one of "
                                 f"{registry.names()}, got {getattr(self, field)!r}")  # fmt: skip

    @property
    def scheme(self):  # noqa: ANN201 (crossbar.scheme.MvmScheme; imported lazily, see _check_range)
        """The `MvmScheme` named by `mvm_scheme`."""
        from crossbar.scheme import mvm_scheme

        return mvm_scheme(self.mvm_scheme)

    @property
    def weight_slices(self) -> int:
        """Arrays per weight matrix: ceil(weight_bits / bits_per_cell), 1 when unsliced."""
        return 1 if self.weight_bits is None else -(-self.weight_bits // self.bits_per_cell)

    @property
    def g_range_us(self) -> float:
        """g_max_us - g_min_us: the conductance span a weight of magnitude 1 (normalised) occupies."""
        return self.g_max_us - self.g_min_us

    def replace(self, **overrides: object) -> DeviceConfig:
        """A validated copy with some fields changed; unknown names raise ValueError naming them."""
        return replace_fields(self, overrides)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
