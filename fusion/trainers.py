"""`adapt`: the one entry point that adapts a deployed model to a target task with a named method.

The scenario runner calls it per (target task, method). It copies the model and the programmed bank (the caller's
objects are never modified), splits the few-shot data into train/validation as LoRAFusion does, runs the method
with a ledger scope (phase `adapt`, the task and method names) and returns the adapted model with its trainable
parameter count, losses and this call's write pulses, energy and latency from the ledger.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
from torch import nn

import fusion.methods  # noqa: F401  (registers the built-in methods)
from crossbar import AnalogLinear, DeviceConfig, derive_seed
from energy import Ledger
from fusion.deploy import ProgrammedBank
from fusion.loop import as_tensors
from fusion.registry import AdaptContext, AdaptResult, MethodConfig, get_method

__all__ = ["adapt", "split_few_shot"]


def split_few_shot(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Shuffle with `seed` and hold out round(val_fraction * n) examples (at least 1 if val_fraction > 0) for
    validation, the rest for training (LoRAFusion: 100 shuffled examples, 5 validation, 95 train)."""
    if val_fraction <= 0:
        return x, y, None, None
    n_val = max(1, round(val_fraction * len(x)))
    if n_val >= len(x):
        raise ValueError(f"val_fraction {val_fraction} leaves no training examples out of {len(x)}")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _copy(model: nn.Module, bank: ProgrammedBank | None) -> tuple[nn.Module, ProgrammedBank | None]:
    """Deep copies of model and bank, sharing any ledger an analog layer currently holds (ledgers are not state)."""
    memo: dict[int, object] = {}
    for holder in [model, *(bank.layers.values() if bank is not None else [])]:
        modules = holder.modules() if isinstance(holder, nn.Module) else [holder.a, holder.b]
        for module in modules:
            ledger = module.__dict__.get("ledger")
            if ledger is not None:
                memo[id(ledger)] = ledger
    return copy.deepcopy((model, bank), memo)


def adapt(
    method: str,
    model: nn.Module,
    bank: ProgrammedBank | None,
    data: Sequence[object],
    config: MethodConfig | None = None,
    array_config: DeviceConfig | None = None,
    ledger: Ledger | None = None,
    task: str = "",
    seed: int = 0,
    *,
    val_fraction: float = 0.05,
    progress: bool = True,
    previous: nn.Module | None = None,
    label: str | None = None,
) -> AdaptResult:
    """Adapt `model` to the task given by `data` = (x, y) with `method` (see `fusion.method_names()`).

    `config` is the method's own config (`METHODS[method].config`, e.g. `FusionConfig(epochs=5)`); None = its
    defaults. `bank` is the programmed bank (`program_bank`), required by `fusion` and `lorahub`; the LoRA
    baselines take their default rank, alpha and target layers from it. `array_config` is the DeviceConfig for
    arrays a method writes (default: that of the model's analog layers). A shuffled `val_fraction` of the examples
    is held out for validation (LoRAFusion: 5 of 100; 0 trains on all). Everything the method does is recorded in
    `ledger` under phase `adapt`, `task` and `method`. Deterministic given `seed`. `previous`: the previous task's
    adapted model on the same device, for methods registered with `task_sequence=True` (a copy is used; the
    caller's model is not modified). `label`: the name the ledger files this adaptation under (a scenario
    entry's label, when one method appears twice); default the method's name.
    """
    registered = get_method(method)
    config = registered.config() if config is None else config
    _check_adapt(method, registered.config, config, model, bank, data, seed, val_fraction, previous)
    x, y = as_tensors(*data)
    if len(x) < 1:
        raise ValueError("data holds no examples")
    x_train, y_train, x_val, y_val = split_few_shot(x, y, val_fraction, derive_seed(seed, "split"))
    work_model, work_bank = _copy(model, bank)
    work_previous = _copy(previous, None)[0] if previous is not None else None
    for module in work_model.modules():  # exact per-cell pulses of this adaptation (arrays a method creates or
        if isinstance(module, AnalogLinear):  # rewrites from `previous` start their own tally)
            module.start_pulse_tally()
    labels = {"phase": "adapt", "task": task, "method": label or method}
    scope = ledger.scope(**labels) if ledger is not None else None
    before = (
        (ledger.cell_write_pulses(**labels), ledger.total("energy_pj", **labels), ledger.total("latency_ns", **labels))
        if ledger is not None
        else None
    )
    ctx = AdaptContext(
        method=method,
        task=task,
        seed=seed,
        model=work_model,
        bank=work_bank,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        config=config,
        array_config=array_config,
        scope=scope,
        progress=progress,
        previous=work_previous,
    )
    start = time.perf_counter()
    result = registered.train(ctx)
    result.wall_s = time.perf_counter() - start
    result.model.eval()
    if ledger is not None and before is not None:
        result.cell_write_pulses = ledger.cell_write_pulses(**labels) - before[0]
        result.adapt_energy_pj = ledger.total("energy_pj", **labels) - before[1]
        result.adapt_latency_ns = ledger.total("latency_ns", **labels) - before[2]
    return result


def _check_adapt(method: str, config_type: type, config: object, model: object, bank: object, data: object,
                 seed: object, val_fraction: object, previous: object) -> None:  # fmt: skip
    """ValueError naming the argument of `adapt` that is not what it takes."""
    if type(config) is not config_type:
        raise ValueError(f"method {method!r} takes a {config_type.__name__}, got {type(config).__name__}")
    ok = isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool) and 0 <= val_fraction < 1
    if not ok:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if bank is not None and not isinstance(bank, ProgrammedBank):
        raise ValueError(f"bank must be a ProgrammedBank (program_bank(...)) or None, got {type(bank).__name__}")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("data must be an (inputs, labels) pair")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if previous is not None and not isinstance(previous, nn.Module):
        raise ValueError(f"previous must be the previous task's adapted model or None, got {type(previous).__name__}")
