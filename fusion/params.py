"""Trainable-parameter counts from layer shapes alone, and the grouping of layers that share fusion coefficients.

LoRAFusion trains one coefficient per (bank entry, coefficient group) plus one magnitude per output row of every
adapted layer; a LoRA of rank r trains r * (d_in + d_out) values per layer. Both follow from the layer shapes, so
the paper's configuration (FLAN-T5-large, 20 LoRAs of rank 16 on q and v, one coefficient per block) can be
checked without loading a single weight: `t5_attention_shapes()` builds its 144 layer shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crossbar.selection import block_of

__all__ = [
    "CoefficientSharing",
    "LayerShape",
    "coefficient_groups",
    "count_trainable",
    "default_block_of",
    "fusion_trainable_params",
    "lora_trainable_params",
    "t5_attention_shapes",
]

CoefficientSharing = Literal["layer", "block", "global"]
"""How fusion coefficients are shared: one vector per adapted layer (default), one per transformer block (as
LoRAFusion's code), or one for the whole model (as LoraHub)."""

SHARING_MODES: tuple[str, ...] = ("layer", "block", "global")


@dataclass(frozen=True)
class LayerShape:
    """An adapted linear layer: its module name and weight shape (d_out x d_in)."""

    name: str
    d_in: int
    d_out: int

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("LayerShape.name must be a non-empty module name")
        for field in ("d_in", "d_out"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LayerShape.{field} must be a positive integer, got {value!r}")


default_block_of = block_of
"""The block a module belongs to (`crossbar.selection.block_of`): the default grouping of `sharing="block"`."""


def coefficient_groups(
    names: Sequence[str],
    sharing: CoefficientSharing = "layer",
    block_of: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Layer name -> coefficient group name, in the order of `names` (groups keep first-seen order)."""
    if sharing not in SHARING_MODES:
        raise ValueError(f"sharing must be one of {list(SHARING_MODES)}, got {sharing!r}")
    if len(set(names)) != len(names):
        raise ValueError("layer names must be unique")
    if sharing == "layer":
        return {name: name for name in names}
    if sharing == "global":
        return dict.fromkeys(names, "global")
    block_of = block_of or default_block_of
    return {name: block_of(name) for name in names}


def fusion_trainable_params(
    shapes: Iterable[LayerShape],
    n_entries: int,
    *,
    sharing: CoefficientSharing = "layer",
    block_of: Callable[[str], str] | None = None,
    magnitude: bool = True,
) -> int:
    """Coefficients (n_entries per group) plus magnitudes (d_out per layer, if trained)."""
    shapes = list(shapes)
    if isinstance(n_entries, bool) or not isinstance(n_entries, int) or n_entries < 1:
        raise ValueError(f"n_entries must be a positive integer, got {n_entries!r}")
    groups = coefficient_groups([s.name for s in shapes], sharing, block_of)
    n_coefficients = n_entries * len(set(groups.values()))
    n_magnitudes = sum(s.d_out for s in shapes) if magnitude else 0
    return n_coefficients + n_magnitudes


def lora_trainable_params(shapes: Iterable[LayerShape], rank: int) -> int:
    """A (rank x d_in) plus B (d_out x rank) per layer."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    return sum(rank * (s.d_in + s.d_out) for s in shapes)


def t5_attention_shapes(
    n_encoder_blocks: int = 24,
    n_decoder_blocks: int = 24,
    d_model: int = 1024,
    d_inner: int = 1024,
    targets: Sequence[str] = ("q", "v"),
) -> list[LayerShape]:
    """Attention projections of a T5 model named as Hugging Face names them; defaults are FLAN-T5-large
    (d_model 1024, 16 heads x d_kv 64). Encoder blocks have self-attention, decoder blocks self- and
    cross-attention (`EncDecAttention`). q, k, v map d_model -> d_inner; o maps d_inner -> d_model."""
    shapes: list[LayerShape] = []

    def add(prefix: str) -> None:
        for target in targets:
            if target not in ("q", "k", "v", "o"):
                raise ValueError(f"targets must be among q, k, v, o, got {target!r}")
            d_in, d_out = (d_inner, d_model) if target == "o" else (d_model, d_inner)
            shapes.append(LayerShape(f"{prefix}.{target}", d_in, d_out))

    for block in range(n_encoder_blocks):
        add(f"encoder.block.{block}.layer.0.SelfAttention")
    for block in range(n_decoder_blocks):
        add(f"decoder.block.{block}.layer.0.SelfAttention")
        add(f"decoder.block.{block}.layer.1.EncDecAttention")
    return shapes


def count_trainable(parameters: Iterable[torch.Tensor] | nn.Module) -> int:
    """Number of distinct trainable values: each Parameter object counted once, however often it is shared."""
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    seen: set[int] = set()
    total = 0
    for parameter in parameters:
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total
