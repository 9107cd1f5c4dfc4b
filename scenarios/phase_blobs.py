"""The shared phases' files (`scenarios.cache.Blob`) as data: safetensors and JSON, never a pickle, so that a cache
entry (`<run>/cache/` or a shared `--cache DIR`), even one edited with a recomputed manifest, can at worst be
refused, never run code. The structure of every model is rebuilt from the scenario; only state is stored.

- base model: its state_dict (`base_model.safetensors`) and `base_model.json` (its accuracy, and what its workload
  needs to rebuild it: a trained classifier's class count and input shape); a workload with per-task heads (a
  pretrained encoder's zero-shot class embeddings) adds them (`class_embeddings.safetensors`). The workload
  (`scenarios.workload`) rebuilds the structure;
- bank (one per source task, and joined): `LoRABank.save`'s files under `bank/`;
- programmed arrays: the analog model and the bank's arrays as one checksummed state (`crossbar.state_files`,
  under `arrays/`), the bank under `bank/`, the calibration read-out, class embeddings and calibration set
  (`programmed.safetensors`), what rebuilds the structure (`programmed.json`) and the deployment ledger. Loading
  rebuilds the digital skeleton, converts it (`convert_to_analog`, nothing programmed) and the bank's arrays
  unprogrammed (`fusion.deploy.empty_programmed_bank`), then loads the state into them.

`blob_problem` checks an entry's layout (file names, JSON and safetensors headers) before the run uses it, so an
entry of another layout, an old pickle included, is recomputed instead.
"""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from crossbar import convert_to_analog, derive_seed, device_preset, load_state_files, state_files
from crossbar.persist import ARRAYS_FILE, STATE_FILE
from fusion import LoRABank, ProgrammedBank
from fusion.bank import MANIFEST_FILE, TENSORS_FILE
from fusion.deploy import bank_arrays, empty_programmed_bank, readout_state, set_readout_state
from scenarios.cache import Blob
from scenarios.workload import workload_for

__all__ = [
    "ProgrammedPhase",
    "bank_blob",
    "base_blob",
    "base_info",
    "base_state",
    "blob_problem",
    "classifier_shape",
    "frozen",
    "load_bank",
    "load_base",
    "load_task_heads",
    "load_programmed_phase",
    "programmed_blob",
    "sizes",
]

BASE_STATE = "base_model.safetensors"
BASE_INFO = "base_model.json"
CLASSES = "class_embeddings.safetensors"
BANK_FILES = (f"bank/{TENSORS_FILE}", f"bank/{MANIFEST_FILE}")
ARRAYS = "arrays/"
"""Folder of the programmed phase's `crossbar.state_files` (analog model and bank arrays as one module)."""
PROGRAMMED_TENSORS = "programmed.safetensors"
PROGRAMMED_INFO = "programmed.json"
DEPLOY_LEDGER = "deploy_ledger.json"

_LAYOUTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "base_model": (frozenset({BASE_STATE, BASE_INFO}), frozenset({CLASSES})),
    "bank_part": (frozenset(BANK_FILES), frozenset()),
    "bank": (frozenset(BANK_FILES), frozenset()),
    "programmed": (
        frozenset({f"{ARRAYS}{ARRAYS_FILE}", f"{ARRAYS}{STATE_FILE}", *BANK_FILES, PROGRAMMED_TENSORS,
                   PROGRAMMED_INFO, DEPLOY_LEDGER}),  # fmt: skip
        frozenset(),
    ),
}
"""Each phase's files: (required, optional)."""


def blob_problem(kind: str, blob: Blob) -> str | None:
    """Why `blob` is not a `kind` entry this version reads (files named, JSON files parse, safetensors headers
    parse), in a few words; None when it is. Only the layout is checked: loading verifies the contents."""
    layout = _LAYOUTS.get(kind)
    if layout is None:
        return None
    required, optional = layout
    names = set(blob)
    if not required <= names <= required | optional:
        unknown = sorted(names - required - optional)
        missing = sorted(required - names)
        return f"files {sorted(names)}: " + (f"{unknown[0]!r} is not a file of this layout" if unknown
                                            else f"{missing[0]!r} is missing")  # fmt: skip
    for name, data in sorted(blob.items()):
        if name.endswith(".json"):
            try:
                json.loads(data)
            except (ValueError, UnicodeDecodeError):
                return f"{name} is not JSON"
        elif name.endswith(".safetensors") and not _safetensors_header(data):
            return f"{name} is not a safetensors file"
    return None


def _safetensors_header(data: bytes) -> bool:
    """Whether `data` starts with a safetensors header (8-byte little-endian length, then a JSON object)."""
    if len(data) < 8:
        return False
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        return False
    try:
        return isinstance(json.loads(data[8 : 8 + length]), dict)
    except (ValueError, UnicodeDecodeError):
        return False


# --- base model ------------------------------------------------------------------------------------------------
def base_blob(model: nn.Module, info: dict[str, Any], task_heads: dict[str, torch.Tensor] | None = None) -> Blob:
    """The base phase's files: `model`'s state_dict, `info` and the workload's per-task heads, if any."""
    blob = {BASE_STATE: _tensor_bytes(model.state_dict()), BASE_INFO: json.dumps(info).encode()}
    if task_heads is not None:
        blob[CLASSES] = _tensor_bytes(task_heads)
    return blob


def load_base(blob: Blob, scenario: Any) -> nn.Module:
    """The frozen digital base model of a base-phase blob, rebuilt by the scenario's workload."""
    return workload_for(scenario).load_base(blob)


def base_state(blob: Blob) -> dict[str, torch.Tensor]:
    """The base model's saved state_dict."""
    return _tensors(blob, BASE_STATE)


def base_info(blob: Blob) -> dict[str, Any]:
    """The base phase's `base_model.json`."""
    return _json(blob, BASE_INFO)


def classifier_shape(info: dict[str, Any], where: str) -> tuple[int, tuple[int, ...]]:
    """(class count, input shape) of a trained classifier's saved info; ValueError naming `where` otherwise."""
    n_classes, shape = info.get("n_classes"), info.get("image_shape")
    if not (sizes([n_classes]) and isinstance(shape, list) and len(shape) == 3 and sizes(shape)):
        raise ValueError(f"{where}: n_classes {n_classes!r} and image_shape {shape!r} do not describe a classifier")
    return n_classes, tuple(shape)


def load_task_heads(blob: Blob) -> dict[str, torch.Tensor]:
    """Every task's head of a base-phase blob with per-task heads (a pretrained encoder's class embeddings)."""
    if CLASSES not in blob:
        raise ValueError(f"base phase: no {CLASSES}, expected a pretrained encoder's files")
    return _tensors(blob, CLASSES)


def frozen(model: nn.Module) -> nn.Module:
    """`model` in eval mode with no parameter requiring a gradient (a deployed base model)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# --- bank ------------------------------------------------------------------------------------------------------
def bank_blob(bank: LoRABank) -> Blob:
    """`bank`'s files (`LoRABank.save`) under `bank/`."""
    with tempfile.TemporaryDirectory(prefix="crossbar-sim-bank-") as folder:
        bank.save(folder)
        return {f"bank/{p.name}": p.read_bytes() for p in sorted(Path(folder).iterdir())}


def load_bank(blob: Blob) -> LoRABank:
    """The `LoRABank` of a blob's `bank/` files (`LoRABank.load` checks them)."""
    with tempfile.TemporaryDirectory(prefix="crossbar-sim-bank-") as folder:
        for name in BANK_FILES:
            if name not in blob:
                raise ValueError(f"bank: no {name} in the phase's files")
            (Path(folder) / Path(name).name).write_bytes(blob[name])
        return LoRABank.load(folder)


# --- programmed arrays -----------------------------------------------------------------------------------------
@dataclass
class ProgrammedPhase:
    """What the units of one seed start from: the programmed model and bank, and the digital data beside them."""

    analog: nn.Module
    bank: ProgrammedBank
    task_heads: dict[str, torch.Tensor] | None
    """The workload's per-task heads (a pretrained encoder's zero-shot class embeddings); None for one trained
    head (`Workload.set_task` installs them)."""
    calibration_set: torch.Tensor | None
    """The ADC calibration set (`runner._calibration_set`), None when the device's ADC ranges are fixed."""


def programmed_blob(phase: ProgrammedPhase, base: Blob) -> Blob:
    """The programmed phase's files but the deployment ledger; `base` is the base phase's blob (its
    `base_model.json` says how to rebuild the model)."""
    tensors, readout = readout_state(phase.bank)
    tensors = {f"readout/{key}": value for key, value in tensors.items()}
    classes = phase.task_heads
    if classes is not None:
        tensors.update({f"classes/{task}": value for task, value in classes.items()})
    if phase.calibration_set is not None:
        tensors["calibration_set"] = phase.calibration_set
    buffer = getattr(phase.analog, "class_embeddings", None)  # a pretrained encoder's installed head
    info = {
        "base": _json(base, BASE_INFO),
        "readout": readout,
        "classes": None if classes is None else list(classes),
        "class_buffer": list(buffer.shape) if isinstance(buffer, torch.Tensor) else None,
        "calibration_set": phase.calibration_set is not None,
        "layouts": {key: order for key, value in tensors.items() if (order := _dim_order(value)) is not None},
    }
    blob = {f"{ARRAYS}{name}": data for name, data in state_files(_deployment(phase.analog, phase.bank)).items()}
    blob.update(bank_blob(phase.bank.bank))
    blob.update({PROGRAMMED_TENSORS: _tensor_bytes(tensors), PROGRAMMED_INFO: json.dumps(info).encode()})
    return blob


def load_programmed_phase(blob: Blob, scenario: Any) -> ProgrammedPhase:
    """Rebuild a programmed phase from its files: the scenario's model converted to analog and the bank on
    unprogrammed arrays, then the saved state (verified against its hashes) loaded into them."""
    info = _json(blob, PROGRAMMED_INFO)
    tensors = _with_layouts(_tensors(blob, PROGRAMMED_TENSORS), info.get("layouts") or {})
    device = device_preset(scenario.device.preset, **scenario.device.overrides)
    base = workload_for(scenario).skeleton(info)
    analog = convert_to_analog(base, device, seed=derive_seed(scenario.seed, "analog"), inplace=True)
    bank = empty_programmed_bank(load_bank(blob), device, seed=derive_seed(scenario.seed, "bank"))
    files = {name: blob.get(f"{ARRAYS}{name}") for name in (ARRAYS_FILE, STATE_FILE)}
    load_state_files(files, _deployment(analog, bank), source=f"programmed phase {ARRAYS.rstrip('/')}")
    set_readout_state(bank, {k.removeprefix("readout/"): v for k, v in tensors.items() if k.startswith("readout/")},
                      info.get("readout"))  # fmt: skip
    expected = {k for k in tensors if k.startswith("readout/")}
    classes = None
    if info.get("classes") is not None:
        names = info["classes"]
        if not isinstance(names, list) or not all(isinstance(task, str) for task in names):
            raise ValueError(f"{PROGRAMMED_INFO}: classes must be a list of task names, got {names!r}"[:300])
        classes = {task: _tensor(tensors, f"classes/{task}") for task in names}
        expected.update(f"classes/{task}" for task in names)
    calibration_set = _tensor(tensors, "calibration_set") if info.get("calibration_set") else None
    expected.update(["calibration_set"] if calibration_set is not None else [])
    if set(tensors) != expected:
        raise ValueError(f"{PROGRAMMED_TENSORS}: tensors {sorted(set(tensors) ^ expected)[:3]} do not match "
                         f"{PROGRAMMED_INFO}")  # fmt: skip
    return ProgrammedPhase(analog, bank, classes, calibration_set)


def _deployment(analog: nn.Module, bank: ProgrammedBank) -> nn.Module:
    """The programmed model and the bank's arrays as one module: one state, one set of hashes."""
    return nn.ModuleDict({"analog": analog, "bank": bank_arrays(bank)})


# --- helpers ---------------------------------------------------------------------------------------------------
def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """safetensors bytes of `tensors`, each copied to its own contiguous memory (shared or strided views allowed)."""
    return tensors_to_bytes(
        {key: value.detach().cpu().clone(memory_format=torch.contiguous_format) for key, value in tensors.items()}
    )


def _dim_order(tensor: torch.Tensor) -> list[int] | None:
    """The memory order of the dimensions (outermost first) of a dense tensor that is not contiguous, such as a
    transpose; None for a contiguous one or another layout. A reload in this layout computes exactly as the saved
    tensor did (reductions over a transposed tensor may round differently from the same values contiguous)."""
    if tensor.is_contiguous():
        return None
    order = sorted(range(tensor.dim()), key=lambda dim: -tensor.stride(dim))
    return order if tensor.permute(order).is_contiguous() else None


def _with_layouts(tensors: dict[str, torch.Tensor], layouts: object) -> dict[str, torch.Tensor]:
    """`tensors` with the saved memory layouts (`_dim_order`) restored."""
    if not isinstance(layouts, dict):
        raise ValueError(f"{PROGRAMMED_INFO}: layouts must be an object, got {type(layouts).__name__}")
    out = dict(tensors)
    for key, order in layouts.items():
        tensor = tensors.get(key)
        if tensor is None or not isinstance(order, list) or sorted(order) != list(range(tensor.dim())):
            raise ValueError(f"{PROGRAMMED_INFO}: layouts.{key}: {order!r} is not an order of that tensor's dims"[:300])
        inverse = sorted(range(len(order)), key=order.__getitem__)
        out[key] = tensor.permute(order).contiguous().permute(inverse)
    return out


def _tensors(blob: Blob, name: str) -> dict[str, torch.Tensor]:
    if name not in blob:
        raise ValueError(f"phase files: no {name}")
    try:
        return dict(tensors_from_bytes(blob[name]))
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name}: not a readable safetensors file ({_one_line(error)})") from None


def _tensor(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in tensors:
        raise ValueError(f"{PROGRAMMED_TENSORS}: no tensor {key!r} ({PROGRAMMED_INFO} names it)")
    return tensors[key]


def _json(blob: Blob, name: str) -> dict[str, Any]:
    try:
        value = json.loads(blob[name])
    except KeyError:
        raise ValueError(f"phase files: no {name}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{name}: not JSON ({_one_line(error)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


def sizes(values: list[object], minimum: int = 1) -> bool:
    """Whether every value is an integer (not a bool) of at least `minimum`."""
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)


def shape_of(value: object, field: str) -> tuple[int, ...]:
    """A saved tensor shape of `programmed.json`'s `field`; ValueError naming it otherwise."""
    if not isinstance(value, list) or not sizes(value, minimum=0):
        raise ValueError(f"{PROGRAMMED_INFO}: {field} must be a list of sizes, got {value!r}"[:300])
    return tuple(value)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
