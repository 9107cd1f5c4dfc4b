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

from dataclasses import asdict, dataclass

import torch
from torch import nn

from energy import LedgerScope

__all__ = [
    "ADAM_ADDS_PER_PARAM",
    "DigitalState",
    "digital_state",
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


@dataclass(frozen=True)
class DigitalState:
    """Values a method holds in digital memory (datapath words, `CostTable.word_bits` each).

    - `kept`: trained values the adapted model needs digitally at inference (fusion and lorahub: coefficients and
      magnitudes; lora_digital: its A and B). Values written into arrays (lora_program_once, lora_in_situ,
      full_finetune) are not kept.
    - `calibration`: the fused layers' row-norm read-out (||W0||^2 per row, W0 A_stack^T, A_stack A_stack^T and
      B_stack), held in SRAM from deployment on: adaptation and renewal after drift read it.
    - `trainable`, `gradients`, `optimizer`: what adaptation holds at its peak: every trained value, its gradient
      and, for Adam, two moment estimates (lorahub's gradient-free search: no gradient; its optimizer's internal
      state is not counted, an undercount).
    """

    trainable: int
    gradients: int
    optimizer: int
    calibration: int
    kept: int

    @property
    def words(self) -> int:
        """Held after adaptation, for inference (and for later adaptations): kept values + calibration read-out."""
        return self.kept + self.calibration

    @property
    def adapt_words(self) -> int:
        """Peak during adaptation: trained values, gradients, optimizer state and the calibration read-out."""
        return self.trainable + self.gradients + self.optimizer + self.calibration

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "words": self.words, "adapt_words": self.adapt_words}


def digital_state(model: nn.Module, trainable: int, *, gradient_based: bool) -> DigitalState:
    """The digital state of an adapted `model` whose method trained `trainable` distinct values (Adam when
    `gradient_based`). Calibration words are read from the fused layers' `cal_*` buffers; values are kept when
    the model computes them digitally (fused layers or digital LoRA layers)."""
    from fusion.fused import FusedLinear  # fused imports this module
    from fusion.lora import LoRALinear

    calibration = 0
    digital_compute = False
    for module in model.modules():
        if isinstance(module, FusedLinear):
            digital_compute = True
            calibration += sum(b.numel() for name, b in module.named_buffers(recurse=False) if name.startswith("cal_"))
        elif isinstance(module, LoRALinear):
            digital_compute = True
    return DigitalState(
        trainable=int(trainable),
        gradients=int(trainable) if gradient_based else 0,
        optimizer=2 * int(trainable) if gradient_based else 0,
        calibration=int(calibration),
        kept=int(trainable) if digital_compute else 0,
    )
