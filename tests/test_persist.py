"""Analog state as module state: save_programmed / load_programmed and state_dict round-trip a programmed model
exactly (same outputs, same later read noise and drift), and `.to(device)` moves every array."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crossbar import AnalogLinear, adc_calibration, analog_layers, convert_to_analog, device_preset, drift, program
from crossbar.persist import load_programmed, load_state_files, save_programmed, state_files

ARRAY_TENSORS = ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg", "out_scale", "bias")


def _programmed(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5))
    # faults, read noise, calibrated ADC and drift all on: every stream matters
    device = device_preset("reram_wan2022", stuck_at_min_rate=0.01, read_noise_frac=0.02, adc_range="calibrated")
    analog = convert_to_analog(model, device, seed=seed)
    program(analog)
    with adc_calibration(analog, None):
        analog(torch.randn(4, 12))  # calibrates the ADCs per column, advances the noise streams
    drift(analog, 60.0)
    return analog


def _continue(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What a model does next: two noisy forwards, a drift step, another forward, the conductances after."""
    with torch.no_grad():
        outputs = [model(x), model(x)]
        drift(model, 3600.0)
        outputs.append(model(x))
    outputs += [layer.g_diff_us.clone() for _, layer in analog_layers(model)]
    return outputs


def _architecture() -> nn.Module:
    """The architecture of `_programmed`, converted with another preset and seed and never programmed."""
    torch.manual_seed(1)  # other weights: everything must come from the files
    fresh = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5))
    return convert_to_analog(fresh, device_preset("reram_wan2022", adc_range="calibrated"), seed=5)


@pytest.mark.parametrize("via", ["directory", "in-memory files"])
def test_saved_and_loaded_model_continues_exactly(tmp_path, via: str) -> None:
    original = _programmed()
    twin = copy.deepcopy(original)  # what the original would have done
    if via == "directory":
        save_programmed(original, tmp_path / "programmed")
        assert sorted(p.name for p in (tmp_path / "programmed").iterdir()) == ["arrays.safetensors", "state.json"]
        loaded = load_programmed(tmp_path / "programmed", _architecture())
    else:
        files = state_files(original)
        assert set(files) == {"arrays.safetensors", "state.json"}
        loaded = load_state_files(files, _architecture(), source="cache entry")
    for (name, a), (_, b) in zip(analog_layers(twin), analog_layers(loaded)):
        assert a.get_extra_state() == b.get_extra_state(), name
        assert torch.equal(a.writes_pos, b.writes_pos) and b.array_config == a.array_config
        assert b.programmed and b.time_s == 60.0
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(7))
    expected, got = _continue(twin, x), _continue(loaded, x)
    assert not torch.equal(expected[0], expected[1])  # read noise is on: identical draws are not trivial
    assert any((layer.writes_pos == 0xFFFF).any() for _, layer in analog_layers(loaded))  # faults were saved
    for want, have in zip(expected, got):
        assert torch.equal(want, have)


def test_state_dict_round_trip_and_unprogrammed_layers(tmp_path) -> None:
    original = _programmed(seed=3)
    state = original.state_dict()
    assert {"0.g_diff_us", "0.writes_pos", "0._extra_state"} <= set(state)
    assert state["0.writes_pos"].dtype == torch.uint16
    clone = convert_to_analog(nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5)), seed=9)
    clone.load_state_dict(state)
    assert torch.equal(clone[0].programmed_weight(), original[0].programmed_weight())
    # an unprogrammed layer saves its target and loads as unprogrammed, ready to program identically
    unprogrammed = AnalogLinear.from_linear(nn.Linear(6, 4), device_preset("ideal"), seed=2)
    save_programmed(unprogrammed, tmp_path / "u")
    back = load_programmed(tmp_path / "u", AnalogLinear(6, 4, device_preset("ideal")))
    assert not back.programmed and torch.equal(back.target_weight, unprogrammed.target_weight)
    unprogrammed.program()
    back.program()
    assert torch.equal(back.programmed_weight(), unprogrammed.programmed_weight())


def test_load_rejects_other_tile_layouts_and_foreign_directories(tmp_path) -> None:
    layer = AnalogLinear.from_linear(nn.Linear(300, 4), device_preset("ideal"), seed=0)
    layer.program()
    other = AnalogLinear(200, 4, device_preset("ideal"))  # another input width: another tile layout
    with pytest.raises(RuntimeError, match="tile layout"):
        other.load_state_dict(layer.state_dict())
    retiled = AnalogLinear(300, 4, device_preset("ideal", tile_rows=64))  # the saved device config comes along
    retiled.load_state_dict(layer.state_dict())
    assert retiled.array_config.tile_rows == 256 and torch.equal(retiled.g_diff_us, layer.g_diff_us)
    with pytest.raises(ValueError, match="no arrays.safetensors"):
        load_programmed(tmp_path, other)
    with pytest.raises(ValueError, match="pass the architecture"):
        load_programmed(tmp_path)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_to_moves_every_array(device: str) -> None:
    model = _programmed()
    moved = model.to(device)
    for _, layer in analog_layers(moved):
        for name in ARRAY_TENSORS:
            assert getattr(layer, name).device.type == device, name
    if device == "meta":
        with pytest.raises(RuntimeError, match="meta device"):
            moved(torch.randn(2, 12, device="meta"))


def test_programming_after_to_lands_on_that_device() -> None:
    layer = AnalogLinear.from_linear(nn.Linear(8, 4), device_preset("ideal"), seed=0).to("meta")
    assert layer.target_weight.device.type == "meta"
    layer = layer.to_empty(device="cpu")
    layer.reprogram(torch.randn(4, 8))
    assert layer.g_diff_us.device.type == "cpu" and layer.programmed
