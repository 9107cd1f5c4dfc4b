"""AnalogLinear and the model-level helpers: exactness against nn.Linear, quantised reference, gradients,
conversion by name, programming and ledger accounting, determinism, drift, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from naive_mvm import naive_mvm
from scipy.stats import ks_2samp
from torch import nn

from crossbar import (
    AnalogLinear,
    ArrayState,
    analog_layers,
    convert_to_analog,
    deferred_mvm_records,
    device_preset,
    drift,
    layer_seed,
    program,
    record_all_to,
)
from energy import Ledger

IDEAL = device_preset("ideal")


def _linear(d_in: int, d_out: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out)


def _programmed(linear: nn.Linear, device, **kwargs) -> AnalogLinear:
    layer = AnalogLinear.from_linear(linear, device, **kwargs)
    layer.program()
    return layer


# --- exactness -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_ideal_preset_equals_nn_linear(train):
    linear = _linear(300, 70)  # 2 row tiles of 256, the second partly padding
    layer = _programmed(linear, IDEAL)
    layer.train(train)
    x = torch.randn(4, 5, 300)  # leading batch dims
    expected = linear(x).detach()
    with torch.no_grad():
        fast = layer(x)
    assert fast.shape == (4, 5, 70)
    scale = float(expected.abs().max())
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-5 * scale)  # autograd-free too
    torch.testing.assert_close(layer.programmed_weight(), linear.weight.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.mvm(x), (x @ linear.weight.T).detach(), rtol=0, atol=1e-5 * scale)


def test_quantisation_only_matches_hand_quantised_numpy_reference():
    """Conductance levels, DAC and ADC on, noise off: the layer equals a NumPy re-implementation of mapping and
    converters from the weights themselves."""
    device = device_preset("ideal", levels=16, dac_bits=6, adc_bits=7, adc_full_scale=20.0, tile_rows=64, tile_cols=64)
    linear = _linear(150, 30, seed=1)
    layer = _programmed(linear, device)
    x = torch.randn(8, 150)
    with torch.no_grad():
        y = layer(x).numpy()
    # Hand quantisation of the weights: per-row abs max, 16 levels per cell of the differential pair.
    w = linear.weight.detach().numpy().astype(np.float64)
    w_max = np.abs(w).max(axis=1, keepdims=True)
    u = w / w_max
    u_q = np.round(np.maximum(u, 0) * 15) / 15 - np.round(np.maximum(-u, 0) * 15) / 15
    g_diff = (u_q * device.g_range_us).astype(np.float32)
    out_scale = (w_max[:, 0] / device.g_range_us).astype(np.float32)
    ref = naive_mvm(
        x.numpy(), g_diff, out_scale, tile=layer.state.tile_rows, dac_bits=6, adc_bits=7, adc_full_scale=20.0,
        sigma_us=0.0, g_range_us=device.g_range_us, key=0, bias=linear.bias.detach().numpy(),
    )  # fmt: skip
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    # And it really quantised: not equal to the float layer.
    assert np.abs(y - linear(x).detach().numpy()).max() > 1e-3


# --- gradients -----------------------------------------------------------------------------------------------------


def test_input_gradient_is_transposed_mvm_of_programmed_weights():
    linear = _linear(100, 20)
    layer = _programmed(linear, device_preset("reram_wan2022", programming_mode="statistical", tile_rows=64), seed=3)
    layer.train()
    x = torch.randn(6, 100, requires_grad=True)
    grad_out = torch.randn(6, 20)
    layer(x).backward(grad_out)
    x_ref = x.detach().clone().requires_grad_(True)
    F.linear(x_ref, layer.programmed_weight()).backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    assert layer.bias.grad is None and not layer.bias.requires_grad
    assert all(not p.requires_grad for p in layer.parameters())


def test_float64_input_and_analog_backward_mode():
    linear = _linear(40, 10)
    layer = _programmed(linear, device_preset("reram_wan2022", programming_mode="statistical"), backward_mode="analog")
    x = torch.randn(300, 40, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert x.grad.dtype == torch.float64
    exact = layer.programmed_weight().double().sum(dim=0)
    # Analog backward: the quantised, noisy transposed MVM; on average close to the exact gradient.
    rel = (x.grad.mean(dim=0) - exact).norm() / exact.norm()
    assert rel < 0.05


def test_bias_can_be_unfrozen():
    layer = _programmed(_linear(16, 4), IDEAL)
    layer.bias.requires_grad_(True)
    layer(torch.randn(3, 16)).sum().backward()
    torch.testing.assert_close(layer.bias.grad, torch.full((4,), 3.0))


# --- conversion ----------------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = self.norm(x + self.o(att @ v))
        return x + self.mlp(x)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(16, 3)
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return self.head(x)


def test_convert_to_analog_include_exclude_names_and_seeds():
    torch.manual_seed(0)
    model = Tiny()
    converted = convert_to_analog(model, IDEAL, include=["blocks.*"], exclude=["*.mlp.*"], seed=5)
    names = [name for name, _ in analog_layers(converted)]
    assert names == [f"blocks.{i}.{p}" for i in range(2) for p in "qkvo"]
    assert isinstance(converted.head, nn.Linear) and isinstance(converted.blocks[0].mlp[0], nn.Linear)
    assert not analog_layers(model)  # not in place: the original is untouched
    for name, layer in analog_layers(converted):
        assert layer.name == name and layer.seed == layer_seed(5, name)
    assert len({layer.seed for _, layer in analog_layers(converted)}) == 8
    everything = convert_to_analog(model, IDEAL)
    # The MultiheadAttention's out_proj stays digital (MHA reads its weight directly).
    assert len(analog_layers(everything)) == 2 * 6 + 1
    assert isinstance(everything.mha.out_proj, nn.Linear)
    report = program(everything)
    assert report.cells_targeted > 0
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(everything(x), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        convert_to_analog(model, IDEAL, include=["nothing.*"])
    with pytest.raises(ValueError, match="include"):
        convert_to_analog(model, IDEAL, include="blocks.*")
    converted_in_place = convert_to_analog(model, IDEAL, include=["head"], inplace=True)
    assert converted_in_place is model and isinstance(model.head, AnalogLinear)


def test_determinism_from_seed():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))
    device = device_preset("reram_wan2022", programming_mode="statistical", stuck_at_max_rate=0.01)
    x = torch.randn(10, 32)
    outputs = []
    for seed in (7, 7, 8):
        analog = convert_to_analog(model, device, seed=seed)
        program(analog)
        with torch.no_grad():
            outputs.append(torch.stack([analog(x), analog(x)]))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert not torch.equal(outputs[0][0], outputs[0][1])  # fresh read noise per forward
    assert not torch.equal(outputs[0], outputs[2])


# --- programming, ledger, drift, memory ----------------------------------------------------------------------------


def test_program_drops_target_and_state_is_12_bytes_per_weight():
    layer = AnalogLinear.from_linear(_linear(512, 64), IDEAL)
    assert layer.target_weight is not None
    layer.program()
    assert layer.target_weight is None
    assert isinstance(layer.state, ArrayState)
    assert layer.state.nbytes / (512 * 64) == 12
    with pytest.raises(RuntimeError, match="already programmed"):
        layer.program()


def test_reprogram_touches_only_changed_weights():
    device = device_preset("reram_wan2022", programming_mode="statistical")
    linear = _linear(64, 16)
    layer = _programmed(linear, device)
    w0 = linear.weight.detach().clone()
    w1 = w0.clone()
    w1[3, 5] = w0[3, 5] * 0.3  # one weight changes; its row keeps its max, so one pair of cells changes
    ledger = Ledger()
    report = layer.reprogram(w1, ledger.scope(phase="adapt"), previous_weight=w0)
    assert report.cells_targeted == 2
    assert ledger.total("count", event="verify_read") == report.verify_reads


def test_record_to_ledger_counts_forward_and_backward():
    device = device_preset("reram_wan2022", programming_mode="statistical", tile_rows=64, tile_cols=32)
    d_in, d_out, batch = 100, 40, 6
    model = nn.Sequential(_linear(d_in, d_out))
    analog = convert_to_analog(model, device)
    ledger = Ledger()
    program(analog, ledger.scope(phase="deploy_base"))
    assert ledger.total("count", event="set_pulse", phase="deploy_base") > 0
    x = torch.randn(2, 3, d_in, requires_grad=True)
    with record_all_to(analog, ledger.scope(phase="inference")):
        analog(x).sum().backward()
    assert analog[0].ledger is None  # restored
    inference = {"phase": "inference", "layer": "0"}
    # forward + transposed backward: at most 2 * d_in * d_out cells per vector and bit-cycle each way (only the
    # cells of driven rows conduct; crossbar.scheme)
    cycles = device.scheme.cycles(device.dac_bits)
    cells = ledger.total("count", event="cell_read", **inference)
    assert 0 < cells <= 2 * (2 * d_in * d_out * batch * cycles)
    assert ledger.total("count", event="adc_conversion", **inference) == 2 * d_out * batch + 2 * d_in * batch
    assert ledger.total("count", event="dac_conversion", **inference) == cycles * (d_in * 2 + d_out * 2) * batch
    with torch.no_grad():
        analog(x)  # no ledger set: nothing recorded
    assert ledger.total("count", event="cell_read", **inference) == cells


def test_drift_shrinks_weights_on_average():
    device = device_preset("reram_wan2022", programming_mode="statistical")
    model = nn.Sequential(_linear(64, 32))
    analog = convert_to_analog(model, device)
    program(analog)
    before = analog[0].programmed_weight()
    drift(analog, 1e6)
    after = analog[0].programmed_weight()
    assert analog[0].time_s == 1e6
    # Log relaxation lowers the conductance of the programmed cell of each pair (the idle one sits at g_min), so
    # weights shrink in magnitude.
    change = torch.sign(before) * (after - before)
    assert float(change.mean()) < 0
    with pytest.raises(ValueError, match="t_s"):
        analog[0].drift_to(10.0)


def test_layer_drift_depends_on_the_time_not_the_steps():
    """A layer drifted to one day in one call and its twin in 24 hourly calls: the same distribution of weight
    changes (two-sample KS) but other draws; the origin (12 bytes per weight) exists only while drifting and a
    rewrite drops it."""
    device = device_preset("reram_wan2022", programming_mode="statistical")
    one, steps = (_programmed(_linear(128, 64), device) for _ in range(2))
    before = one.programmed_weight()
    assert one.drift_origin is None
    one.drift_to(86400.0)
    for hour in range(1, 25):
        steps.drift_to(3600.0 * hour)
    assert one.drift_origin.shape == (3, *one.g_diff_us.shape) and one.drift_origin.dtype == torch.float32
    a = (one.programmed_weight() - before).flatten().numpy()
    b = (steps.programmed_weight() - before).flatten().numpy()
    assert ks_2samp(a, b).pvalue > 1e-3 and not np.array_equal(a, b)
    one.reprogram(before)
    assert one.drift_origin is None and one.time_s == 0.0


def test_calibrated_adc():
    device = device_preset("reram_wan2022", programming_mode="statistical", adc_range="calibrated", tile_cols=8)
    layer = _programmed(_linear(64, 16), device)
    assert layer.adc_full_scale is None and not layer.adc_calibrated
    x = torch.randn(20, 64)
    with pytest.raises(RuntimeError, match="never calibrated"), torch.no_grad():
        layer(x)  # no implicit calibration on whatever batch comes first
    conversions = layer.calibrate_adc(x, percentile=100.0)
    assert conversions == 20 * 16  # one tile of rows: one conversion per vector and column
    assert layer.adc_ranges.shape == (1, 16) and layer.adc_ranges.dtype == np.float32
    peak = layer.adc_full_scale
    assert 0 < peak < 64
    with torch.no_grad():
        layer(x)
    assert layer.adc_full_scale == peak  # running data never changes the ranges
    layer.calibrate_adc(x, granularity="tile")
    assert len(np.unique(layer.adc_ranges[0, :8])) == 1 and len(np.unique(layer.adc_ranges[0, 8:])) == 1
    layer.calibrate_adc(x, granularity="layer")
    assert len(np.unique(layer.adc_ranges)) == 1
    with pytest.raises(ValueError, match="percentile"):
        layer.calibrate_adc(x, percentile=0)
    fixed = _programmed(_linear(64, 16), device_preset("reram_wan2022", programming_mode="statistical"))
    with pytest.raises(ValueError, match="adc_range"):
        fixed.calibrate_adc(x)


def test_errors_and_repr():
    layer = AnalogLinear.from_linear(_linear(8, 4), IDEAL, name="blocks.0.q")
    with pytest.raises(RuntimeError, match=r"'blocks.0.q' is not programmed: call its program\(\)"):
        layer(torch.randn(2, 8))
    assert "array_config=ideal" in repr(layer) and "tiles=1x1 of 256x256" in repr(layer)
    layer.program()
    with pytest.raises(ValueError, match="last dimension 8"):
        layer(torch.randn(2, 7))
    with pytest.raises(ValueError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="seed"):
        AnalogLinear(4, 4, IDEAL, seed=-1)
    with pytest.raises(ValueError, match="weight must have shape"):
        layer.reprogram(torch.zeros(3, 3))


# --- operands the engines derive, behind the array's generation counter ------------------------------------------


def _uncached_forward(layer: AnalogLinear, x: torch.Tensor, key: int) -> torch.Tensor:
    """The forward MVM as `crossbar.analog_mvm` computes it from the layer's buffers, without kept operands."""
    from crossbar.engine_numba import analog_mvm
    from crossbar.mvm import MvmSettings

    settings = MvmSettings.from_device(layer.array_config, adc_ranges=layer.adc_ranges)
    return analog_mvm(x, layer.state, layer.out_scale, settings, key=key, bias=layer.bias)


def test_engine_operands_follow_reprogramming_drift_and_copies():
    """An engine keeps the tile views and out_scale between MVMs (`crossbar.engine_numba.ArrayOperands`) for one
    generation of the array; they must follow a rewrite (new out_scale tensor), a drift (buffers changed in place)
    and never be shared by a deep copy."""
    import copy

    from crossbar.rng import mix_seed_int

    device = device_preset("reram_wan2022", programming_mode="statistical", tile_rows=32, tile_cols=16)
    layer = _programmed(_linear(40, 24, seed=3), device, seed=5)
    x = torch.randn(7, 40)

    def check() -> None:
        expected = _uncached_forward(layer, x, mix_seed_int(layer.noise_seed, int(layer.noise_calls)))
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)

    check()
    twin = copy.deepcopy(layer)
    assert "_engines" not in twin.__dict__
    generation = layer.generation
    layer.reprogram(_linear(40, 24, seed=4).weight.detach() * 3.0)  # new targets, new out_scale tensor
    assert layer.generation > generation
    check()
    generation = layer.generation
    layer.drift_to(86400.0)
    assert layer.generation > generation
    check()
    twin_key = int(twin.noise_calls)
    with torch.no_grad():
        twin_out = twin(x)  # the copy still holds the first programming, undrifted
    torch.testing.assert_close(twin_out, _uncached_forward(twin, x, mix_seed_int(twin.noise_seed, twin_key)),
                               rtol=0, atol=0)  # fmt: skip
    assert not torch.equal(twin.g_diff_us, layer.g_diff_us)


def test_engine_plan_follows_every_change_of_the_layer():
    """After its first forward MVM the numba engine runs later ones from the plan of the array's generation; each
    must equal `analog_mvm` from the layer's buffers after every change that bumps the generation: drift (in
    place), a rewrite (new out_scale), an ADC calibration (new ranges), a new bias tensor, a new device config, a
    reseed, a move, and new memory under the conductance buffer (with `bump_generation`); a copy must not share
    it. An in-place change of the bias is seen through the shared memory."""
    import copy

    from crossbar.rng import mix_seed_int

    device = device_preset("reram_wan2022", programming_mode="statistical", tile_rows=32, adc_range="calibrated")
    layer = _programmed(_linear(40, 24, seed=3), device, seed=5)
    x = torch.randn(9, 40)
    layer.calibrate_adc(x)

    def check(target: AnalogLinear = layer) -> None:
        for _ in range(2):  # the first call may build the plan, the second runs from it
            expected = _uncached_forward(target, x, mix_seed_int(target.noise_seed, int(target.noise_calls)))
            with torch.no_grad():
                assert torch.equal(target(x), expected)
        assert "numba" in target.engine().derived(target)

    def bumps(change) -> None:
        generation = layer.generation
        change()
        assert layer.generation > generation
        check()

    check()
    bumps(lambda: layer.drift_to(3600.0))
    twin = copy.deepcopy(layer)
    assert "_engines" not in twin.__dict__
    bumps(lambda: layer.reprogram(_linear(40, 24, seed=4).weight.detach() * 3.0))
    bumps(lambda: layer.calibrate_adc(x * 4.0))
    bumps(lambda: setattr(layer, "bias", nn.Parameter(torch.randn(24), requires_grad=False)))
    with torch.no_grad():
        layer.bias.add_(1.0)  # in place: the plan shares the bias's memory
    check()
    bumps(lambda: setattr(layer, "array_config", layer.array_config.replace(read_noise_frac=0.05)))
    bumps(lambda: layer.reseed_noise(11))
    bumps(lambda: layer.to(torch.device("cpu")))

    def new_memory() -> None:
        layer.g_diff_us.data = layer.g_diff_us.data * 0.5  # the same tensor object on new memory
        layer.bump_generation()

    bumps(new_memory)
    twin.drift_to(86400.0)
    check(twin)
    assert not torch.equal(twin.g_diff_us, layer.g_diff_us)


def test_layer_ledger_records_equal_record_mvm_called_directly():
    """The engine's kept `MvmPricing` records exactly what `crossbar.pricing.record_mvm` records for the same MVM,
    forward (with bias) and transposed, and follows a change of cost table."""
    from crossbar.pricing import conductance_sums, record_mvm
    from energy import cost_preset

    device = device_preset("reram_wan2022", programming_mode="statistical", tile_rows=32, tile_cols=16)
    layer = _programmed(_linear(40, 24, seed=1), device)
    x = torch.randn(9, 40)
    d = torch.randn(9, 24)
    changed = cost_preset("isaac_horowitz", shift_add_pj=0.05, mvm_cycle_ns=20.0, datapath="fp32")
    for costs in (cost_preset("isaac_horowitz"), changed):
        by_layer, direct = Ledger(costs), Ledger(costs)
        layer.ledger = by_layer.scope(phase="inference")
        with torch.no_grad():
            layer(x)
        layer.record_reads(9, by_layer.scope(phase="inference"), transposed=True, inputs=d)
        layer.ledger = None
        sums = conductance_sums(layer.state)
        common = {"layer": layer.name, "device": device, "d_in": 40, "d_out": 24, "n_vectors": 9, "conductance": sums}
        record_mvm(direct.scope(phase="inference"), inputs=x, bias=True, **common)
        record_mvm(direct.scope(phase="inference"), inputs=d, transposed=True, **common)
        assert by_layer.to_records() == direct.to_records()
    # A training MVM: the forward's activity counted in the DAC pass, the backward's in the pass that scales the
    # gradient; the same records as pricing the inputs the DAC sees directly.
    by_layer, direct = Ledger(), Ledger()
    layer.ledger = by_layer.scope(phase="adapt")
    xg = x.clone().requires_grad_(True)
    layer(xg).backward(d)
    layer.ledger = None
    record_mvm(direct.scope(phase="adapt"), inputs=x, bias=True, **common)
    record_mvm(direct.scope(phase="adapt"), inputs=d * layer.out_scale[None, :], transposed=True, **common)
    assert by_layer.to_records() == direct.to_records()
    g_diff = layer.g_diff_us.reshape(-1, 24)[:40]
    assert torch.equal(xg.grad, (d * layer.out_scale) @ g_diff.T)  # the exact backward, bit for bit


def _training_like_run(model: nn.Module, scopes: list, defer: bool) -> None:
    """Forward and backward passes under two ledger scopes, a reprogramming and a drift in between."""
    torch.manual_seed(3)
    batches = [torch.randn(7, 30, requires_grad=True) for _ in range(6)]
    with record_all_to(model, scopes[0]):
        context = deferred_mvm_records(model) if defer else record_all_to(model, scopes[0])
        with context:
            for step, x in enumerate(batches):
                if step == 2:
                    model[0].reprogram(model[0].programmed_weight() * 0.5)
                if step == 3:
                    drift(model, 3600.0)
                if step == 4:
                    for _, layer in analog_layers(model):
                        layer.ledger = scopes[1]
                model(x).sum().backward()


def test_deferred_records_equal_records_per_call():
    """Adding MVMs up per array and direction and recording them once gives the ledger recording each call gives:
    same rows, same counts, energies and latencies to float rounding, across a change of conductances (reprogram,
    drift) and of ledger scope inside the block; nothing is recorded twice or left unrecorded."""
    device = device_preset("reram_wan2022", programming_mode="statistical", tile_rows=16, tile_cols=16)
    ledgers = {}
    for defer in (False, True):
        model = convert_to_analog(nn.Sequential(_linear(30, 20, seed=2), nn.ReLU(), _linear(20, 10, seed=4)), device)
        program(model)
        ledger = Ledger()
        _training_like_run(model, [ledger.scope(phase="adapt"), ledger.scope(phase="adapt", task="b")], defer)
        assert all(layer.__dict__.get("_tallies") is None for _, layer in analog_layers(model))
        ledgers[defer] = ledger.to_records()
    direct, deferred = ledgers[False], ledgers[True]
    assert [tuple(r[k] for k in ("event", "phase", "task", "layer")) for r in direct] == [
        tuple(r[k] for k in ("event", "phase", "task", "layer")) for r in deferred
    ]
    assert {r["task"] for r in deferred} == {"", "b"}
    for a, b in zip(direct, deferred):
        assert a["count"] == b["count"], a
        assert b["energy_pj"] == pytest.approx(a["energy_pj"], rel=1e-12, abs=0)
        assert b["latency_ns"] == pytest.approx(a["latency_ns"], rel=1e-12, abs=0)
