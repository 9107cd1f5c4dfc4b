"""A scenario's workloads in one import: task data (through the task-family registry) and the base network.

Everything is offline and seeded. The runner uses `build_tasks(scenario)` for the data, `build_model` for a fresh
network, `train_classifier` for base and bank training, and `accuracy` for evaluation.
"""

from __future__ import annotations

from scenarios.errors import ScenarioError
from scenarios.families import TASK_FAMILIES, TaskData, TaskRequest, TaskRole, TaskSuite, get_task_family
from scenarios.models import ADAPTABLE_LAYERS, PatchTransformer, accuracy, build_model, train_classifier
from scenarios.schema import Scenario
from scenarios.tasks import DIGIT_TASKS, digit_pools, digits_task, load_npz_task

__all__ = [
    "ADAPTABLE_LAYERS",
    "DIGIT_TASKS",
    "TASK_FAMILIES",
    "PatchTransformer",
    "TaskData",
    "TaskSuite",
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
        n_test=spec.test_size, n_classes=n_classes, scenario=scenario,
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
