"""A hardware-aware bank (`bank.hardware_aware: true`, issue 28): each source task's LoRA is trained through the
base as it will be programmed, instead of through the digital base as LoRAFusion trains its bank.

The bank-part phase programs the base itself, with the seed, device and calibration set of the programming phase
(`scenarios.phases.programmed_task`), so the LoRA trains through the same cells, ADC ranges and read-noise model the
deployed base will have; then the bank is joined and programmed as usual. Programming is deterministic given its
seed, so no programmed state travels between phases (the phase structure is unchanged); the price is one base
programming and calibration per source task (seconds to tens of seconds on the real study), recorded nowhere: like
the digital bank's training, it happens before deployment, and its ledger is thrown away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fusion import LoRABank, build_bank
from scenarios.cache import Blob
from scenarios.deployment import deploy
from scenarios.families import TaskData
from scenarios.workload import Workload, workload_for

__all__ = ["hardware_aware_bank_part", "programmed_base"]


def programmed_base(scenario: Any, workload: Workload, base_blob: Blob,
                    calibration_set: Callable[[Any], torch.Tensor]) -> nn.Module:  # fmt: skip
    """The base model deployed as `programmed_task` deploys it (`scenarios.deployment.deploy`: same seed, so the
    same cells; the same calibration set for the ADC ranges when the device calibrates them). No bank is attached: the
    base layers' ranges come from their own inputs, which the bank does not change."""
    ledger = scenario.new_ledger()  # work before deployment: not part of the run's ledger
    base = workload.load_base(base_blob)
    return deploy(scenario, base, None, ledger, calibration_set, forward=workload.calibration_forward).analog


def hardware_aware_bank_part(scenario: Any, base_blob: Blob, task: TaskData,
                             calibration_set: Callable[[Any], torch.Tensor], **settings: Any) -> LoRABank:  # fmt: skip
    """One source task's one-entry bank, its LoRA trained (`fusion.build_bank` with `settings`) with the programmed
    base's forward and transposed MVMs in the loop, the task's head installed (a zero-shot encoder's classes)."""
    workload = workload_for(scenario)
    analog = programmed_base(scenario, workload, base_blob, calibration_set)
    workload.set_task(analog, task.name, workload.task_heads(base_blob))
    return build_bank(analog, {task.name: (task.x_train, task.y_train)}, **settings)
