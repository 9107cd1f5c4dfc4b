"""Zero-write methods that mix the programmed bank more finely than one coefficient per LoRA (issue 28):
`fusion_rank` (per-rank coefficients), `fusion_core` (a digital core between the bank's arrays) and `fusion_gate`
(input-dependent coefficients). Their layers are in `fusion.methods.mixing`; like `fusion`, they only read the
bank's cells, so the ledger must show zero write pulses in `adapt` (tests/test_fusion_beyond.py).

Notation of the counts below: N bank entries of rank r (W = N r), L adapted layers with output widths d_out (sum
over them: sum d_out) and input width d_in, B blocks, G coefficient groups (`share`: layer -> G = L, block ->
G = B, global -> G = 1). Digital state (`fusion.digital_state`): the trained values are kept for inference
(kept = trainable) plus, with magnitudes, each layer's calibration read-out, cal = d_out + 2 d_out W + W^2 words
(`calibration.norm_storage` readout; no_b_copy: d_out + d_out W + W^2; on_demand: d_out). Adaptation holds
4 x trainable (values, gradients, Adam's two moments) + calibration at its peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from crossbar import derive_seed
from fusion.loop import LoopResult, ParamGroup
from fusion.methods.fused_methods import require_bank
from fusion.methods.mixing import MixingLayers, attach_gate, attach_mixing
from fusion.methods.training import train_method, trained_result
from fusion.params import count_trainable
from fusion.registry import AdaptContext, AdaptResult, TrainingConfig, option, register_method

__all__ = [
    "FusionCoreConfig",
    "FusionGateConfig",
    "FusionRankConfig",
    "adapt_fusion_core",
    "adapt_fusion_gate",
    "adapt_fusion_rank",
]

Share = Literal["layer", "block", "global"]
_SHARE_DOC = (
    "One set of mixing values per adapted layer, one per block shared by its layers (q and v of a block), or one "
    "for the whole model."
)
_MAGNITUDES_DOC = (
    "Train DoRA magnitude vectors as fusion has them (y = (m / ||W0 + dW||_row) * (W0 + dW) x; needs the "
    "calibration read-out, counted as digital state); false: y = (W0 + dW) x, no read-out held."
)


@dataclass(frozen=True)
class FusionRankConfig(TrainingConfig):
    """Settings of `fusion_rank`; learning rates, weight decay and L1 as `fusion` (LoRAFusion's code)."""

    coefficient_lr: float = option(0.01, "Adam learning rate of the per-rank coefficients (as fusion's).", gt=0)
    magnitude_lr: float = option(0.005, "Adam learning rate of the DoRA magnitudes (as fusion's).", gt=0)
    weight_decay: float = option(1e-5, "Adam weight decay of the coefficients (as fusion's).", ge=0)
    l1: float = option(5e-4, "L1 term l1 * mean|c| over the N r coefficients of every group (as fusion's).", ge=0)
    init: Literal["zeros", "xavier"] = option(
        "zeros",
        "`zeros`: every layer starts as W0, the zero-shot model (in the linear form the gradient at c = 0 is not "
        "zero); `xavier`: LoRAFusion's Xavier-uniform draw on an (N r, groups) matrix.",
    )
    share: Share = option("layer", _SHARE_DOC)
    magnitudes: bool = option(True, _MAGNITUDES_DOC)


@dataclass(frozen=True)
class FusionCoreConfig(TrainingConfig):
    """Settings of `fusion_core`."""

    core_lr: float = option(
        0.005, "Adam learning rate of the core M (0.002-0.01 all train on the toy tests' task; sweep it).", gt=0
    )
    magnitude_lr: float = option(0.005, "Adam learning rate of the DoRA magnitudes (as fusion's).", gt=0)
    weight_decay: float = option(0.0, "Adam weight decay of the core (pulls M towards 0, the zero-shot model).", ge=0)
    share: Share = option("layer", _SHARE_DOC)
    magnitudes: bool = option(True, _MAGNITUDES_DOC)


@dataclass(frozen=True)
class FusionGateConfig(TrainingConfig):
    """Settings of `fusion_gate`."""

    gate_lr: float = option(0.01, "Adam learning rate of the gate's G, g and amplitude.", gt=0)
    weight_decay: float = option(0.0, "Adam weight decay of the gate's values.", ge=0)
    activation: Literal["softmax", "sigmoid"] = option(
        "softmax", "`softmax` over the N entries (LoRA-Flow, MoLE) or an elementwise `sigmoid`."
    )
    pool: Literal["vector", "sequence"] = option(
        "vector",
        "`vector`: a gate per input vector (per token, as LoRA-Flow); `sequence`: one per example from the mean of "
        "its tokens (padding included: the layer sees no mask).",
    )
    start: Literal["zero_shot", "uniform"] = option(
        "zero_shot",
        "`zero_shot`: amplitude 0, the layers start as W0; `uniform`: every coefficient starts at 1/N (the mean of "
        "the bank's LoRAs).",
    )
    share: Share = option(
        "layer", "One gate per adapted layer, or one per block (LoRA-Flow's layer-level gate: q and v share it) or "
        "for the whole model, computed from each layer's own input; the layers sharing a gate need one input width.",
    )  # fmt: skip


def _result(ctx: AdaptContext, groups: list[ParamGroup], loop: LoopResult, mixed: MixingLayers,
            details: dict[str, object]) -> AdaptResult:  # fmt: skip
    coefficients = {g: m.detach().clone() for g, m in mixed.mixers.items() if isinstance(m, nn.Parameter)}
    return trained_result(ctx, loop, count_trainable(p for g in groups for p in g.params), coefficients, **details)


def _with_magnitudes(mixed: MixingLayers, groups: list[ParamGroup], train: bool, lr: float) -> list[ParamGroup]:
    if train:
        groups.append(ParamGroup("magnitude", mixed.magnitudes(), lr=lr))
    return groups


@register_method("fusion_rank", FusionRankConfig)
def adapt_fusion_rank(ctx: AdaptContext) -> AdaptResult:
    """Per-rank fusion coefficients: one digital scale per rank-one component of every bank LoRA; zero cell writes.

    Forward, per adapted layer (s = alpha / r as the bank): y = W0 x + s sum_i sum_k c_ik B_i[:, k] (A_i[k, :] x)
    = W0 x + s B_stack (c * (A_stack x)), c in R^(N r) per group; with magnitudes,
    y = (m / ||W0 + dW||_row) * (W0 x + s B_stack (c * A_stack x)) + bias, the norm from the calibration read-out.
    Trainable: G N r + sum d_out (magnitudes; G N r without). Digital state: G N r + sum d_out + sum cal with
    magnitudes, G N r without (counts in the module docstring). On the arrays: the N r outputs of A_stack scaled
    one by one before B_stack. At r = 1 it is fusion's linear form. Source: per-rank scaling vectors between
    frozen low-rank factors, VeRA (Kopiczko et al., ICLR 2024, arXiv 2310.11454), here on the bank's frozen
    LoRAs; magnitudes and training loop as LoRAFusion (GLSVLSI 2025)."""
    bank = require_bank(ctx)
    s = ctx.config
    assert isinstance(s, FusionRankConfig)
    mixed = attach_mixing(ctx.model, bank, mix="rank", sharing=s.share, init=s.init, use_magnitude=s.magnitudes,
                          seed=derive_seed(ctx.seed, "coefficients"), scope=ctx.scope)  # fmt: skip
    groups = [ParamGroup("coefficients", mixed.mixer_parameters(), lr=s.coefficient_lr,
                         weight_decay=s.weight_decay, l1=s.l1, keep_best=True)]  # fmt: skip
    groups = _with_magnitudes(mixed, groups, s.magnitudes, s.magnitude_lr)
    loop = train_method(ctx, groups)
    return _result(ctx, groups, loop, mixed, {"sharing": s.share, "magnitudes": s.magnitudes})


@register_method("fusion_core", FusionCoreConfig)
def adapt_fusion_core(ctx: AdaptContext) -> AdaptResult:
    """A trainable digital core between the bank's A and B arrays: every rank-one direction of every LoRA mixed
    into every other; zero cell writes.

    Forward, per adapted layer: y = W0 x + s B_stack (M (A_stack x)), M in R^(N r x N r) per group, zero at the
    start (the layers start as W0); with magnitudes, y = (m / ||W0 + dW||_row) * (W0 x + s B_stack M A_stack x)
    + bias, dW = s B_stack M A_stack, the norm from the calibration read-out. Trainable: G (N r)^2 + sum d_out
    (magnitudes; G (N r)^2 without). Digital state: G (N r)^2 + sum d_out + sum cal with magnitudes, G (N r)^2
    without. Inference costs (N r)^2 digital MACs per vector and layer (fusion: N r). M = diag(c) is
    `fusion_rank`. Source: LoRA-XS (Balazy et al., arXiv 2405.17604), a small trainable matrix between frozen
    low-rank factors (there r x r between SVD factors of W0, here N r x N r between the bank's stacks)."""
    bank = require_bank(ctx)
    s = ctx.config
    assert isinstance(s, FusionCoreConfig)
    mixed = attach_mixing(ctx.model, bank, mix="core", sharing=s.share, use_magnitude=s.magnitudes, scope=ctx.scope)
    groups = [ParamGroup("core", mixed.mixer_parameters(), lr=s.core_lr, weight_decay=s.weight_decay,
                         keep_best=True)]  # fmt: skip
    groups = _with_magnitudes(mixed, groups, s.magnitudes, s.magnitude_lr)
    loop = train_method(ctx, groups)
    return _result(ctx, groups, loop, mixed, {"sharing": s.share, "magnitudes": s.magnitudes})


@register_method("fusion_gate", FusionGateConfig)
def adapt_fusion_gate(ctx: AdaptContext) -> AdaptResult:
    """Input-dependent fusion coefficients from a small digital gate on each layer's input; zero cell writes.

    Forward, per adapted layer: c(x) = lambda * act(G x_bar + g) (act: softmax over the N entries or a sigmoid;
    x_bar: the input vector, or the mean of the example's tokens), y = W0 x + s sum_i c_i(x) B_i A_i x + bias =
    W0 x + s B_stack (c(x) repeated r times * A_stack x) + bias. G (N x d_in) and g start at 0 and lambda at 0
    (`start: zero_shot`, the layers start as W0) or such that c = 1/N (`start: uniform`, the mean of the bank's
    LoRAs). No magnitudes: dW changes with every input, so its row norm would cost d_out (N r)^2 MACs per
    vector. Trainable: G (N d_in + N + 1). Digital state: the same, no calibration read-out held. Inference
    costs N d_in + N r digital MACs per vector and layer. Source: LoRA-Flow (Wang et al., arXiv 2402.11455:
    w = softmax(W_gate x + b) per layer from the layer-level hidden state, k x d) and MoLE (Wu et al., ICLR
    2024: learned per-layer softmax gates over frozen LoRAs; its gate reads the LoRAs' outputs, ours the input);
    the amplitude lambda is ours, so that the gate can start at the zero-shot model."""
    bank = require_bank(ctx)
    s = ctx.config
    assert isinstance(s, FusionGateConfig)
    mixed = attach_gate(ctx.model, bank, sharing=s.share, activation=s.activation, pool=s.pool, start=s.start)
    groups = [ParamGroup("gate", mixed.mixer_parameters(), lr=s.gate_lr, weight_decay=s.weight_decay,
                         keep_best=True)]  # fmt: skip
    loop = train_method(ctx, groups)
    details = {"sharing": s.share, "activation": s.activation, "pool": s.pool, "start": s.start}
    return _result(ctx, groups, loop, mixed, details)
