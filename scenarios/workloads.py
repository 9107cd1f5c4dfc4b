"""A scenario's workloads in one import: task data (`scenarios.tasks`) and the base network (`scenarios.models`).

Everything is offline and seeded. The runner uses `build_tasks(scenario)` for the data, `build_model` for a fresh
network, `train_classifier` for base and bank training, and `accuracy` for evaluation.
"""

from __future__ import annotations

from scenarios.models import ADAPTABLE_LAYERS, PatchTransformer, accuracy, build_model, train_classifier
from scenarios.tasks import (
    DIGIT_TASKS,
    TASK_FAMILIES,
    TaskData,
    TaskSuite,
    build_tasks,
    digit_pools,
    digits_task,
    load_npz_task,
)

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
