"""Validation of an `AnalogLinear`'s saved extra state (`set_extra_state`): every field's type, range and shape.

A saved model is data from a file (`crossbar.persist`): each field is checked before any is applied, so a malformed
or edited `state.json` is refused with one ValueError naming the field, the value and what was expected, never a
raw KeyError/TypeError or a half-loaded layer.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from crossbar.device import DeviceConfig
from crossbar.state import stored_tile_rows

__all__ = ["EXTRA_STATE_FIELDS", "parse_extra_state"]

_SEED_LIMIT = 2**63
"""Seeds and stream counters are non-negative 63-bit integers (`crossbar.rng.derive_seed`)."""
_INT_FIELDS = ("seed", "noise_seed", "drift_seed", "program_calls", "drift_calls", "noise_calls")
EXTRA_STATE_FIELDS = (*_INT_FIELDS, "time_s", "adc_ranges", "adc_ranges_transposed", "array_config", "weight_bound")
"""What `AnalogLinear.get_extra_state` writes; `weight_bound` may be absent (saves from before fixed-scale
mapping)."""


def parse_extra_state(state: object, name: str, in_features: int, out_features: int) -> dict[str, object]:
    """The fields of a saved extra state as the layer holds them (ints, float seconds, a DeviceConfig, float32
    ADC-range arrays or None, weight bound or None), checked against a layer of `in_features` x `out_features`."""
    where = f"AnalogLinear {name!r} extra state"
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected an object of fields, got {type(state).__name__}")
    missing = [key for key in EXTRA_STATE_FIELDS if key not in state and key != "weight_bound"]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    unknown = sorted(str(key) for key in state if key not in EXTRA_STATE_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    parsed: dict[str, object] = {}
    for key in _INT_FIELDS:
        value = state[key]
        if not _is_int(value) or not 0 <= value < _SEED_LIMIT:
            raise ValueError(f"{where}: {key} must be an int in [0, 2**63), got {value!r}")
        parsed[key] = value
    time_s = state["time_s"]
    if not _is_number(time_s) or not (math.isfinite(time_s) and time_s >= 0):
        raise ValueError(f"{where}: time_s (drift clock, s) must be a finite number >= 0, got {time_s!r}")
    parsed["time_s"] = float(time_s)
    config = _device_config(state["array_config"], where)
    parsed["array_config"] = config
    row_tiles = -(-in_features // stored_tile_rows(in_features, config))
    column_tiles = -(-out_features // config.tile_cols)
    parsed["adc_ranges"] = _ranges(state["adc_ranges"], (row_tiles, out_features), f"{where}: adc_ranges")
    parsed["adc_ranges_transposed"] = _ranges(
        state["adc_ranges_transposed"], (column_tiles, in_features), f"{where}: adc_ranges_transposed"
    )
    bound = state.get("weight_bound")
    if bound is not None and not (_is_number(bound) and 0 < bound < math.inf):
        raise ValueError(f"{where}: weight_bound must be null or a finite number > 0, got {bound!r}")
    parsed["weight_bound"] = None if bound is None else float(bound)
    return parsed


def _device_config(value: object, where: str) -> DeviceConfig:
    """The saved device config: known fields only (missing ones take their defaults), each validated."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: array_config must be an object, got {type(value).__name__}")
    known = {field.name for field in dataclasses.fields(DeviceConfig)}
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ValueError(f"{where}: array_config has unknown field(s) {unknown}")
    try:
        return DeviceConfig(**{key: tuple(item) if isinstance(item, list) else item for key, item in value.items()})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: array_config: {error}") from None


def _ranges(value: object, shape: tuple[int, int], where: str) -> np.ndarray | None:
    """ADC ranges (normalised units): null, or a `shape` array of finite numbers > 0, as float32."""
    if value is None:
        return None
    rows_ok = isinstance(value, list) and len(value) == shape[0]
    if not rows_ok or not all(isinstance(row, list) and len(row) == shape[1] for row in value):
        raise ValueError(f"{where} must be null or a {shape[0]} x {shape[1]} array (tiles x columns) of numbers")
    for row in value:
        for item in row:
            if not _is_number(item) or not (math.isfinite(item) and item > 0):
                raise ValueError(f"{where} must hold finite numbers > 0, got {item!r}")
    return np.asarray(value, dtype=np.float32).reshape(shape)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
