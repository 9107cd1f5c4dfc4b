"""adapt(): the fusion trainer on a toy task with a known answer, the zero-cell-writes invariant checked by the
ledger, the baselines' writes, reproducibility, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from test_fusion_support import ToyNet, random_bank, toy_task

from crossbar import analog_layers, convert_to_analog, device_preset, program
from energy import Ledger
from fusion import (
    METHODS,
    FusedLinear,
    FusionConfig,
    LoraHubConfig,
    adapt,
    evaluate_loss,
    fusion_trainable_params,
    method_names,
    program_bank,
)

C_TRUE = torch.tensor([1.0, 1.0, 0.0, 0.0])  # the target task is W0 + s (B1 + B2)(A1 + A2) on every q and v
FAST_SETTINGS = {"epochs": 3, "batch_size": 10, "budget": 6}


def fast(method: str, **overrides: object):
    """The method's config with the quick settings it has, plus `overrides`."""
    config = METHODS[method].config
    known = {f for f in config.__dataclass_fields__}
    return config(**{k: v for k, v in {**FAST_SETTINGS, **overrides}.items() if k in known})


@pytest.fixture(scope="module")
def toy():
    model = ToyNet()
    bank = random_bank(model, n_entries=4, rank=2, alpha=4.0)
    x, y = toy_task(model, bank, C_TRUE, 100)
    return model, bank, x, y


@pytest.fixture(scope="module")
def deployed(toy):
    """The toy base and bank on reram_wan2022 arrays, with the deploy ledger."""
    model, bank, x, y = toy
    device = device_preset("reram_wan2022")
    ledger = Ledger()
    analog = convert_to_analog(model, device, seed=0)
    program(analog, ledger.scope(phase="deploy_base"))
    programmed = program_bank(analog, bank, device, ledger.scope(phase="deploy_bank"), seed=0)
    return analog, programmed, x, y, ledger


@pytest.mark.parametrize("backend", ["digital", "ideal"])
def test_fusion_training_finds_the_known_combination(toy, backend: str) -> None:
    model, bank, x, y = toy
    if backend == "digital":
        base, programmed = model, program_bank(model, bank, None)
    else:
        device = device_preset("ideal")
        base = convert_to_analog(model, device, seed=0)
        program(base)
        programmed = program_bank(base, bank, device, seed=0)
    settings = FusionConfig(epochs=12, batch_size=10)
    result = adapt("fusion", base, programmed, (x, y), settings, seed=0, val_fraction=0.0, progress=False)
    before = evaluate_loss(base, x, y)
    after = evaluate_loss(result.model, x, y)
    assert after < 0.6 * before, (before, after)
    x_test, y_test = toy_task(model, bank, C_TRUE, 500, seed=99)
    with torch.no_grad():
        accuracy_before = (base(x_test).argmax(1) == y_test).float().mean()
        accuracy_after = (result.model(x_test).argmax(1) == y_test).float().mean()
    assert accuracy_after > accuracy_before + 0.1, (accuracy_before, accuracy_after)
    assert result.train_losses[-1] < result.train_losses[0]
    assert result.trainable_params == fusion_trainable_params(bank.layer_shapes(), 4) == 4 * 4 + 4 * 16
    fused = [m for m in result.model.modules() if isinstance(m, FusedLinear)]
    assert len(fused) == 4 and all(m.form == "lorahub" for m in fused)


def test_fusion_and_lorahub_write_no_cell_the_lora_baselines_do(deployed) -> None:
    analog, programmed, x, y, ledger = deployed
    before = {name: layer.state.writes_pos.copy() for name, layer in analog_layers(analog)}
    results = {
        m: adapt(m, analog, programmed, (x, y), fast(m), ledger=ledger, task="toy", seed=1, progress=False)
        for m in method_names()
    }
    for method in ("zero_shot", "fusion", "lorahub", "lora_digital"):
        assert ledger.cell_write_pulses(phase="adapt", method=method) == 0, method
        assert results[method].cell_write_pulses == 0
    for method in ("lora_program_once", "lora_in_situ", "full_finetune"):
        assert ledger.cell_write_pulses(phase="adapt", method=method) > 0, method
        assert results[method].cell_write_pulses == ledger.cell_write_pulses(phase="adapt", method=method)
    # In-situ rewrites after every step: more pulses than writing the trained LoRA once.
    assert results["lora_in_situ"].cell_write_pulses > results["lora_program_once"].cell_write_pulses
    # The fused forward and backward ran on the arrays and in digital logic, and the ledger saw both.
    events = ledger.group_by("event", phase="adapt", method="fusion")
    for event in ("cell_read", "adc_conversion", "dac_conversion", "digital_mult", "sram_read", "sram_write"):
        assert events.get((event,), 0) > 0, event
    bank_layers = {r.layer for r in ledger.rows(phase="adapt", method="fusion", event="cell_read")}
    assert "blocks.0.q.bank_A" in bank_layers and "blocks.0.q.bank_B" in bank_layers
    assert results["fusion"].adapt_energy_pj == pytest.approx(ledger.total(phase="adapt", method="fusion"))
    # Trainable parameter counts: coefficients + magnitudes vs LoRA rank 2 on 4 layers of 16 x 16.
    assert results["fusion"].trainable_params == 80
    assert results["lorahub"].trainable_params == 4
    assert results["lora_in_situ"].trainable_params == results["lora_digital"].trainable_params == 4 * 2 * 2 * 16
    assert results["zero_shot"].trainable_params == 0
    # adapt never touches the caller's model.
    for name, layer in analog_layers(analog):
        assert (layer.state.writes_pos == before[name]).all()


def test_digital_lora_inference_costs_digital_work_and_no_writes(deployed) -> None:
    analog, programmed, x, y, _ = deployed
    result = adapt("lora_digital", analog, programmed, (x, y), fast("lora_digital"), seed=2, progress=False)
    ledger = Ledger()
    with torch.no_grad():
        from crossbar import record_all_to

        with record_all_to(result.model, ledger.scope(phase="inference", method="lora_digital")):
            result.model(x[:3])
    (row,) = [r for r in ledger.rows(event="digital_mult") if r.layer == "blocks.0.q"]
    lora = 2 * (16 + 16) + 16  # A x and B u (rank 2, 16 x 16) and the scale s, per vector
    analog_base = 16 + 2 * 16  # the base array's own input normalisation and output scaling (crossbar)
    assert row.count == 3 * (lora + analog_base)
    assert ledger.cell_write_pulses() == 0


def test_adapt_is_reproducible(deployed) -> None:
    analog, programmed, x, y, _ = deployed
    runs = []
    for _ in range(2):
        ledger = Ledger()
        result = adapt("fusion", analog, programmed, (x, y), fast("fusion"), ledger=ledger, task="t", seed=3)
        runs.append((result, ledger.total()))
    (first, energy_1), (second, energy_2) = runs
    assert first.train_losses == second.train_losses
    assert energy_1 == energy_2
    for group, value in first.coefficients.items():
        assert torch.equal(value, second.coefficients[group])
    other = adapt("fusion", analog, programmed, (x, y), fast("fusion"), seed=4)
    assert other.train_losses != first.train_losses


def test_block_sharing_hands_one_parameter_to_a_block(deployed) -> None:
    analog, programmed, x, y, _ = deployed
    result = adapt("fusion", analog, programmed, (x, y), fast("fusion", share="block"), seed=0)
    q, v = result.model.blocks[0].q, result.model.blocks[0].v
    assert q.coefficients is v.coefficients
    assert q.coefficients is not result.model.blocks[1].q.coefficients
    assert set(result.coefficients) == {"blocks.0", "blocks.1"}
    assert result.trainable_params == 2 * 4 + 4 * 16


def test_early_stopping_keeps_the_best_epoch(toy) -> None:
    model, bank, x, y = toy
    programmed = program_bank(model, bank, None)
    settings = FusionConfig(epochs=6, batch_size=10, early_stopping=True)
    result = adapt("fusion", model, programmed, (x, y), settings, seed=0, val_fraction=0.2, progress=False)
    assert len(result.val_losses) == result.epochs_run <= 6
    assert result.best_epoch == min(range(len(result.val_losses)), key=result.val_losses.__getitem__)
    assert len(result.train_losses) == result.epochs_run * 8  # 80 training examples, batch 10


def test_lorahub_searches_one_global_coefficient_vector(toy) -> None:
    model, bank, x, y = toy
    programmed = program_bank(model, bank, None, calibrate_norms=False)
    result = adapt("lorahub", model, programmed, (x, y), LoraHubConfig(budget=12), seed=0, progress=False)
    assert len(result.train_losses) == 12
    (coefficients,) = result.coefficients.values()
    assert coefficients.shape == (4,) and coefficients.abs().max() <= 1.5
    layers = [m for m in result.model.modules() if isinstance(m, FusedLinear)]
    assert all(layer.coefficients is layers[0].coefficients for layer in layers)
    assert all(layer.magnitude is None for layer in layers)  # LoraHub composes W0 + dW, no DoRA scaling


def test_options_frozen_magnitude_linear_form_and_frozen_lorahub_magnitude(toy) -> None:
    model, bank, x, y = toy
    programmed = program_bank(model, bank, None)
    settings = FusionConfig(epochs=2, batch_size=10, magnitude=False, form="linear")
    result = adapt("fusion", model, programmed, (x, y), settings, seed=0, progress=False)
    assert result.trainable_params == 4 * 4  # coefficients only
    for layer in (m for m in result.model.modules() if isinstance(m, FusedLinear)):
        assert layer.form == "linear" and not layer.magnitude.requires_grad and layer.magnitude.grad is None
        assert layer.coefficients.grad is not None
    frozen = LoraHubConfig(budget=3, magnitude="frozen")
    hub = adapt("lorahub", model, programmed, (x, y), frozen, progress=False)
    for layer in (m for m in hub.model.modules() if isinstance(m, FusedLinear)):
        # m stays at its init n(c = 0) = ||W0||_row
        torch.testing.assert_close(
            layer.magnitude.detach(), torch.linalg.vector_norm(layer.base.weight.detach(), dim=1)
        )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, b, d: adapt("dora", m, b, d), "unknown adaptation method"),
        (lambda m, b, d: adapt("fusion", m, None, d), "needs a programmed bank"),
        (lambda m, b, d: adapt("fusion", m, b.bank, d), "bank must be a ProgrammedBank"),
        (lambda m, b, d: adapt("fusion", m, b, d[0]), r"data must be an \(inputs, labels\) pair"),
        (lambda m, b, d: adapt("fusion", m, b, (d[0], d[1][:5])), "100 inputs but 5 labels"),
        (lambda m, b, d: adapt("fusion", m, b, d, seed=-1), "seed must be"),
        (lambda m, b, d: adapt("lora_in_situ", m, b, d), "needs a device config"),
        (lambda m, b, d: adapt("fusion", m, b, d, LoraHubConfig()), "takes a FusionConfig, got LoraHubConfig"),
        (lambda m, b, d: adapt("fusion", m, b, d, val_fraction=1.0), r"val_fraction must be in \[0, 1\)"),
        (lambda m, b, d: FusionConfig(epochs=0), r"FusionConfig.epochs must be >= 1"),
        (lambda m, b, d: FusionConfig(epochs=2.0), r"FusionConfig.epochs must be an integer"),
        (lambda m, b, d: FusionConfig(coefficient_lr=-1.0), r"coefficient_lr must be > 0"),
        (lambda m, b, d: FusionConfig(form="sum"), "form must be one of"),
        (lambda m, b, d: LoraHubConfig(examples=None).replace(examples=0), "examples must be >= 1"),
        (
            lambda m, b, d: FusionConfig().replace(learning_rate=1.0),
            r"unknown FusionConfig field\(s\) \['learning_rate'\]",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(toy, call, message) -> None:
    model, bank, x, y = toy
    with pytest.raises(ValueError, match=message):
        call(model, program_bank(model, bank, None), (x, y))


@hyp_settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_entries=st.integers(1, 3),
    rank=st.integers(1, 3),
    form=st.sampled_from(["lorahub", "linear"]),
    sharing=st.sampled_from(["layer", "block", "global"]),
    method=st.sampled_from(["fusion", "lorahub"]),
    seed=st.integers(0, 2**16),
)
def test_property_fusion_methods_never_write(n_entries, rank, form, sharing, method, seed) -> None:
    """Whatever the bank, form, sharing and seed, fusion and lorahub leave every cell's write counter as it was
    and the ledger shows zero pulses in adapt."""
    model = ToyNet(seed=seed % 7)
    bank = random_bank(model, n_entries=n_entries, rank=rank, alpha=2.0 * rank, seed=seed)
    device = device_preset("reram_wan2022")
    analog = convert_to_analog(model, device, seed=seed)
    program(analog)
    programmed = program_bank(analog, bank, device, seed=seed)
    counters = [a.state.writes_pos.copy() for arrays in programmed.layers.values() for a in (arrays.a, arrays.b)]
    x, y = toy_task(model, bank, torch.ones(n_entries), 12, seed=seed)
    ledger = Ledger()
    settings = fast(method, epochs=1, batch_size=4, form=form, share=sharing, budget=3)
    result = adapt(method, analog, programmed, (x, y), settings, ledger=ledger, task="p", seed=seed, progress=False)
    assert ledger.cell_write_pulses(phase="adapt") == 0 == result.cell_write_pulses
    assert ledger.total("count", phase="adapt", event="cell_read") > 0
    fused = [m for m in result.model.modules() if isinstance(m, FusedLinear)]
    after = [a.state.writes_pos for layer in fused for a in (layer.bank_a, layer.bank_b)]
    assert all((before == now).all() for before, now in zip(counters, after))
