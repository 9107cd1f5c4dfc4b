"""The one gradient training loop every trainer of this package uses (fusion, the LoRA baselines, fine-tuning).

Adam on named parameter groups, cross-entropy, an optional L1 term per group, seeded batch order, optional early
stopping on a validation split that keeps the best values of chosen groups (LoRAFusion keeps its best
coefficients, the magnitudes are those of the last step), and a hook after every optimizer step (used by in-situ
training to rewrite cells). With a ledger scope, the forward and backward passes record their analog and digital
work through the modules, and every optimizer step records its arithmetic and SRAM traffic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from crossbar import deferred_mvm_records, record_all_to
from energy import LedgerScope
from fusion.accounting import record_digital, record_optimizer_step

__all__ = ["LoopResult", "ParamGroup", "as_tensors", "classification_loss", "evaluate_loss", "train_loop"]


@dataclass
class ParamGroup:
    """Parameters trained with one Adam setting."""

    name: str
    params: list[nn.Parameter]
    lr: float
    weight_decay: float = 0.0
    l1: float = 0.0
    """Coefficient of an L1 term `l1 * mean(|p|)` over all values of the group (LoRAFusion: 0.0005 on c)."""
    keep_best: bool = False
    """With early stopping, restore this group's values from the best validation epoch."""

    def __post_init__(self) -> None:
        unique: dict[int, nn.Parameter] = {}
        for parameter in self.params:
            unique.setdefault(id(parameter), parameter)
        self.params = list(unique.values())
        for label, value in (("lr", self.lr), ("weight_decay", self.weight_decay), ("l1", self.l1)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"ParamGroup {self.name!r}: {label} must be finite and >= 0, got {value!r}")

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


@dataclass
class LoopResult:
    step_losses: list[float] = field(default_factory=list)
    """Training cross-entropy of every optimizer step (the minibatch mean, without the L1 term)."""
    epoch_losses: list[float] = field(default_factory=list)
    """Mean training cross-entropy per epoch."""
    val_losses: list[float] = field(default_factory=list)
    """Validation cross-entropy per epoch (only with early stopping)."""
    best_epoch: int | None = None
    epochs_run: int = 0
    steps: int = 0


def as_tensors(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The project's one conversion of (inputs, labels): floating-point inputs (images, features) as float32,
    integer inputs (token ids) as int64, labels as int64; raises if their lengths differ."""
    x_tensor = torch.as_tensor(x)
    x_tensor = x_tensor.to(torch.float32) if x_tensor.is_floating_point() else x_tensor.to(torch.int64)
    y_tensor = torch.as_tensor(y, dtype=torch.int64)
    if len(x_tensor) != len(y_tensor):
        raise ValueError(f"data: {len(x_tensor)} inputs but {len(y_tensor)} labels")
    return x_tensor, y_tensor


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; logits (..., classes) with integer targets of the leading shape."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _record_loss_ops(scope: LedgerScope | None, logits: torch.Tensor, backward: bool) -> None:
    # Softmax cross-entropy in digital logic: an exp (counted as a multiply), a sum and a divide per logit,
    # and the same again for its gradient.
    n = logits.numel()
    factor = 2 if backward else 1
    record_digital(scope, "loss", mults=2 * n * factor, adds=n * factor)


@contextmanager
def _only_trainable(model: nn.Module, keep: Sequence[nn.Parameter]) -> Iterator[None]:
    """Switch off gradients of every parameter not being trained (no wasted backward work), restore after."""
    keep_ids = {id(p) for p in keep}
    switched = [p for p in model.parameters() if p.requires_grad and id(p) not in keep_ids]
    off = [p for p in keep if not p.requires_grad]
    for parameter in switched:
        parameter.requires_grad_(False)
    for parameter in off:
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for parameter in switched:
            parameter.requires_grad_(True)
        for parameter in off:
            parameter.requires_grad_(False)


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Mean cross-entropy of `model` on (x, y), without gradients (records whatever ledger the model holds)."""
    total = 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        total += float(classification_loss(logits, y[start : start + batch_size])) * len(logits)
    return total / len(x)


def train_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    groups: Sequence[ParamGroup],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    early_stopping: bool = False,
    patience: int | None = None,
    warmup: int | None = None,
    scope: LedgerScope | None = None,
    after_step: Callable[[int], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> LoopResult:
    """Train `groups` of `model` on (x, y); every other parameter is held fixed during the loop.

    Early stopping (LoRAFusion's rule): the validation loss is measured after every epoch; after `warmup` epochs
    (default epochs // 5) training stops once `patience` epochs (default epochs // 3, at least 1) passed without a
    new best, and groups with `keep_best` get their best-epoch values back.
    """
    groups = [g for g in groups if g.params]
    parameters = [p for g in groups for p in g.params]
    _check_loop(x, y, parameters, epochs=epochs, batch_size=batch_size, early_stopping=early_stopping, x_val=x_val,
                y_val=y_val)  # fmt: skip
    stopper = _EarlyStopping(
        patience=max(1, epochs // 3) if patience is None else patience,
        warmup=epochs // 5 if warmup is None else warmup,
        kept=[p for g in groups if g.keep_best for p in g.params],
    )
    # foreach: one call per group and Adam stage instead of a Python loop over the (many small) parameters; on the
    # CPU it runs the same per-tensor kernels with the same scalars, so the values are those of the default loop.
    optimizer = torch.optim.Adam(
        [{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay} for g in groups], foreach=True
    )
    generator = torch.Generator().manual_seed(seed)
    result = LoopResult()
    steps_per_epoch = math.ceil(len(x) / batch_size)
    was_training = model.training
    model.train()
    with (
        _only_trainable(model, parameters),
        record_all_to(model, scope),
        deferred_mvm_records(model),  # one ledger record per array and direction for the loop, not per step
        tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", disable=not progress, leave=False) as bar,
    ):
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            weighted = 0.0
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                loss_value = _train_step(model, x[batch], y[batch], groups, optimizer, scope)
                result.steps += 1
                if after_step is not None:
                    after_step(result.steps)
                result.step_losses.append(loss_value)
                weighted += loss_value * len(batch)
                bar.update()
            result.epoch_losses.append(weighted / len(x))
            result.epochs_run = epoch + 1
            bar.set_postfix(loss=f"{result.epoch_losses[-1]:.4f}")
            if early_stopping:
                model.eval()
                val_loss = evaluate_loss(model, x_val, y_val)  # type: ignore[arg-type]
                model.train()
                if stopper.should_stop(epoch, val_loss, result):
                    break
    if early_stopping:
        stopper.restore_best()
    model.train(was_training)
    return result


def _check_loop(x: torch.Tensor, y: torch.Tensor, parameters: list[nn.Parameter], *, epochs: int, batch_size: int,
                early_stopping: bool, x_val: torch.Tensor | None, y_val: torch.Tensor | None) -> None:  # fmt: skip
    """ValueError for a loop that cannot run: no epochs or batch, no examples, nothing to train, no validation split
    for early stopping."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need a non-empty training set with one label per input, got {len(x)} and {len(y)}")
    if not parameters:
        raise ValueError("nothing to train: every parameter group is empty")
    if early_stopping and (x_val is None or y_val is None or len(x_val) == 0):
        raise ValueError("early_stopping needs a non-empty validation split (x_val, y_val)")


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: Sequence[ParamGroup],
                optimizer: torch.optim.Optimizer, scope: LedgerScope | None) -> float:  # fmt: skip
    """One optimizer step on a batch: the loss (plus each group's L1 penalty), backward, Adam; the digital work of
    loss and optimizer recorded in `scope`. Returns the batch's loss (without the penalties)."""
    logits = model(x)
    loss = classification_loss(logits, y)
    _record_loss_ops(scope, logits, backward=True)
    objective = loss
    for group in groups:
        if group.l1:
            flat = torch.cat([p.reshape(-1) for p in group.params])
            objective = objective + group.l1 * flat.abs().mean()
            # |p| and its sum, and sign(p) * l1 / n for the gradient.
            record_digital(scope, "optimizer", mults=flat.numel() + 1, adds=flat.numel())
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    for group in groups:
        record_optimizer_step(scope, group.numel, weight_decay=group.weight_decay > 0)
    return float(loss.detach())


@dataclass
class _EarlyStopping:
    """LoRAFusion's rule: stop once `patience` epochs after `warmup` passed without a new best validation loss;
    the parameters in `kept` get their best-epoch values back."""

    patience: int
    warmup: int
    kept: list[nn.Parameter]
    best_loss: float = math.inf
    best_values: list[torch.Tensor] | None = None

    def should_stop(self, epoch: int, val_loss: float, result: LoopResult) -> bool:
        result.val_losses.append(val_loss)
        if val_loss < self.best_loss:
            self.best_loss = val_loss
            result.best_epoch = epoch
            self.best_values = [p.detach().clone() for p in self.kept]
            return False
        return epoch + 1 > self.warmup and epoch - (result.best_epoch or 0) >= self.patience

    def restore_best(self) -> None:
        if self.best_values is not None:
            with torch.no_grad():
                for parameter, value in zip(self.kept, self.best_values):
                    parameter.copy_(value)
