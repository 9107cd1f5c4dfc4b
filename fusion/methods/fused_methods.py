"""Methods that leave every cell as it is: `zero_shot`, `fusion` (LoRAFusion) and `lorahub` (gradient-free).

`fusion` and `lorahub` run on the programmed bank through `FusedLinear`: their only trainable state is digital
(coefficients, magnitudes), so the ledger must show zero write pulses for them; the tests check it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from crossbar import derive_seed, record_all_to
from fusion.accounting import record_digital
from fusion.deploy import ProgrammedBank, attach_fusion
from fusion.loop import ParamGroup, classification_loss
from fusion.methods.training import train_method, trained_result
from fusion.params import count_trainable
from fusion.registry import AdaptContext, AdaptResult, MethodConfig, TrainingConfig, option, register_method

__all__ = ["FusionConfig", "LoraHubConfig", "adapt_fusion", "adapt_lorahub", "adapt_zero_shot"]

FusionForm = Literal["lorahub", "linear"]
_FORM_DOC = "`lorahub`: dW = s (sum c_i B_i)(sum c_i A_i) (LoRAFusion, LoraHub); `linear`: s sum c_i B_i A_i."


@dataclass(frozen=True)
class FusionConfig(TrainingConfig):
    """LoRAFusion's settings; defaults from its code (reproduce_bbh.py, dorahubtmp.py)."""

    coefficient_lr: float = option(0.01, "Adam learning rate of the coefficients (LoRAFusion reproduce_bbh.py).", gt=0)
    magnitude_lr: float = option(0.005, "Adam learning rate of the DoRA magnitudes (LoRAFusion dorahubtmp.py).", gt=0)
    weight_decay: float = option(1e-5, "Adam weight decay of the coefficients (LoRAFusion dorahubtmp.py).", ge=0)
    l1: float = option(
        5e-4, "L1 term l1 * mean|c| on the coefficients (LoRAFusion default_l1_regularization: 0.0005).", ge=0
    )
    form: FusionForm = option("lorahub", _FORM_DOC)
    share: Literal["layer", "block", "global"] = option(
        "layer",
        "One coefficient vector per adapted layer, one per block shared by its layers (LoRAFusion's code), or one "
        "for the whole model.",
    )
    magnitude: bool = option(True, "Train the DoRA magnitude vectors (false: coefficients only, m stays at init).")


@dataclass(frozen=True)
class LoraHubConfig(MethodConfig):
    """LoraHub's gradient-free search; defaults from its reproduce_bbh.py."""

    budget: int = option(40, "Loss evaluations the optimizer may spend (LoraHub: 40 steps).", ge=1)
    bound: float = option(1.5, "Coefficients are searched in [-bound, bound] (LoraHub: 1.5).", gt=0)
    l1: float = option(0.05, "L1 term l1 * mean|w| added to the loss (LoraHub: 0.05).", ge=0)
    examples: int | None = option(
        5, "Few-shot training examples the loss is computed on (LoraHub: 5); null = all of them.", ge=1
    )
    form: FusionForm = option("lorahub", _FORM_DOC)
    magnitude: Literal["off", "frozen"] = option(
        "off",
        "`off`: the fused layers are W0 + dW, LoraHub's composition; `frozen`: DoRA scaling with m fixed at its "
        "init ||W0||_row (weight-normalised rows).",
    )


def require_bank(ctx: AdaptContext) -> ProgrammedBank:
    if not isinstance(ctx.bank, ProgrammedBank):
        raise ValueError(
            f"method {ctx.method!r} needs a programmed bank (fusion.program_bank(...)), got {type(ctx.bank).__name__}"
        )
    return ctx.bank


@register_method("zero_shot", MethodConfig)
def adapt_zero_shot(ctx: AdaptContext) -> AdaptResult:
    """The base model alone, no adaptation: nothing trained, nothing written."""
    return AdaptResult(ctx.method, ctx.task, ctx.model, trainable_params=0)


@register_method("fusion", FusionConfig)
def adapt_fusion(ctx: AdaptContext) -> AdaptResult:
    """LoRAFusion: train per-layer fusion coefficients and DoRA magnitudes digitally; zero cell writes.

    Adam on the coefficients (with L1) and the magnitudes; the bank arrays are only read. LoRAFusion's exact
    granularity (its code: one scalar per LoRA and block, shared by the block's q and v, in the lorahub form
    (sum c B)(sum c A), plus DoRA magnitudes; Xavier init, lr 0.01 / 0.005, L1 5e-4) is `share: block` with
    the other defaults, one line of a scenario's `methods:`:

        - {name: fusion, label: lorafusion, share: block}

    Trainable: B N + sum d_out (B blocks, N entries, d_out per adapted layer); per layer (`share: layer`, the
    default) L N + sum d_out."""
    bank = require_bank(ctx)
    s = ctx.config
    assert isinstance(s, FusionConfig)
    fused = attach_fusion(
        ctx.model,
        bank,
        form=s.form,
        sharing=s.share,
        coefficient_init="xavier",
        use_magnitude=True,
        seed=derive_seed(ctx.seed, "coefficients"),
        scope=ctx.scope,
    )
    groups = [
        ParamGroup(
            "coefficients",
            list(fused.coefficients.values()),
            lr=s.coefficient_lr,
            weight_decay=s.weight_decay,
            l1=s.l1,
            keep_best=True,
        )
    ]
    if s.magnitude:
        groups.append(ParamGroup("magnitude", fused.magnitudes(), lr=s.magnitude_lr))
    else:
        for magnitude in fused.magnitudes():
            magnitude.requires_grad_(False)
    loop = train_method(ctx, groups)
    return trained_result(
        ctx, loop, count_trainable(p for g in groups for p in g.params),
        coefficients={g: c.detach().clone() for g, c in fused.coefficients.items()}, form=s.form, sharing=s.share,
    )  # fmt: skip


@register_method("lorahub", LoraHubConfig, gradient_free=True)
def adapt_lorahub(ctx: AdaptContext) -> AdaptResult:
    """LoraHub: gradient-free search (nevergrad NGOpt) of one coefficient per bank module, shared by all layers.

    Bounds +-bound, objective cross-entropy on the first few examples + l1 * mean|w|, from w = 0 (LoraHub
    reproduce_bbh.py)."""
    import nevergrad as ng

    bank = require_bank(ctx)
    s = ctx.config
    assert isinstance(s, LoraHubConfig)
    fused = attach_fusion(
        ctx.model,
        bank,
        form=s.form,
        sharing="global",
        coefficient_init="zeros",
        use_magnitude=s.magnitude == "frozen",
        scope=ctx.scope,
    )
    coefficients = fused.coefficients["global"]
    for parameter in ctx.model.parameters():
        parameter.requires_grad_(False)
    x = ctx.x_train[: s.examples]
    y = ctx.y_train[: s.examples]
    n = bank.n_entries
    losses: list[float] = []
    ctx.model.eval()

    def objective(weights: np.ndarray) -> float:
        with torch.no_grad():
            coefficients.copy_(torch.as_tensor(weights, dtype=torch.float32))
            loss = float(classification_loss(ctx.model(x), y))
        losses.append(loss)
        # Candidate coefficients written to SRAM, the L1 term, and the optimizer's own update, estimated as N^2 MACs
        # per candidate: the size of COBYLA's simplex update over N + 1 points, which is what NGOpt selects at
        # LoraHub's budget and dimensions (nevergrad 1.0: NGOpt16 -> Cobyla; `details["optimizer"]` records it).
        record_digital(ctx.scope, "optimizer", mults=n * n + 1, adds=n * n + n, sram_writes=n)
        return loss + s.l1 * float(np.mean(np.abs(weights)))

    parametrization = ng.p.Array(init=np.zeros(n), lower=-s.bound, upper=s.bound)
    parametrization.random_state = np.random.RandomState(derive_seed(ctx.seed, "lorahub") % 2**32)
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=s.budget)
    with record_all_to(ctx.model, ctx.scope), warnings.catch_warnings():
        # nevergrad 1.0 hands scipy's COBYLA a stopping radius it rejects and scipy says so on every run; the
        # default it falls back to is what nevergrad intended.
        warnings.filterwarnings("ignore", message="COBYLA: Invalid RHOEND")
        recommendation = optimizer.minimize(objective)
    with torch.no_grad():
        coefficients.copy_(torch.as_tensor(recommendation.value, dtype=torch.float32))
    return AdaptResult(
        ctx.method,
        ctx.task,
        ctx.model,
        trainable_params=n,
        train_losses=losses,
        coefficients={"global": coefficients.detach().clone()},
        details={"optimizer": _chosen_optimizer(optimizer), "budget": s.budget, "examples": len(x)},
    )


def _chosen_optimizer(optimizer: object) -> str:
    """The optimizer NGOpt delegated to (e.g. `Cobyla`), else the class name."""
    inner = getattr(optimizer, "optim", None)
    return str(getattr(inner, "name", None) or type(inner or optimizer).__name__)
