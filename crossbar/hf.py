"""Hugging Face `transformers` models on simulated crossbars.

`convert_to_analog` itself handles Hugging Face models (`nn.Linear` everywhere, GPT-2's `Conv1D` with its weight
transposed). This module adds what only transformers models need:

- `random_hf_model`: a model of a given config with seeded random weights, built without transformers' default
  initialisation (a FLAN-T5-large-sized model would otherwise be initialised twice);
- `linear_layer_names` / `output_layer_name`: the layer names `include` / `exclude` patterns select from, and the
  LM head's name (to keep it digital, or to convert it too);
- `convert_and_program`: conversion and first programming one transformer block at a time, so the float32
  originals and programming targets of only one block are alive next to the programmed arrays;
- `HFLogits`: a wrapper whose `forward(x)` returns the logits, for the fusion training loop (which calls
  `model(x)`); it shares the wrapped model's modules under the same names, so banks and `attach_fusion` address
  layers by the Hugging Face names.

transformers is an optional dependency (`pip install -e ".[hf]"`). Nothing here imports it at import time: only
`random_hf_model` does, when called; everything else works on any `nn.Module`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from crossbar.convert import convert_to_analog, is_hf_conv1d
from crossbar.device import DeviceConfig
from crossbar.layers import AnalogLinear, BackwardMode
from crossbar.programming import ProgramReport
from crossbar.selection import block_of, literal_pattern, name_matcher
from energy import LedgerScope

__all__ = [
    "HFLogits",
    "convert_and_program",
    "is_conv1d",
    "linear_layer_names",
    "output_layer_name",
    "random_hf_model",
]


def is_conv1d(module: nn.Module) -> bool:
    """True for a Hugging Face `transformers.pytorch_utils.Conv1D` (GPT-2's linear layers: weight stored (in, out)),
    recognised without importing transformers."""
    return is_hf_conv1d(module)


def linear_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the layers `convert_to_analog` can convert (`nn.Linear`, `Conv1D`), in module order.

    Layers inside `nn.MultiheadAttention` are skipped, as `convert_to_analog` leaves them digital. Use it to check
    what `include` / `exclude` patterns select, e.g. `["*SelfAttention.q", "*SelfAttention.v"]` on a T5 model."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names: list[str] = []
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in skip):
            continue
        if isinstance(module, nn.MultiheadAttention):
            skip.append(name + ".")
        elif isinstance(module, nn.Linear) or is_conv1d(module):
            names.append(name)
    return names


def output_layer_name(model: nn.Module) -> str | None:
    """Qualified name of the model's output projection (`get_output_embeddings()`, e.g. `lm_head`, BERT's
    `cls.predictions.decoder`), or None if it has none. `exclude=[output_layer_name(model)]` converts everything
    but the LM head."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if head is None:
        return None
    for name, module in model.named_modules():
        if module is head:
            return name
    return None


def _no_init() -> contextlib.AbstractContextManager[None]:
    """transformers' context that skips weight initialisation at construction (its location moved in 5.x)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:  # very old transformers: initialise normally (slower, same result after ours)
            return contextlib.nullcontext()
    return no_init_weights()


@torch.no_grad()
def random_hf_model(
    model_class: Callable[[Any], nn.Module], config: object, *, seed: int = 0, tie_weights: bool = True
) -> nn.Module:
    """`model_class(config)` with seeded random weights, in eval mode, without transformers' own initialisation.

    Every parameter is drawn from one generator seeded with `seed`, in `named_parameters` order (tied weights once):
    linear and `Conv1D` weights N(0, 1/fan_in) (unit-scale activations through deep stacks), embeddings
    N(0, config.initializer_range) (or N(0, 1) when the config has none, as T5's init), one-dimensional weights
    (norm scales) 1, biases 0. With `tie_weights` the model ties its weights as transformers does (GPT-2's LM head
    is its token embedding; transformers 5 ties T5's LM head whatever `tie_word_embeddings` says); without, the LM
    head stays its own linear layer (FLAN-T5's checkpoints have an untied head). Building skips the default init
    (which would draw every weight twice: torch's, then the model's), so a 0.8 B-weight model costs one pass of
    random draws."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    with _no_init():
        model = model_class(config)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model_class must build a torch.nn.Module, got {type(model).__name__}")
    tie = getattr(model, "tie_weights", None)
    if tie_weights and callable(tie):
        tie()
    embedding_std = float(getattr(config, "initializer_range", 1.0))
    generator = torch.Generator().manual_seed(seed)
    owners: dict[int, nn.Module] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            owners.setdefault(id(parameter), module)
    for name, parameter in model.named_parameters():
        owner = owners[id(parameter)]
        is_weight = name.rsplit(".", 1)[-1] == "weight"
        if parameter.dim() >= 2 and (isinstance(owner, nn.Linear) or is_conv1d(owner)):
            fan_in = parameter.shape[0] if is_conv1d(owner) else parameter.shape[1]
            parameter.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        elif parameter.dim() >= 2:
            parameter.normal_(0.0, embedding_std, generator=generator)
        elif is_weight:
            parameter.fill_(1.0)
        else:
            parameter.zero_()
    return model.eval()


def convert_and_program(
    model: nn.Module,
    device: DeviceConfig | None = None,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    seed: int = 0,
    ledger: LedgerScope | None = None,
    backward_mode: BackwardMode = "exact",
) -> ProgramReport:
    """Convert `model` in place (as `convert_to_analog(..., inplace=True)`) and program each converted layer, one
    transformer block at a time; returns the summed programming report (pulses also in `ledger`).

    Same layers, names and per-layer seeds as `convert_to_analog` followed by `crossbar.program`, so the result is
    identical; only the memory profile differs: a block's float32 originals are released (if nothing else holds
    them) and its programming targets dropped before the next block is converted, so the peak is about the
    programmed state (12 bytes per weight) plus one block, not the state plus a float32 copy of the whole model."""
    selected = name_matcher(include, exclude)

    names = [name for name in linear_layer_names(model) if selected(name)]
    if include is not None and not names:
        raise ValueError(f"include patterns {list(include)} matched no nn.Linear (or Conv1D) module")
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(block_of(name), []).append(name)
    total = ProgramReport.empty()
    for group in groups.values():
        convert_to_analog(
            model, device, include=[literal_pattern(n) for n in group], seed=seed, inplace=True,
            backward_mode=backward_mode,
        )  # fmt: skip
        for name in group:
            layer = model.get_submodule(name)
            if not isinstance(layer, AnalogLinear):  # pragma: no cover - convert_to_analog just put it there
                raise RuntimeError(f"layer {name!r} was not converted")
            total = total + layer.program(ledger)
    return total


class HFLogits(nn.Module):
    """`forward(x)` = the wrapped Hugging Face model's logits for token ids `x`: what `fusion.adapt` and the
    training loop expect of a model (they call `model(x)` and take cross-entropy against the labels).

    Decoder-only and encoder-only models get `input_ids=x`. Encoder-decoder models (T5) take the encoder ids and the
    decoder input ids concatenated: `x = cat([input_ids, decoder_input_ids], dim=-1)` with `decoder_length` the
    decoder part's length; the labels are then the (batch, decoder_length) target tokens. `model_kwargs` are passed
    on every call (e.g. `use_cache=False`).

    The wrapper holds the model's top-level modules and parameters as its own, under the same names, so
    `named_modules()` gives the Hugging Face names (`encoder.block.0.layer.0.SelfAttention.q`): banks built on the
    model, `program_bank` and `attach_fusion` address the same layers through the wrapper. Swapping a top-level
    module of the wrapper swaps it in the model too.
    """

    def __init__(self, model: nn.Module, *, decoder_length: int | None = None, **model_kwargs: object) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if decoder_length is not None and (
            isinstance(decoder_length, bool) or not isinstance(decoder_length, int) or decoder_length < 1
        ):
            raise ValueError(f"decoder_length must be an int >= 1 or None, got {decoder_length!r}")
        object.__setattr__(self, "hf_model", model)  # not a child: its children are ours, under their own names
        self.decoder_length = decoder_length
        self.model_kwargs = dict(model_kwargs)
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, parameter in model.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        self.train(model.training)

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        modules = self.__dict__.get("_modules")
        if isinstance(value, nn.Module) and modules is not None and name in modules and "hf_model" in self.__dict__:
            setattr(self.hf_model, name, value)

    def train(self, mode: bool = True) -> HFLogits:
        super().train(mode)
        if "hf_model" in self.__dict__:
            self.hf_model.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point():
            raise ValueError(f"x must be a (batch, length) tensor of token ids, got {getattr(x, 'shape', x)!r}")
        if self.decoder_length is None:
            out = self.hf_model(input_ids=x, **self.model_kwargs)
        else:
            k = self.decoder_length
            if x.shape[1] <= k:
                raise ValueError(f"x has length {x.shape[1]}, needs encoder ids before the {k} decoder ids")
            out = self.hf_model(input_ids=x[:, :-k], decoder_input_ids=x[:, -k:], **self.model_kwargs)
        logits = getattr(out, "logits", None)
        if logits is None:  # a bare encoder (BertModel): its first output, the last hidden state
            logits = out.to_tuple()[0] if hasattr(out, "to_tuple") else out[0] if isinstance(out, tuple) else out
        return logits

    def extra_repr(self) -> str:
        return f"{type(self.hf_model).__name__}, decoder_length={self.decoder_length}"
