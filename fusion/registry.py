"""Adaptation methods registered by name, what each one is given (`AdaptContext`) and returns (`AdaptResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from energy import LedgerScope
from fusion.settings import AdaptSettings

if TYPE_CHECKING:
    from fusion.deploy import ProgrammedBank

__all__ = ["METHODS", "AdaptContext", "AdaptResult", "register_method"]


@dataclass
class AdaptContext:
    """Everything a method needs; `model` and `bank` are the method's own copies, free to modify."""

    method: str
    task: str
    seed: int
    model: nn.Module
    bank: ProgrammedBank | None
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    settings: AdaptSettings
    device: object | None
    """crossbar DeviceConfig for arrays a method creates (LoRA arrays); None = the model's analog layers' device."""
    scope: LedgerScope | None
    """Ledger scope with phase `adapt`, this task and method; None records nothing."""


@dataclass
class AdaptResult:
    """The adapted model and what adaptation took. Ledger figures are this call's own (phase `adapt`)."""

    method: str
    task: str
    model: nn.Module
    """The adapted model, ready for evaluation; the model passed to `adapt` is never modified."""
    trainable_params: int
    """Distinct values the method trains (shared coefficients counted once)."""
    train_losses: list[float] = field(default_factory=list)
    """Training cross-entropy per optimizer step (lorahub: per objective evaluation, without the L1 term)."""
    val_losses: list[float] = field(default_factory=list)
    """Validation cross-entropy per epoch (with early stopping)."""
    epochs_run: int = 0
    best_epoch: int | None = None
    coefficients: dict[str, torch.Tensor] = field(default_factory=dict)
    """Final fusion coefficients by sharing group (fusion, lorahub)."""
    cell_write_pulses: float | None = None
    """SET + RESET pulses this adaptation caused (None without a ledger)."""
    adapt_energy_pj: float | None = None
    adapt_latency_ns: float | None = None
    wall_s: float = 0.0
    details: dict[str, object] = field(default_factory=dict)


MethodFn = Callable[[AdaptContext], AdaptResult]
METHODS: dict[str, MethodFn] = {}
"""Adaptation methods by the name scenario files use."""


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    """Decorator adding a method to `METHODS` under `name`."""

    def decorate(function: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"adaptation method {name!r} is already registered")
        METHODS[name] = function
        return function

    return decorate
