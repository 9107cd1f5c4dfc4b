"""Methods that train a fresh LoRA for the task (`lora_program_once`, `lora_in_situ`, `lora_digital`) and full
fine-tuning (`full_finetune`). All train with the analog base in the loop (its forward and transposed MVMs).

- `lora_digital`: the LoRA stays in digital logic next to the analog base (AHWA-LoRA): no writes, but digital MACs
  and SRAM reads at every inference.
- `lora_program_once`: the LoRA is trained digitally, then written once into two arrays per layer.
- `lora_in_situ`: the LoRA lives in arrays from the start; after every optimizer step the cells whose target moved
  beyond the verify tolerance are rewritten.
- `full_finetune`: a digital copy of every analog layer's weights is trained, then the base cells whose target
  moved beyond the verify tolerance are rewritten once (at the deployed per-row scale).

The two analog LoRA methods map A and B at a fixed conductance scale (`weight_bound_a`, `weight_bound_b`) and are
task-sequence methods: on a sequence of target tasks the arrays are the same physical cells, each task rewriting
what the previous one left (`AdaptContext.previous`), the first task writing freshly fabricated arrays. Their
ledger's pulses per task are the pulses of one task switch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from crossbar import AnalogLayer, DeviceConfig, derive_seed, weight_layers
from fusion.analog_lora import AnalogLoRALinear
from fusion.fused import read_weight
from fusion.loop import LoopResult, ParamGroup
from fusion.lora import LoRALinear, attach_lora, find_linear_layers, set_module
from fusion.methods.training import train_method, trained_result
from fusion.params import count_trainable
from fusion.registry import AdaptContext, AdaptResult, TrainingConfig, option, register_method

__all__ = [
    "AnalogLoRAConfig",
    "FullFinetuneConfig",
    "LoRAConfig",
    "LoRAInSituConfig",
    "adapt_full_finetune",
    "adapt_lora_digital",
    "adapt_lora_in_situ",
    "adapt_lora_program_once",
]


@dataclass(frozen=True)
class LoRAConfig(TrainingConfig):
    """A fresh LoRA for the task (peft's init), trained with Adam."""

    lr: float = option(5e-3, "Adam learning rate of the task's LoRA matrices.", gt=0)
    weight_decay: float = option(0.0, "Adam weight decay of the LoRA matrices.", ge=0)
    rank: int | None = option(None, "Rank of the task's LoRA; null = the bank's rank (8 without a bank).", ge=1)
    alpha: float | None = option(None, "LoRA scale numerator; null = the bank's alpha (2 x rank without one).", gt=0)
    target_modules: tuple[str, ...] | None = option(
        None, "Layers the LoRA adapts (last name components, or [all]); null = the bank's (q, v without a bank)."
    )


@dataclass(frozen=True)
class AnalogLoRAConfig(LoRAConfig):
    """A LoRA whose A and B live in crossbar arrays at a fixed conductance scale."""

    weight_bound_a: float | None = option(
        None,
        "Weight range of the A arrays (weight units): |A| = bound maps to g_max - g_min, larger values clip. "
        "null = 2 x peft's initial bound 1/sqrt(d_in) (kaiming-uniform, a = sqrt 5) of each layer.",
        gt=0,
    )
    weight_bound_b: float | None = option(
        None,
        "Weight range of the B arrays (weight units). null = 2 x the largest |B| of the bank's LoRAs on that layer "
        "(the range LoRAs trained on this base occupy); without a bank, each layer's weight_bound_a.",
        gt=0,
    )


@dataclass(frozen=True)
class LoRAInSituConfig(AnalogLoRAConfig):
    write_every_steps: int = option(1, "Optimizer steps between rewrites of the LoRA's changed cells.", ge=1)


@dataclass(frozen=True)
class FullFinetuneConfig(TrainingConfig):
    lr: float = option(1e-3, "Adam learning rate of the digital copy of the base weights.", gt=0)


def _lora_config(ctx: AdaptContext) -> tuple[list[str], int, float]:
    s = ctx.config
    assert isinstance(s, LoRAConfig)
    bank = ctx.bank.bank if ctx.bank is not None else None
    targets = list(s.target_modules or (bank.target_modules if bank is not None else ("q", "v")))
    rank = s.rank or (bank.rank if bank is not None else 8)
    alpha = s.alpha or (bank.alpha if bank is not None else 2.0 * rank)
    return targets, rank, alpha


BOUND_HEADROOM = 2.0
"""Default weight bound = this x the reference magnitude (A: peft's init bound; B: the bank's largest |B|): room
for training to grow the weights without clipping (designer's choice, checked by the clipped-weight count)."""


def _weight_bounds(ctx: AdaptContext, name: str, d_in: int) -> tuple[float, float]:
    """(bound_A, bound_B) of layer `name`, from the config or the defaults (`AnalogLoRAConfig`)."""
    s = ctx.config
    assert isinstance(s, AnalogLoRAConfig)
    bound_a = s.weight_bound_a or BOUND_HEADROOM / math.sqrt(d_in)
    bound_b = s.weight_bound_b
    if bound_b is None:
        bank = ctx.bank.bank if ctx.bank is not None else None
        if bank is not None and name in bank.layer_names:
            largest = max(float(entry[name][1].abs().max()) for entry in bank.entries.values())
            bound_b = BOUND_HEADROOM * largest if largest > 0 else bound_a
        else:
            bound_b = bound_a
    return float(bound_a), float(bound_b)


def _previous_layer(ctx: AdaptContext, name: str) -> AnalogLoRALinear | None:
    """The previous task's analog LoRA on layer `name` (its arrays are rewritten), or None on the first task."""
    if ctx.previous is None:
        return None
    layer = ctx.previous.get_submodule(name)
    if not isinstance(layer, AnalogLoRALinear):
        raise ValueError(
            f"method {ctx.method!r}: the previous task's layer {name!r} is a {type(layer).__name__}, not an analog "
            "LoRA (a task sequence must stay on one method)"
        )
    return layer


def _array_config(ctx: AdaptContext) -> DeviceConfig:
    if ctx.array_config is not None:
        return ctx.array_config
    for module in ctx.model.modules():
        if isinstance(module, AnalogLayer):
            return module.array_config
    raise ValueError(
        f"method {ctx.method!r} writes new arrays and needs a device config: pass array_config=DeviceConfig(...)"
    )


def _train(
    ctx: AdaptContext, params: list[nn.Parameter], lr: float, weight_decay: float, after_step=None
) -> LoopResult:
    group = ParamGroup(ctx.method, params, lr=lr, weight_decay=weight_decay, keep_best=True)
    return train_method(ctx, [group], after_step=after_step)


def _result(ctx: AdaptContext, params: list[nn.Parameter], loop: LoopResult, **details: object) -> AdaptResult:
    return trained_result(ctx, loop, count_trainable(params), **details)


def _train_digital_lora(ctx: AdaptContext) -> tuple[dict[str, LoRALinear], list[nn.Parameter], LoopResult]:
    targets, rank, alpha = _lora_config(ctx)
    layers = attach_lora(ctx.model, targets, rank, alpha, seed=derive_seed(ctx.seed, "lora_init"))
    params = [p for layer in layers.values() for p in (layer.lora_A, layer.lora_B)]
    loop = _train(ctx, params, ctx.config.lr, ctx.config.weight_decay)
    return layers, params, loop


@register_method("lora_digital", LoRAConfig)
def adapt_lora_digital(ctx: AdaptContext) -> AdaptResult:
    """A LoRA kept in digital logic beside the analog base (AHWA-LoRA): no writes, digital work per inference."""
    layers, params, loop = _train_digital_lora(ctx)
    return _result(ctx, params, loop, rank=next(iter(layers.values())).rank)


@register_method("lora_program_once", AnalogLoRAConfig, task_sequence=True)
def adapt_lora_program_once(ctx: AdaptContext) -> AdaptResult:
    """A fresh LoRA trained digitally for the task, then written into crossbar cells once (over the previous
    task's LoRA on a task sequence)."""
    layers, params, loop = _train_digital_lora(ctx)
    array_config = _array_config(ctx)
    analog_layers: list[AnalogLoRALinear] = []
    for name, lora in layers.items():
        analog = AnalogLoRALinear.program_from(
            lora.base,
            lora.lora_A.detach(),
            lora.lora_B.detach(),
            array_config,
            scale=lora.scale,
            name=name,
            seed=ctx.seed,
            scope=ctx.scope,
            trainable=False,
            weight_bounds=_weight_bounds(ctx, name, lora.in_features),
            previous=_previous_layer(ctx, name),
        )
        set_module(ctx.model, name, analog)
        analog_layers.append(analog)
    return _result(ctx, params, loop, rank=next(iter(layers.values())).rank,
                   clipped_weights=sum(layer.clipped_weights for layer in analog_layers))  # fmt: skip


@register_method("lora_in_situ", LoRAInSituConfig, task_sequence=True)
def adapt_lora_in_situ(ctx: AdaptContext) -> AdaptResult:
    """A LoRA trained on the device: its changed cells are rewritten (write-verify) during training (starting
    from the previous task's cells on a task sequence)."""
    targets, rank, alpha = _lora_config(ctx)
    array_config = _array_config(ctx)
    generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "lora_init"))
    layers: dict[str, AnalogLoRALinear] = {}
    for name in find_linear_layers(ctx.model, targets):
        base = ctx.model.get_submodule(name)
        d_in, d_out = int(base.in_features), int(base.out_features)
        a = torch.empty(rank, d_in)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # peft's LoRA init, as attach_lora
        layer = AnalogLoRALinear.program_from(
            base,
            a,
            torch.zeros(d_out, rank),
            array_config,
            scale=alpha / rank,
            name=name,
            seed=ctx.seed,
            scope=ctx.scope,
            trainable=True,
            weight_bounds=_weight_bounds(ctx, name, d_in),
            previous=_previous_layer(ctx, name),
        )
        set_module(ctx.model, name, layer)
        layers[name] = layer
    params = [p for layer in layers.values() for p in (layer.shadow_A, layer.shadow_B)]

    every = ctx.config.write_every_steps

    def write(steps_done: int) -> None:
        if steps_done % every:
            return
        for layer in layers.values():
            layer.write_shadow(ctx.scope)

    loop = _train(ctx, params, ctx.config.lr, ctx.config.weight_decay, after_step=write)
    write(0)  # the last steps' updates, if training ended between two rewrites (changed cells only)
    clipped = sum(layer.clipped_weights for layer in layers.values())
    return _result(ctx, params, loop, rank=rank, clipped_weights=clipped)


class _ShadowAnalog(nn.Module):
    """An analog layer with a trainable digital copy of its weights: forward on the array, weight gradient to the
    copy (straight-through), input gradient through the array's transposed MVM."""

    def __init__(self, analog: nn.Module, name: str) -> None:
        super().__init__()
        self.analog = analog
        self.name = name
        self.previous = _target_weight(analog)
        self.shadow = nn.Parameter(self.previous.clone())
        self.ledger = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.analog(x)
        if torch.is_grad_enabled():
            value = nn.functional.linear(x.detach(), self.shadow)
            out = out + (value - value.detach())
            scope = self.ledger if self.ledger is not None else getattr(self.analog, "ledger", None)
            if scope is not None and out.requires_grad:
                n = x.numel() // self.shadow.shape[1]
                size = self.shadow.numel()
                out.register_hook(
                    lambda grad: _record_outer(scope, self.name, n, size)  # weight-gradient outer products
                )
        return out


def _record_outer(scope, name: str, n: int, size: int) -> None:
    from fusion.accounting import record_digital

    record_digital(scope, name, mults=n * size, adds=n * size, sram_reads=size, sram_writes=size)


def _target_weight(analog: nn.Module) -> torch.Tensor:
    """The weight an analog layer was asked to hold (its programming target), else what its cells hold."""
    for attribute in ("target_weight", "weight"):
        value = getattr(analog, attribute, None)
        if isinstance(value, torch.Tensor):
            return value.detach().to(torch.float32).clone()
    return read_weight(analog).clone()


@register_method("full_finetune", FullFinetuneConfig)
def adapt_full_finetune(ctx: AdaptContext) -> AdaptResult:
    """Fine-tune every base weight digitally and rewrite the base arrays: the upper bound on writes.

    A digital copy of every analog layer's weights is trained (analog forward in the loop), then the base cells
    whose target moved beyond the verify tolerance are reprogrammed once, at the deployed per-row scale (clipping
    weights that outgrew it), so cells of unchanged weights are not touched."""
    names = [name for name, _ in weight_layers(ctx.model)]  # a bit-sliced layer as one weight matrix
    if not names:
        raise ValueError("full_finetune needs a model with analog layers (crossbar.convert_to_analog)")
    wrappers = {}
    for name in names:
        wrapper = _ShadowAnalog(ctx.model.get_submodule(name), name)
        set_module(ctx.model, name, wrapper)
        wrappers[name] = wrapper
    params = [w.shadow for w in wrappers.values()]
    loop = _train(ctx, params, ctx.config.lr, 0.0)
    for name, wrapper in wrappers.items():
        with torch.no_grad():
            wrapper.analog.reprogram(
                wrapper.shadow.detach().clone(), ctx.scope, previous_weight=wrapper.previous, keep_scale=True
            )
        set_module(ctx.model, name, wrapper.analog)
    return _result(ctx, params, loop)
