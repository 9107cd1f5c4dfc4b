"""The one training call of the gradient-based methods: `train_loop` on the context's few-shot data with the
method's `TrainingConfig` (epochs, batch size, early stopping on the validation examples, patience), and the
`AdaptResult` built from what it returns."""

from __future__ import annotations

from collections.abc import Callable

import torch

from crossbar import derive_seed
from fusion.loop import LoopResult, ParamGroup, train_loop
from fusion.registry import AdaptContext, AdaptResult, TrainingConfig

__all__ = ["train_method", "trained_result"]


def train_method(
    ctx: AdaptContext, groups: list[ParamGroup], *, after_step: Callable[[int], None] | None = None
) -> LoopResult:
    """Train `groups` with the settings of `ctx.config`. Batches are drawn from `derive_seed(ctx.seed, "batches")`;
    early stopping is off when `after_step` rewrites state after each step (in-situ LoRA: its cells are the model)."""
    s = ctx.config
    assert isinstance(s, TrainingConfig)
    return train_loop(
        ctx.model,
        ctx.x_train,
        ctx.y_train,
        groups,
        epochs=s.epochs,
        batch_size=s.batch_size,
        seed=derive_seed(ctx.seed, "batches"),
        x_val=ctx.x_val,
        y_val=ctx.y_val,
        early_stopping=s.early_stopping and after_step is None,
        patience=s.patience,
        scope=ctx.scope,
        after_step=after_step,
        progress=ctx.progress,
        desc=f"{ctx.method} {ctx.task}".strip(),
    )


def trained_result(
    ctx: AdaptContext,
    loop: LoopResult,
    trainable_params: int,
    coefficients: dict[str, torch.Tensor] | None = None,
    **details: object,
) -> AdaptResult:
    """The result of a method trained by `train_method`: its losses, epochs and steps from `loop`."""
    return AdaptResult(
        ctx.method,
        ctx.task,
        ctx.model,
        trainable_params=trainable_params,
        train_losses=loop.step_losses,
        val_losses=loop.val_losses,
        epochs_run=loop.epochs_run,
        best_epoch=loop.best_epoch,
        coefficients=coefficients if coefficients is not None else {},
        details={"steps": loop.steps, **details},
    )
