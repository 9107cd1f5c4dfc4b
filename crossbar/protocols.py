"""What the packages above `crossbar` may rely on of an analog layer, as `typing.Protocol`s.

`fusion` wraps analog layers (fused layers, LoRA next to an analog base, in-situ rewrites, full fine-tuning); it
uses only what `AnalogLayer` lists, checked with `isinstance(module, AnalogLayer)` instead of probing attributes
one by one. `AnalogLinear` implements it; a new analog layer kind that implements it works with fusion unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from crossbar.device import DeviceConfig
    from crossbar.programming import ProgramReport
    from energy import LedgerScope

__all__ = ["AnalogLayer", "Recording", "weight_layers"]


@runtime_checkable
class Recording(Protocol):
    """A module that records its work into the ledger scope held in its `ledger` attribute (None: records
    nothing). `crossbar.record_all_to` sets it on every such module of a model."""

    ledger: LedgerScope | None


@runtime_checkable
class AnalogLayer(Protocol):
    """A programmed weight matrix (out_features x in_features) on crossbar arrays, used like a linear layer."""

    in_features: int
    out_features: int
    name: str
    """Qualified name; the ledger's `layer` key."""
    array_config: DeviceConfig
    """The simulated device and peripherals of its arrays."""
    ledger: LedgerScope | None

    def mvm(self, x: torch.Tensor) -> torch.Tensor:
        """W x on the arrays, without bias, over any leading batch dims."""
        ...

    def mvm_transposed(self, d: torch.Tensor) -> torch.Tensor:
        """d W on the arrays, (..., out) -> (..., in)."""
        ...

    def programmed_weight(self) -> torch.Tensor:
        """(out, in) float32: what the cells hold, as weights, noise-free."""
        ...

    def record_reads(self, n_vectors: int, ledger: LedgerScope, *, transposed: bool = False) -> None:
        """Record the cost of `n_vectors` MVMs on the arrays without running them."""
        ...

    def reprogram(
        self, weight: torch.Tensor, ledger: LedgerScope | None = None, *, previous_weight: torch.Tensor | None = None
    ) -> ProgramReport:
        """Write a new target weight (only the cells whose target moved beyond the verify tolerance when
        `previous_weight` is given)."""
        ...


def weight_layers(model: nn.Module) -> list[tuple[str, AnalogLayer]]:
    """Every analog weight matrix of `model` as its user sees it, with its qualified name, in module order: the
    outermost modules implementing `AnalogLayer`. A bit-sliced layer (`crossbar.sliced`) is one weight matrix, its
    slices (arrays, each an `AnalogLayer` too) are not listed; `crossbar.analog_layers` lists every array."""
    found: list[tuple[str, AnalogLayer]] = []
    for name, module in model.named_modules():
        inside = any(name.startswith(f"{outer}.") for outer, _ in found)
        if not inside and isinstance(module, AnalogLayer):
            found.append((name, module))
    return found
