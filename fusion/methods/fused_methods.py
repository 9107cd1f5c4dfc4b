"""Methods that leave every cell as it is: `zero_shot`, `fusion` (LoRAFusion) and `lorahub` (gradient-free).

`fusion` and `lorahub` run on the programmed bank through `FusedLinear`: their only trainable state is digital
(coefficients, magnitudes), so the ledger must show zero write pulses for them; the tests check it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fusion.accounting import record_digital, record_to
from fusion.deploy import ProgrammedBank, attach_fusion
from fusion.loop import ParamGroup, classification_loss, train_loop
from fusion.params import count_trainable
from fusion.registry import AdaptContext, AdaptResult, register_method
from fusion.seeding import derive_seed

__all__ = ["adapt_fusion", "adapt_lorahub", "adapt_zero_shot"]


def _require_bank(ctx: AdaptContext) -> ProgrammedBank:
    if not isinstance(ctx.bank, ProgrammedBank):
        raise ValueError(
            f"method {ctx.method!r} needs a programmed bank (fusion.program_bank(...)), got {type(ctx.bank).__name__}"
        )
    return ctx.bank


@register_method("zero_shot")
def adapt_zero_shot(ctx: AdaptContext) -> AdaptResult:
    """The base model as deployed: nothing trained, nothing written."""
    return AdaptResult(ctx.method, ctx.task, ctx.model, trainable_params=0)


@register_method("fusion")
def adapt_fusion(ctx: AdaptContext) -> AdaptResult:
    """LoRAFusion: Adam on the fusion coefficients (with L1) and the DoRA magnitudes, the bank arrays untouched."""
    bank = _require_bank(ctx)
    s = ctx.settings
    fused = attach_fusion(
        ctx.model,
        bank,
        form=s.form,
        sharing=s.sharing,
        coefficient_init="xavier",
        use_magnitude=True,
        seed=derive_seed(ctx.seed, "coefficients"),
        scope=ctx.scope,
    )
    groups = [
        ParamGroup(
            "coefficients",
            list(fused.coefficients.values()),
            lr=s.coef_lr,
            weight_decay=s.coef_weight_decay,
            l1=s.coef_l1,
            keep_best=True,
        )
    ]
    if s.train_magnitude:
        groups.append(ParamGroup("magnitude", fused.magnitudes(), lr=s.magnitude_lr))
    else:
        for magnitude in fused.magnitudes():
            magnitude.requires_grad_(False)
    loop = train_loop(
        ctx.model,
        ctx.x_train,
        ctx.y_train,
        groups,
        epochs=s.epochs,
        batch_size=s.batch_size,
        seed=derive_seed(ctx.seed, "batches"),
        x_val=ctx.x_val,
        y_val=ctx.y_val,
        early_stopping=s.early_stopping,
        patience=s.patience,
        scope=ctx.scope,
        progress=s.progress,
        desc=f"fusion {ctx.task}".strip(),
    )
    return AdaptResult(
        ctx.method,
        ctx.task,
        ctx.model,
        trainable_params=count_trainable(p for g in groups for p in g.params),
        train_losses=loop.step_losses,
        val_losses=loop.val_losses,
        epochs_run=loop.epochs_run,
        best_epoch=loop.best_epoch,
        coefficients={g: c.detach().clone() for g, c in fused.coefficients.items()},
        details={"steps": loop.steps, "form": s.form, "sharing": s.sharing},
    )


@register_method("lorahub")
def adapt_lorahub(ctx: AdaptContext) -> AdaptResult:
    """LoraHub: nevergrad NGOpt over one coefficient per bank entry shared by all layers, bounds +-1.5, objective
    cross-entropy on the first few examples + 0.05 * mean|w|, from w = 0 (LoraHub reproduce_bbh.py)."""
    import nevergrad as ng

    bank = _require_bank(ctx)
    s = ctx.settings
    fused = attach_fusion(
        ctx.model,
        bank,
        form=s.form,
        sharing="global",
        coefficient_init="zeros",
        use_magnitude=s.lorahub_magnitude == "frozen",
        scope=ctx.scope,
    )
    coefficients = fused.coefficients["global"]
    for parameter in ctx.model.parameters():
        parameter.requires_grad_(False)
    x = ctx.x_train[: s.lorahub_examples]
    y = ctx.y_train[: s.lorahub_examples]
    n = bank.n_entries
    losses: list[float] = []
    ctx.model.eval()

    def objective(weights: np.ndarray) -> float:
        with torch.no_grad():
            coefficients.copy_(torch.as_tensor(weights, dtype=torch.float32))
            loss = float(classification_loss(ctx.model(x), y))
        losses.append(loss)
        # Candidate coefficients written to SRAM; the L1 term; the optimizer's own update, estimated as N^2 MACs per
        # candidate (a CMA-ES covariance update; NGOpt's choice of optimizer is not inspected).
        record_digital(ctx.scope, "optimizer", mults=n * n + 1, adds=n * n + n, sram_writes=n)
        return loss + s.lorahub_l1 * float(np.mean(np.abs(weights)))

    parametrization = ng.p.Array(init=np.zeros(n), lower=-s.lorahub_bound, upper=s.lorahub_bound)
    parametrization.random_state = np.random.RandomState(derive_seed(ctx.seed, "lorahub"))
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=s.lorahub_budget)
    with record_to(ctx.model, ctx.scope), warnings.catch_warnings():
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
        details={"optimizer": type(optimizer).__name__, "budget": s.lorahub_budget, "examples": len(x)},
    )
