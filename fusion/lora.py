"""Rank-r LoRA on linear layers (digital or analog base), attaching it by module name, and training one LoRA.

`LoRALinear` wraps a frozen base layer (`nn.Linear` or crossbar's `AnalogLinear`) and adds s * B A x in digital
logic, with peft's initialisation (A Kaiming-uniform, B zero, s = alpha / r). It records its MACs and SRAM reads
when a ledger is attached (the `lora_digital` method's inference cost, and the digital side of LoRA training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossbar import AnalogLayer
from energy import LedgerScope
from fusion.accounting import module_ledger, record_digital, vectors
from fusion.loop import ParamGroup, as_tensors, train_loop

__all__ = [
    "LoRALinear",
    "attach_lora",
    "detach_lora",
    "extract_lora",
    "find_linear_layers",
    "is_linear",
    "lora_layers",
    "set_module",
    "train_lora",
]


def is_linear(module: nn.Module) -> bool:
    """A layer LoRA and fusion can wrap: `nn.Linear` or an analog layer (`crossbar.AnalogLayer`)."""
    return isinstance(module, (nn.Linear, AnalogLayer))


def _is_wrapper(module: nn.Module) -> bool:
    return hasattr(module, "base") and is_linear(module.base) and not is_linear(module)


def find_linear_layers(
    model: nn.Module, target_modules: Sequence[str] | str = ("q", "v"), *, exclude: Sequence[str] = ("head",)
) -> list[str]:
    """Names of the linear layers of `model` to adapt, in module order.

    A layer matches when the last component of its name is in `target_modules`; `"all"` (or `["all"]`) matches
    every linear layer whose last name component is not in `exclude` (by default the classifier `head`). Layers
    already wrapped by a LoRA or fused layer are found under the wrapper's name.
    """
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    target_modules = list(target_modules)
    if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
        raise ValueError(f"target_modules must be a non-empty list of module names, got {target_modules!r}")
    match_all = target_modules == ["all"]
    if "all" in target_modules and not match_all:
        raise ValueError(f"target_modules: 'all' cannot be combined with other names, got {target_modules!r}")
    names: list[str] = []
    candidates: list[str] = []
    skip_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in skip_prefixes):
            continue
        wrapped = _is_wrapper(module)
        if not (wrapped or is_linear(module)) or not name:
            continue
        skip_prefixes.append(name + ".")
        candidates.append(name)
        last = name.rsplit(".", 1)[-1]
        if (match_all and last not in exclude) or (not match_all and last in target_modules):
            names.append(name)
    if not names:
        raise ValueError(
            f"target_modules {target_modules!r} match no linear layer (exclude={list(exclude)!r}); "
            f"linear layers: {candidates[:12]}{' ...' if len(candidates) > 12 else ''}"
        )
    return names


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _features(layer: nn.Module) -> tuple[int, int]:
    return int(layer.in_features), int(layer.out_features)


class LoRALinear(nn.Module):
    """y = base(x) + s * B (A x), with the base frozen and A (r x d_in), B (d_out x r) trainable, s = alpha / r."""

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        *,
        name: str = "",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not is_linear(base):
            raise ValueError(f"base must be nn.Linear or an analog linear layer, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
        self.in_features, self.out_features = _features(base)
        if rank > min(self.in_features, self.out_features):
            raise ValueError(f"rank {rank} exceeds the layer's smaller side ({self.in_features}x{self.out_features})")
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = self.alpha / rank
        self.name = name
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank))
        # peft's LoRA init: A like nn.Linear's default (Kaiming-uniform, a = sqrt(5)), B zero so that the
        # adapted layer starts equal to its base.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        self.ledger = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)
        scope = module_ledger(self)
        if scope is not None:
            n = vectors(x, self.in_features)
            macs = self.rank * (self.in_features + self.out_features)
            # A x and B u as MACs, then s * (.) and the add into the base output; A and B read per vector.
            work = n * (macs + self.out_features)
            record_digital(scope, self.name, mults=work, adds=work, sram_reads=n * macs)
            if out.requires_grad:
                out.register_hook(self._backward_cost(n))
        return out

    def _backward_cost(self, n: int):
        def hook(grad: torch.Tensor) -> None:
            scope = module_ledger(self)
            macs = self.rank * (self.in_features + self.out_features)
            # s * g; B^T g and A^T (B^T g) for the input gradient; the outer products g u^T and (B^T g) x^T
            # for the weight gradients: 2 x the forward MACs per vector. A and B are read again per vector, the
            # gradient accumulators once per batch (read and write).
            record_digital(
                scope,
                self.name,
                mults=n * (2 * macs + self.out_features),
                adds=n * 2 * macs,
                sram_reads=n * macs + macs,
                sram_writes=macs,
            )

        return hook

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}"


def attach_lora(
    model: nn.Module,
    target_modules: Sequence[str] | str = ("q", "v"),
    rank: int = 16,
    alpha: float = 32.0,
    *,
    exclude: Sequence[str] = ("head",),
    seed: int = 0,
) -> dict[str, LoRALinear]:
    """Wrap the matching linear layers of `model` (in place) with fresh LoRAs; returns them by module name.

    Matching is `find_linear_layers`'s. A layer already wrapped by a LoRA is an error. The A matrices are drawn from
    one generator seeded with `seed`, in module order, so the same call gives the same LoRAs.
    """
    generator = torch.Generator().manual_seed(seed)
    attached: dict[str, LoRALinear] = {}
    for name in find_linear_layers(model, target_modules, exclude=exclude):
        module = model.get_submodule(name)
        if not is_linear(module):
            raise ValueError(f"layer {name!r} is already wrapped ({type(module).__name__}); detach it first")
        lora = LoRALinear(module, rank, alpha, name=name, generator=generator)
        set_module(model, name, lora)
        attached[name] = lora
    return attached


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every `LoRALinear` of `model` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def detach_lora(model: nn.Module) -> nn.Module:
    """Put the base layers back in place of every `LoRALinear` (in place); returns `model`."""
    for name, lora in lora_layers(model).items():
        set_module(model, name, lora.base)
    return model


def extract_lora(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Copies of every attached LoRA's (A, B) by layer name: what a bank entry stores."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layers attached")
    return {name: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for name, m in layers.items()}


def train_lora(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    ledger: LedgerScope | None = None,
    progress: bool = True,
    desc: str = "lora",
) -> list[float]:
    """Train the attached LoRAs of `model` (Adam, cross-entropy, seeded batch order) with everything else frozen;
    returns the training loss of every step. `ledger` (a LedgerScope) records the work if given."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layers attached: call attach_lora first")
    params = [p for m in layers.values() for p in (m.lora_A, m.lora_B)]
    group = ParamGroup("lora", params, lr=lr, weight_decay=weight_decay)
    x, y = as_tensors(x, y)
    result = train_loop(
        model,
        x,
        y,
        [group],
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        scope=ledger,
        progress=progress,
        desc=desc,
    )
    return result.step_losses
