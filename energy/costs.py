"""Per-event energy (pJ) and latency (ns) costs, with a source for every default.

A `CostTable` prices the events the `Ledger` records. Costs that depend on device physics are not stored as
guesses: `pulse_energy_pj(voltage_v, conductance_us, width_ns)` computes E = V^2 * G * t from explicit inputs,
and the crossbar model calls it with its own write/read voltages and the conductances it actually programs. The
fixed `*_pj` fields below are used when a recorder supplies no physics (for example a digital MAC).

Sources (each default below names its own):
- NeuroSim DNN V2.1 / V1.4 `NeuroSIM/Param.cpp`: write 2-4 V, 50 ns pulses; read 0.5 V, 10 ns.
- ISAAC via Accelergy `hwcomponents-library/library/isaac.py`: SAR ADC energy per conversion by resolution,
  1-bit DAC row drive 0.42 pJ, 16-bit shift-and-add 0.021 pJ; ADC 1.2 GS/s.
- Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm): FP32/FP16/INT32/INT8 arithmetic and SRAM/DRAM
  access, as tabulated by Han et al., "Learning both weights and connections", NeurIPS 2015, Table 1.

Digital datapath. `datapath` names the precision of the digital logic next to the arrays (tile sums, scales,
fusion's coefficient arithmetic, LoRA kept digitally): every `digital_mult` / `digital_add` is priced at that
precision and every SRAM/DRAM word is a word of that width. ISAAC's digital datapath is 16-bit fixed point
(Shafiee et al. ISCA 2016, section 4), so the ISAAC preset defaults to `int16`. The simulator's numerics stay float32
whatever the datapath: the choice prices the logic, it does not model fixed-point rounding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from simutil import replace_fields

__all__ = [
    "COST_PRESETS",
    "DATAPATHS",
    "CostTable",
    "WRITE_ENERGY_CONVENTIONS",
    "Datapath",
    "WriteEnergy",
    "cost_preset",
    "pulse_energy_pj",
]


def pulse_energy_pj(voltage_v: float, conductance_us: float, width_ns: float) -> float:
    """Energy of one voltage pulse across a cell, E = V^2 * G * t, in pJ.

    V in volts, G in microsiemens, t in nanoseconds: V^2 [V^2] * G [1e-6 S] * t [1e-9 s] = 1e-15 J = 1e-3 pJ.
    Example: 2 V across 10 uS for 50 ns gives 2.0 pJ (NeuroSim V1.4 write voltage and V2.1 pulse width).
    """
    return voltage_v * voltage_v * conductance_us * width_ns * 1e-3


Datapath = Literal["fp32", "fp16", "bf16", "int16", "int8"]
WriteEnergy = Literal["per_pulse", "neurosim"]
WRITE_ENERGY_CONVENTIONS: tuple[str, ...] = ("per_pulse", "neurosim")
"""How a programming call prices its SET/RESET pulses (`CostTable.write_energy`)."""

# Digital arithmetic at 45 nm by datapath: (multiply pJ, add pJ, word bits). Horowitz ISSCC 2014 gives FP32
# 3.7 / 0.9, FP16 1.1 / 0.4, INT32 3.1 / 0.1 and INT8 0.2 / 0.03 pJ. INT16 is derived from his INT8 and INT32
# figures: an array multiplier's energy grows with bits^2 (0.2 x 4 = 0.8, 3.1 / 4 = 0.78 pJ; we take 0.78), an
# adder's linearly (0.03 x 2 = 0.06, 0.1 / 2 = 0.05 pJ; we take 0.05). BF16 is priced as FP16 (assumption:
# Horowitz lists no BF16; its 8-bit mantissa multiplier is smaller than FP16's, so this is an upper bound).
DATAPATHS: dict[str, tuple[float, float, int]] = {
    "fp32": (3.7, 0.9, 32),
    "fp16": (1.1, 0.4, 16),
    "bf16": (1.1, 0.4, 16),
    "int16": (0.78, 0.05, 16),
    "int8": (0.2, 0.03, 8),
}


# ISAAC SAR ADC energy per conversion (pJ) by resolution (bits), 1.2 GS/s, 32 nm.
# Source: Accelergy-Project/hwcomponents-library library/isaac.py (ISAAC, Shafiee et al. ISCA 2016; Kull et al.
# ISSCC 2013).
ISAAC_ADC_PJ_BY_BITS: tuple[tuple[int, float], ...] = (
    (4, 0.79),
    (5, 0.99),
    (6, 1.20),
    (7, 1.42),
    (8, 1.67),
    (9, 1.97),
    (10, 2.38),
)


@dataclass(frozen=True)
class CostTable:
    """Energies (pJ) and latencies (ns) per event. Every field is validated: finite and non-negative."""

    name: str = "isaac_horowitz"
    # --- write path (used only when the recorder supplies no V^2*G*t physics) ---
    write_pulse_pj: float = 2.0
    """One SET/RESET pulse. Derived: pulse_energy_pj(2 V, 10 uS, 50 ns) = 2.0 pJ (NeuroSim V1.4/V2.1 Param.cpp)."""
    write_energy: WriteEnergy = "per_pulse"
    """Convention for the energy of the write pulses the crossbar model simulates (both from NeuroSim V2.1
    ProcessingUnit.cpp 895, E = V^2 t / mean(R_old, R_new) per pulse):
    - "per_pulse" (default): R_old, R_new are the cell's resistances before and after each pulse, so every pulse
      is priced at the conductance it sees. Chosen as default because it follows the physics of incremental
      pulses and stays defined for devices whose g_min is 0 uS (the default preset);
    - "neurosim": NeuroSim's own use, once per write: every pulse of a cell's write is priced with R_old, R_new
      the write's start and end states. A multi-pulse swing is then dominated by its high-resistance end (11.7x
      less than per pulse for fresh programming on reram_wan2022), and on a device with g_min = 0 uS a write that
      starts or ends at 0 uS (R infinite) costs nothing, as NeuroSim's formula gives for an infinite resistance."""
    verify_read_pj: float = 0.05
    """One verify read of one cell. Derived: pulse_energy_pj(0.5 V, 20 uS, 10 ns) (NeuroSim V2.1 read 0.5 V,
    10 ns; 20 uS = mid-range of the 0-40 uS Wan 2022 device)."""
    # --- analog MVM ---
    cell_read_pj: float = 0.05
    """One cell's contribution to an analog MVM read when a recorder supplies no physics. The crossbar model
    never uses it: it prices MVM reads as V_read^2 * G * t of the cells actually conducting (`crossbar.scheme`)."""
    adc_pj_by_bits: tuple[tuple[int, float], ...] = ISAAC_ADC_PJ_BY_BITS
    """SAR ADC energy per conversion by resolution (ISAAC's 8-bit 1.67 pJ, scaled to 4-10 bits after Saberi et al.
    2011, as tabulated in hwcomponents-library isaac.py). Outside the table the same scaling is extended
    geometrically with the table's own end ratios (see `adc_conversion_pj`)."""
    dac_row_cycle_pj: float = 0.42
    """Driving one row for one 1-bit input cycle (ISAAC via hwcomponents-library isaac.py). A b-bit input
    applied bit-serially costs b cycles."""
    shift_add_pj: float = 0.021
    """16-bit shift-and-add of one partial sum (ISAAC via hwcomponents-library isaac.py)."""
    # --- digital logic and memory (Horowitz ISSCC 2014, 45 nm; Han et al. 2015 Table 1) ---
    datapath: Datapath = "int16"
    """Precision of the digital datapath: fp32, fp16, bf16, int16 or int8 (module docstring). Default: ISAAC's
    16-bit fixed point. `digital_mult`/`digital_add` are priced from DATAPATHS (Horowitz 2014) and SRAM/DRAM words
    are `word_bits` wide, priced pro rata of the 32-bit access figures."""
    fp32_mult_pj: float = 3.7
    fp32_add_pj: float = 0.9
    int8_mult_pj: float = 0.2
    int8_add_pj: float = 0.03
    sram_access_32b_pj: float = 5.0
    """32-bit access to an 8 KB SRAM: half of Horowitz's 10 pJ per 64-bit access. Writes are assumed to cost the
    same as reads (assumption: Horowitz gives one figure). A narrower datapath word costs pro rata of its bits
    (assumption: energy per bit accessed is constant)."""
    dram_access_32b_pj: float = 640.0
    """32-bit DRAM access (Han et al. 2015 Table 1, from Horowitz 2014)."""
    # --- latencies (ns) ---
    write_pulse_ns: float = 50.0
    """SET/RESET pulse width (NeuroSim DNN V2.1 Param.cpp writePulseWidth)."""
    verify_read_ns: float = 10.0
    """Read pulse width (NeuroSim DNN Param.cpp readPulseWidth)."""
    mvm_cycle_ns: float = 10.0
    """One analog read cycle of a tile for one input bit (NeuroSim read pulse width)."""
    adc_conversion_ns: float = 1.0 / 1.2
    """SAR ADC at 1.2 GS/s (ISAAC via hwcomponents-library isaac.py)."""
    digital_op_ns: float = 1.0
    """One digital arithmetic operation at 1 GHz, one lane (assumption: a simple in-order digital unit)."""
    sram_access_ns: float = 1.0
    """One SRAM access at 1 GHz (assumption)."""
    dram_access_ns: float = 50.0
    """One DRAM access, about one row cycle tRC (assumption: typical DDR4 tRC 45-50 ns)."""
    sources: str = field(
        default="NeuroSim V1.4/V2.1 Param.cpp; ISAAC via hwcomponents-library isaac.py; Horowitz ISSCC 2014",
        compare=False,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "sources"):
                if not isinstance(value, str) or (f.name == "name" and not value):
                    raise ValueError(f"CostTable.{f.name} must be a non-empty string, got {value!r}")
                continue
            if f.name == "datapath":
                if value not in DATAPATHS:
                    raise ValueError(f"CostTable.datapath must be one of {list(DATAPATHS)}, got {value!r}")
                continue
            if f.name == "write_energy":
                if value not in WRITE_ENERGY_CONVENTIONS:
                    raise ValueError(f"CostTable.write_energy must be one of {list(WRITE_ENERGY_CONVENTIONS)}, "
                                     f"got {value!r}")  # fmt: skip
                continue
            if f.name == "adc_pj_by_bits":
                _validate_adc_table(value)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"CostTable.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"CostTable.{f.name} must be finite and >= 0, got {value!r}")

    def adc_conversion_pj(self, bits: int) -> float:
        """Energy of one ADC conversion at `bits` resolution: one scaling, the table's. Inside the table, geometric
        interpolation between neighbours (the Saberi scaling is close to geometric: x1.2-1.25 per bit); outside it,
        the table's own ratio per bit at that end, extended geometrically (a one-entry table is flat)."""
        table = self.adc_pj_by_bits
        if len(table) == 1:
            return table[0][1]
        if bits <= table[0][0]:
            (b0, e0), (b1, e1) = table[0], table[1]
            return e0 * _ratio(e0, e1) ** ((bits - b0) / (b1 - b0))
        if bits >= table[-1][0]:
            (b0, e0), (b1, e1) = table[-2], table[-1]
            return e1 * _ratio(e0, e1) ** ((bits - b1) / (b1 - b0))
        for (b0, e0), (b1, e1) in zip(table, table[1:]):
            if b0 <= bits <= b1:
                return e0 * _ratio(e0, e1) ** ((bits - b0) / (b1 - b0))
        raise AssertionError("unreachable: table is sorted and covers bits")

    @property
    def mult_pj(self) -> float:
        """One multiply at the datapath's precision (FP32 uses the `fp32_mult_pj` field, INT8 `int8_mult_pj`)."""
        return (
            self.fp32_mult_pj
            if self.datapath == "fp32"
            else self.int8_mult_pj
            if self.datapath == "int8"
            else (DATAPATHS[self.datapath][0])
        )

    @property
    def add_pj(self) -> float:
        """One add at the datapath's precision."""
        return (
            self.fp32_add_pj
            if self.datapath == "fp32"
            else self.int8_add_pj
            if self.datapath == "int8"
            else (DATAPATHS[self.datapath][1])
        )

    @property
    def word_bits(self) -> int:
        """Bits of one datapath word (the unit of `sram_*` and `dram_access` events)."""
        return DATAPATHS[self.datapath][2]

    @property
    def sram_word_pj(self) -> float:
        return self.sram_access_32b_pj * self.word_bits / 32.0

    @property
    def dram_word_pj(self) -> float:
        return self.dram_access_32b_pj * self.word_bits / 32.0

    def dac_conversion_pj(self, bits: int) -> float:
        """Energy to apply one `bits`-bit input to one row, bit-serially (bits x 1-bit row cycles)."""
        return self.dac_row_cycle_pj * bits

    def replace(self, **overrides: float) -> CostTable:
        """A copy with some fields changed; unknown field names raise ValueError naming them."""
        return replace_fields(self, overrides)

    def as_rows(self) -> list[tuple[str, str, str, str]]:
        """(field, value, unit, source) rows, for `crossbar-sim presets`."""
        rows = []
        for f in dataclasses.fields(self):
            if f.name in ("name", "sources"):
                continue
            value = getattr(self, f.name)
            unit = "pJ" if f.name.endswith("_pj") else "ns" if f.name.endswith("_ns") else "pJ by bits"
            if f.name in ("datapath", "write_energy"):
                unit = "-"
            if f.name == "adc_pj_by_bits":
                shown = ", ".join(f"{b}b {e:g}" for b, e in value)
            elif isinstance(value, str):
                shown = value
            else:
                shown = f"{value:g}"
            rows.append((f.name, shown, unit, _FIELD_SOURCES.get(self.name, {}).get(f.name, _DEFAULT_SOURCES[f.name])))
        return rows


def _ratio(e0: float, e1: float) -> float:
    return e1 / e0 if e0 > 0 else 1.0


def _validate_adc_table(table: object) -> None:
    if not isinstance(table, tuple) or not table:
        raise ValueError("CostTable.adc_pj_by_bits must be a non-empty tuple of (bits, pJ) pairs")
    previous_bits = 0
    for entry in table:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise ValueError(f"CostTable.adc_pj_by_bits entries must be (bits, pJ) pairs, got {entry!r}")
        bits, energy = entry
        if not isinstance(bits, int) or bits <= previous_bits:
            raise ValueError("CostTable.adc_pj_by_bits must have strictly increasing integer bits")
        if not math.isfinite(energy) or energy < 0:
            raise ValueError(f"CostTable.adc_pj_by_bits energy must be finite and >= 0, got {energy!r}")
        previous_bits = bits


_DEFAULT_SOURCES: dict[str, str] = {
    "write_energy": "per pulse: NeuroSim V2.1 ProcessingUnit.cpp 895 applied to each pulse (neurosim: per write)",
    "write_pulse_pj": "derived: 2 V^2 x 10 uS x 50 ns (NeuroSim V1.4/V2.1 Param.cpp)",
    "verify_read_pj": "derived: 0.5 V^2 x 20 uS x 10 ns (NeuroSim V2.1 Param.cpp; Wan 2022 0-40 uS)",
    "cell_read_pj": "derived: 0.5 V^2 x 20 uS x 10 ns (NeuroSim V2.1 Param.cpp; Wan 2022 0-40 uS)",
    "adc_pj_by_bits": "ISAAC SAR ADC via hwcomponents-library isaac.py",
    "dac_row_cycle_pj": "ISAAC via hwcomponents-library isaac.py",
    "shift_add_pj": "ISAAC via hwcomponents-library isaac.py",
    "datapath": "ISAAC 16-bit fixed point (Shafiee et al. ISCA 2016); priced from Horowitz ISSCC 2014",
    "fp32_mult_pj": "Horowitz ISSCC 2014 (45 nm)",
    "fp32_add_pj": "Horowitz ISSCC 2014 (45 nm)",
    "int8_mult_pj": "Horowitz ISSCC 2014 (45 nm)",
    "int8_add_pj": "Horowitz ISSCC 2014 (45 nm)",
    "sram_access_32b_pj": "Horowitz 2014 via Han et al. 2015 Table 1 (8 KB SRAM)",
    "dram_access_32b_pj": "Horowitz 2014 via Han et al. 2015 Table 1",
    "write_pulse_ns": "NeuroSim DNN V2.1 Param.cpp writePulseWidth",
    "verify_read_ns": "NeuroSim DNN Param.cpp readPulseWidth",
    "mvm_cycle_ns": "NeuroSim DNN Param.cpp readPulseWidth",
    "adc_conversion_ns": "ISAAC 1.2 GS/s via hwcomponents-library isaac.py",
    "digital_op_ns": "assumption: 1 GHz digital unit",
    "sram_access_ns": "assumption: 1 GHz SRAM",
    "dram_access_ns": "assumption: DDR4 tRC ~45-50 ns",
}

_FIELD_SOURCES: dict[str, dict[str, str]] = {
    "neurosim_v21": {
        "write_pulse_pj": "derived: 4 V^2 x (1/240 kOhm) x 50 ns (NeuroSim DNN V2.1 Param.cpp)",
        "verify_read_pj": "derived: 0.5 V^2 x (1/240 kOhm) x 10 ns (NeuroSim DNN V2.1 Param.cpp)",
        "cell_read_pj": "derived: 0.5 V^2 x (1/240 kOhm) x 10 ns (NeuroSim DNN V2.1 Param.cpp)",
        "adc_pj_by_bits": "NeuroSim V1.4 SarADC.cpp, 22 nm HP: P=(0.72 log2 L + 3.30) uW x (log2 L + 1) ns, "
        "without the column-current term (V2.1 as configured, 32 nm LP with it: 0.09-0.35 pJ at 5 bits against "
        "0.041; benchmarks/fidelity_lines.py)",
    },
}


def _neurosim_sar_adc_pj(bits: int) -> float:
    """NeuroSim V1.4 SarADC.cpp at 22 nm HP: P = (a*log2(L) + b) uW for (log2(L) + 1) ns, a = 0.72, b = 3.30,
    L = 2^bits levels; uW x ns = 1e-15 J = 1e-3 pJ. The column-current term is left out (it depends on the array).
    This is the source the preset follows; DNN_NeuroSim V2.1 as configured (technode 32, deviceroadmap 2 = LP,
    Param.cpp 71 / 122) gives 2.2x (a column of 128 cells at Roff) to 8.4x (128 at Ron) at 5 bits with the column
    term of SarADC.cpp 213-215 (and defaults to a multilevel sense amp, Param.cpp 96): benchmarks/fidelity_lines.py
    shows both."""
    levels_log2 = float(bits)
    return (0.72 * levels_log2 + 3.30) * (levels_log2 + 1.0) * 1e-3


COST_PRESETS: dict[str, CostTable] = {
    "isaac_horowitz": CostTable(),
    "neurosim_v21": CostTable(
        name="neurosim_v21",
        write_pulse_pj=pulse_energy_pj(4.0, 1e6 / 240e3, 50.0),
        verify_read_pj=pulse_energy_pj(0.5, 1e6 / 240e3, 10.0),
        cell_read_pj=pulse_energy_pj(0.5, 1e6 / 240e3, 10.0),
        adc_pj_by_bits=tuple((b, round(_neurosim_sar_adc_pj(b), 5)) for b in range(4, 11)),
        datapath="int16",  # assumption: NeuroSim's digital periphery (shift-add, accumulation) is fixed point
        sources="NeuroSim DNN V2.1 Param.cpp (Ron 240 kOhm, 4 V write, 50 ns); NeuroSim V1.4 SarADC.cpp; "
        "ISAAC DAC/shift-add; Horowitz ISSCC 2014",
    ),
}
"""Named cost presets. `isaac_horowitz` is the default."""

DEFAULT_COST_PRESET = "isaac_horowitz"


def cost_preset(name: str, **overrides: float) -> CostTable:
    """Look a preset up by name and apply overrides. Unknown names raise ValueError listing the known ones."""
    try:
        table = COST_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown cost preset {name!r}; known: {sorted(COST_PRESETS)}") from None
    return table.replace(**overrides) if overrides else table
