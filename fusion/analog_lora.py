"""A LoRA whose A and B live in analog arrays next to the analog base: the `lora_program_once` and `lora_in_situ`
baselines.

Forward: y = base(x) + s * B_array(A_array(x)), three analog MVMs. For in-situ training the layer holds a digital
shadow copy of A and B (the optimizer's targets, in SRAM): the forward value is always the arrays' output, and
a straight-through term routes dL/dA = g_u^T x and dL/dB = g^T u to the shadow (outer products in digital logic),
while the gradient to the layer input passes the arrays' transposed MVMs. After every optimizer step `write_shadow`
rewrites the cells whose target moved by more than the verify tolerance since the controller last wrote them
(crossbar's `reprogram(..., previous_weight=...)`).

Mapping: both arrays use a fixed conductance scale (`weight_bounds`, weight units: |A| = bound_A and |B| = bound_B
map to g_max - g_min, larger values clip), as a designer fixes it before training. With per-row normalisation the
first update of a zero-initialised B would map to full scale and every change of a row's maximum would rewrite the
whole row, so in-situ pulse counts would measure the mapping, not the training.

Task switches: `rewrite` reuses the arrays of the previous task's layer (the same physical cells) and writes the
new task's A and B over whatever that task left (verify-first: cells already within tolerance get no pulse).
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
        weight_bounds: tuple[float, float],
        previous: AnalogLoRALinear | None = None,
    ) -> AnalogLoRALinear:
        """Program (A, B) into two arrays with fixed scales `weight_bounds` = (bound_A, bound_B) (weight units),
        recorded in `scope`, and wrap them with `base`. Without `previous` the arrays are new (fabricated, then
        written from their initial state); with it, `previous`'s arrays are rewritten in place (a task switch).

        Arrays programmed during adaptation convert over the device's fixed `adc_full_scale` even when the device
        calibrates its ADC ranges: the calibration phase runs once after deployment, and calibrating these arrays
        from adaptation data is what the calibration phase rules out."""
        if array_config.adc_range == "calibrated":
            array_config = array_config.replace(adc_range="fixed")
        if previous is None:
            array_a = AnalogLinear.from_weight(
                a.detach(), None, array_config, seed=derive_seed(seed, "lora_A", name), name=f"{name}.lora_A",
                weight_bound=weight_bounds[0],
            )  # fmt: skip
            array_b = AnalogLinear.from_weight(
                b.detach(), None, array_config, seed=derive_seed(seed, "lora_B", name), name=f"{name}.lora_B",
                weight_bound=weight_bounds[1],
            )  # fmt: skip
            for array in (array_a, array_b):
                array.start_pulse_tally()  # exact per-cell pulses of this task (crossbar.AnalogLinear.pulse_tally)
                array.program(scope)
        else:
            array_a, array_b = previous.array_a, previous.array_b
            for array in (array_a, array_b):
                array.start_pulse_tally()
            for array, weight, bound in ((array_a, a, weight_bounds[0]), (array_b, b, weight_bounds[1])):
                if tuple(weight.shape) != (array.out_features, array.in_features) or array.weight_bound != bound:
                    raise ValueError(
                        f"AnalogLoRALinear {name!r}: the previous task's array {array.name!r} "
                        f"({array.out_features}x{array.in_features}, bound {array.weight_bound}) cannot hold a "
                        f"{tuple(weight.shape)} weight with bound {bound}"
                    )
                array.reprogram(weight.detach(), scope)
        return cls(base, array_a, array_b, scale=scale, name=name, shadow=(a, b) if trainable else None)

    @property
    def clipped_weights(self) -> int:
        """Weights the latest write of A or B clipped at its bound."""
        return self.array_a.clipped_weights + self.array_b.clipped_weights

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
        """Rewrite the cells whose target moved beyond the verify tolerance since they were last written (in-situ
        update). The controller's record of what it wrote advances only for the weights it rewrote, so many small
        updates add up until they cross the tolerance."""
        if self.shadow_A is None:
            raise ValueError(f"AnalogLoRALinear {self.name!r} has no shadow weights to write")
        for index, (array, shadow) in enumerate(((self.array_a, self.shadow_A), (self.array_b, self.shadow_B))):
            new = shadow.detach().clone()
            array.reprogram(new, scope, previous_weight=self._written[index])
            self._written[index] = torch.where(array.rewritten, new, self._written[index])

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, in_situ={self.shadow_A is not None}"
