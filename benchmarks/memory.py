"""Simulator memory per programmed weight: everything an AnalogLinear holds after programming, per weight.

Counted: the array state (G+ - G-, G-, two uint16 write counters: `crossbar.state`), the per-output scale, the
bias, and every other numpy array or torch tensor the layer keeps (found by walking its attributes, so a held
float32 target weight or a cache would show up); shared memory is counted once. Not counted: Python object
overhead and the read-noise generator's state (a few hundred bytes per layer, independent of its size).

Measured for a programmed 768 x 768 layer (the DESIGN target: <= 12 bytes per weight), for a small converted
transformer block (d_model 512, d_ff 2048), and for a layer whose input width is not a multiple of the tile
height (the padding rows of the last tile cost memory; reported for information).

Run: python benchmarks/memory.py. The last lines are JSON, one metric per line.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from crossbar import AnalogLinear, analog_layers, convert_to_analog, device_preset, program
from crossbar.state import ArrayState

TARGET_BYTES = 12


def _arrays(value: object, depth: int = 0):  # noqa: ANN202
    """numpy arrays and torch tensors reachable from `value` through containers and ArrayState fields."""
    if depth > 4:
        return
    if isinstance(value, (np.ndarray, torch.Tensor)):
        yield value
    elif isinstance(value, ArrayState):
        for field in vars(value).values():
            yield from _arrays(field, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _arrays(item, depth + 1)


def held_bytes(layer: AnalogLinear) -> int:
    """Bytes of all arrays and tensors an AnalogLinear holds (parameters, buffers, state, other attributes)."""
    seen: dict[int, int] = {}
    for array in _arrays(vars(layer)):
        if isinstance(array, torch.Tensor):
            seen[array.untyped_storage().data_ptr()] = array.untyped_storage().nbytes()
        else:
            base = array if array.base is None else array.base
            seen[base.__array_interface__["data"][0]] = base.nbytes
    return sum(seen.values())


class Block(nn.Module):
    def __init__(self, d_model: int = 512, d_ff: int = 2048) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)


def main() -> None:
    torch.manual_seed(0)
    device = device_preset("reram_wan2022", programming_mode="statistical")

    layer = AnalogLinear.from_linear(nn.Linear(768, 768), device)
    before = held_bytes(layer)
    layer.program()
    layer_bytes = held_bytes(layer)
    weights = 768 * 768
    state_only = layer.state.nbytes / weights

    model = convert_to_analog(Block(), device, seed=1)
    program(model)
    model_bytes = sum(held_bytes(module) for _, module in analog_layers(model))
    model_weights = sum(m.in_features * m.out_features for _, m in analog_layers(model))

    padded = AnalogLinear.from_linear(nn.Linear(300, 100), device)
    padded.program()
    padded_per_weight = held_bytes(padded) / (300 * 100)

    print(f"768x768 layer: {before / weights:.2f} bytes/weight before programming (float32 target held), "
          f"{layer_bytes / weights:.3f} after ({state_only:.1f} of them array state)")  # fmt: skip
    print(
        f"converted block (q,k,v,o 512x512, fc1 512x2048, fc2 2048x512): {model_bytes / model_weights:.3f} bytes/weight"
    )
    print(f"300x100 layer (two tiles of 150 rows): {padded_per_weight:.2f} bytes/weight")
    metrics = [
        ("state_bytes_per_weight", state_only, TARGET_BYTES),
        ("layer_bytes_per_weight", layer_bytes / weights, TARGET_BYTES),
        ("model_bytes_per_weight", model_bytes / model_weights, TARGET_BYTES),
        ("padded_layer_bytes_per_weight", padded_per_weight, None),
    ]
    for name, value, target in metrics:
        line = {"metric": name, "value": round(value, 3), "unit": "bytes"}
        if target is not None:
            line["target"] = target
        print(json.dumps(line))


if __name__ == "__main__":
    main()
