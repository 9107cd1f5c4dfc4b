"""Deployment: a trained base model (and a bank of LoRAs) programmed into crossbars once and calibrated.

One sequence, used by the programming phase (`scenarios.phases.programmed_task`), the hardware-aware bank
(`scenarios.hardware_bank`, base only) and the training-step benchmark, so the three program the same cells from the
same seeds: convert the base (seed `(scenario.seed, "analog")`), program it (phase `deploy_base`), program the bank
(seed `(scenario.seed, "bank")`, phase `deploy_bank`), then calibrate (phase `calibration`): the ADC ranges from the
calibration set when the device calibrates them, then fusion's norm read-out of the programmed bank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crossbar import convert_to_analog, derive_seed, program
from energy import Ledger
from fusion import LoRABank, ProgrammedBank, calibrate_deployed_adc, calibrate_norms, program_bank

__all__ = ["Deployment", "deploy"]


@dataclass(frozen=True)
class Deployment:
    """What `deploy` produced: the programmed base, its programmed bank (None without a bank) and the calibration
    set the ADC ranges were set from (None when the device's ranges are fixed)."""

    analog: nn.Module
    bank: ProgrammedBank | None
    calibration_set: torch.Tensor | None


def deploy(
    scenario: Any,
    base: nn.Module,
    bank: LoRABank | None,
    ledger: Ledger,
    calibration_set: Callable[[Any], torch.Tensor],
    *,
    forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
) -> Deployment:
    """Program `base` (and `bank`) as the scenario's device and calibrate them, recording every write and read in
    `ledger`. `calibration_set(scenario)` is asked for only when the device calibrates its ADC ranges; `forward(model,
    x)` runs it through the model (default `model(x)`)."""
    device = scenario.device_config()
    analog = convert_to_analog(base, device, seed=derive_seed(scenario.seed, "analog"))
    program(analog, ledger.scope(phase="deploy_base"))
    programmed = None
    if bank is not None:
        programmed = program_bank(analog, bank, device, ledger.scope(phase="deploy_bank"),
                                  seed=derive_seed(scenario.seed, "bank"), calibrate_norms=False)  # fmt: skip
    samples = None
    spec = scenario.calibration
    if device.adc_range == "calibrated":
        samples = calibration_set(scenario)
        calibrate_deployed_adc(
            analog, programmed, samples, ledger.scope(phase="calibration"),
            percentile=spec.adc_percentile, granularity=spec.adc_granularity, forward=forward,
        )  # fmt: skip
    if programmed is not None:
        calibrate_norms(analog, programmed, ledger.scope(phase="calibration"), reads=spec.norm_reads,
                        storage=spec.norm_storage)  # fmt: skip
    return Deployment(analog, programmed, samples)
