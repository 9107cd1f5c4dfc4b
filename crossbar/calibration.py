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
observe the partial sums (its ADC conversions are those `crossbar.engine_numba.adc_inputs` returns, one per
value), and the forward MVMs that carry the calibration set on to the next layers. Renewal after drift is the same
procedure on the drifted arrays: reads only, no cell is written.

The transposed direction (analog backward passes) keeps the device's fixed `adc_full_scale` unless calibrated
explicitly (`AnalogLinear.calibrate_adc(d, transposed=True)`): its inputs are gradients, which a calibration set of
inputs does not give.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from crossbar.layers import AnalogLinear, record_all_to
from crossbar.periphery import ADC_GRANULARITIES, check_adc_calibration, pooled_ranges
from energy import LedgerScope

__all__ = ["ADC_GRANULARITIES", "AdcCalibrationReport", "adc_calibration", "check_adc_calibration", "pooled_ranges"]

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
