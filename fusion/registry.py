"""Adaptation methods registered by name, peft-style: each method brings its own frozen config dataclass.

A method is a function `train(ctx: AdaptContext) -> AdaptResult` registered together with its config class:

    @dataclass(frozen=True)
    class MyConfig(TrainingConfig):
        lr: float = option(1e-3, "Adam learning rate.", gt=0)

    @register_method("my_method", MyConfig)
    def adapt_my_method(ctx: AdaptContext) -> AdaptResult: ...

The config's fields (type, default, bounds from `option(...)`, and the one-line doc) are written once: the config
validates itself from them, and `scenarios.schema` derives the YAML schema of a `methods:` entry from them, so a
registered method is usable from a scenario file with no other edit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

import torch
from torch import nn

from crossbar import DeviceConfig
from energy import LedgerScope
from simutil import replace_fields

if TYPE_CHECKING:
    from fusion.deploy import ProgrammedBank

__all__ = [
    "METHODS",
    "AdaptContext",
    "AdaptResult",
    "Method",
    "MethodConfig",
    "TrainingConfig",
    "get_method",
    "method_names",
    "option",
    "register_method",
]


def option(default: object, doc: str, *, ge: float | None = None, gt: float | None = None) -> Any:
    """A config field: its default, its one-line description (with unit and source) and optional bounds. The
    config validates against these and the scenario schema copies them."""
    return field(default=default, metadata={"doc": doc, "ge": ge, "gt": gt})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check(owner: str, name: str, annotation: Any, value: object) -> object:
    """Check `value` against a field annotation (bool, int, float, str, Literal, X | None, tuple[str, ...]);
    returns the value (lists become tuples for tuple fields)."""
    where = f"{owner}.{name}"
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = typing.get_args(annotation)
        if value is None and type(None) in members:
            return None
        (annotation,) = [m for m in members if m is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ValueError(f"{where} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
            raise ValueError(f"{where} must be a non-empty list of strings, got {value!r}")
        if not all(isinstance(item, str) and item for item in value):
            raise ValueError(f"{where} must be a non-empty list of strings, got {value!r}")
        return tuple(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
    elif annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's settings: a frozen dataclass whose fields are declared with `option(...)`."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for spec in dataclasses.fields(self):
            value = _check(owner, spec.name, _hints(type(self))[spec.name], getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
            if value is None or isinstance(value, (bool, str, tuple)):
                continue
            ge, gt = spec.metadata.get("ge"), spec.metadata.get("gt")
            if ge is not None and value < ge:
                raise ValueError(f"{owner}.{spec.name} must be >= {ge}, got {value!r}")
            if gt is not None and value <= gt:
                raise ValueError(f"{owner}.{spec.name} must be > {gt}, got {value!r}")

    def replace(self, **overrides: object) -> MethodConfig:
        """A copy with some fields changed; unknown names raise ValueError listing the known ones."""
        return replace_fields(self, overrides)


@dataclass(frozen=True)
class TrainingConfig(MethodConfig):
    """Settings shared by the gradient-trained methods (one Adam loop, `fusion.loop.train_loop`)."""

    epochs: int = option(20, "Passes over the few-shot training set (LoRAFusion `--epoch` 20).", ge=1)
    batch_size: int = option(5, "Mini-batch size in examples (LoRAFusion's final BBH runs: 5; its default 10).", ge=1)
    early_stopping: bool = option(
        False,
        "Keep the parameters with the best validation loss (needs a validation split; LoRAFusion's option, off in "
        "its final runs).",
    )
    patience: int | None = option(
        None, "Epochs without a new best validation loss before stopping; null = epochs // 3 (LoRAFusion).", ge=1
    )


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
    config: MethodConfig
    """The method's own config (an instance of the class it registered)."""
    array_config: DeviceConfig | None
    """Device config for arrays a method creates (LoRA arrays); None = that of the model's analog layers."""
    scope: LedgerScope | None
    """Ledger scope with phase `adapt`, this task and method; None records nothing."""
    progress: bool = False
    """Show tqdm progress bars."""
    previous: nn.Module | None = None
    """The previous task's adapted model when this adaptation is a task switch on the same device (methods
    registered with `task_sequence=True` reuse and rewrite its arrays); None = the first task (fresh arrays)."""


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
Fn = TypeVar("Fn", bound=MethodFn)


@dataclass(frozen=True)
class Method:
    """A registered adaptation method: its name, its config class and the function that runs it."""

    name: str
    config: type[MethodConfig]
    train: MethodFn
    task_sequence: bool = False
    """The method keeps per-task state in arrays that the next task rewrites (the LoRA arrays): a run adapts the
    target tasks in order, each from the previous one's adapted model (`AdaptContext.previous`)."""
    gradient_free: bool = False
    """The method trains without gradients (a black-box search): no gradient or optimizer state is kept
    (`fusion.digital_state`)."""

    @property
    def description(self) -> str:
        """First paragraph of the method function's docstring (the schema's description of the entry)."""
        doc = (self.train.__doc__ or self.config.__doc__ or self.name).strip()
        return " ".join(doc.split("\n\n")[0].split())


METHODS: dict[str, Method] = {}
"""Adaptation methods by the name scenario files use, in registration order."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(
    name: str, config: type[MethodConfig] = MethodConfig, *, task_sequence: bool = False, gradient_free: bool = False
) -> Callable[[Fn], Fn]:
    """Decorator registering `function` as method `name` with its config class (a frozen `MethodConfig`
    dataclass; the default has no settings). `task_sequence`, `gradient_free`: see `Method`."""
    if not _NAME.match(name):
        raise ValueError(f"method name must be lower_snake_case, got {name!r}")
    if not (isinstance(config, type) and issubclass(config, MethodConfig) and dataclasses.is_dataclass(config)):
        raise ValueError(f"method {name!r}: config must be a MethodConfig dataclass, got {config!r}")
    config()  # the defaults must validate

    def decorate(function: Fn) -> Fn:
        if name in METHODS:
            raise ValueError(f"adaptation method {name!r} is already registered")
        METHODS[name] = Method(name, config, function, task_sequence=task_sequence, gradient_free=gradient_free)
        return function

    return decorate


def get_method(name: str) -> Method:
    """The registered method `name`; ValueError listing the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown adaptation method {name!r}; known: {method_names()}")
    return METHODS[name]


def method_names() -> list[str]:
    """Registered method names in registration order."""
    return list(METHODS)
