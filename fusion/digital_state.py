"""Every method's digital state: the values it holds in digital memory, counted from the adapted model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from fusion.fused import FusedLinear
from fusion.lora import LoRALinear

__all__ = ["DigitalState", "digital_state"]


@dataclass(frozen=True)
class DigitalState:
    """Values a method holds in digital memory (datapath words, `CostTable.word_bits` each).

    - `kept`: trained values the adapted model needs digitally at inference (fusion and lorahub: coefficients and
      magnitudes; lora_digital: its A and B). Values written into arrays (lora_program_once, lora_in_situ,
      full_finetune) are not kept.
    - `calibration`: the part of the fused layers' row-norm read-out that SRAM keeps (their `cal_*` buffers:
      `calibration.norm_storage` readout = ||W0||^2 per row, W0 A_stack^T, A_stack A_stack^T and B_stack;
      no_b_copy = without B_stack; on_demand = ||W0||^2 only, the rest read from the arrays when c changes), held
      from deployment on: adaptation and renewal after drift read it.
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
