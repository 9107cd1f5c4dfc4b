"""Named device presets, each number with its source next to it.

Sources (each preset field names its own):
- Wan et al., "A compute-in-memory chip based on resistive random-access memory", Nature 608, 2022 (NeuRRAM),
  as modelled in aihwkit `inference/noise/reram.py` (`ReRamWan2022NoiseModel`, 0-40 uS) and CrossSim
  `simulator/devices/custom/RRAM_Wan.py`.
- Milo et al., IRPS 2021, as modelled in CrossSim `simulator/devices/custom/RRAM_Milo.py` (50-225 uS).
- NeuroSim: DNN_NeuroSim V1.4/V2.1 `NeuroSIM/Param.cpp` (Ron/Roff, voltages, pulse widths, cellBit, 128x128
  sub-arrays) and MLP_NeuroSim V3.0 `Cell.cpp` (cycle-to-cycle sigma 3.5 % of the range per pulse).
- aihwkit `ReRamCMONoiseModel` (CMO/HfOx): programming sigma, relaxation mean -0.089 ln t uS, total sigma
  0.042 ln t + 0.412 uS and a 1/f term, used as fitted (total sigma added to the programmed state, as aihwkit
  does) on the `reram_cmo_hfox` preset only, with that device's 9-88.19 uS window.
- Endurance 1e6 cycles for multi-level HfOx (Huang et al., HfOx MLC endurance model); 1e12 best case (Yang,
  Strukov & Stewart, Nat. Nanotech. 2013).

Line charging (`wire_cap_ff_per_cell`, `crossbar.lines`): only NeuroSim models the wires' capacitance (0.2 fF/um,
SubArray.cpp 138-140), so only `neurosim_rram` charges lines, with NeuroSim's 0.0256 fF per 1T1R cell pitch at
32 nm. The other presets' sources (aihwkit, CrossSim, ISAAC's measured array power) give no wire capacitance: they
keep 0, so their energies are those of their sources; a study that wants the lines on such a device sets the
field (e.g. NeuroSim's value) in its overrides.
"""

from __future__ import annotations

import math

from crossbar.device import DeviceConfig
from crossbar.lines import NEUROSIM_WIRE_CAP_FF_PER_CELL

__all__ = ["DEFAULT_DEVICE_PRESET", "DEVICE_PRESETS", "device_preset", "device_preset_rows"]

_W_NOISE_PER_CELL = 0.01 / math.sqrt(2.0)
"""aihwkit's ReRAM models recommend forward.w_noise ~ 0.01 for short-term read noise (inference/noise/reram.py
lines 40-42, 190-192): sigma of the weight (the pair) relative to the range; per cell that is 0.01 / sqrt(2)."""

DEVICE_PRESETS: dict[str, DeviceConfig] = {
    # Exactness reference: continuous levels, no noise, no drift, no faults, ideal DAC/ADC.
    "ideal": DeviceConfig(
        name="ideal",
        levels=None,
        programming_mode="statistical",
        programming_noise="none",
        pulse_scheme="ideal_jump",  # one exact pulse per written cell
        max_step_frac=1.0,
        c2c_sigma_frac=0.0,
        verify_tolerance_frac=1e-6,  # verify-first skips cells within tolerance: near-exact targets for exactness tests
        read_noise_frac=0.0,
        drift_model="none",
        endurance_pulses=math.inf,
        dac_bits=None,
        adc_bits=None,
        mvm_scheme="multi_bit",
    ),
    # Default: the NeuRRAM RRAM (Wan et al. Nature 2022), 0-40 uS (aihwkit ReRamWan2022NoiseModel, src).
    "reram_wan2022": DeviceConfig(
        name="reram_wan2022",
        g_min_us=0.0,  # uS, aihwkit reram.py (src)
        g_max_us=40.0,  # uS, aihwkit reram.py (src); CrossSim RRAM_Wan caps at 39.26
        levels=32,  # 5 bit/cell as NeuroSim V2.1 cellBit (src); Wan 2022 programs analog targets (assumption)
        write_voltage_v=2.0,  # V, NeuroSim V1.4 Param.cpp (src)
        write_pulse_ns=50.0,  # ns, NeuroSim V2.1 Param.cpp writePulseWidth (src)
        read_voltage_v=0.5,  # V, NeuroSim V2.1 Param.cpp (src)
        read_pulse_ns=10.0,  # ns, NeuroSim DNN Param.cpp readPulseWidth (src)
        pulse_scheme="incremental",
        pulse_levels=32,  # unit step ~ range / levels as NeuroSim counts pulses (assumption: no pulse data in Wan)
        d2d_step_sigma_frac=0.3,  # aihwkit presets/devices.py ReRamSBPresetDevice dw_min_dtod (src)
        c2c_sigma_frac=0.035,  # per unit pulse, MLP NeuroSim V3.0 Cell.cpp line 318 sigmaCtoC (src)
        verify_tolerance_frac=0.025,  # assumption: 1 uS on 40 uS (the final error is the fit, applied after)
        max_pulses=255,  # assumption: the counter's limit, ~8x a full swing, then the controller gives up
        programming_noise="wan2022",  # aihwkit ReRamWan2022NoiseModel t = 1 s polynomial (src)
        read_noise_frac=_W_NOISE_PER_CELL,  # aihwkit reram.py w_noise ~0.01 per weight (src)
        drift_model="wan2022",  # aihwkit reram.py 1 s / 1 day / 2 day fits (src)
        endurance_pulses=1e6,  # cycles, 4-level HfOx (Huang et al.) (lit.)
        dac_bits=8,
        adc_bits=8,  # 8-bit SAR, ISAAC (src hwcomponents-library isaac.py)
        adc_full_scale=12.0,  # normalised units, aihwkit IOParameters.out_bound default (src)
        mvm_scheme="neurram",  # Wan 2022: bit-serial pulses integrated, one conversion (hwcomponents wan.py, src)
        tile_rows=256,
        tile_cols=256,
    ),
    # Milo et al. IRPS 2021 RRAM as in CrossSim RRAM_Milo.py: 50-225 uS, sigma = max(4.782 - 0.009107 G, 0) uS.
    "reram_milo2021": DeviceConfig(
        name="reram_milo2021",
        g_min_us=50.0,  # uS, CrossSim RRAM_Milo.py (src)
        g_max_us=225.0,  # uS, CrossSim RRAM_Milo.py (src)
        levels=16,  # 4 bit/cell, CrossSim PRIME.json cell_bits (src)
        write_voltage_v=2.0,  # V, NeuroSim V1.4 Param.cpp (src)
        write_pulse_ns=50.0,  # ns, NeuroSim V2.1 Param.cpp (src)
        read_voltage_v=0.1,  # V, CrossSim xbar_parameters.py Vread (src)
        read_pulse_ns=10.0,  # ns, NeuroSim DNN Param.cpp (src)
        pulse_levels=16,  # assumption: one unit pulse per level (no pulse data in CrossSim/Milo)
        d2d_step_sigma_frac=0.3,  # aihwkit ReRamSBPresetDevice dw_min_dtod (src)
        c2c_sigma_frac=0.035,  # MLP NeuroSim V3.0 Cell.cpp (src)
        verify_tolerance_frac=0.025,  # assumption, as reram_wan2022
        max_pulses=255,  # assumption, as reram_wan2022
        programming_noise="milo2021",  # CrossSim RRAM_Milo.py (src)
        read_noise_frac=_W_NOISE_PER_CELL,  # aihwkit w_noise ~0.01 per weight (src)
        drift_model="none",  # CrossSim RRAM_Milo.py defines no drift_error (no fit for this device)
        endurance_pulses=1e6,  # cycles (lit. Huang et al.)
        dac_bits=8,
        adc_bits=8,
        mvm_scheme="multi_bit",  # CrossSim's default numerics: multi-level DAC, one conversion (src)
        tile_rows=256,
        tile_cols=256,
    ),
    # CMO/HfOx ReRAM (IBM Zurich, Falcone et al. in review) as aihwkit ReRamCMONoiseModel: 9-88.19 uS window,
    # programming sigma 0.0112 + 0.0113 G (2 % acceptance), relaxation -0.089 ln t mean, 0.042 ln t + 0.412 sigma,
    # 1/f read term.
    "reram_cmo_hfox": DeviceConfig(
        name="reram_cmo_hfox",
        g_min_us=9.0,  # uS, aihwkit examples/34_ReRAM_inference.py line 91 (src)
        g_max_us=88.19,  # uS, aihwkit examples/34_ReRAM_inference.py line 91 (src)
        levels=32,  # assumption (analog targets in the source)
        pulse_levels=32,  # assumption, as reram_wan2022
        d2d_step_sigma_frac=0.3,  # aihwkit ReRamSBPresetDevice dw_min_dtod (src)
        c2c_sigma_frac=0.035,  # MLP NeuroSim V3.0 Cell.cpp (src)
        verify_tolerance_frac=0.02,  # the model's 2 % acceptance range (aihwkit reram.py line 236, src)
        max_pulses=255,
        programming_noise="cmo_hfox",  # aihwkit reram.py coeff_dict[2] (src)
        read_noise_frac=_W_NOISE_PER_CELL,  # aihwkit reram.py lines 190-192 (src)
        drift_model="cmo_hfox",  # aihwkit reram.py lines 239-241, 306-315 (src)
        endurance_pulses=1e6,
        dac_bits=8,
        adc_bits=8,
        tile_rows=256,
        tile_cols=256,
    ),
    # A NeuroSim-like RRAM: DNN_NeuroSim V2.1 Ron 240 kOhm / Roff 24 MOhm, 4 V / 50 ns writes, 5-bit cells, 60
    # identical pulses per swing, 128x128 sub-arrays, 5-bit ADC (DNN NeuroSim --ADCprecision default 5).
    "neurosim_rram": DeviceConfig(
        name="neurosim_rram",
        g_min_us=1e6 / 24e6,  # 1 / Roff = 1/24 MOhm, NeuroSim V2.1 Param.cpp line 160 (src)
        g_max_us=1e6 / 240e3,  # 1 / Ron = 1/240 kOhm, NeuroSim V2.1 Param.cpp line 159 (src)
        levels=32,  # cellBit 5, NeuroSim V2.1 train.py line 55 (src)
        write_voltage_v=4.0,  # V, NeuroSim V2.1 Param.cpp line 167 (src)
        write_pulse_ns=50.0,  # ns, NeuroSim V2.1 Param.cpp line 168 (src)
        read_voltage_v=0.5,  # V, NeuroSim V2.1 Param.cpp (src)
        read_pulse_ns=10.0,  # ns, NeuroSim DNN Param.cpp (src)
        pulse_levels=60,  # maxNumLevelLTP/LTD, NeuroSim V2.1 Param.cpp lines 165-166 (src)
        d2d_step_sigma_frac=0.0,  # d2dVari 0, NeuroSim V2.1 train.py line 58 (src)
        c2c_sigma_frac=0.003,  # c2cVari, NeuroSim V2.1 train.py line 57 (src)
        verify_tolerance_frac=0.5 / 60,  # half a unit step: the verify stops at the nearest step (assumption)
        max_pulses=255,
        programming_noise="none",  # --vari 0, NeuroSim V2.1 inference.py line 55 (src): no fitted error
        read_noise_frac=0.0,  # NeuroSim models no read noise (DNN_NeuroSim V2.1: no read-noise parameter in Param.cpp)
        drift_model="none",  # NeuroSim's drift lives in its wrapper (--t, --v); off here
        endurance_pulses=1e6,  # cycles (lit. Huang et al.)
        wire_resistance_ohm=2.1,  # Ohm per 1T1R pitch, NeuroSim V2.1 Param.cpp lines 268-274
        wire_cap_ff_per_cell=NEUROSIM_WIRE_CAP_FF_PER_CELL,  # 0.2 fF/um x 4 F x 32 nm, SubArray.cpp 138-140 (src)
        dac_bits=8,
        adc_bits=5,  # DNN NeuroSim inference.py --ADCprecision default 5 (src)
        adc_full_scale=12.0,
        mvm_scheme="neurosim",  # 1 input bit per cycle, ADC per cycle, 8 columns per ADC (Param.cpp, src)
        tile_rows=128,  # NeuroSim Param.cpp sub-array 128x128 (src)
        tile_cols=128,
    ),
    # ISAAC (Shafiee et al. ISCA 2016) as configured in CrossSim configs/ISAAC.json: 128x128 crossbars, 2 bits per
    # cell, Rmin 2 kOhm / Rmax 2 MOhm, 16-bit sign-magnitude inputs applied one bit per cycle, an 8-bit 1.2 GS/s
    # ADC per crossbar converting every cycle. Programming and noise as the default device (ISAAC models none).
    "isaac": DeviceConfig(
        name="isaac",
        g_min_us=1e6 / 2e6,  # 1 / Rmax = 0.5 uS, CrossSim ISAAC.json (src)
        g_max_us=1e6 / 2e3,  # 1 / Rmin = 500 uS, CrossSim ISAAC.json (src)
        levels=4,  # cell_bits 2, CrossSim ISAAC.json; ISAAC Table 6 (src)
        # 16-bit weights over eight 2-bit cells whose column outputs shift-and-add units combine (Shafiee et al.
        # ISCA 2016: 16-bit fixed point, a 16-bit weight spans 8 cells of 2 bits; Table 6: 2 bits/cell, 128x128).
        # convert_to_analog gives SlicedAnalogLinear layers (crossbar.sliced). ISAAC stores the signed weight with a
        # 2^15 offset, one cell per digit; here each digit is a differential pair (idle cell at g_min) (assumption).
        weight_bits=16,
        bits_per_cell=2,
        read_voltage_v=0.1,  # V, CrossSim xbar_parameters.py Vread (src)
        # 5 ns, MLP NeuroSim V3.0 Cell.cpp read pulse (src); an assumption: ISAAC states neither V_read nor t_read.
        # Unsliced, ReLU inputs on N(0,1) weights read within 25 % of ISAAC's 2.4 mW of arrays per IMA (Table 6,
        # tests/test_scheme.py); sliced 16-bit weights read 1.5x (ReLU), 2.9x (signed N(0,1)) and 3.2x (uniform
        # [0,1]) inputs: the figure does not say for which inputs (benchmarks/fidelity.py isaac_slicing_rows).
        read_pulse_ns=5.0,
        programming_noise="none",  # ISAAC and CrossSim ISAAC.json model no programming error (src)
        read_noise_frac=0.0,  # CrossSim ISAAC.json read_noise disabled (src)
        drift_model="none",  # CrossSim ISAAC.json drift disabled (src)
        endurance_pulses=1e6,  # cycles (lit. Huang et al.)
        dac_bits=16,  # 16-bit sign-magnitude inputs, 1-bit slices: 15 cycles (CrossSim ISAAC.json, src)
        adc_bits=8,  # 8-bit SAR at 1.2 GS/s, ISAAC Table 6 (lit.; hwcomponents isaac.py, src)
        mvm_scheme="isaac",
        tile_rows=128,  # ISAAC / CrossSim rows_max, cols_max 128 (src)
        tile_cols=128,
    ),
}
"""Device presets by name. `reram_wan2022` is the default."""

DEFAULT_DEVICE_PRESET = "reram_wan2022"


def device_preset(name: str = DEFAULT_DEVICE_PRESET, **overrides: object) -> DeviceConfig:
    """Look a preset up by name and apply validated overrides."""
    try:
        config = DEVICE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown device preset {name!r}; known: {sorted(DEVICE_PRESETS)}") from None
    return config.replace(**overrides) if overrides else config


def device_preset_rows() -> list[str]:
    """Lines for `crossbar-sim presets`: every device preset with its values (units are in the field names)."""
    lines: list[str] = []
    for name, config in DEVICE_PRESETS.items():
        default = " (default)" if name == DEFAULT_DEVICE_PRESET else ""
        lines.append(f"device preset: {name}{default}")
        for field, value in config.as_dict().items():
            if field != "name":
                lines.append(f"  {field:<26} {value!s:>14}")
        lines.append(f"  sources: {_SOURCES[name]}")
        lines.append("")
    return lines


_SOURCES = {
    "ideal": "exactness reference (no source needed: every non-ideality off)",
    "reram_wan2022": "Wan et al. Nature 2022 via aihwkit ReRamWan2022NoiseModel (programming, drift fits); NeuroSim "
    "V1.4/V2.1 Param.cpp; MLP NeuroSim V3.0 Cell.cpp; aihwkit ReRamSB d2d; Huang et al. endurance",
    "reram_milo2021": "Milo et al. IRPS 2021 via CrossSim RRAM_Milo.py; CrossSim PRIME.json; NeuroSim Param.cpp",
    "reram_cmo_hfox": "CMO/HfOx ReRAM via aihwkit ReRamCMONoiseModel and examples/34_ReRAM_inference.py",
    "neurosim_rram": "DNN_NeuroSim V2.1 Param.cpp, ProcessingUnit.cpp, train.py; MLP NeuroSim V3.0 Cell.cpp",
    "isaac": "Shafiee et al. ISCA 2016 (ISAAC) via CrossSim configs/ISAAC.json and hwcomponents-library isaac.py",
}
