"""A plugin as a user would write it, outside the packages: one adaptation method and one task family.

`tests/test_plugins.py` names this file in a scenario's `plugins:` and runs the scenario through the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossbar import derive_seed
from fusion import AdaptContext, AdaptResult, TrainingConfig, option, register_method
from fusion.loop import ParamGroup, train_loop
from scenarios.families import TaskData, TaskFamily, TaskRequest, register_task_family


# --- a method: a digital bias on the logits, trained with the package's loop -----------------------------------
@dataclass(frozen=True)
class LogitBiasConfig(TrainingConfig):
    """Settings of `logit_bias`."""

    lr: float = option(0.05, "Adam learning rate of the logit bias.", gt=0)


class _WithLogitBias(nn.Module):
    def __init__(self, model: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.model = model
        self.logit_bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.logit_bias


@register_method("logit_bias", LogitBiasConfig)
def adapt_logit_bias(ctx: AdaptContext) -> AdaptResult:
    """A digital bias added to the base model's logits: no cell writes."""
    config = ctx.config
    assert isinstance(config, LogitBiasConfig)
    n_classes = int(ctx.y_train.max()) + 1
    with torch.no_grad():
        n_classes = max(n_classes, ctx.model(ctx.x_train[:1]).shape[-1])
    model = _WithLogitBias(ctx.model, n_classes)
    loop = train_loop(
        model, ctx.x_train, ctx.y_train, [ParamGroup("logit_bias", [model.logit_bias], lr=config.lr)],
        epochs=config.epochs, batch_size=config.batch_size, seed=derive_seed(ctx.seed, "batches"),
        scope=ctx.scope, progress=ctx.progress,
    )  # fmt: skip
    return AdaptResult(ctx.method, ctx.task, model, trainable_params=n_classes, train_losses=loop.step_losses)


# --- a task family: 3 classes of 4x4 bar images, tasks differing by the bars' brightness ------------------------
_LEVELS = {"bright": 1.0, "dim": 0.6, "faint": 0.4, "dimmer": 0.5, "fainter": 0.3}


def _images(name: str, split: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(derive_seed(seed, "bars", name, split))
    labels = rng.integers(0, 3, count)
    images = rng.normal(0.0, 0.1, (count, 1, 4, 4))
    for index, label in enumerate(labels):
        if label == 0:
            images[index, 0, 1, :] += _LEVELS[name]  # a horizontal bar
        elif label == 1:
            images[index, 0, :, 1] += _LEVELS[name]  # a vertical bar
        else:
            images[index, 0] += np.eye(4) * _LEVELS[name]  # a diagonal
    return images.astype(np.float32), labels.astype(np.int64)


def load_bars(request: TaskRequest) -> TaskData:
    splits = {
        split: _images(request.name, split, count, request.seed)
        for split, count in (("train", request.n_train), ("val", request.n_val), ("test", request.n_test))
    }
    return TaskData(request.name, *splits["train"], *splits["val"], *splits["test"])


register_task_family(
    TaskFamily(
        "bars",
        load_bars,
        task_names=tuple(_LEVELS),
        n_classes=3,
        input_shape=(1, 4, 4),
        description="bars of three orientations at several brightness levels",
    )  # fmt: skip
)
