"""The calibration phase: ADC ranges per tile column from the base task's training data (never test data), their
use by the kernels, their price in the ledger, renewal after drift (reads only), and fusion's norm read-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crossbar import AnalogLinear, adc_calibration, analog_layers, convert_to_analog, device_preset, program
from crossbar.engine_numba import adc_inputs
from crossbar.mvm import MvmSettings
from energy import Ledger
from scenarios.families import TaskSuite
from scenarios.phase_blobs import load_programmed_phase
from scenarios.workload import workload_for

CALIBRATED = device_preset("reram_wan2022", programming_mode="statistical", adc_range="calibrated", tile_cols=16)


def _layer(d_in: int = 64, d_out: int = 32, seed: int = 0) -> AnalogLinear:
    torch.manual_seed(seed)
    linear = nn.Linear(d_in, d_out)
    with torch.no_grad():  # rows with an outlier of growing size: after the per-row mapping their columns' partial
        linear.weight[:, 0] = torch.linspace(0.0, 3.0, d_out)  # sums differ widely: a range per column pays off
    layer = AnalogLinear.from_linear(linear, CALIBRATED, seed=seed, name="layer")
    layer.program()
    return layer


def _clipped_fraction(layer: AnalogLinear, x: torch.Tensor) -> float:
    """The largest fraction of its conversions any tile column clips."""
    values = adc_inputs(x, layer.state, layer.out_scale, MvmSettings.from_device(layer.array_config))
    return float((np.abs(values) > layer.adc_ranges[:, None, :]).mean(axis=(0, 1)).max())  # the worst column


def test_per_column_ranges_differ_and_clip_less_than_one_range_per_layer():
    layer = _layer()
    calibration, held_out = torch.randn(256, 64), torch.randn(256, 64)
    layer.calibrate_adc(calibration, percentile=99.9, granularity="column")
    per_column = layer.adc_ranges.copy()
    clipped_column = _clipped_fraction(layer, held_out)
    y_column = layer.mvm(held_out)
    layer.calibrate_adc(calibration, percentile=99.9, granularity="layer")
    clipped_layer = _clipped_fraction(layer, held_out)
    y_layer = layer.mvm(held_out)
    assert per_column.shape == (1, 32) and per_column.max() > 3 * per_column.min()  # the columns differ
    assert np.unique(layer.adc_ranges).size == 1
    # the same percentile per column clips ~0.1 % of every column (held-out data: a little more); one range for
    # the layer clips the large columns far more often
    assert clipped_layer > 2 * clipped_column
    # and the kernels use the ranges: per-column ranges give the MVM closer to the exact product
    exact = held_out @ layer.programmed_weight().T
    err_column = float((y_column - exact).pow(2).mean())
    err_layer = float((y_layer - exact).pow(2).mean())
    assert err_column < err_layer


def test_ledger_prices_the_conversions_the_calibration_observed():
    for scheme in ("neurram", "isaac"):
        device = CALIBRATED.replace(mvm_scheme=scheme, tile_rows=32)
        layer = AnalogLinear.from_linear(nn.Linear(70, 20), device, seed=1, name="layer")
        layer.program()
        ledger = Ledger()
        x = torch.randn(9, 70)
        conversions = layer.calibrate_adc(x, scope=ledger.scope(phase="calibration"))
        cycles = device.scheme.conversions_per_column(device.dac_bits)
        assert conversions == 3 * 9 * 20 * cycles  # input tiles x vectors x columns x conversions per column
        assert ledger.total("count", phase="calibration", event="adc_conversion") == conversions
        assert ledger.cell_write_pulses() == 0


def test_uncalibrated_layer_raises_and_model_pass_calibrates_in_order():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5))
    analog = convert_to_analog(model, CALIBRATED, seed=3)
    program(analog)
    x = torch.randn(40, 12)
    with pytest.raises(RuntimeError, match="never calibrated"), torch.no_grad():
        analog(x)
    ledger = Ledger()
    with adc_calibration(analog, ledger.scope(phase="calibration"), percentile=100.0) as report:
        analog(x)
    assert report.layers == ["0", "2"] and report.vectors == {"0": 40, "2": 40}
    # observed conversions plus the forward MVMs that carry the set on to the next layer: all priced
    assert ledger.total("count", phase="calibration", event="adc_conversion") == report.conversions + 40 * 20 + 40 * 5
    first, second = (layer.adc_ranges.copy() for _, layer in analog_layers(analog))
    with torch.no_grad():
        analog(torch.randn(3, 12) * 1e6)  # later data never moves the ranges
    assert np.array_equal(analog[0].adc_ranges, first) and np.array_equal(analog[2].adc_ranges, second)


def test_renewal_after_drift_is_reads_only_and_follows_the_drifted_arrays():
    layer = _layer()
    x = torch.randn(128, 64)
    layer.calibrate_adc(x)
    before = layer.adc_ranges.copy()
    layer.drift_to(30 * 86400.0)
    ledger = Ledger()
    with adc_calibration(layer, ledger.scope(phase="calibration")):
        layer(x)
    assert ledger.cell_write_pulses() == 0
    assert ledger.total("count", phase="calibration", event="adc_conversion") > 0
    assert not np.array_equal(layer.adc_ranges, before)


# --- through the runner: the calibration set is drawn from the base task's training data only --------------------


def _tiny(*extra: str):
    from scenarios.loading import load_scenario

    return load_scenario(
        "tiny",
        [
            "model.d_model=16", "model.n_heads=2", "model.n_blocks=1", "model.d_ff=16", "model.base_epochs=1",
            "tasks.base_train_size=120", "tasks.sources=[rotate_+30, invert]", "tasks.targets=[rotate_+45]",
            "tasks.test_size=40", "bank.epochs=1", "bank.train_size=40", "bank.rank=2",
            "device.overrides={adc_range: calibrated, programming_mode: statistical}",
            "calibration.samples=32", "methods=[{name: zero_shot}]", "evaluate.drift_times_s=[0, 3600]",
            "calibration.renew_adc_after_drift=true", *extra,
        ],
    )  # fmt: skip


def _poisoned(build):
    """build_tasks with every test and validation set, and every target's few-shot set, replaced by NaN/huge."""
    import dataclasses

    def bad(values, fill=np.nan):
        out = np.full(np.asarray(values).shape, fill, dtype=np.float32)
        out.reshape(len(out), -1)[:, :1] = 1e30
        return out

    def poison(task, target: bool):
        changes = {"x_test": bad(task.x_test), "x_val": bad(task.x_val, 1e30)}
        if target:
            changes["x_train"] = bad(task.x_train)
        return dataclasses.replace(task, **changes)

    def wrapped(scenario):
        suite = build(scenario)
        return dataclasses.replace(
            suite,
            base=poison(suite.base, False),
            sources={k: poison(v, False) for k, v in suite.sources.items()},
            targets={k: poison(v, True) for k, v in suite.targets.items()},
        )

    return wrapped


def test_adc_ranges_and_metrics_never_see_test_data(monkeypatch):
    import scenarios.phases as phases

    scenario = _tiny()
    shipped = phases.Shipped.of(scenario)
    base = phases.base_task(shipped)
    bank = phases.bank_task(shipped, *(phases.bank_part_task(base, shipped, s) for s in scenario.tasks.sources))
    clean = phases.programmed_task(base, bank, shipped)
    real_load = phases.load_task

    def poisoned_load(scenario, name, role):  # load_task with what `_poisoned` poisons poisoned
        task = real_load(scenario, name, role)
        suite = TaskSuite(base=task, sources={}, targets={name: task} if role == "target" else {}, n_classes=2,
                          image_shape=task.image_shape)  # fmt: skip
        poisoned = _poisoned(lambda _: suite)(scenario)
        return poisoned.targets[name] if role == "target" else poisoned.base

    monkeypatch.setattr(phases, "load_task", poisoned_load)
    poisoned = phases.programmed_task(base, bank, shipped)
    monkeypatch.undo()
    assert clean["deploy_ledger.json"] == poisoned["deploy_ledger.json"]
    states = [load_programmed_phase(blob, scenario) for blob in (clean, poisoned)]
    layers = [
        [layer for _, layer in analog_layers(s.analog)]
        + [a for arrays in s.bank.layers.values() for a in (arrays.a, arrays.b)]
        for s in states
    ]
    assert len(layers[0]) > 4 and all(layer.adc_calibrated for layer in layers[0])
    for one, other in zip(*layers):
        assert np.array_equal(one.adc_ranges, other.adc_ranges), one.name
    ledger = Ledger.from_records(__import__("json").loads(clean["deploy_ledger.json"]))
    assert ledger.total("count", phase="calibration", event="adc_conversion") > 0
    assert ledger.cell_write_pulses(phase="calibration") == 0
    task = phases.target_task(scenario, "rotate_+45")
    units = [
        phases.run_unit(
            s.analog, s.bank, scenario, workload_for(scenario), task, "zero_shot", calibration_set=s.calibration_set
        )[0]
        for s in states
    ]
    assert units[0].accuracies == units[1].accuracies
    renewal = Ledger.from_records(units[0].ledger_records)
    assert renewal.total("count", phase="calibration", event="adc_conversion") > 0  # renewed after the 1 h drift
    assert renewal.cell_write_pulses(phase="calibration") == 0


# --- fusion's norm read-out: K noisy reads, priced; what is stored vs read on demand ------------------------------


def _fusion_deployed(reads: int, storage: str, ledger: Ledger | None = None):
    from test_fusion_support import ToyNet, random_bank

    from fusion import attach_fusion, calibrate_norms, program_bank

    model = ToyNet(seed=0)
    bank = random_bank(model, n_entries=3, rank=2, alpha=4.0, seed=1)
    device = device_preset("reram_wan2022", programming_mode="statistical")
    analog = convert_to_analog(model, device, seed=0)
    program(analog)
    programmed = program_bank(analog, bank, device, seed=0, calibrate_norms=False)
    scope = ledger.scope(phase="calibration") if ledger is not None else None
    calibrate_norms(analog, programmed, scope, reads=reads, storage=storage)
    return analog, programmed, attach_fusion(analog, programmed, seed=2)


def test_noisy_norm_read_out_averages_over_k_reads_and_is_priced_k_times():
    exact = _fusion_deployed(0, "readout")[1].layers["blocks.0.q"].calibration
    errors, reads_priced = {}, {}
    for k in (1, 16):
        ledger = Ledger()
        cal = _fusion_deployed(k, "readout", ledger)[1].layers["blocks.0.q"].calibration
        errors[k] = float((cal.b_read - exact.b_read).abs().mean())
        reads_priced[k] = ledger.total("count", phase="calibration", event="cell_read", layer="blocks.0.q.bank_B")
        assert float((cal.cross - exact.cross).abs().max()) < 0.1 * float(exact.cross.abs().max())
    assert errors[16] < 0.5 * errors[1]  # noise and ADC error average out (sigma / sqrt(K))
    assert reads_priced[16] == 16 * reads_priced[1] > 0


def test_leaner_storage_keeps_fewer_words_and_reads_the_rest_when_c_changes():
    from fusion.digital_state import digital_state

    words, norms = {}, {}
    for storage in ("readout", "no_b_copy", "on_demand"):
        analog, _, fused = _fusion_deployed(4, storage)
        layer = fused.layers["blocks.0.q"]
        words[storage] = digital_state(analog, 3, gradient_based=True).calibration
        assert words[storage] == sum(layer.calibration.sram_words for layer in fused.layers.values())
        ledger = Ledger()
        scope = ledger.scope(phase="adapt")
        with torch.no_grad():
            layer.coefficients.add_(0.3)
        norms[storage] = layer.row_norm(scope=scope)
        array_reads = ledger.total("count", event="cell_read")
        assert (array_reads > 0) == (storage != "readout")  # a stored read-out needs no array access
    n_layers, d_out, width = len(fused.layers), 16, 3 * 2  # q and v of two blocks, N r = 3 x 2
    assert words["readout"] - words["no_b_copy"] == n_layers * d_out * width  # no copy of B_stack
    assert words["on_demand"] == n_layers * d_out  # ||W0 row||^2 only
    for storage in ("no_b_copy", "on_demand"):  # the same norms, up to the read noise of the fresh read-out
        torch.testing.assert_close(norms[storage], norms["readout"], rtol=0.05, atol=0.0)


@pytest.mark.parametrize(
    "override, key",
    [
        ("calibration.adc_percentile=0", "calibration.adc_percentile"),
        ("calibration.adc_granularity=row", "calibration.adc_granularity"),
        ("calibration.norm_storage=nothing", "calibration.norm_storage"),
        ("calibration.samples=0", "calibration.samples"),
        ("calibration.bogus=1", "calibration.bogus"),
    ],
)
def test_bad_calibration_settings_name_their_key(override: str, key: str) -> None:
    from scenarios.errors import ScenarioError
    from scenarios.loading import load_scenario

    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        load_scenario("tiny", [override])
