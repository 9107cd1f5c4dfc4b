"""ADC range calibration: a phase after programming that sets each tile column's ADC range from a calibration set.

A designer sets the column ADCs' ranges once the arrays hold their weights: a calibration set of inputs (drawn from
the base task's *training* data, never from test data or an adaptation minibatch) is run through the programmed
arrays layer by layer, each ADC's inputs (the tile column's partial sums, in the normalised units of
`crossbar.mvm`) are observed, and its full scale is set to a percentile of their magnitudes: a high percentile
clips a few outliers to gain resolution for the rest (the percentile ADC calibration of post-training quantisation;
CrossSim `adc_range_option: "CALIBRATED"` sets ranges from data too, per layer). Granularity:

- `column` (default): one range per tile column (what `DeviceConfig.adc_range = "calibrated"` asks of hardware with
  a trimmable reference per column ADC);
- `tile`: one range per physical array (all `tile_cols` columns of a row tile share it);
- `layer`: one range per layer (the old scalar).

The calibration MVMs are recorded (normally under phase `calibration`): one MVM per calibration vector and layer to
observe the partial sums (its ADC conversions are those `crossbar.mvm.adc_inputs` returns, one per value), and the
forward MVMs that carry the calibration set on to the next layers. Renewal after drift is the same procedure on the
drifted arrays: reads only, no cell is written.

The transposed direction (analog backward passes) keeps the device's fixed `adc_full_scale` unless calibrated
explicitly (`AnalogLinear.calibrate_adc(d, transposed=True)`): its inputs are gradients, which a calibration set of
inputs does not give.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from energy import LedgerScope

__all__ = ["ADC_GRANULARITIES", "AdcCalibrationReport", "adc_calibration", "check_adc_calibration", "pooled_ranges"]

AdcGranularity = Literal["column", "tile", "layer"]
ADC_GRANULARITIES: tuple[str, ...] = ("column", "tile", "layer")


def check_adc_calibration(percentile: float, granularity: str) -> None:
    """Raise ValueError naming the argument unless percentile is in (0, 100] and granularity is known."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if granularity not in ADC_GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(ADC_GRANULARITIES)}, got {granularity!r}")


def pooled_ranges(values: np.ndarray, percentile: float, granularity: str, group: int, fallback: float) -> np.ndarray:
    """(T, N) float32 ADC ranges from the ADC inputs `values` (T, M, N) (normalised units, one per conversion): the
    `percentile` of |values| per tile column, per group of `group` columns of a tile (`tile`) or over all
    (`layer`). A range that comes out 0 (a column whose inputs were all zero) is `fallback`."""
    check_adc_calibration(percentile, granularity)
    n_tiles, _, n_out = values.shape
    magnitude = np.abs(values.astype(np.float64, copy=False))
    if magnitude.shape[1] == 0:
        raise ValueError("the calibration set is empty")
    if granularity == "column":
        ranges = np.percentile(magnitude, percentile, axis=1)  # (T, N)
    elif granularity == "tile":
        ranges = np.empty((n_tiles, n_out))
        for lo in range(0, n_out, group):
            block = magnitude[:, :, lo : lo + group].reshape(n_tiles, -1)
            ranges[:, lo : lo + group] = np.percentile(block, percentile, axis=1)[:, None]
    else:
        ranges = np.full((n_tiles, n_out), np.percentile(magnitude, percentile))
    ranges = np.where(ranges > 0, ranges, fallback)
    return ranges.astype(np.float32)


@dataclass
class AdcCalibrationReport:
    """What a calibration pass did: layers calibrated, calibration vectors per layer and ADC conversions observed."""

    layers: list[str]
    vectors: dict[str, int]
    conversions: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)


@contextlib.contextmanager
def adc_calibration(
    model: nn.Module,
    scope: LedgerScope | None,
    *,
    percentile: float = 99.99,
    granularity: str = "column",
    on_input: Callable[[str, nn.Module, torch.Tensor], int] | None = None,
) -> Iterator[AdcCalibrationReport]:
    """Within the block, the first forward MVM of each analog layer of `model` (`crossbar.AnalogLinear` with
    `adc_range="calibrated"`, also when a wrapper calls its `mvm`) first calibrates its forward ADC ranges from the
    inputs it receives, then computes with them:
    layers calibrate in the order the data reaches them, each on the outputs of already calibrated layers. Run the
    calibration set through the model inside the block (in one call: a layer calibrates on the first batch it
    sees within the block). The calibration MVMs and the forward MVMs in the block are recorded in `scope`.

    `on_input(name, layer, x)`, if given, is called with each calibrated layer's input (e.g. to calibrate arrays
    that read the same input, such as a LoRA bank's A_stack) and returns the ADC conversions it observed."""
    from crossbar.layers import AnalogLinear, record_all_to  # crossbar.layers imports this module

    check_adc_calibration(percentile, granularity)
    report = AdcCalibrationReport([], {}, 0)
    done: set[int] = set()

    def calibrate(module: AnalogLinear, x: torch.Tensor) -> None:
        if id(module) in done:
            return
        done.add(id(module))
        report.conversions += module.calibrate_adc(x, percentile=percentile, granularity=granularity, scope=scope)
        report.layers.append(module.name)
        report.vectors[module.name] = int(math.prod(x.shape[:-1]))
        if on_input is not None:
            report.conversions += int(on_input(module.name, module, x))

    layers = [m for m in model.modules() if isinstance(m, AnalogLinear) and m.array_config.adc_range == "calibrated"]
    for module in layers:
        module._before_mvm = calibrate
    try:
        with record_all_to(model, scope), torch.no_grad():
            yield report
    finally:
        for module in layers:
            module._before_mvm = None
