"""crossbar: the ReRAM device and array model (DESIGN section 3).

Device configs and cited presets, weight <-> conductance mapping, write-verify programming, non-idealities (read
noise, drift, stuck-at faults, endurance), DAC/ADC peripherals, tiling, the analog MVM and the PyTorch layers built
on it (`AnalogLinear`, `AnalogConv2d`, the bit-sliced `SlicedAnalogLinear`, `convert_to_analog`), saved and loaded
with their whole analog state (`save_programmed`, `load_programmed`; in memory `state_files`, `load_state_files`).
Not to be confused with the unrelated Crossbar.io router on PyPI, which shares the import name `crossbar`: do not
install both in one environment.
"""

from crossbar.calibration import ADC_GRANULARITIES, AdcCalibrationReport, adc_calibration
from crossbar.conv import AnalogConv2d
from crossbar.convert import convert_to_analog
from crossbar.device import DeviceConfig
from crossbar.engine_numba import analog_mvm, analog_mvm_transposed
from crossbar.layers import (
    AnalogLinear,
    analog_layers,
    deferred_mvm_records,
    drift,
    layer_seed,
    program,
    record_all_to,
)
from crossbar.mapping import Targets, map_weights, state_weights
from crossbar.mvm import MvmSettings
from crossbar.noise import apply_drift, fabricate_faults, programming_sigma_us
from crossbar.persist import load_programmed, load_state_files, save_programmed, state_files
from crossbar.presets import DEFAULT_DEVICE_PRESET, DEVICE_PRESETS, device_preset
from crossbar.programming import ProgramReport, program_state
from crossbar.protocols import AnalogLayer, Recording, weight_layers
from crossbar.rng import derive_seed
from crossbar.selection import block_of, literal_pattern, name_matcher
from crossbar.sliced import SlicedAnalogLinear
from crossbar.state import STUCK, ArrayState

__all__ = [
    "ADC_GRANULARITIES",
    "DEFAULT_DEVICE_PRESET",
    "DEVICE_PRESETS",
    "STUCK",
    "AdcCalibrationReport",
    "AnalogConv2d",
    "AnalogLayer",
    "AnalogLinear",
    "ArrayState",
    "DeviceConfig",
    "MvmSettings",
    "ProgramReport",
    "Recording",
    "SlicedAnalogLinear",
    "Targets",
    "adc_calibration",
    "analog_layers",
    "analog_mvm",
    "analog_mvm_transposed",
    "apply_drift",
    "block_of",
    "convert_to_analog",
    "derive_seed",
    "device_preset",
    "drift",
    "fabricate_faults",
    "layer_seed",
    "literal_pattern",
    "load_programmed",
    "load_state_files",
    "map_weights",
    "name_matcher",
    "program",
    "program_state",
    "programming_sigma_us",
    "deferred_mvm_records",
    "record_all_to",
    "save_programmed",
    "state_files",
    "state_weights",
    "weight_layers",
]
