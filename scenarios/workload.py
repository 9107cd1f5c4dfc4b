"""What a model kind brings to a run: the `Workload` protocol and the registry of workloads by `model.kind`.

The runner's phases never ask which model a scenario uses; they ask its workload (`workload_for(scenario)`) to
build or train the base model, train one source task's LoRA, rebuild the model's structure for saved arrays,
install a task's head, run the calibration forward and evaluate. Built in: `transformer` and `cnn`
(`scenarios.workloads.ClassifierWorkload`, trained on the base task) and `hf_encoder`
(`scenarios.encoder_workload.EncoderWorkload`, a pretrained text encoder with zero-shot class heads).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from fusion import LoRABank
    from scenarios.cache import Blob
    from scenarios.families import TaskData

__all__ = ["WORKLOADS", "Workload", "register_workload", "workload_for"]


class Workload(Protocol):
    """One scenario's model kind, as the runner's phases use it. Every method is a pure function of the scenario
    it was made for and its arguments, so any worker gives the same result."""

    def train_base(self) -> Blob:
        """The base phase's files (`scenarios.phase_blobs.base_blob`): the digital base model built or trained,
        its info and any per-task heads."""
        ...

    def load_base(self, blob: Blob) -> nn.Module:
        """The frozen digital base model of a base-phase blob, rebuilt from the scenario."""
        ...

    def train_bank_part(self, base_blob: Blob, task: TaskData, **settings: Any) -> LoRABank:
        """One source task's one-entry LoRA bank on the base model (`fusion.build_bank` with `settings`)."""
        ...

    def task_heads(self, base_blob: Blob) -> dict[str, torch.Tensor] | None:
        """Per-task heads that travel with the programmed arrays (a zero-shot encoder's class embeddings), or
        None when the model has one trained head."""
        ...

    def skeleton(self, info: dict[str, Any]) -> nn.Module:
        """The digital model's structure, weights not read, for the programmed phase's saved `info`
        (`scenarios.phase_blobs.load_programmed_phase` loads the saved arrays into it)."""
        ...

    def set_task(self, model: nn.Module, task: str, heads: dict[str, torch.Tensor] | None) -> None:
        """Prepare `model` (digital or analog) for `task` before it adapts or is evaluated (install its head)."""
        ...

    def calibration_forward(self, model: nn.Module, x: torch.Tensor) -> None:
        """Run the ADC calibration set `x` through the analog layers in one call."""
        ...

    def evaluate(self, model: nn.Module, task: TaskData) -> float:
        """Test accuracy of `model` on `task`."""
        ...


WORKLOADS: dict[str, Callable[[Any], Workload]] = {}
"""Workload factories (called with the scenario) by the `model.kind` that scenario files use."""

_BUILT_IN = ("scenarios.workloads", "scenarios.encoder_workload")
"""Modules whose import registers the built-in workloads."""


def register_workload(*kinds: str) -> Callable[[Callable[[Any], Workload]], Callable[[Any], Workload]]:
    """Decorator registering a workload factory (a class taking the scenario) for the model kinds `kinds`."""

    def decorate(factory: Callable[[Any], Workload]) -> Callable[[Any], Workload]:
        for kind in kinds:
            if kind in WORKLOADS and WORKLOADS[kind] is not factory:
                raise ValueError(f"model kind {kind!r} already has a workload")
            WORKLOADS[kind] = factory
        return factory

    return decorate


def workload_for(scenario: Any) -> Workload:
    """The workload of `scenario.model.kind`; ValueError naming the known kinds otherwise."""
    for module in _BUILT_IN:
        importlib.import_module(module)
    kind = scenario.model.kind
    if kind not in WORKLOADS:
        raise ValueError(f"model.kind: {kind!r} has no workload; known: {sorted(WORKLOADS)}")
    return WORKLOADS[kind](scenario)
