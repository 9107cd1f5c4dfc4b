"""A scenario's workloads in one import: task data (through the task-family registry) and the base network.

Everything is offline and seeded. The runner uses `build_tasks(scenario)` for the data, `build_model` for a fresh
network, `train_classifier` for base and bank training, and `accuracy` for evaluation.
"""

from __future__ import annotations

from scenarios.errors import ScenarioError
from scenarios.families import TASK_FAMILIES, TaskData, TaskRequest, TaskSuite, get_task_family
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
    "digit_pools",
    "digits_task",
    "load_npz_task",
    "train_classifier",
]


def build_tasks(scenario: Scenario) -> TaskSuite:
    """Load every task the scenario names through its family's loader, with the sizes it asks for.

    Base task: `tasks.base_train_size` training examples; sources: `bank.train_size`; targets: few-shot
    `tasks.few_shot_train` + `tasks.few_shot_val`. Every task gets up to `tasks.test_size` test examples. All
    tasks must share one input shape (one model serves them all).
    """
    spec = scenario.tasks
    family = get_task_family(spec.family)
    roles = [(spec.base, "base"), *((name, "source") for name in spec.sources), *((n, "target") for n in spec.targets)]
    n_train_by_role = {"base": spec.base_train_size, "source": scenario.bank.train_size, "target": spec.few_shot_train}
    n_classes = family.n_classes if family.n_classes is not None else spec.n_classes
    loaded: dict[str, TaskData] = {}
    for name, role in roles:
        request = TaskRequest(
            name=name, role=role, seed=scenario.seed, n_train=n_train_by_role[role], n_val=spec.few_shot_val,
            n_test=spec.test_size, n_classes=n_classes, scenario=scenario,
        )  # fmt: skip
        task = family.load(request)
        if role == "base" and task.classes:
            if n_classes not in (None, len(task.classes)):
                raise ScenarioError(
                    f"tasks.{spec.family}.{name}: {len(task.classes)} classes, but {n_classes} were asked for"
                )
            n_classes = len(task.classes)
        if role == "base" and n_classes is None:
            n_classes = int(task.y_train.max()) + 1 if len(task.y_train) else 1
            if n_classes < 2:
                raise ScenarioError(f"tasks.{spec.family}.{name}: base task has a single class, expected at least 2")
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
