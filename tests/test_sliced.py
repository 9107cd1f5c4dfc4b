"""Bit-sliced weights (`crossbar.sliced`): the MVM equals the quantised ideal product, the ledger prices every slice
and the shift-adds, programming writes every slice with wear per cell, conversion, save/load, and the ISAAC
per-IMA power rows for three input statistics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crossbar import AnalogLayer, AnalogLinear, Recording, convert_to_analog, device_preset, drift, program
from crossbar.persist import load_state_files, state_files
from crossbar.sliced import SlicedAnalogLinear, slice_config
from energy import WRITE_EVENTS, Ledger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402


def quantised(weight: np.ndarray, bits: int) -> np.ndarray:
    """The NumPy reference: sign-magnitude quantisation per row to 2^bits - 1 steps of the row's max |w|."""
    w = weight.astype(np.float64)
    w_max = np.abs(w).max(axis=1, keepdims=True)
    top = 2**bits - 1
    return np.sign(w) * np.rint(np.abs(w) / w_max * top) * (w_max / top)


def _layer(config, d_in=20, d_out=12, seed=0, bias=True) -> tuple[SlicedAnalogLinear, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(d_out, d_in)).astype(np.float32)
    b = rng.normal(size=d_out).astype(np.float32) if bias else None
    layer = SlicedAnalogLinear.from_weight(torch.from_numpy(weight), None if b is None else torch.from_numpy(b),
                                           config, seed=seed, name="fc")  # fmt: skip
    return layer, weight, b


@pytest.mark.parametrize(("bits", "per_cell", "slices"), [(8, 2, 4), (7, 3, 3), (16, 2, 8)])
def test_sliced_layer_equals_the_quantised_ideal_product(bits, per_cell, slices) -> None:
    config = device_preset("ideal", weight_bits=bits, bits_per_cell=per_cell)
    layer, weight, b = _layer(config)
    assert len(layer.slices) == slices == config.weight_slices
    assert all(s.array_config.levels == 2**per_cell and s.array_config.weight_bits is None for s in layer.slices)
    layer.program()
    reference = quantised(weight, bits)
    step = np.abs(weight).max(axis=1, keepdims=True) / (2**bits - 1)
    assert np.all(np.abs(reference - weight) <= step / 2 + 1e-9)  # the reference is the quantised weight
    assert np.abs(reference - weight).max() > 0  # and quantisation is not trivial here
    np.testing.assert_allclose(layer.programmed_weight().numpy(), reference, rtol=1e-5, atol=1e-6)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(5, 20)).astype(np.float32))
    with torch.no_grad():
        y = layer(x).numpy()
    np.testing.assert_allclose(y, x.numpy() @ reference.T + b, rtol=1e-4, atol=1e-4)
    d = torch.from_numpy(np.random.default_rng(2).normal(size=(3, 12)).astype(np.float32))
    np.testing.assert_allclose(layer.mvm_transposed(d).numpy(), d.numpy() @ reference, rtol=1e-4, atol=1e-4)
    xg = x.clone().requires_grad_(True)  # the input gradient runs through every slice's transposed MVM
    layer(xg).sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), np.ones((5, 12)) @ reference, rtol=1e-4, atol=1e-4)


def test_ledger_counts_every_slice_and_the_shift_adds() -> None:
    config = device_preset("reram_wan2022", weight_bits=8, bits_per_cell=2, programming_mode="statistical")
    layer, weight, _ = _layer(config, d_in=40, d_out=10)
    layer.program()
    single = AnalogLinear.from_weight(torch.ones(10, 40), None, slice_config(config), seed=3)  # one slice alone
    single.program()
    ledger, alone = Ledger(), Ledger()
    x = torch.randn(7, 40)
    layer.ledger = ledger.scope(phase="inference")
    assert all(s.ledger is layer.ledger for s in layer.slices)  # one scope for the layer and its slices
    single.ledger = alone.scope(phase="inference")
    with torch.no_grad():
        layer(x)
        single(x)
    for s in range(4):  # each slice records its own cells and conversions under its qualified name
        name = f"fc.slices.{s}"
        for event in ("adc_conversion", "dac_conversion"):
            assert ledger.total("count", event=event, layer=name) == alone.total("count", event=event) > 0
        assert ledger.total("count", event="cell_read", layer=name) == alone.total("count", event="cell_read")
        assert ledger.total("energy_pj", event="cell_read", layer=name) > 0
    assert ledger.total("count", event="adc_conversion") == 4 * alone.total("count", event="adc_conversion")
    assert ledger.total("count", event="shift_add", layer="fc") == 3 * 10 * 7  # S - 1 per output and vector
    assert ledger.total("count", event="digital_add", layer="fc") == 10 * 7  # the bias, once
    assert ledger.total("count", event="digital_add", layer="fc.slices.0") == 0  # slices have no bias
    reads = Ledger()
    layer.record_reads(7, reads.scope(phase="calibration"), inputs=x)
    assert reads.total("count", event="adc_conversion") == ledger.total("count", event="adc_conversion")


def test_programming_writes_every_slice_and_counts_wear_per_cell() -> None:
    config = device_preset("reram_wan2022", weight_bits=6, bits_per_cell=2, read_noise_frac=0.0)
    layer, weight, _ = _layer(config, d_in=8, d_out=6)
    ledger = Ledger()
    layer.program(ledger.scope(phase="deploy_base"))
    for s in range(3):
        assert ledger.cell_write_pulses(layer=f"fc.slices.{s}") > 0, s
    for array in layer.slices:
        array.start_pulse_tally()
    new = torch.from_numpy(weight.copy())
    new[2, 0] = new[2, 0] * 0.5  # one weight (not its row's max) moves: only its cells may be written
    assert abs(weight[2, 0]) < np.abs(weight[2]).max()
    scope = ledger.scope(phase="adapt")
    layer.reprogram(new, scope, previous_weight=torch.from_numpy(weight), keep_scale=True)
    assert layer.rewritten.sum() == 1 and layer.rewritten[2, 0]
    pulses = [array.cell_pulses() for array in layer.slices]  # (2 * in * out,) per slice: per cell
    assert all(p.shape == (2 * 8 * 6,) for p in pulses)
    assert sum(int(p.sum()) for p in pulses) == ledger.cell_write_pulses(phase="adapt") > 0
    for p in pulses:  # G+ cells then G- cells, in (input row, output) order: only weight (2, 0)'s pair
        cells = p.reshape(2, 8, 6)
        cells[:, 0, 2] = 0
        assert not cells.any()
    np.testing.assert_allclose(layer.programmed_weight().numpy(), quantised(new.numpy(), 6), atol=0.35)
    layer.drift_to(60.0)
    assert all(array.time_s == 60.0 for array in layer.slices)


def test_convert_to_analog_slices_when_weight_bits_is_set() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    plain = convert_to_analog(model, device_preset("ideal"))
    assert type(plain[0]) is AnalogLinear
    sliced = convert_to_analog(model, device_preset("ideal", weight_bits=8), seed=4)
    layer = sliced[0]
    assert isinstance(layer, SlicedAnalogLinear) and isinstance(layer, AnalogLayer) and isinstance(layer, Recording)
    assert [s.name for s in layer.slices] == [f"0.slices.{s}" for s in range(4)]
    program(sliced)  # the model-level helper programs every slice
    x = torch.randn(4, 6)
    expected = model[2](torch.relu(model[0](x)))
    with torch.no_grad():
        assert torch.allclose(sliced(x), expected, atol=0.05)
    with pytest.raises(ValueError, match="Conv2d"):
        convert_to_analog(nn.Conv2d(1, 2, 3), device_preset("ideal", weight_bits=8))


def test_save_and_load_round_trip_continues_exactly() -> None:
    config = device_preset("reram_wan2022", weight_bits=8, bits_per_cell=2, read_noise_frac=0.02,
                           programming_mode="statistical")  # fmt: skip
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))
    original = convert_to_analog(model, config, seed=1)
    program(original)
    drift(original, 60.0)
    files = state_files(original)
    fresh = convert_to_analog(nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3)), config, seed=9)
    loaded = load_state_files(files, fresh, source="test")
    x = torch.randn(3, 10)
    with torch.no_grad():
        first = [original(x), loaded(x)]
        drift(original, 3600.0)
        drift(loaded, 3600.0)
        second = [original(x), loaded(x)]
    assert torch.equal(*first) and torch.equal(*second) and not torch.equal(first[0], second[0])
    assert torch.equal(original[0].weight_step, loaded[0].weight_step)
    with pytest.raises(ValueError, match="architecture|slices"):
        other = convert_to_analog(nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3)),
                                  config.replace(weight_bits=6), seed=1)  # fmt: skip
        load_state_files(files, other, source="test")


def test_device_options_are_validated() -> None:
    assert device_preset("isaac").weight_slices == 8 and device_preset("reram_wan2022").weight_slices == 1
    for bad in (dict(weight_bits=0), dict(weight_bits=25), dict(bits_per_cell=0), dict(weight_bits=8, levels=4,
                bits_per_cell=3)):  # fmt: skip
        with pytest.raises(ValueError, match="weight_bits|bits_per_cell"):
            device_preset("reram_wan2022", **bad)
    with pytest.raises(ValueError, match="weight_bits"):
        SlicedAnalogLinear(4, 3, device_preset("reram_wan2022"))


def test_isaac_per_ima_power_for_three_input_statistics() -> None:
    """ISAAC Table 6 per IMA with the preset's 16-bit weights over eight 2-bit cells: ADCs, DACs and shift-adds
    within 25 % for every input statistic; the arrays' power grows with the inputs' bit density (ReLU inputs
    drive about half the lines of signed or uniform ones) and is stated beside ISAAC's single figure."""
    rows = fidelity.isaac_slicing_rows(batch=8)
    asserted = [r for r in rows if r.tolerance is not None]
    assert len(asserted) == 9 and all(r.ok for r in asserted), [(r.item, r.ratio) for r in asserted if not r.ok]
    array = {r.item.split(", ")[1]: r.ours for r in rows if r.item.startswith("cell_read")}
    assert len(array) == 3
    assert array["ReLU(N(0,1)) inputs"] < array["N(0,1) inputs"] < array["U(0,1) inputs"]
    assert 1.0 < array["ReLU(N(0,1)) inputs"] / 2.4 < 2.0 and array["U(0,1) inputs"] / 2.4 < 4.0


def test_full_finetune_rewrites_a_sliced_layer_as_one_weight_matrix() -> None:
    """`crossbar.weight_layers` lists a bit-sliced layer once (not its slices), so full fine-tuning trains one
    digital copy per weight matrix and rewrites it through the sliced layer's own `reprogram` (every slice whose
    digits moved), leaving the model's structure as it was."""
    from crossbar import weight_layers
    from fusion import adapt
    from fusion.methods.lora_methods import FullFinetuneConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    analog = convert_to_analog(model, device_preset("ideal", weight_bits=8, bits_per_cell=2), seed=1)
    program(analog)
    assert [name for name, _ in weight_layers(analog)] == ["0", "2"]
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    ledger = Ledger()
    result = adapt("full_finetune", analog, None, (x, y), FullFinetuneConfig(epochs=3, lr=0.05), ledger=ledger,
                   task="toy", seed=0, progress=False, val_fraction=0.0)  # fmt: skip
    adapted = result.model
    assert all(isinstance(adapted[i], SlicedAnalogLinear) for i in (0, 2))
    assert result.cell_write_pulses == ledger.cell_write_pulses(phase="adapt") > 0
    written = {r.layer for r in ledger.rows(phase="adapt") if r.event in WRITE_EVENTS}
    assert written and all(".slices." in layer for layer in written)
    assert not torch.equal(adapted[0].programmed_weight(), analog[0].programmed_weight())
