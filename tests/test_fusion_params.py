"""Trainable-parameter counting: LoRAFusion's FLAN-T5-large numbers from shapes alone, and agreement with real
models."""

from __future__ import annotations

import pytest
from test_fusion_support import ToyNet, random_bank

from fusion import (
    LayerShape,
    attach_fusion,
    attach_lora,
    coefficient_groups,
    count_trainable,
    default_block_of,
    fusion_trainable_params,
    lora_trainable_params,
    program_bank,
    t5_attention_shapes,
)


def test_lorafusion_flan_t5_large_counts() -> None:
    shapes = t5_attention_shapes()  # 24 encoder blocks (q, v) + 24 decoder blocks (self q, v + cross q, v)
    assert len(shapes) == 144
    assert all((s.d_in, s.d_out) == (1024, 1024) for s in shapes)
    groups = coefficient_groups([s.name for s in shapes], "block")
    assert len(set(groups.values())) == 48
    # 20 LoRAs x 48 blocks = 960 coefficients + 144 x 1024 magnitudes (LoRAFusion, GLSVLSI 2025).
    assert fusion_trainable_params(shapes, 20, sharing="block") == 148_416
    assert lora_trainable_params(shapes, 16) == 4_718_592
    ratio = fusion_trainable_params(shapes, 20, sharing="block") / lora_trainable_params(shapes, 16)
    assert ratio == pytest.approx(0.0315, abs=5e-4)  # the paper's "3 %"


def test_block_grouping_follows_lorafusion() -> None:
    assert default_block_of("encoder.block.3.layer.0.SelfAttention.q") == "encoder.block.3"
    assert default_block_of("decoder.block.7.layer.1.EncDecAttention.v") == "decoder.block.7"
    assert default_block_of("blocks.2.q") == "blocks.2"
    assert default_block_of("head") == "head"
    names = ["blocks.0.q", "blocks.0.v", "blocks.1.q"]
    assert coefficient_groups(names, "layer") == {n: n for n in names}
    assert set(coefficient_groups(names, "global").values()) == {"global"}
    assert coefficient_groups(names, "block", block_of=lambda n: n[-1]) == {
        "blocks.0.q": "q",
        "blocks.0.v": "v",
        "blocks.1.q": "q",
    }


@pytest.mark.parametrize("sharing", ["layer", "block", "global"])
def test_counter_matches_a_real_fused_model(sharing: str) -> None:
    model = ToyNet(n_blocks=3)
    bank = random_bank(model, n_entries=3)
    fused = attach_fusion(model, program_bank(model, bank, None), sharing=sharing)
    expected = fusion_trainable_params(bank.layer_shapes(), 3, sharing=sharing)
    assert count_trainable(p for layer in fused.layers.values() for p in layer.parameters()) == expected
    assert len(fused.coefficients) == {"layer": 6, "block": 3, "global": 1}[sharing]


def test_counter_matches_a_real_lora_model() -> None:
    model = ToyNet()
    layers = attach_lora(model, ["q", "v"], rank=3, alpha=6)
    shapes = [LayerShape(n, m.in_features, m.out_features) for n, m in layers.items()]
    assert count_trainable(p for m in layers.values() for p in (m.lora_A, m.lora_B)) == lora_trainable_params(shapes, 3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: LayerShape("x", 0, 4),
        lambda: LayerShape("", 4, 4),
        lambda: lora_trainable_params([], 0),
        lambda: fusion_trainable_params([], 0),
        lambda: coefficient_groups(["a"], "tensor"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_rejected(call) -> None:
    with pytest.raises(ValueError):
        call()
