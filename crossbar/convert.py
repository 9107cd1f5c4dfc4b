"""`convert_to_analog`: swap a model's linear and convolution layers for their crossbar versions by name."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from crossbar.conv import AnalogConv2d
from crossbar.device import DeviceConfig
from crossbar.layers import AnalogLinear, BackwardMode, layer_seed
from crossbar.selection import name_matcher
from crossbar.sliced import SlicedAnalogLinear

__all__ = ["convert_to_analog", "is_hf_conv1d"]


def convert_to_analog(
    model: nn.Module,
    array_config: DeviceConfig | None = None,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    seed: int = 0,
    inplace: bool = False,
    backward_mode: BackwardMode = "exact",
) -> nn.Module:
    """Swap every `nn.Linear` (and `nn.Conv2d`) whose qualified name matches `include` (fnmatch patterns; None =
    all) and none of `exclude` for an unprogrammed `AnalogLinear` (`AnalogConv2d`) with its own seed
    `layer_seed(seed, name)` and `name` set to the qualified name. Returns a converted copy (or `model` itself
    with `inplace`). Linear layers inside `nn.MultiheadAttention` are left digital: that module reads their
    weights directly instead of calling them.
    A model that is itself an `nn.Linear` is converted under the name "". Hugging Face GPT-2-style `Conv1D`
    layers (a linear layer storing its weight as (in, out)) are converted like `nn.Linear`, weight transposed.
    A device config with `weight_bits` set gives `SlicedAnalogLinear`s (bit-sliced weights, `crossbar.sliced`)."""
    selected = name_matcher(include, exclude)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)

    sliced = array_config is not None and array_config.weight_bits is not None

    def analog(name: str, linear: nn.Module) -> nn.Module:
        if sliced:  # bit-sliced weights (`crossbar.sliced`)
            if isinstance(linear, nn.Conv2d):
                raise ValueError(f"{name or 'model'}: bit-sliced weights (device weight_bits) are not available for "
                                 "nn.Conv2d; convert it with weight_bits=None")  # fmt: skip
            weight = linear.weight.detach().T.contiguous() if is_hf_conv1d(linear) else linear.weight
            return SlicedAnalogLinear.from_weight(weight, linear.bias, array_config, seed=layer_seed(seed, name),
                                                  name=name, backward_mode=backward_mode)  # fmt: skip
        if isinstance(linear, nn.Conv2d):
            return AnalogConv2d.from_conv2d(
                linear, array_config, seed=layer_seed(seed, name), name=name, backward_mode=backward_mode
            )
        if is_hf_conv1d(linear):  # y = x W + b with W stored (in, out): the array holds W^T like nn.Linear's
            return AnalogLinear.from_weight(
                linear.weight.detach().T.contiguous(), linear.bias, array_config, seed=layer_seed(seed, name),
                name=name, backward_mode=backward_mode,
            )  # fmt: skip
        return AnalogLinear.from_linear(
            linear, array_config, seed=layer_seed(seed, name), name=name, backward_mode=backward_mode
        )

    if isinstance(model, (nn.Linear, nn.Conv2d)) or is_hf_conv1d(model):
        return analog("", model) if selected("") else model
    swaps: list[tuple[nn.Module, str, str, nn.Linear]] = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.MultiheadAttention):
            continue
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            convertible = isinstance(child, (nn.Linear, nn.Conv2d)) or is_hf_conv1d(child)
            if convertible and not isinstance(parent, AnalogConv2d) and selected(name):
                swaps.append((parent, child_name, name, child))
    if include is not None and not swaps:
        raise ValueError(f"include patterns {list(include)} matched no nn.Linear, nn.Conv2d (or Conv1D) module")
    for parent, child_name, name, child in swaps:
        setattr(parent, child_name, analog(name, child))
    return model


def is_hf_conv1d(module: nn.Module) -> bool:
    """A Hugging Face `transformers.pytorch_utils.Conv1D` (GPT-2's linear layers), recognised by class name and
    module path so that transformers is never imported here (it is an optional dependency)."""
    return any(
        cls.__name__ == "Conv1D" and cls.__module__.split(".")[0] == "transformers" for cls in type(module).__mro__
    )
