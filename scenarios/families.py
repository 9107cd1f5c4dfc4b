"""Task families registered by name: what `tasks.family` in a scenario file may name.

A family says how to load one task (`load(request) -> TaskData`), which task names it has (None: any name, checked
by the loader), how many classes its labels have and the shape of one input (None: taken from the data). The
schema validates `tasks:` against the registry and `scenarios.workloads.build_tasks` calls the loader, so a family
registered from outside the package (a scenario's `plugins:` file, or user code before loading a scenario) works
through the CLI with no edit here:

    from scenarios.families import TaskFamily, TaskRequest, register_task_family
    from scenarios.families import TaskData

    def load(request: TaskRequest) -> TaskData: ...
    register_task_family(TaskFamily("my_family", load, task_names=("a", "b", "c"), n_classes=4,
                                    input_shape=(1, 8, 8), description="..."))

A family with options of its own declares them as a frozen `FamilySettings` dataclass (`settings=`); they become
keys of the scenario's `tasks:` section (the schema derives them, `scenarios.sections`) and reach the loader as
`request.settings`. This module imports no loader (no import cycles): `task_families()` imports the built-in
`digits`, `npz` (`scenarios.tasks`), `wordnet` and `bbc` (`scenarios.text_tasks`) when the registry is first read.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, is_dataclass
from typing import Any, Literal

import numpy as np

from scenarios.names import NAME_RULE, name_problem

__all__ = [
    "TASK_FAMILIES",
    "FamilySettings",
    "TaskData",
    "TaskFamily",
    "TaskRequest",
    "TaskRole",
    "TaskSuite",
    "get_task_family",
    "register_task_family",
    "task_families",
]

TaskRole = Literal["base", "source", "target"]


@dataclass(frozen=True)
class TaskData:
    """One task's labelled splits. x_*: float32 (N, *input_shape) (images (N, C, H, W), normalised) or int64
    token ids; y_*: int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...] = ()
    """Class descriptions in label order, for zero-shot classifiers (text tasks); empty where unused."""

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one input (channels, height, width for images; tokens for text)."""
        return tuple(self.x_test.shape[1:])


@dataclass(frozen=True)
class TaskSuite:
    """All tasks of a scenario: the base task, the bank's source tasks and the few-shot target tasks."""

    base: TaskData
    sources: dict[str, TaskData]
    targets: dict[str, TaskData]
    n_classes: int
    image_shape: tuple[int, ...]
    """Shape of one input (the name predates non-image families)."""


@dataclass(frozen=True)
class TaskRequest:
    """What a family's loader is asked for: one task, in one role, with the sizes the scenario sets."""

    name: str
    role: TaskRole
    seed: int
    """The scenario seed; a loader derives its own streams from it (`crossbar.derive_seed(seed, family, name)`)."""
    n_train: int
    """Training examples: tasks.base_train_size (base), bank.train_size (source), tasks.few_shot_train (target)."""
    n_val: int
    """Validation examples (tasks.few_shot_val)."""
    n_test: int
    """At most this many test examples (tasks.test_size)."""
    n_classes: int | None
    """The family's class count, else tasks.n_classes (None: the loader may not check labels against it)."""
    scenario: Any
    """The whole validated `scenarios.schema.Scenario` (e.g. the model's tokenizer for text families)."""
    settings: FamilySettings | None = None
    """The family's own settings from the `tasks:` section (e.g. npz's file paths)."""


@dataclass(frozen=True)
class FamilySettings:
    """A family's own `tasks:` keys (none here). Subclass it as a frozen dataclass whose fields use
    `scenarios.sections.setting(default, "doc with unit", ge=...)`; checks across fields go in `check`."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `scenarios.sections.KeyedError` naming the key for a bad combination of settings."""

    def named_tasks(self) -> tuple[Sequence[str], str] | None:
        """For a family without fixed task names: the task names these settings define and where (a phrase for
        error messages); None: any name, checked by the loader."""
        return None


Loader = Callable[[TaskRequest], TaskData]


@dataclass(frozen=True)
class TaskFamily:
    """A named family of related classification tasks."""

    name: str
    load: Loader
    task_names: tuple[str, ...] | None = None
    """Every task name the family offers; None when names come from the scenario (checked by the loader)."""
    n_classes: int | None = None
    """Classes of every task; None = from the data: the base task's class descriptions (TaskData.classes) if it
    has them, else tasks.n_classes (with `accepts_n_classes`), else 1 + the largest base training label."""
    input_shape: tuple[int, ...] | None = None
    """Shape of one input, e.g. (1, 8, 8) images; None = taken from the base task's data."""
    model_kinds: tuple[str, ...] = ("transformer",)
    """The `model.kind`s that can serve the family's tasks."""
    accepts_n_classes: bool = False
    """Whether `tasks.n_classes` may set the class count (npz)."""
    check_on_load: bool = False
    """Load every task already when the scenario is loaded (`validate`): for families that read files or
    packages whose problems should surface before a run starts."""
    settings: type[FamilySettings] = FamilySettings
    """The family's own `tasks:` keys, a frozen `FamilySettings` dataclass (the schema derives their YAML)."""
    description: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name or ""):
            raise ValueError(f"task family name must be lower_snake_case, got {self.name!r}")
        if not callable(self.load):
            raise ValueError(f"task family {self.name!r}: load must be callable, got {self.load!r}")
        if self.task_names is not None:
            names = tuple(self.task_names)
            if not names or len(set(names)) != len(names):
                raise ValueError(f"task family {self.name!r}: task_names must be distinct names, got {names!r}")
            for name in names:  # task names become file names (`scenarios.names`)
                problem = name_problem(name)
                if problem is not None:
                    raise ValueError(f"task family {self.name!r}: task name {problem}, expected {NAME_RULE}")
            object.__setattr__(self, "task_names", names)
        if self.n_classes is not None and (isinstance(self.n_classes, bool) or self.n_classes < 2):
            raise ValueError(f"task family {self.name!r}: n_classes must be an integer >= 2, got {self.n_classes!r}")
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if not (isinstance(self.settings, type) and issubclass(self.settings, FamilySettings)
                and is_dataclass(self.settings)):  # fmt: skip
            raise ValueError(f"task family {self.name!r}: settings must be a FamilySettings dataclass")


TASK_FAMILIES: dict[str, TaskFamily] = {}
"""Task families by the name `tasks.family` uses, in registration order (read it through `task_families()`)."""

_BUILT_IN = ("scenarios.tasks", "scenarios.text_tasks")
"""Modules whose import registers the built-in families."""


def task_families() -> dict[str, TaskFamily]:
    """The registry, the built-in families included (their modules are imported on first use)."""
    for module in _BUILT_IN:
        importlib.import_module(module)
    return TASK_FAMILIES


def register_task_family(family: TaskFamily) -> TaskFamily:
    """Add `family` to the registry (a name may be registered once); returns it."""
    if not isinstance(family, TaskFamily):
        raise ValueError(f"expected a TaskFamily, got {type(family).__name__}")
    if family.name in TASK_FAMILIES:
        raise ValueError(f"task family {family.name!r} is already registered")
    TASK_FAMILIES[family.name] = family
    return family


def get_task_family(name: str) -> TaskFamily:
    """The registered family `name`; ValueError listing the known ones otherwise."""
    if name not in task_families():
        raise ValueError(f"unknown task family {name!r}; known: {', '.join(TASK_FAMILIES)}")
    return TASK_FAMILIES[name]
