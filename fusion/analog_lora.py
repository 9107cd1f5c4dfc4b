"""A LoRA whose A and B live in analog arrays next to the analog base: the `lora_program_once` and `lora_in_situ`
baselines.

Forward: y = base(x) + s * B_array(A_array(x)), three analog MVMs. For in-situ training the layer holds a digital
shadow copy of A and B (the optimizer's targets, in SRAM): the forward value is always the arrays' output, and
a straight-through term routes dL/dA = g_u^T x and dL/dB = g^T u to the shadow (outer products in digital logic),
while the gradient to the layer input passes the arrays' transposed MVMs. After every optimizer step `write_shadow`
rewrites the cells whose quantised target changed (crossbar's `reprogram(..., previous_weight=...)`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossbar import AnalogLinear, DeviceConfig, derive_seed
from energy import LedgerScope
from fusion.accounting import module_ledger, record_digital, vectors

__all__ = ["AnalogLoRALinear"]


def _straight_through(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Zero in value; its gradient gives `weight` the digital linear layer's weight gradient and gives `inputs` none."""
    value = F.linear(inputs.detach(), weight)
    return value - value.detach()


class AnalogLoRALinear(nn.Module):
    """Analog base plus an analog LoRA (A_array: r x d_in, B_array: d_out x r), optionally with a trainable shadow."""

    def __init__(
        self,
        base: nn.Module,
        array_a: nn.Module,
        array_b: nn.Module,
        *,
        scale: float,
        name: str = "",
        shadow: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.base, self.array_a, self.array_b = base, array_a, array_b
        self.in_features, self.out_features = int(base.in_features), int(base.out_features)
        self.rank = int(array_a.out_features)
        if array_a.in_features != self.in_features or (array_b.in_features, array_b.out_features) != (
            self.rank,
            self.out_features,
        ):
            raise ValueError(
                f"AnalogLoRALinear {name!r}: arrays do not fit the {self.out_features}x{self.in_features} base"
            )
        for module in (base, array_a, array_b):
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.scale = float(scale)
        self.name = name
        self.ledger: LedgerScope | None = None
        if shadow is not None:
            self.shadow_A = nn.Parameter(shadow[0].detach().clone())
            self.shadow_B = nn.Parameter(shadow[1].detach().clone())
            self._written = [shadow[0].detach().clone(), shadow[1].detach().clone()]
        else:
            self.register_parameter("shadow_A", None)
            self.register_parameter("shadow_B", None)
            self._written = []

    @classmethod
    def program_from(
        cls,
        base: nn.Module,
        a: torch.Tensor,
        b: torch.Tensor,
        array_config: DeviceConfig,
        *,
        scale: float,
        name: str,
        seed: int,
        scope: LedgerScope | None,
        trainable: bool,
    ) -> AnalogLoRALinear:
        """Build the two arrays for (A, B), program them once (recorded in `scope`), and wrap them with `base`.

        Arrays programmed during adaptation convert over the device's fixed `adc_full_scale` even when the device
        calibrates its ADC ranges: the calibration phase runs once after deployment, and calibrating these arrays
        from adaptation data is what the calibration phase rules out."""
        if array_config.adc_range == "calibrated":
            array_config = array_config.replace(adc_range="fixed")
        array_a = AnalogLinear.from_weight(
            a.detach(), None, array_config, seed=derive_seed(seed, "lora_A", name), name=f"{name}.lora_A"
        )
        array_b = AnalogLinear.from_weight(
            b.detach(), None, array_config, seed=derive_seed(seed, "lora_B", name), name=f"{name}.lora_B"
        )
        array_a.program(scope)
        array_b.program(scope)
        return cls(base, array_a, array_b, scale=scale, name=name, shadow=(a, b) if trainable else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.array_a.mvm(x)
        if self.shadow_A is not None and torch.is_grad_enabled():
            u = u + _straight_through(x, self.shadow_A)
        v = self.array_b.mvm(u)
        if self.shadow_B is not None and torch.is_grad_enabled():
            v = v + _straight_through(u, self.shadow_B)
        out = self.base(x) + self.scale * v
        scope = module_ledger(self)
        if scope is not None:
            n = vectors(x, self.in_features)
            record_digital(scope, self.name, mults=n * self.out_features, adds=n * self.out_features)
            if self.shadow_A is not None and out.requires_grad:
                out.register_hook(self._backward_cost(n))
        return out

    def _backward_cost(self, n: int):
        def hook(grad: torch.Tensor) -> None:
            macs = self.rank * (self.in_features + self.out_features)
            # s * g per output, then the outer products g u^T and g_u x^T into the shadow gradients (read and
            # written once per batch).
            record_digital(
                module_ledger(self),
                self.name,
                mults=n * (macs + self.out_features),
                adds=n * macs,
                sram_reads=macs,
                sram_writes=macs,
            )

        return hook

    @torch.no_grad()
    def write_shadow(self, scope: LedgerScope | None) -> None:
        """Rewrite the cells whose quantised target changed since the last write (in-situ update)."""
        if self.shadow_A is None:
            raise ValueError(f"AnalogLoRALinear {self.name!r} has no shadow weights to write")
        for index, (array, shadow) in enumerate(((self.array_a, self.shadow_A), (self.array_b, self.shadow_B))):
            new = shadow.detach().clone()
            array.reprogram(new, scope, previous_weight=self._written[index])
            self._written[index] = new

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, in_situ={self.shadow_A is not None}"
