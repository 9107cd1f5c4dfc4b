"""Saving and loading programmed models as data: safetensors plus JSON, no pickle, with content hashes.

A programmed model's whole analog state is module state (`AnalogLinear`: conductances, write counters and fault
marks, output scales and bias as buffers; seeds, random-stream counters, drift clock and ADC calibration as extra
state), so `state_dict()` captures it. A saved model is two files (`state_files` gives them in memory, for caches;
`save_programmed` writes them to a directory):

- `arrays.safetensors`: every tensor of the state_dict (conductances float32, counters uint16, ...);
- `state.json`: every non-tensor entry (the layers' extra state: plain numbers, exact in JSON), a format stamp, and
  the checks below.

No code is stored or run: the module tree is rebuilt by the caller's code, and `load_programmed(directory, model)`
/ `load_state_files(files, model, ...)` load the state into `model` (the same architecture, e.g. the digital model
after `convert_to_analog`). Before anything is loaded, format 2 verifies the SHA-256 of every tensor (over its
dtype, shape and bytes), of every field of the extra state (canonical JSON), of each analog layer's device config,
and the architecture (module names and types, parameter and buffer names, shapes and dtypes) against `model`; then
`AnalogLinear.set_extra_state` validates every field (type, range, shape against the arrays). Anything that
differs is refused with one `ValueError` line naming the file and the tensor or field. The hashes sit beside the
data: they catch accidents (a flipped bit, a truncated copy, files of two models mixed) and careless edits, not a
forger who recomputes them. A format-1 directory (from before the hashes; its `skeleton.pt` pickle is never read)
loads into `model` with a warning that nothing could be verified.

The round trip is exact: the loaded model gives the same outputs as the saved one would have, and the same later
read-noise and drift draws (`tests/test_persist.py`). Files are written into a staging sibling directory that is
renamed into place, so a directory is complete or absent; only a directory written by `save_programmed` (or an
empty one) is ever replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from crossbar.array import OPTIONAL_BUFFERS
from crossbar.layers import AnalogLinear

__all__ = [
    "ARRAYS_FILE",
    "PROGRAMMED_FORMAT_VERSION",
    "STATE_FILE",
    "load_programmed",
    "load_state_files",
    "save_programmed",
    "state_files",
]

PROGRAMMED_FORMAT_VERSION = 2
"""Layout version of a saved programmed model (1: no hashes, with a pickled skeleton; 2: hashes, no pickle)."""

ARRAYS_FILE = "arrays.safetensors"
"""Name of the tensors file in a saved model (a key of `state_files`)."""
STATE_FILE = "state.json"
"""Name of the JSON file (extra state, hashes, fingerprints) in a saved model (a key of `state_files`)."""
_LEGACY_SKELETON = "skeleton.pt"
"""Format 1's pickled module tree: never read; tolerated in a directory that is replaced."""
_MAX_HEADER_BYTES = 100 * 2**20
"""Largest safetensors JSON header read (bytes), the limit the safetensors library itself applies."""
_STATE_KEYS = ("format", "tensors", "extra_state", "extra_state_sha256", "device_configs", "architecture",
               "architecture_sha256")  # fmt: skip
_ANALOG_STATE_TENSORS = OPTIONAL_BUFFERS
"""`AnalogLinear` buffers present or absent and shaped by the layer's state (programmed or not, drifting or not),
not its architecture: left out of the architecture fingerprint (their tile layout is checked by the layer)."""

log = logging.getLogger("crossbar_sim.persist")


# --- the two files in memory ---------------------------------------------------------------------------------
def state_files(model: nn.Module) -> dict[str, bytes]:
    """`model`'s whole state as {"arrays.safetensors": bytes, "state.json": bytes} (format 2, with hashes)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = model.state_dict()
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items() if torch.is_tensor(value)}
    extra = {key: value for key, value in state.items() if not torch.is_tensor(value)}
    try:
        extra = json.loads(_canonical(extra))  # the form a load will see (tuples as lists)
    except (TypeError, ValueError) as error:
        raise ValueError(f"a module's extra state is not plain JSON ({error})") from None
    arrays = save_safetensors(tensors, metadata={"format": str(PROGRAMMED_FORMAT_VERSION)})
    architecture = _architecture(model)
    meta = {
        "format": PROGRAMMED_FORMAT_VERSION,
        "tensors": _tensor_digests(arrays, ARRAYS_FILE),
        "extra_state": extra,
        "extra_state_sha256": _digest_tree(extra),
        "device_configs": _device_configs(extra),
        "architecture": architecture,
        "architecture_sha256": _sha256_json(architecture),
    }
    return {ARRAYS_FILE: arrays, STATE_FILE: json.dumps(meta, indent=1).encode()}


def load_state_files(
    files: Mapping[str, bytes], model: nn.Module, *, source: str, device: str | torch.device = "cpu"
) -> nn.Module:
    """Verify the files of `state_files` (a format-1 pair loads with a warning) and load them into `model` (in
    place, moved to `device`); `source` names them in messages (a directory, a cache entry). Anything that does
    not match raises one ValueError line naming the file and what differs."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{source}: model must be a torch.nn.Module (the saved architecture), got "
                         f"{type(model).__name__}")  # fmt: skip
    for name in (ARRAYS_FILE, STATE_FILE):
        if not isinstance(files.get(name), (bytes, bytearray, memoryview)):
            raise ValueError(f"{source}: no {name}, expected the files written by save_programmed / state_files")
    arrays = bytes(files[ARRAYS_FILE])
    meta = _read_state_json(bytes(files[STATE_FILE]), f"{source}/{STATE_FILE}")
    if meta["format"] == 1:
        log.warning("%s: format-1 saved model, from before checksums: its contents cannot be verified (save it "
                    "again to add them)", source)  # fmt: skip
        tensors = _read_tensors(arrays, f"{source}/{ARRAYS_FILE}", expected_format="1")
        _load_into(model, tensors, meta["extra_state"], source, device)
        return model
    _verify(arrays, meta, model, source)
    tensors = _read_tensors(arrays, f"{source}/{ARRAYS_FILE}", expected_format=str(PROGRAMMED_FORMAT_VERSION))
    _load_into(model, tensors, meta["extra_state"], source, device)
    return model


# --- directories ---------------------------------------------------------------------------------------------
def save_programmed(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write `model` (analog layers programmed or not, digital layers as they are) to `directory`; returns it.

    An existing `directory` is replaced only if it is empty or a saved programmed model."""
    files = state_files(model)
    target = Path(directory)
    _check_replaceable(target)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_programmed(
    directory: str | os.PathLike[str], model: nn.Module | None = None, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """The model saved in `directory`, loaded (verified, in place) into `model` and moved to `device`. `model` is
    the same architecture, built by your code (e.g. the digital model after `convert_to_analog`)."""
    if model is None:
        raise ValueError("load_programmed needs model=: pass the architecture to load into (e.g. the digital model "
                         "after convert_to_analog); saved models hold data, not code")  # fmt: skip
    source = Path(directory)
    files: dict[str, bytes] = {}
    for name in (ARRAYS_FILE, STATE_FILE):
        if not (source / name).is_file():
            raise ValueError(f"{source}: no {name}, expected a directory written by save_programmed")
        files[name] = (source / name).read_bytes()
    return load_state_files(files, model, source=str(source), device=device)


def _check_replaceable(target: Path) -> None:
    """Raise unless `target` is absent, an empty directory, or a directory written by `save_programmed`."""
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise ValueError(f"{target}: exists and is not a directory; refusing to replace it with a saved model")
    entries = {entry.name for entry in target.iterdir()}
    ours = {ARRAYS_FILE, STATE_FILE, _LEGACY_SKELETON}
    if not entries:
        return
    if entries <= ours and {ARRAYS_FILE, STATE_FILE} <= entries:
        try:
            stamp = json.loads((target / STATE_FILE).read_bytes()).get("format")
        except (OSError, ValueError, AttributeError):
            stamp = None
        if stamp in (1, PROGRAMMED_FORMAT_VERSION):
            return
    raise ValueError(
        f"{target}: exists and is not a directory written by save_programmed (holds {sorted(entries)[:5]}); "
        "refusing to replace it: choose another directory or remove it yourself"
    )


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; an old `target` (checked replaceable) is moved aside first, removed after."""
    if not target.exists():
        staging.rename(target)
        return
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.old")
    target.rename(old)
    try:
        staging.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- reading and verifying -----------------------------------------------------------------------------------
def _read_state_json(data: bytes, where: str) -> dict[str, object]:
    """state.json parsed and checked for shape: format 1 needs `format` and `extra_state`, format 2 all keys."""
    try:
        meta = json.loads(data.decode("utf-8"))  # Infinity is a value (endurance_pulses); fields check the rest
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{where}: not valid JSON ({_one_line(error)})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format")
    if isinstance(version, bool) or version not in (1, PROGRAMMED_FORMAT_VERSION):
        raise ValueError(f"{where}: format {version!r}, this version reads 1 and {PROGRAMMED_FORMAT_VERSION}")
    keys = ("format", "extra_state") if version == 1 else _STATE_KEYS
    missing = [key for key in keys if key not in meta]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    if version == PROGRAMMED_FORMAT_VERSION and set(meta) - set(_STATE_KEYS):
        raise ValueError(f"{where}: unexpected key(s) {sorted(set(meta) - set(_STATE_KEYS))}")
    kinds = {"tensors": dict, "extra_state": dict, "extra_state_sha256": dict, "device_configs": dict,
             "architecture": list, "architecture_sha256": str}  # fmt: skip
    for key, kind in kinds.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"{where}: '{key}' must be a JSON {_json_kind(kind)}, got {type(meta[key]).__name__}")
    return meta


def _verify(arrays: bytes, meta: dict[str, object], model: nn.Module, source: str) -> None:
    """Check the tensors, the extra state, the device configs and the architecture against their hashes and
    `model`; raise one ValueError line naming the file and the first difference."""
    state_where, arrays_where = f"{source}/{STATE_FILE}", f"{source}/{ARRAYS_FILE}"
    actual, recorded = _tensor_digests(arrays, arrays_where), meta["tensors"]
    missing, unexpected = sorted(set(recorded) - set(actual)), sorted(set(actual) - set(recorded))
    if missing:
        raise ValueError(f"{arrays_where}: tensor '{missing[0]}' is missing (state.json records it)")
    if unexpected:
        raise ValueError(f"{arrays_where}: unexpected tensor '{unexpected[0]}' (state.json does not record it)")
    for key, have in actual.items():
        want = recorded[key]
        if not isinstance(want, dict) or set(want) != {"dtype", "shape", "sha256"}:
            raise ValueError(f"{state_where}: the entry of tensor '{key}' must be an object of dtype, shape, sha256")
        for field in ("dtype", "shape", "sha256"):
            if want[field] != have[field]:
                shown = [f"{value[:12]}..." if field == "sha256" and isinstance(value, str) else _short(value)
                         for value in (have[field], want[field])]  # fmt: skip
                raise ValueError(
                    f"{arrays_where}: tensor '{key}' {field} {shown[0]} differs from the {shown[1]} state.json "
                    "records (a damaged or edited file, or files of different models)"
                )
    difference = _tree_difference(_digest_tree(meta["extra_state"]), meta["extra_state_sha256"], "extra_state")
    if difference is not None:
        raise ValueError(f"{state_where}: {difference} (edited, or from another model)")
    configs = _device_configs(meta["extra_state"])
    for key in sorted(set(meta["device_configs"]) | set(configs)):
        if meta["device_configs"].get(key) != configs.get(key):
            raise ValueError(f"{state_where}: device config of '{key}' does not match its recorded fingerprint")
    if _sha256_json(meta["architecture"]) != meta["architecture_sha256"]:
        raise ValueError(f"{state_where}: 'architecture' does not match its recorded SHA-256 (edited?)")
    difference = _architecture_difference(_architecture(model), meta["architecture"])
    if difference is not None:
        raise ValueError(f"{state_where}: the model passed is another architecture: {difference}")


def _read_tensors(arrays: bytes, where: str, *, expected_format: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors blob (CPU), with any parse error as one ValueError line."""
    _, metadata = _parse_header(arrays, where)
    stamp = (metadata or {}).get("format")
    if stamp != expected_format:
        raise ValueError(f"{where}: format stamp {stamp!r}, state.json says {expected_format}")
    try:
        return load_safetensors(arrays)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
        raise ValueError(f"{where}: not a readable safetensors file ({_one_line(error)})") from None


def _load_into(
    model: nn.Module, tensors: dict[str, torch.Tensor], extra: dict[str, object], source: str, device: object
) -> None:
    """`model.load_state_dict` (strict) with every failure as one ValueError line naming the file."""
    state: dict[str, object] = dict(tensors)
    state.update(extra)
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as error:  # set_extra_state's field validation
        raise ValueError(f"{source}/{STATE_FILE}: {_one_line(error)}") from None
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{source}: does not fit the model passed ({_one_line(error)})") from None
    try:
        model.to(device)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ValueError(f"{source}: cannot move the loaded model to {device!r} ({_one_line(error)})") from None


# --- hashes and fingerprints ---------------------------------------------------------------------------------
def _parse_header(arrays: bytes, where: str) -> tuple[dict[str, dict], dict[str, str] | None]:
    """The safetensors header of `arrays` checked for shape (entries, offsets within the data), before any
    tensor is read: {name: {dtype, shape, data_offsets}} and the metadata."""
    if len(arrays) < 8:
        raise ValueError(f"{where}: truncated ({len(arrays)} bytes), not a safetensors file")
    (length,) = struct.unpack("<Q", arrays[:8])
    if length > min(_MAX_HEADER_BYTES, len(arrays) - 8):
        raise ValueError(f"{where}: header length {length} exceeds the file ({len(arrays)} bytes): truncated?")
    try:
        header = json.loads(arrays[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{where}: garbled header ({_one_line(error)})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: garbled header (not a JSON object)")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"{where}: garbled header (__metadata__ is not an object)")
    data_bytes = len(arrays) - 8 - length
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (
            not isinstance(entry.get("dtype") if isinstance(entry, dict) else None, str)
            or not isinstance(shape, list) or not all(_is_count(size) for size in shape)
            or not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):  # fmt: skip
            raise ValueError(f"{where}: garbled header entry for tensor '{key}'")
        if offsets[1] > data_bytes:
            raise ValueError(f"{where}: truncated: tensor '{key}' ends at data byte {offsets[1]}, the file has "
                             f"{data_bytes}")  # fmt: skip
    return header, metadata


def _tensor_digests(arrays: bytes, where: str) -> dict[str, dict[str, object]]:
    """{name: {dtype, shape, sha256}} of every tensor in a safetensors blob; the hash covers dtype, shape and the
    tensor's bytes, so an edited header dtype or shape changes it as a flipped bit does."""
    header, _ = _parse_header(arrays, where)
    start = 8 + struct.unpack("<Q", arrays[:8])[0]
    digests = {}
    for key in sorted(header):
        entry = header[key]
        begin, end = entry["data_offsets"]
        digest = hashlib.sha256(f"{entry['dtype']}|{entry['shape']}|".encode())
        digest.update(memoryview(arrays)[start + begin : start + end])
        digests[key] = {"dtype": entry["dtype"], "shape": entry["shape"], "sha256": digest.hexdigest()}
    return digests


def _architecture(model: nn.Module) -> list[dict[str, object]]:
    """Module names and types, their parameters and persistent buffers (name: dtype and shape); an analog layer
    lists its in/out features instead of its state-shaped buffers."""
    entries = []
    for name, module in model.named_modules():
        tensors = {key: _spec(value) for key, value in module.named_parameters(recurse=False)}
        skip = set(module._non_persistent_buffers_set)
        if isinstance(module, AnalogLinear):
            skip.update(_ANALOG_STATE_TENSORS)
        tensors.update({key: _spec(value) for key, value in module.named_buffers(recurse=False) if key not in skip})
        entry: dict[str, object] = {"module": name, "type": f"{type(module).__module__}.{type(module).__qualname__}",
                                    "tensors": tensors}  # fmt: skip
        if isinstance(module, AnalogLinear):
            entry["features"] = [module.in_features, module.out_features]
        entries.append(entry)
    return entries


def _architecture_difference(mine: list[dict[str, object]], saved: list[object]) -> str | None:
    """The first difference between the model's architecture and the saved one, in words; None if equal."""
    for index, have in enumerate(mine):
        if index >= len(saved):
            return f"module '{have['module']}' is not in the saved model"
        want = saved[index]
        if not isinstance(want, dict) or want.get("module") != have["module"]:
            label = want.get("module") if isinstance(want, dict) else want
            return f"module '{have['module']}' where the saved model has {_short(label)}"
        for field in ("type", "features", "tensors"):
            if want.get(field) != have.get(field):
                if field == "tensors" and isinstance(want.get(field), dict):
                    for key in sorted(set(have["tensors"]) | set(want["tensors"])):
                        if have["tensors"].get(key) != want["tensors"].get(key):
                            return (f"'{have['module']}.{key}' is {have['tensors'].get(key) or 'absent'}, saved "
                                    f"{_short(want['tensors'].get(key) or 'absent')}")  # fmt: skip
                return f"module '{have['module']}' {field} {_short(have.get(field))}, saved {_short(want.get(field))}"
    if len(saved) > len(mine):
        label = saved[len(mine)].get("module") if isinstance(saved[len(mine)], dict) else saved[len(mine)]
        return f"the saved model has module {_short(label)}, the model passed has not"
    return None


def _device_configs(extra: Mapping[str, object]) -> dict[str, str]:
    """{extra-state key: SHA-256 of its device config} for every analog layer's extra state."""
    return {
        key: _sha256_json(value["array_config"])
        for key, value in extra.items()
        if isinstance(value, dict) and "array_config" in value
    }


def _digest_tree(value: object) -> object:
    """The SHA-256 of `value` as canonical JSON, or for an object a tree of them per key (so that a mismatch can
    name the field)."""
    if isinstance(value, dict):
        return {str(key): _digest_tree(item) for key, item in value.items()}
    return _sha256_json(value)


def _tree_difference(actual: object, recorded: object, path: str) -> str | None:
    """Where the digest tree of the data differs from the recorded one, in words; None if equal."""
    if isinstance(actual, dict) and isinstance(recorded, dict):
        for key in sorted(set(actual) | set(recorded)):
            if key not in recorded:
                return f"field '{path}.{key}' is not in the recorded hashes (added?)"
            if key not in actual:
                return f"field '{path}.{key}' is missing (the recorded hashes have it)"
            difference = _tree_difference(actual[key], recorded[key], f"{path}.{key}")
            if difference is not None:
                return difference
        return None
    if actual != recorded:
        return f"field '{path}' does not match its recorded SHA-256"
    return None


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _sha256_json(value: object) -> str:
    try:
        return hashlib.sha256(_canonical(value).encode()).hexdigest()
    except (TypeError, ValueError):  # not JSON (cannot come from a file parsed here): never equal to a hash
        return "unhashable"


def _spec(tensor: torch.Tensor | None) -> str:
    return "none" if tensor is None else f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_kind(kind: type) -> str:
    return {dict: "object", list: "array", str: "string"}[kind]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
