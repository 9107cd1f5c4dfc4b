"""Saving and loading programmed models: `save_programmed(model, directory)` / `load_programmed(directory)`.

A programmed model's whole analog state is module state (`AnalogLinear`: conductances, write counters and fault
marks, output scales and bias as buffers; seeds, random-stream counters, drift clock and ADC calibration as extra
state), so `state_dict()` captures it. On disk a directory holds

- `arrays.safetensors`: every tensor of the state_dict (conductances float32, counters uint16, ...);
- `state.json`: every non-tensor entry (the layers' extra state: plain numbers, exact in JSON) and a format stamp;
- `skeleton.pt`: the module tree with every tensor on the `meta` device (no values), so that `load_programmed`
  can rebuild the model without the code that built it. It is a pickle (`torch.load(weights_only=False)`): load
  only directories you trust, as with any torch checkpoint; or pass `model=` (the same architecture) to skip it.

The round trip is exact: the loaded model gives the same outputs as the saved one would have, and the same later
read-noise and drift draws (`tests/test_persist.py`). Files are written into a temporary sibling directory that
is renamed into place, so a directory is complete or absent.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from crossbar.protocols import Recording

__all__ = ["PROGRAMMED_FORMAT_VERSION", "load_programmed", "save_programmed"]

PROGRAMMED_FORMAT_VERSION = 1
"""Layout version of a saved programmed-model directory."""


def save_programmed(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write `model` (analog layers programmed or not, digital layers as they are) to `directory`; returns it."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = Path(directory)
    state = model.state_dict()
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items() if torch.is_tensor(value)}
    extra = {key: value for key, value in state.items() if not torch.is_tensor(value)}
    try:
        extra_json = json.dumps(extra, allow_nan=True)
    except TypeError as error:
        raise ValueError(f"a module's extra state is not JSON-serialisable ({error})") from None
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(tensors, str(staging / "arrays.safetensors"), metadata={"format": str(PROGRAMMED_FORMAT_VERSION)})
    (staging / "state.json").write_text(
        json.dumps({"format": PROGRAMMED_FORMAT_VERSION, "extra_state": json.loads(extra_json)}, indent=1)
    )
    torch.save(_skeleton(model), staging / "skeleton.pt")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def load_programmed(
    directory: str | os.PathLike[str], model: nn.Module | None = None, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """The model saved in `directory`, on `device`. With `model` (the same architecture, e.g. the digital model
    after `convert_to_analog`), the state is loaded into it (in place) instead of into the saved skeleton."""
    source = Path(directory)
    for name in ("arrays.safetensors", "state.json"):
        if not (source / name).is_file():
            raise ValueError(f"{source}: no {name}, expected a directory written by save_programmed")
    meta = json.loads((source / "state.json").read_text())
    if meta.get("format") != PROGRAMMED_FORMAT_VERSION:
        raise ValueError(f"{source}: format {meta.get('format')!r}, this version reads {PROGRAMMED_FORMAT_VERSION}")
    if model is None:
        if not (source / "skeleton.pt").is_file():
            raise ValueError(f"{source}: no skeleton.pt; pass model= (the same architecture) to load into")
        model = torch.load(source / "skeleton.pt", weights_only=False).to_empty(device=device)
    elif not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    state: dict[str, object] = dict(load_file(str(source / "arrays.safetensors"), device=str(device)))
    state.update(meta["extra_state"])
    model.load_state_dict(state, strict=True)
    return model.to(device)


def _skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model` whose tensors are empty `meta` tensors of the same shapes and whose ledgers are None."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            memo[id(parameter)] = nn.Parameter(
                torch.empty_like(parameter, device="meta"), requires_grad=parameter.requires_grad
            )
        for buffer in module.buffers(recurse=False):
            memo[id(buffer)] = torch.empty_like(buffer, device="meta")
        if isinstance(module, Recording) and module.ledger is not None:
            memo[id(module.ledger)] = None
    return copy.deepcopy(model, memo)
