"""Tiny Hugging Face models built from configs (random weights, nothing downloaded) and real PEFT adapters made
with peft itself, shared by the test_hf_* suites. Skipped when the `hf` extra is not installed."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
)

from crossbar.hf import HFLogits, random_hf_model  # noqa: E402

VOCAB = 64
DECODER_LENGTH = 4
KINDS = ("t5", "gpt2", "bert")
TARGETS = {"t5": ["q", "v"], "gpt2": ["c_attn", "c_proj"], "bert": ["query", "value"]}
"""peft target_modules per model kind (GPT-2's c_proj matches the attention and the MLP projection)."""


def t5_config(d_model: int = 32) -> T5Config:
    return T5Config(
        d_model=d_model, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=VOCAB,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
    )  # fmt: skip


def build(kind: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """A tiny random model of `kind` in eval mode: T5ForConditionalGeneration, GPT2LMHeadModel (Conv1D layers) or
    BertForSequenceClassification (`bert_base` for the bare BertModel)."""
    if kind == "t5":
        return random_hf_model(T5ForConditionalGeneration, t5_config(**overrides), seed=seed)
    if kind == "gpt2":
        config = GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0,
            initializer_range=0.5, **overrides,
        )  # fmt: skip
        return random_hf_model(GPT2LMHeadModel, config, seed=seed)
    bert = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, vocab_size=VOCAB,
        max_position_embeddings=32, num_labels=3, **overrides,
    )  # fmt: skip
    if kind == "bert":
        return random_hf_model(BertForSequenceClassification, bert, seed=seed)
    if kind == "bert_base":
        return random_hf_model(BertModel, bert, seed=seed)
    raise ValueError(kind)


def logits_of(kind: str, model: torch.nn.Module) -> HFLogits:
    """model(x) -> logits; T5 takes encoder and decoder ids concatenated."""
    return HFLogits(model, decoder_length=DECODER_LENGTH if kind == "t5" else None)


def tokens(seed: int = 0, batch: int = 3, length: int = 10) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def outputs(kind: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(kind, model)(x)


def make_adapter(
    base: torch.nn.Module,
    directory: Path,
    targets: list[str],
    *,
    seed: int,
    rank: int = 4,
    alpha: float = 8,
    b_std: float = 0.3,
    **config: object,
) -> torch.nn.Module:
    """Create a LoRA adapter on a copy of `base` with peft, give its B factors seeded random values (peft starts
    them at zero), save it to `directory`; returns peft's merged model (merge_and_unload) in eval mode."""
    from peft import LoraConfig, get_peft_model

    fan_in_fan_out = any(type(m).__name__ == "Conv1D" for m in base.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(
            copy.deepcopy(base),
            LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, fan_in_fan_out=fan_in_fan_out, **config),
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, b_std, generator=generator)
    peft_model.save_pretrained(str(directory))
    return peft_model.merge_and_unload().eval()


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to float32 rounding, relative to the largest expected value."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * scale)
