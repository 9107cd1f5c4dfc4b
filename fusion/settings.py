"""Settings of every adaptation method, in one frozen, validated dataclass with LoRAFusion/LoraHub defaults.

Flat on purpose: a scenario's per-method YAML block maps onto `AdaptSettings().replace(**block)`, and an unknown or
ill-typed key fails there with the field's name. Fields prefixed `lora_` belong to the LoRA baselines, `lorahub_`
to the gradient-free search, `finetune_` to full fine-tuning; the rest are shared or the fusion trainer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from energy.configs import replace_fields

__all__ = ["AdaptSettings"]


@dataclass(frozen=True)
class AdaptSettings:
    """Hyper-parameters of `fusion.adapt`. Defaults follow the LoRAFusion and LoraHub code (lorafusion.md)."""

    # --- shared training loop ---
    epochs: int = 20
    """Passes over the training split (LoRAFusion `--epoch` 20)."""
    batch_size: int = 5
    """Minibatch size (LoRAFusion's final BBH runs: 5; its default 10)."""
    val_fraction: float = 0.05
    """Share of the few-shot data held out for validation (LoRAFusion: 5 of 100). 0 trains on everything."""
    early_stopping: bool = False
    """Stop on the validation loss and keep the best coefficients (LoRAFusion's option, off in its final runs)."""
    patience: int | None = None
    """Epochs without a new best before stopping; None = epochs // 3 (LoRAFusion)."""
    progress: bool = True
    """Show tqdm progress bars."""
    # --- fusion ---
    form: Literal["lorahub", "linear"] = "lorahub"
    """dW = s (sum c_i B_i)(sum c_i A_i) (LoRAFusion and LoraHub) or s sum c_i B_i A_i."""
    sharing: Literal["layer", "block", "global"] = "layer"
    """One coefficient vector per layer (default), per transformer block (LoRAFusion's code) or for all layers."""
    coef_lr: float = 0.01
    """Adam learning rate of the coefficients (LoRAFusion reproduce_bbh.py: 0.01; default 0.02)."""
    coef_weight_decay: float = 1e-5
    """Adam weight decay of the coefficients (LoRAFusion dorahubtmp.py)."""
    coef_l1: float = 0.0005
    """L1 term coef_l1 * mean|c| (LoRAFusion baseLearner.default_l1_regularization)."""
    magnitude_lr: float = 0.005
    """Adam learning rate of the DoRA magnitudes (LoRAFusion dorahubtmp.py)."""
    train_magnitude: bool = True
    """Train the DoRA magnitude vector m (LoRAFusion: yes). False trains only c (m stays at its init)."""
    # --- LoRA baselines (lora_program_once, lora_in_situ, lora_digital) ---
    lora_rank: int | None = None
    """LoRA rank; None = the bank's rank (16 in LoRAFusion's pool), or 8 without a bank."""
    lora_alpha: float | None = None
    """LoRA alpha; None = the bank's alpha, or 2 x rank without a bank."""
    lora_target_modules: tuple[str, ...] | None = None
    """Layers the LoRA adapts (last name components, or ("all",)); None = the bank's target modules, or q, v."""
    lora_lr: float = 1e-3
    """Adam learning rate of the LoRA matrices."""
    lora_weight_decay: float = 0.0
    insitu_write_every_steps: int = 1
    """lora_in_situ: optimizer steps between rewrites of the LoRA's changed cells (1 = after every step)."""
    # --- lorahub (gradient-free, LoraHub reproduce_bbh.py) ---
    lorahub_budget: int = 40
    """Objective evaluations of nevergrad NGOpt (LoraHub: 40 steps)."""
    lorahub_examples: int = 5
    """Few-shot examples the objective is computed on (LoraHub: 5)."""
    lorahub_bound: float = 1.5
    """Coefficient bounds +-bound (LoraHub: 1.5)."""
    lorahub_l1: float = 0.05
    """L1 term lorahub_l1 * mean|w| added to the loss (LoraHub: 0.05)."""
    lorahub_magnitude: Literal["off", "frozen"] = "off"
    """`off`: the fused layers are W0 + dW, LoraHub's composition. `frozen`: DoRA scaling with m fixed at its init
    (||W0||_row at c = 0), i.e. weight-normalised rows."""
    # --- full fine-tuning ---
    finetune_lr: float = 1e-4
    """Adam learning rate of the digital copy of the base weights."""

    def __post_init__(self) -> None:
        positive_ints = ("epochs", "batch_size", "lorahub_budget", "lorahub_examples", "insitu_write_every_steps")
        for name in positive_ints:
            _check_int(name, getattr(self, name), 1)
        for name in ("patience", "lora_rank"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        for name in ("coef_lr", "magnitude_lr", "lora_lr", "finetune_lr", "lorahub_bound"):
            _check_float(name, getattr(self, name), positive=True)
        for name in ("coef_weight_decay", "coef_l1", "lora_weight_decay", "lorahub_l1"):
            _check_float(name, getattr(self, name), positive=False)
        if self.lora_alpha is not None:
            _check_float("lora_alpha", self.lora_alpha, positive=True)
        _check_float("val_fraction", self.val_fraction, positive=False)
        if self.val_fraction >= 1:
            raise ValueError(f"AdaptSettings.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in ("early_stopping", "progress", "train_magnitude"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AdaptSettings.{name} must be true or false, got {getattr(self, name)!r}")
        for name, allowed in (
            ("form", ("lorahub", "linear")),
            ("sharing", ("layer", "block", "global")),
            ("lorahub_magnitude", ("off", "frozen")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"AdaptSettings.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        targets = self.lora_target_modules
        if targets is not None:
            if isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets) or not targets:
                raise ValueError(f"AdaptSettings.lora_target_modules must be a list of module names, got {targets!r}")
            object.__setattr__(self, "lora_target_modules", tuple(targets))

    def replace(self, **overrides: object) -> AdaptSettings:
        """A copy with some fields changed; unknown names raise ValueError listing the known ones."""
        return replace_fields(self, overrides)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"AdaptSettings.{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"AdaptSettings.{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
