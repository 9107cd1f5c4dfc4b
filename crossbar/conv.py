"""`AnalogConv2d`: a 2-D convolution on the same crossbar arrays, MVM, ledger and programming as `AnalogLinear`.

The kernel (out_channels, in_channels, kh, kw) is unrolled into an (out_channels, in_channels * kh * kw) matrix
held by one `AnalogLinear`; each output pixel is one analog MVM of its input patch (im2col via `F.unfold`). This is
the mapping aihwkit's `AnalogConv2d` (`aihwkit/nn/modules/conv.py`, unfold onto one tile) and CrossSim's
convolution (`simulator/algorithms/dnn/torch/conv.py`, one matrix per kernel, one MVM per sliding window) use:
the array is read once per output pixel, so the ledger counts H_out * W_out MVMs per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossbar.device import DeviceConfig
from crossbar.layers import AnalogLinear, BackwardMode

__all__ = ["AnalogConv2d"]


class AnalogConv2d(nn.Module):
    """`nn.Conv2d` (groups 1, zero padding) whose kernel lives on a simulated crossbar (`self.linear`)."""

    def __init__(
        self,
        linear: AnalogLinear,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        *,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        unrolled = in_channels * kernel_size[0] * kernel_size[1]
        if linear.in_features != unrolled or linear.out_features != out_channels:
            raise ValueError(
                f"the array is {linear.out_features}x{linear.in_features}, a {out_channels} x {in_channels} x "
                f"{kernel_size[0]} x {kernel_size[1]} kernel needs {out_channels}x{unrolled}"
            )
        self.linear = linear
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)

    weight: None = None
    """No float weight: it lives in the array (`self.linear.programmed_weight()`, reshaped)."""

    @classmethod
    def from_conv2d(
        cls,
        conv: nn.Conv2d,
        array_config: DeviceConfig | None = None,
        *,
        seed: int = 0,
        name: str = "",
        backward_mode: BackwardMode = "exact",
    ) -> AnalogConv2d:
        """An unprogrammed copy of `conv` (its kernel as the target, its bias frozen). Grouped convolutions and
        padding modes other than zeros raise ValueError (exclude the layer to keep it digital)."""
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"conv {name!r}: groups={conv.groups} is not supported on arrays (exclude it)")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"conv {name!r}: padding {conv.padding!r}/{conv.padding_mode} unsupported (exclude it)")
        matrix = conv.weight.detach().reshape(conv.out_channels, -1)
        linear = AnalogLinear.from_weight(
            matrix, conv.bias, array_config, seed=seed, name=name, backward_mode=backward_mode
        )
        return cls(
            linear, conv.in_channels, conv.out_channels, conv.kernel_size,
            stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, out_channels, H_out, W_out): one analog MVM per output pixel and image."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        patches = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        out = self.linear(patches.transpose(1, 2))  # (N, L, out_channels)
        height, width = (
            (size + 2 * pad - dil * (k - 1) - 1) // step + 1
            for size, pad, dil, k, step in zip(x.shape[2:], self.padding, self.dilation, self.kernel_size, self.stride)
        )
        return out.transpose(1, 2).reshape(x.shape[0], self.out_channels, height, width)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}"
        )
