"""Hugging Face models on the crossbar: convert_to_analog on T5, GPT-2 (Conv1D) and BERT built from configs;
ideal preset == digital model, include/exclude by name pattern, Conv1D orientation, the default preset's error,
block-by-block conversion, the HFLogits wrapper and random_hf_model."""

from __future__ import annotations

import copy

import pytest
import torch
from test_hf_support import KINDS, build, close, logits_of, outputs, tokens

from crossbar import AnalogLinear, analog_layers, convert_to_analog, device_preset, program
from crossbar.hf import (
    HFLogits,
    convert_and_program,
    is_conv1d,
    linear_layer_names,
    output_layer_name,
    random_hf_model,
)
from energy import Ledger

IDEAL = device_preset("ideal")


def _converted(model: torch.nn.Module, device=IDEAL, **kwargs) -> torch.nn.Module:
    analog = convert_to_analog(model, device, **kwargs)
    program(analog)
    return analog


@pytest.mark.parametrize("kind", KINDS)
def test_ideal_conversion_equals_digital_model(kind):
    model = build(kind, seed=1)
    analog = _converted(model)
    names = linear_layer_names(model)
    assert [name for name, _ in analog_layers(analog)] == names  # every nn.Linear / Conv1D, nothing else
    x = tokens(seed=2)
    expected = outputs(kind, model, x)
    close(outputs(kind, analog, x), expected)
    assert not any(isinstance(m, AnalogLinear) for m in model.modules())  # the original is untouched


def test_gpt2_conv1d_layers_are_converted_with_their_weight_transposed():
    model = build("gpt2", seed=3)
    conv_names = [name for name, m in model.named_modules() if is_conv1d(m)]
    assert conv_names and "transformer.h.0.attn.c_attn" in conv_names
    analog = _converted(model)
    for name in conv_names:
        conv, layer = model.get_submodule(name), analog.get_submodule(name)
        nx, nf = conv.weight.shape  # Conv1D stores (in, out)
        assert (layer.in_features, layer.out_features) == (nx, nf)
        torch.testing.assert_close(layer.programmed_weight(), conv.weight.detach().T, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.bias.detach(), conv.bias.detach())
        x = torch.randn(5, nx, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            close(layer(x), conv(x))
    # c_attn is 32 -> 96: a transposed weight would not even fit the input
    assert analog.get_submodule("transformer.h.0.attn.c_attn").out_features == 96


def test_a_lone_conv1d_converts_under_the_empty_name():
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(7, 5)  # nf=7 outputs, nx=5 inputs
    torch.nn.init.normal_(conv.bias, generator=torch.Generator().manual_seed(1))
    layer = convert_to_analog(conv, IDEAL)
    assert isinstance(layer, AnalogLinear) and layer.name == "" and (layer.in_features, layer.out_features) == (5, 7)
    layer.program()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        close(layer(x), conv(x))


def _t5_attention(stack: str, block: int, attention: str, proj: str) -> str:
    layer = 0 if attention == "SelfAttention" else 1
    return f"{stack}.block.{block}.layer.{layer}.{attention}.{proj}"


T5_SELF_QV = [
    _t5_attention(stack, block, "SelfAttention", proj) for stack in ("encoder", "decoder") for block in (0, 1)
    for proj in ("q", "v")
]  # fmt: skip
T5_CROSS_QV = [_t5_attention("decoder", block, "EncDecAttention", proj) for block in (0, 1) for proj in ("q", "v")]


@pytest.mark.parametrize(
    ("kind", "include", "exclude", "expected"),
    [
        ("t5", ["*SelfAttention.q", "*SelfAttention.v"], None, T5_SELF_QV),
        ("t5", ["*.q", "*.v"], None, T5_SELF_QV + T5_CROSS_QV),
        ("t5", None, ["lm_head"], "all but lm_head"),
        ("gpt2", ["*attn.c_attn"], None, ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]),
        (
            "bert",
            ["*attention.self.query", "*attention.self.value"],
            ["*layer.1.*"],
            ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value"],
        ),
    ],
)
def test_include_exclude_select_modules_by_name(kind, include, exclude, expected):
    model = build(kind, seed=4)
    if expected == "all but lm_head":
        expected = [n for n in linear_layer_names(model) if n != "lm_head"]
        assert len(expected) == len(linear_layer_names(model)) - 1 > 20
    analog = convert_to_analog(model, IDEAL, include=include, exclude=exclude)
    assert sorted(name for name, _ in analog_layers(analog)) == sorted(expected)
    # the rest stays digital and the converted model still runs, equal to the digital one on the ideal preset
    for name in linear_layer_names(model):
        if name not in expected:
            assert not isinstance(analog.get_submodule(name), AnalogLinear)
    program(analog)
    x = tokens(seed=5)
    close(outputs(kind, analog, x), outputs(kind, model, x))


def test_output_layer_name_finds_the_lm_head():
    assert output_layer_name(build("t5")) == "lm_head"
    assert output_layer_name(build("gpt2")) == "lm_head"
    assert output_layer_name(build("bert")) is None  # a classifier head is not an output embedding
    gpt2 = build("gpt2")
    analog = convert_to_analog(gpt2, IDEAL, exclude=[output_layer_name(gpt2)])
    assert isinstance(analog.lm_head, torch.nn.Linear) and isinstance(analog.transformer.h[0].mlp.c_fc, AnalogLinear)


def test_include_matching_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        convert_to_analog(build("t5"), IDEAL, include=["*.query"])
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        convert_and_program(build("t5"), IDEAL, include=["*.query"])


@pytest.mark.parametrize("kind", KINDS)
def test_default_preset_outputs_differ_but_stay_close(kind):
    """Seeded default preset (5-bit cells, programming noise, 1 % read noise, 8-bit DAC/ADC): whole-model outputs
    move by a bounded relative error, and the same seed gives the same outputs."""
    model = build(kind, seed=6)
    x = tokens(seed=7)
    expected = outputs(kind, model, x)
    first = outputs(kind, _converted(model, device_preset(), seed=11), x)
    again = outputs(kind, _converted(model, device_preset(), seed=11), x)
    other = outputs(kind, _converted(model, device_preset(), seed=12), x)
    relative = float((first - expected).norm() / expected.norm())
    assert 0.01 < relative < 0.4, relative
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_convert_and_program_equals_convert_then_program():
    model = build("t5", seed=8)
    device = device_preset()
    whole = convert_to_analog(model, device, exclude=["lm_head"], seed=3)
    ledger_whole, ledger_blocks = Ledger(), Ledger()
    report_whole = program(whole, ledger_whole.scope(phase="deploy_base"))
    blocks = copy.deepcopy(model)
    report_blocks = convert_and_program(
        blocks, device, exclude=["lm_head"], seed=3, ledger=ledger_blocks.scope(phase="deploy_base")
    )
    assert report_blocks == report_whole
    assert ledger_blocks.cell_write_pulses() == ledger_whole.cell_write_pulses() > 0
    for (name, a), (name_b, b) in zip(analog_layers(whole), analog_layers(blocks), strict=True):
        assert name == name_b and a.programmed and b.programmed
        torch.testing.assert_close(a.programmed_weight(), b.programmed_weight(), rtol=0, atol=0)
    assert isinstance(blocks.lm_head, torch.nn.Linear)


def test_hf_logits_shares_modules_under_the_hugging_face_names():
    model = build("t5", seed=9)
    wrapped = HFLogits(model, decoder_length=4)
    assert [n for n, _ in wrapped.named_modules()][1:] == [n for n, _ in model.named_modules()][1:]
    assert {n for n, _ in wrapped.named_parameters()} == {n for n, _ in model.named_parameters()}
    x = tokens(seed=1, length=9)
    with torch.no_grad():
        direct = model(input_ids=x[:, :5], decoder_input_ids=x[:, 5:]).logits
        torch.testing.assert_close(wrapped(x), direct, rtol=0, atol=0)
    # swaps through the wrapper reach the model, at any depth, and in a deep copy stay consistent
    head = torch.nn.Linear(32, 64)
    wrapped.lm_head = head
    assert model.lm_head is head
    copied = copy.deepcopy(wrapped)
    assert copied.hf_model.encoder is copied.encoder and copied.hf_model.encoder is not model.encoder
    wrapped.train()
    assert model.training and model.encoder.training
    wrapped.eval()
    assert not model.training


def test_hf_logits_bad_input():
    with pytest.raises(ValueError, match="decoder_length"):
        HFLogits(build("t5"), decoder_length=0)
    with pytest.raises(ValueError, match="token ids"):
        HFLogits(build("gpt2"))(torch.randn(2, 5))
    with pytest.raises(ValueError, match="needs encoder ids"):
        HFLogits(build("t5"), decoder_length=4)(tokens(length=4))


def test_random_hf_model_is_seeded_and_keeps_ties():
    from transformers import GPT2LMHeadModel

    a, b, c = build("gpt2", seed=1), build("gpt2", seed=1), build("gpt2", seed=2)
    for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb), name
        if pa.dim() >= 2:
            assert not torch.equal(pa, pc), name
    assert a.lm_head.weight is a.transformer.wte.weight  # tied as transformers ties them
    assert torch.equal(a.transformer.h[0].ln_1.weight, torch.ones(32)) and not a.training
    weight = a.transformer.h[0].mlp.c_fc.weight  # Conv1D (in=32, out=128): std 1/sqrt(32)
    assert abs(float(weight.detach().std()) - 32**-0.5) < 0.02
    with pytest.raises(ValueError, match="seed"):
        random_hf_model(GPT2LMHeadModel, a.config, seed=-1)


def test_logits_wrapper_trains_through_an_analog_model():
    """Gradients reach the input embeddings through converted layers (the path fusion training uses)."""
    model = build("bert", seed=2)
    analog = _converted(model)
    wrapped = logits_of("bert", analog)
    embeddings = analog.bert.embeddings.word_embeddings.weight
    embeddings.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(wrapped(tokens(seed=3)), torch.tensor([0, 1, 2]))
    loss.backward()
    assert embeddings.grad is not None and float(embeddings.grad.abs().sum()) > 0
