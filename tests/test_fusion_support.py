"""Shared toy models and banks for the fusion tests (no tests in here)."""

from __future__ import annotations

import torch
from torch import nn

from fusion import LoRABank, fused_delta


class ToyBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.q = nn.Linear(width, width)
        self.v = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.v(torch.tanh(self.q(x)))


class ToyNet(nn.Module):
    """Two residual blocks with layers named like a transformer's (`blocks.<i>.q`, `.v`) and a `head`, whose
    weights are scaled by `head_gain` so that logits have clear margins (a teacher's labels then have a low
    cross-entropy, and a wrong model a high one)."""

    def __init__(
        self,
        d_in: int = 12,
        width: int = 16,
        n_classes: int = 4,
        n_blocks: int = 2,
        seed: int = 0,
        head_gain: float = 8.0,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Linear(d_in, width)
            self.blocks = nn.ModuleList(ToyBlock(width) for _ in range(n_blocks))
            self.head = nn.Linear(width, n_classes)
        with torch.no_grad():
            self.head.weight.mul_(head_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def random_bank(
    model: nn.Module, n_entries: int = 4, rank: int = 2, alpha: float = 4.0, seed: int = 1, magnitude: float = 0.6
) -> LoRABank:
    """A bank of random LoRAs on every q and v of `model` whose products are comparable to the weights."""
    generator = torch.Generator().manual_seed(seed)
    bank = LoRABank(rank, alpha, ["q", "v"])
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in ("q", "v")]
    for i in range(n_entries):
        lora = {}
        for name in names:
            layer = model.get_submodule(name)
            a = torch.randn(rank, layer.in_features, generator=generator) * magnitude / layer.in_features**0.5
            b = torch.randn(layer.out_features, rank, generator=generator) * magnitude / rank**0.5
            lora[name] = (a, b)
        bank.add(f"src{i}", lora)
    return bank


def teacher(model: ToyNet, bank: LoRABank, c: torch.Tensor, form: str = "lorahub") -> ToyNet:
    """A copy of `model` whose bank layers hold W0 + dW(c): the answer of a toy target task."""
    import copy

    target = copy.deepcopy(model)
    for name in bank.layer_names:
        layer = target.get_submodule(name)
        a, b = bank.stacked(name)
        with torch.no_grad():
            layer.weight += fused_delta(a, b, c, bank.scale, form)
    return target


def toy_task(
    model: ToyNet, bank: LoRABank, c: torch.Tensor, n: int, seed: int = 7
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.embed.in_features, generator=generator)
    with torch.no_grad():
        y = teacher(model, bank, c)(x).argmax(dim=1)
    return x, y
