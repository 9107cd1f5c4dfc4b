"""A scenario's workloads in one import: task data (through the task-family registry) and the base network.

Everything is offline and seeded. `build_tasks(scenario)` loads the data, `load_task` one task of it;
`ClassifierWorkload` is the `scenarios.workload.Workload` of the trained classifiers (`model.kind` `transformer`
and `cnn`): `build_model` for a fresh network, `train_classifier` for base training, `accuracy` for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crossbar import derive_seed
from fusion import LoRABank, build_bank
from scenarios import phase_blobs
from scenarios.cache import Blob
from scenarios.errors import ScenarioError
from scenarios.families import TASK_FAMILIES, TaskData, TaskRequest, TaskRole, TaskSuite, get_task_family
from scenarios.models import ADAPTABLE_LAYERS, PatchTransformer, accuracy, build_model, train_classifier
from scenarios.schema import Scenario
from scenarios.sections import KeyedError, setting
from scenarios.tasks import DIGIT_TASKS, digit_pools, digits_task, load_npz_task
from scenarios.workload import ModelSettings, register_workload

__all__ = [
    "ADAPTABLE_LAYERS",
    "DIGIT_TASKS",
    "ClassifierWorkload",
    "CnnSettings",
    "TASK_FAMILIES",
    "PatchTransformer",
    "TaskData",
    "TaskSuite",
    "TransformerSettings",
    "accuracy",
    "build_model",
    "build_tasks",
    "class_count",
    "digit_pools",
    "digits_task",
    "load_npz_task",
    "load_task",
    "train_classifier",
]


def build_tasks(scenario: Scenario) -> TaskSuite:
    """Load every task the scenario names through its family's loader, with the sizes it asks for.

    Base task: `tasks.base_train_size` training examples; sources: `bank.train_size`; targets: few-shot
    `tasks.few_shot_train` + `tasks.few_shot_val`. Every task gets up to `tasks.test_size` test examples. All
    tasks must share one input shape (one model serves them all). A phase that needs one task loads it alone with
    `load_task` (the same request, so the same data).
    """
    spec = scenario.tasks
    family = get_task_family(spec.family)
    roles = [(spec.base, "base"), *((name, "source") for name in spec.sources), *((n, "target") for n in spec.targets)]
    n_classes = family.n_classes if family.n_classes is not None else spec.n_classes
    loaded: dict[str, TaskData] = {}
    for name, role in roles:
        task = family.load(_request(scenario, name, role, n_classes))
        if role == "base":
            n_classes = _class_count(scenario, task, n_classes)
        expected = family.input_shape or (loaded[spec.base].image_shape if loaded else task.image_shape)
        if task.image_shape != tuple(expected):
            raise ScenarioError(
                f"tasks.{spec.family}.{name}: inputs are {task.image_shape}, "
                f"expected {tuple(expected)} like the base task (one model serves all tasks)"
            )
        loaded[name] = task
    assert n_classes is not None
    return TaskSuite(
        base=loaded[spec.base],
        sources={name: loaded[name] for name in spec.sources},
        targets={name: loaded[name] for name in spec.targets},
        n_classes=n_classes,
        image_shape=loaded[spec.base].image_shape,
    )


def load_task(scenario: Scenario, name: str, role: TaskRole) -> TaskData:
    """One task in one role (`base`, `source` or `target`) exactly as `build_tasks` loads it, without loading the
    others: a bank part needs its source task, the base phase its base task (generating all of the default study's
    tasks takes seconds, per call). Only a family without a fixed class count, in a scenario without
    `tasks.n_classes`, loads the base task too (the others' requests carry its class count). The checks across
    tasks (one input shape) are `build_tasks`' and ran when the scenario was loaded or its base phase built."""
    spec = scenario.tasks
    family = get_task_family(spec.family)
    n_classes = family.n_classes if family.n_classes is not None else spec.n_classes
    if role == "base" or n_classes is None:
        base = family.load(_request(scenario, spec.base, "base", n_classes))
        if role == "base":
            return base
        n_classes = _class_count(scenario, base, n_classes)
    return family.load(_request(scenario, name, role, n_classes))


def class_count(scenario: Scenario, base: TaskData) -> int:
    """The scenario's class count, given its base task as `load_task` returns it (`TaskSuite.n_classes`)."""
    family = get_task_family(scenario.tasks.family)
    n_classes = family.n_classes if family.n_classes is not None else scenario.tasks.n_classes
    return _class_count(scenario, base, n_classes)


def _request(scenario: Scenario, name: str, role: TaskRole, n_classes: int | None) -> TaskRequest:
    spec = scenario.tasks
    n_train_by_role = {"base": spec.base_train_size, "source": scenario.bank.train_size, "target": spec.few_shot_train}
    return TaskRequest(
        name=name, role=role, seed=scenario.seed, n_train=n_train_by_role[role], n_val=spec.few_shot_val,
        n_test=spec.test_size, n_classes=n_classes, scenario=scenario, settings=spec.settings(),
    )  # fmt: skip


def _class_count(scenario: Scenario, base: TaskData, n_classes: int | None) -> int:
    """The class count the base task sets: its named classes, else the family's or the scenario's count, else its
    largest training label + 1."""
    spec = scenario.tasks
    if base.classes:
        if n_classes not in (None, len(base.classes)):
            raise ScenarioError(
                f"tasks.{spec.family}.{spec.base}: {len(base.classes)} classes, but {n_classes} were asked for"
            )
        return len(base.classes)
    if n_classes is None:
        n_classes = int(base.y_train.max()) + 1 if len(base.y_train) else 1
        if n_classes < 2:
            raise ScenarioError(f"tasks.{spec.family}.{spec.base}: base task has a single class, expected at least 2")
    return n_classes


@dataclass(frozen=True)
class _ClassifierSettings(ModelSettings):
    """The keys both trained classifiers share."""

    d_model: int = setting(64, "Feature width: the transformer's token width (q, k, v, o are d_model x d_model), "
                           "the CNN's second conv's channels and MLP width.", ge=4)  # fmt: skip
    d_ff: int = setting(128, "Hidden width of each MLP (fc1: d_model -> d_ff, fc2 back).", ge=1)
    base_epochs: int = setting(15, "Passes over the base task's training set to train the base model.", ge=1)
    base_lr: float = setting(2e-3, "Peak Adam learning rate for base training (cosine decay to 0).", gt=0)

    def layer_shape(self, layer: str) -> tuple[int, int]:
        return {"fc1": (self.d_model, self.d_ff), "fc2": (self.d_ff, self.d_model)}.get(layer, (self.d_model,) * 2)


@dataclass(frozen=True)
class TransformerSettings(_ClassifierSettings):
    """`kind: transformer`: a small vision transformer (`scenarios.models.PatchTransformer`) trained on the base
    task."""

    n_blocks: int = setting(4, "Number of transformer blocks (each holds q, k, v, o, fc1, fc2).", ge=1)
    n_heads: int = setting(4, "Attention heads per block; must divide d_model.", ge=1)
    patch_size: int = setting(2, "Side of the square image patches (pixels); must divide the image.", ge=1)

    def check(self) -> None:
        if self.d_model % self.n_heads:
            raise KeyedError(("n_heads",), self.n_heads, f"a divisor of model.d_model={self.d_model}")

    def check_with(self, scenario: Any) -> None:
        shape = get_task_family(scenario.tasks.family).input_shape
        if shape is not None and len(shape) == 3 and (shape[1] % self.patch_size or shape[2] % self.patch_size):
            expected = f"a divisor of the {shape[1]}x{shape[2]} {scenario.tasks.family} images"
            raise KeyedError(("model", "patch_size"), self.patch_size, expected)


@dataclass(frozen=True)
class CnnSettings(_ClassifierSettings):
    """`kind: cnn`: two 3x3 conv layers (d_model / 2 and d_model channels), pooling and a residual fc1/fc2 MLP
    (`scenarios.models.ConvClassifier`; its convs run on arrays as AnalogConv2d), trained on the base task."""

    def check_with(self, scenario: Any) -> None:
        if set(scenario.bank.modules) - {"fc1", "fc2"}:
            expected = "fc1 and/or fc2 for model.kind cnn (it has no attention layers)"
            raise KeyedError(("bank", "target_modules"), scenario.bank.target_modules, expected)


@register_workload("cnn", CnnSettings)
@register_workload("transformer", TransformerSettings)
class ClassifierWorkload:
    """A classifier trained from scratch on the base task (`build_model`: the patch transformer or the CNN), one
    trained head shared by every task."""

    heads_per_task = False

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def train_base(self) -> Blob:
        """Train the digital base model on the base task; its weights, clean accuracy, class count and input shape."""
        scenario, spec = self.scenario, self.scenario.model
        base = load_task(scenario, scenario.tasks.base, "base")
        n_classes = class_count(scenario, base)
        model = build_model(spec, n_classes, base.image_shape, seed=derive_seed(scenario.seed, "base_init"))
        train_classifier(
            model, base.x_train, base.y_train, epochs=spec.base_epochs, lr=spec.base_lr,
            batch_size=spec.batch_size, seed=derive_seed(scenario.seed, "base_train"), desc="base model",
            progress=False,
        )  # fmt: skip
        info = {"clean_accuracy": accuracy(model, base.x_test, base.y_test),
                "n_classes": n_classes, "image_shape": list(base.image_shape)}  # fmt: skip
        return phase_blobs.base_blob(model, info)

    def load_base(self, blob: Blob) -> nn.Module:
        model = self._built(phase_blobs.base_info(blob), phase_blobs.BASE_INFO)
        try:
            model.load_state_dict(phase_blobs.base_state(blob))
        except RuntimeError as error:
            text = " ".join(str(error).split())[:300]
            raise ValueError(f"{phase_blobs.BASE_STATE}: does not fit the scenario's model ({text})") from None
        return phase_blobs.frozen(model)

    def train_bank_part(self, base_blob: Blob, task: TaskData, **settings: Any) -> LoRABank:
        return build_bank(self.load_base(base_blob), {task.name: (task.x_train, task.y_train)}, **settings)

    def task_heads(self, base_blob: Blob) -> None:
        return None

    def skeleton(self, info: dict[str, Any]) -> nn.Module:
        return phase_blobs.frozen(self._built(info.get("base") or {}, f"{phase_blobs.PROGRAMMED_INFO} base"))

    def set_task(self, model: nn.Module, task: str, heads: dict[str, torch.Tensor] | None) -> None:
        """Nothing to install: one trained head serves every task."""

    def calibration_forward(self, model: nn.Module, x: torch.Tensor) -> None:
        model(x)

    def evaluate(self, model: nn.Module, task: TaskData) -> float:
        return accuracy(model, task.x_test, task.y_test)

    def _built(self, info: dict[str, Any], where: str) -> nn.Module:
        """A freshly built classifier of the scenario's model section and the saved class count and input shape."""
        n_classes, shape = phase_blobs.classifier_shape(info, where)
        return build_model(self.scenario.model, n_classes, shape, seed=0)  # type: ignore[arg-type]
