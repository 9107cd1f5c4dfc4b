"""What a model kind brings to a run: the `Workload` protocol and the registry of workloads by `model.kind`.

The runner's phases never ask which model a scenario uses; they ask its workload (`workload_for(scenario)`) to
build or train the base model, train one source task's LoRA, rebuild the model's structure for saved arrays,
install a task's head, run the calibration forward and evaluate. Built in: `transformer` and `cnn`
(`scenarios.workloads.ClassifierWorkload`, trained on the base task) and `hf_encoder`
(`scenarios.encoder_workload.EncoderWorkload`, a pretrained text encoder with zero-shot class heads).

A model kind declares its `model:` keys as a frozen `ModelSettings` dataclass (fields made with
`scenarios.sections.setting`); the schema derives the section from it and calls its checks (`check` within the
section, `check_with` across sections), so the kind's rules live with the kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from scenarios.sections import setting

if TYPE_CHECKING:
    from fusion import LoRABank
    from scenarios.cache import Blob
    from scenarios.families import TaskData

__all__ = ["WORKLOADS", "ModelSettings", "Workload", "model_kinds", "register_workload", "workload_for"]

_SCHEMA_MIN_WIDTH = 64
"""Layer width (features) the schema assumes for a kind whose widths are not known before it loads (a pretrained
checkpoint): bank.rank may not exceed it (MiniLM-L6's layers are 384 and 1536 wide)."""


@dataclass(frozen=True)
class ModelSettings:
    """A model kind's `model:` keys. Subclass it as a frozen dataclass whose fields use
    `scenarios.sections.setting(default, "doc with unit", ge=...)`."""

    batch_size: int = setting(64, "Mini-batch size (examples) for base and bank training.", ge=1)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `scenarios.sections.KeyedError` naming the key for a bad combination of this section's settings."""

    def check_with(self, scenario: Any) -> None:
        """Rules across sections (the tasks' inputs, the bank's layers); KeyedError with the key's full path."""

    def layer_shape(self, layer: str) -> tuple[int, int]:
        """(in_features, out_features) of a block layer by name, or the smallest the schema can assume."""
        return (_SCHEMA_MIN_WIDTH, _SCHEMA_MIN_WIDTH)


class Workload(Protocol):
    """One scenario's model kind, as the runner's phases use it. Every method is a pure function of the scenario
    it was made for and its arguments, so any worker gives the same result."""

    heads_per_task: bool
    """True when the base phase carries a head per task the scenario names (`task_heads`), so the base phase
    depends on `tasks.sources` and `tasks.targets` (the runner's content key includes them); False when the
    model has one trained head."""

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

MODEL_SETTINGS: dict[str, type[ModelSettings]] = {}
"""Each model kind's settings dataclass (its `model:` keys), in registration order; read it through `model_kinds()`."""

_BUILT_IN = ("scenarios.workloads", "scenarios.encoder_workload")
"""Modules whose import registers the built-in workloads."""


def register_workload(
    kind: str, settings: type[ModelSettings]
) -> Callable[[Callable[[Any], Workload]], Callable[[Any], Workload]]:
    """Decorator registering a workload factory (a class taking the scenario) for the model kind `kind`, whose
    `model:` keys are the fields of `settings` (a frozen `ModelSettings` dataclass)."""
    if not (isinstance(settings, type) and issubclass(settings, ModelSettings) and is_dataclass(settings)):
        raise ValueError(f"model kind {kind!r}: settings must be a ModelSettings dataclass, got {settings!r}")

    def decorate(factory: Callable[[Any], Workload]) -> Callable[[Any], Workload]:
        if kind in WORKLOADS and (WORKLOADS[kind] is not factory or MODEL_SETTINGS[kind] is not settings):
            raise ValueError(f"model kind {kind!r} already has a workload")
        WORKLOADS[kind] = factory
        MODEL_SETTINGS[kind] = settings
        return factory

    return decorate


def model_kinds() -> dict[str, type[ModelSettings]]:
    """Settings by model kind, the built-in kinds included (their modules are imported on first use)."""
    for module in _BUILT_IN:
        importlib.import_module(module)
    return MODEL_SETTINGS


def workload_for(scenario: Any) -> Workload:
    """The workload of `scenario.model.kind`; ValueError naming the known kinds otherwise."""
    model_kinds()
    kind = scenario.model.kind
    if kind not in WORKLOADS:
        raise ValueError(f"model.kind: {kind!r} has no workload; known: {sorted(WORKLOADS)}")
    return WORKLOADS[kind](scenario)
