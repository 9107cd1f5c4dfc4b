"""Digital-logic costs of the fusion package's modules and optimizers, recorded in the energy ledger.

The analog arrays record their own reads and conversions (crossbar's `AnalogLinear.ledger`); `crossbar.record_all_to`
attaches one ledger scope to every recording module of a model. What happens next to
them in digital logic is recorded here, as FP32 multiplies/adds and 32-bit SRAM words, priced by the cost table:
the coefficient combine and output scaling of `FusedLinear`, a digital LoRA's MACs, gradient arithmetic, and the
optimizer's update of every trainable value. Counting conventions (assumptions, stated once here):

- one multiply-accumulate = one `digital_mult` + one `digital_add`; a divide or a square root counts as one
  multiply (a lower bound: both take several multiplier cycles in FP32 hardware);
- operands a module reads per input vector (weights, coefficients, scales) are read from SRAM once per vector:
  batch-1 inference on an edge device keeps no weights in registers across samples;
- trainable state lives in SRAM (32-bit words); an optimizer step reads and writes it once.
"""

from __future__ import annotations

import torch
from torch import nn

from energy import LedgerScope

__all__ = [
    "ADAM_ADDS_PER_PARAM",
    "ADAM_MULTS_PER_PARAM",
    "ADAM_SRAM_READS_PER_PARAM",
    "ADAM_SRAM_WRITES_PER_PARAM",
    "module_ledger",
    "record_digital",
    "record_optimizer_step",
]

# torch.optim.Adam per value (L2 weight decay form): g += wd*p (1 mult, 1 add); m = b1*m + (1-b1)*g (2, 1);
# v = b2*v + (1-b2)*g*g (3, 1); denom = sqrt(v)/sqrt(bc2) + eps (2, 1); p -= (lr/bc1) * m/denom (2, 1).
ADAM_MULTS_PER_PARAM = 10
"""Multiplies (divides and square roots counted as one each) per trainable value and Adam step, with weight decay;
one fewer without."""
ADAM_ADDS_PER_PARAM = 5
"""Adds per trainable value and Adam step, with weight decay; one fewer without."""
ADAM_SRAM_READS_PER_PARAM = 4
"""SRAM words read per value and step: the value, its gradient, the two moment estimates."""
ADAM_SRAM_WRITES_PER_PARAM = 3
"""SRAM words written per value and step: the value and the two moment estimates."""


def record_digital(
    scope: LedgerScope | None,
    layer: str,
    *,
    mults: float = 0,
    adds: float = 0,
    sram_reads: float = 0,
    sram_writes: float = 0,
) -> None:
    """Record digital arithmetic and SRAM traffic (no-op without a ledger)."""
    if scope is None:
        return
    for event, count in (
        ("digital_mult", mults),
        ("digital_add", adds),
        ("sram_read", sram_reads),
        ("sram_write", sram_writes),
    ):
        if count:
            scope.record(event, count, layer=layer)


def record_optimizer_step(
    scope: LedgerScope | None, n_params: int, *, weight_decay: bool, layer: str = "optimizer"
) -> None:
    """One Adam step over `n_params` values held in SRAM."""
    if scope is None or n_params == 0:
        return
    extra = 0 if weight_decay else 1
    record_digital(
        scope,
        layer,
        mults=n_params * (ADAM_MULTS_PER_PARAM - extra),
        adds=n_params * (ADAM_ADDS_PER_PARAM - extra),
        sram_reads=n_params * ADAM_SRAM_READS_PER_PARAM,
        sram_writes=n_params * ADAM_SRAM_WRITES_PER_PARAM,
    )


def module_ledger(module: nn.Module) -> LedgerScope | None:
    """The ledger a fusion module records to: its own `ledger` if set (`crossbar.record_all_to` sets it on every
    recording module), otherwise its base layer's, so that a scope set on the analog base alone also switches on
    the digital records."""
    own = module.__dict__.get("ledger")
    if own is not None:
        return own
    base = getattr(module, "base", None)
    return getattr(base, "ledger", None) if base is not None else None


def vectors(x: torch.Tensor, width: int) -> int:
    """Number of input vectors of width `width` in a batch of any leading shape."""
    return x.numel() // width if width else 0

