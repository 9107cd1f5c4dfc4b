"""Saved programmed models are data, verified before use: no pickle is ever loaded (a planted `skeleton.pt` never
runs), every kind of damage or edit is refused in one ValueError line naming the file and the tensor or field,
every extra-state field is validated, format-1 directories still load (with a warning), and `save_programmed`
never replaces a directory it did not write."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import pathlib
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from crossbar import AnalogLinear, adc_calibration, convert_to_analog, device_preset, drift, program
from crossbar.persist import load_programmed, load_state_files, save_programmed, state_files

ARRAYS, STATE = "arrays.safetensors", "state.json"
LAYER = "0._extra_state"


def _model(seed: int, *, out_features: int = 5) -> nn.Module:
    """A small programmed analog model (faults, read noise, calibrated ADCs, drifted); `seed` sets everything."""
    torch.manual_seed(seed)
    digital = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, out_features))
    device = device_preset("reram_wan2022", stuck_at_min_rate=0.01, read_noise_frac=0.02, adc_range="calibrated")
    analog = convert_to_analog(digital, device, seed=seed)
    program(analog)
    with adc_calibration(analog, None):
        analog(torch.randn(4, 12))
    drift(analog, 60.0)
    return analog


def _architecture(out_features: int = 5) -> nn.Module:
    digital = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, out_features))
    return convert_to_analog(digital, device_preset("ideal"), seed=9)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Two saved models of the same shape and different seeds."""
    root = tmp_path_factory.mktemp("saved")
    return {name: save_programmed(_model(seed), root / name) for name, seed in (("a", 0), ("b", 1))}


@pytest.fixture
def work(saved, tmp_path) -> Path:
    """A fresh copy of saved model "a" to damage."""
    return Path(shutil.copytree(saved["a"], tmp_path / "programmed"))


def _edit_state(directory: Path, edit: Callable[[dict], object], *, rehash: bool = False) -> None:
    meta = json.loads((directory / STATE).read_text())
    edit(meta)
    if rehash:  # what a tool that rewrites the hashes consistently (or a forger) would leave
        meta["extra_state_sha256"] = _tree(meta["extra_state"])
        meta["device_configs"] = {key: _sha(value["array_config"]) for key, value in meta["extra_state"].items()}
    (directory / STATE).write_text(json.dumps(meta))


def _sha(value: object) -> str:
    """The documented hash of a field: SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _tree(value: object) -> object:
    return {key: _tree(item) for key, item in value.items()} if isinstance(value, dict) else _sha(value)


def _flip_bit(directory: Path) -> None:
    data = bytearray((directory / ARRAYS).read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    (directory / ARRAYS).write_bytes(bytes(data))


def _edit_header_dtype(directory: Path) -> None:
    data = (directory / ARRAYS).read_bytes()
    assert b'"dtype":"F32"' in data[:2000]
    (directory / ARRAYS).write_bytes(data.replace(b'"dtype":"F32"', b'"dtype":"I32"', 1))


def _garble_header(directory: Path) -> None:
    data = (directory / ARRAYS).read_bytes()
    (directory / ARRAYS).write_bytes(data[:8] + b"}" * 40 + data[48:])


def _rewrite_tensors(directory: Path, change: Callable[[dict], object]) -> None:
    tensors = load_file(str(directory / ARRAYS))
    change(tensors)
    save_file(tensors, str(directory / ARRAYS), metadata={"format": "2"})


def _set(path: tuple[str, ...], value: object) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _swap(name: str) -> Callable[[Path, dict[str, Path]], None]:
    return lambda directory, saved: shutil.copy(saved["b"] / name, directory / name)


_FIELD = ("extra_state", LAYER)
TAMPERING: dict[str, tuple[Callable[[Path, dict[str, Path]], object], tuple[str, ...]]] = {
    "flipped bit": (lambda d, s: _flip_bit(d), (ARRAYS, "sha256")),
    "header dtype": (lambda d, s: _edit_header_dtype(d), (ARRAYS, "dtype", "'I32'")),
    "arrays of another model": (_swap(ARRAYS), (ARRAYS, "sha256", "different models")),
    "state of another model": (_swap(STATE), (ARRAYS, "sha256", "different models")),
    "noise seed": (lambda d, s: _edit_state(d, _set((*_FIELD, "noise_seed"), 12345)), (STATE, "noise_seed")),
    "drift clock": (lambda d, s: _edit_state(d, _set((*_FIELD, "time_s"), 7200.0)), (STATE, "time_s")),
    "missing tensor": (lambda d, s: _rewrite_tensors(d, lambda t: t.pop("2.bias")), (ARRAYS, "'2.bias'", "missing")),
    "extra tensor": (lambda d, s: _rewrite_tensors(d, _set(("extra",), torch.zeros(3))), (ARRAYS, "'extra'")),
    "truncated arrays": (
        lambda d, s: (d / ARRAYS).write_bytes((d / ARRAYS).read_bytes()[:-100]), (ARRAYS, "truncated")
    ),
    "garbled arrays": (lambda d, s: (d / ARRAYS).write_bytes(b"\x07" * 64), (ARRAYS, "header")),
    "garbled header": (lambda d, s: _garble_header(d), (ARRAYS, "garbled header")),
    "state not JSON": (lambda d, s: (d / STATE).write_text("{'format': 2,"), (STATE, "not valid JSON")),
    "state a list": (lambda d, s: (d / STATE).write_text("[2]"), (STATE, "JSON object", "list")),
    "state missing key": (lambda d, s: _edit_state(d, lambda m: m.pop("tensors")), (STATE, "missing", "tensors")),
    "state unknown format": (lambda d, s: _edit_state(d, _set(("format",), "2")), (STATE, "format '2'")),
    "tensors wrong type": (lambda d, s: _edit_state(d, _set(("tensors",), [])), (STATE, "'tensors'", "object")),
    "tensor entry wrong type": (
        lambda d, s: _edit_state(d, _set(("tensors", "0.bias"), 3)), (STATE, "entry of tensor '0.bias'")
    ),
    "seed as string": (lambda d, s: _edit_state(d, _set((*_FIELD, "seed"), "0")), (STATE, f"{LAYER}.seed")),
    "negative drift time": (lambda d, s: _edit_state(d, _set((*_FIELD, "time_s"), -1.0)), (STATE, "time_s")),
    "NaN drift time": (lambda d, s: _edit_state(d, _set((*_FIELD, "time_s"), math.nan)), (STATE, "time_s")),
    "device config": (
        lambda d, s: _edit_state(d, _set((*_FIELD, "array_config", "read_noise_frac"), 0.0)),
        (STATE, "array_config.read_noise_frac"),
    ),
    "device config, field hashes redone": (
        lambda d, s: _edit_state(d, lambda m: (_set((*_FIELD, "array_config", "read_noise_frac"), 0.0)(m),
                                               m.update(extra_state_sha256=_tree(m["extra_state"])))),
        (STATE, "device config", LAYER),
    ),  # fmt: skip
    "architecture listing": (
        lambda d, s: _edit_state(d, lambda m: m["architecture"].pop()), (STATE, "'architecture'", "SHA-256")
    ),
    "extra-state hashes wrong type": (
        lambda d, s: _edit_state(d, _set(("extra_state_sha256",), "x")), (STATE, "extra_state_sha256", "object")
    ),
}


def _refusal(call: Callable[[], object]) -> str:
    """The message of the ValueError `call` raises; the error must be a plain ValueError of one line."""
    with pytest.raises(Exception) as caught:
        call()
    assert type(caught.value) is ValueError, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_every_kind_of_tampering_is_refused_in_one_line(saved, work, kind: str) -> None:
    tamper, expected = TAMPERING[kind]
    tamper(work, saved)
    message = _refusal(lambda: load_programmed(work, _architecture()))
    assert str(work) in message
    for part in expected:
        assert part in message, (kind, message)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("seed", "0", "seed must be an int"), ("noise_seed", 2**63, "noise_seed"), ("noise_calls", 1.5, "noise_calls"),
     ("time_s", -1.0, "time_s"), ("time_s", math.nan, "time_s"), ("time_s", math.inf, "time_s"),
     ("adc_ranges", [[1.0]], "adc_ranges must be null or a 1 x 20"), ("weight_bound", -2.0, "weight_bound"),
     ("array_config", {"tile_cols": "many"}, "DeviceConfig.tile_cols")],
)  # fmt: skip
def test_edited_fields_with_redone_hashes_are_refused_by_validation(work, field, value, expected) -> None:
    """Past the hashes (rewritten consistently), set_extra_state's validation still names the field."""
    _edit_state(work, _set((*_FIELD, field), value), rehash=True)
    message = _refusal(lambda: load_programmed(work, _architecture()))
    assert f"{work}/{STATE}" in message and expected in message, message


@pytest.mark.parametrize(
    ("model", "expected"),
    [(lambda: _architecture(out_features=6), "module '2' features [20, 6], saved [20, 5]"),
     (lambda: nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5)), "module '0' type"),
     (lambda: nn.Sequential(*_architecture(), nn.ReLU()), "module '3' is not in the saved model")],
)  # fmt: skip
def test_a_model_of_another_architecture_is_refused(saved, model, expected) -> None:
    message = _refusal(lambda: load_programmed(saved["a"], model()))
    assert STATE in message and "another architecture" in message and expected in message, message


class _Planted:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (pathlib.Path.touch, (self.path,))


def _plant(directory: Path, marker: Path) -> None:
    (directory / "skeleton.pt").write_bytes(pickle.dumps(_Planted(marker)))


def test_a_planted_pickle_never_runs(saved, work, tmp_path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Planted(control)))
    assert control.exists()  # the planted pickle is live: loading it would create its file
    marker = tmp_path / "pwned"
    _plant(work, marker)
    assert "pass the architecture" in _refusal(lambda: load_programmed(work))
    loaded = load_programmed(work, _architecture())
    x = torch.randn(3, 12)
    assert torch.equal(loaded(x), load_programmed(saved["a"], _architecture())(x))
    assert not marker.exists()


def _write_format_1(model: nn.Module, directory: Path, marker: Path) -> None:
    """A directory as save_programmed wrote it before checksums: arrays, state.json v1, a pickled skeleton."""
    directory.mkdir()
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items() if torch.is_tensor(v)}, str(directory / ARRAYS),
              metadata={"format": "1"})  # fmt: skip
    extra = {k: v for k, v in state.items() if not torch.is_tensor(v)}
    (directory / STATE).write_text(json.dumps({"format": 1, "extra_state": extra}, indent=1))
    _plant(directory, marker)


def test_format_1_loads_with_a_warning_and_converts(tmp_path, caplog) -> None:
    original = _model(3)
    twin = copy.deepcopy(original)
    marker = tmp_path / "pwned"
    _write_format_1(original, tmp_path / "old", marker)
    with caplog.at_level(logging.WARNING, logger="crossbar_sim.persist"):
        loaded = load_programmed(tmp_path / "old", _architecture())
    assert any("format-1" in r.message and "cannot be verified" in r.message for r in caplog.records)
    x = torch.randn(3, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), twin(x))
    save_programmed(loaded, tmp_path / "old")  # converts in place: hashes added, the pickle gone
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == [ARRAYS, STATE]
    assert json.loads((tmp_path / "old" / STATE).read_text())["format"] == 2
    again = load_programmed(tmp_path / "old", _architecture())
    with torch.no_grad():
        assert torch.equal(again(x), twin(x))
    assert not marker.exists()


def test_in_memory_files_are_verified_like_directories(saved) -> None:
    files = state_files(load_programmed(saved["a"], _architecture()))
    other = state_files(load_programmed(saved["b"], _architecture()))
    message = _refusal(lambda: load_state_files({**files, STATE: other[STATE]}, _architecture(), source="cache/x"))
    assert message.startswith("cache/x/arrays.safetensors: tensor")
    assert "no state.json" in _refusal(lambda: load_state_files({ARRAYS: files[ARRAYS]}, _architecture(), source="c"))


def test_save_never_replaces_a_directory_it_did_not_write(saved, tmp_path) -> None:
    model = load_programmed(saved["a"], _architecture())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "not a directory written by save_programmed" in _refusal(lambda: save_programmed(model, foreign))
    (foreign / STATE).write_text("{}")
    (foreign / ARRAYS).write_bytes(b"x")
    _refusal(lambda: save_programmed(model, foreign))
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("data")
    assert "not a directory" in _refusal(lambda: save_programmed(model, tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    save_programmed(model, tmp_path / "empty")
    save_programmed(model, tmp_path / "empty")  # its own directory: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "mine"]  # no staging left behind


_GOOD = AnalogLinear.from_linear(nn.Linear(12, 20), device_preset("ideal"), seed=0).get_extra_state()


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"seed": "3"}, "seed must be an int"), ({"seed": -1}, "seed must be"), ({"seed": True}, "seed must be"),
     ({"drift_calls": None}, "drift_calls"), ({"time_s": "60"}, "time_s"), ({"time_s": -0.5}, "time_s"),
     ({"adc_ranges": [[1.0] * 19]}, "adc_ranges must be null or a 1 x 20"),
     ({"adc_ranges": [[0.0] * 20]}, "adc_ranges must hold finite numbers > 0"),
     ({"adc_ranges": [["a"] * 20]}, "adc_ranges must hold"), ({"adc_ranges": "x"}, "adc_ranges must be"),
     ({"adc_ranges_transposed": [[1.0] * 20]}, "adc_ranges_transposed must be null or a 1 x 12"),
     ({"array_config": None}, "array_config must be an object"),
     ({"array_config": {"wat": 1}}, "array_config has unknown field(s) ['wat']"),
     ({"array_config": {"read_noise_frac": "x"}}, "DeviceConfig.read_noise_frac"),
     ({"array_config": {"mvm_scheme": ["x"]}}, "array_config"),
     ({"weight_bound": math.nan}, "weight_bound"), ({"extra": 1}, "unknown field(s) ['extra']"),
     ({"seed": ...}, "missing field(s) ['seed']")],
)  # fmt: skip
def test_set_extra_state_names_each_bad_field_and_changes_nothing(change: dict, expected: str) -> None:
    layer = AnalogLinear.from_linear(nn.Linear(12, 20), device_preset("ideal"), seed=4)
    before = layer.get_extra_state()
    state = copy.deepcopy(_GOOD) | change
    state = {key: value for key, value in state.items() if value is not ...}
    message = _refusal(lambda: layer.set_extra_state(state))
    assert expected in message and "AnalogLinear" in message, message
    assert layer.get_extra_state() == before
    assert "expected an object" in _refusal(lambda: layer.set_extra_state([1, 2]))
