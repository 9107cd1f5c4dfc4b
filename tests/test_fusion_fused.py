"""FusedLinear against the dense digital reference: one-hot exactness, gradients of c and m, the two forms at N = 1,
and calibration row norms. Run on a digital bank and on analog arrays (ideal preset: exact; a non-ideal preset for
the norms, which come from what the cells hold)."""

from __future__ import annotations

import pytest
import torch
from test_fusion_support import ToyNet, random_bank

from energy import Ledger
from fusion import (
    FusedLinear,
    attach_fusion,
    fused_delta,
    fused_row_norm,
    fused_weight,
    program_bank,
)
from fusion.fused import read_weight

BACKENDS = ["digital", "ideal"]


def _deployed(backend: str, n_entries: int = 3, rank: int = 2, seed: int = 0, ledger: Ledger | None = None):
    model = ToyNet(seed=seed)
    bank = random_bank(model, n_entries=n_entries, rank=rank, alpha=2.0 * rank, seed=seed + 1)
    if backend == "digital":
        return model, bank, program_bank(model, bank, None)
    from crossbar import convert_to_analog, device_preset
    from crossbar import program as program_model

    device = device_preset(backend)
    analog = convert_to_analog(model, device, seed=seed)
    program_model(analog, ledger.scope(phase="deploy_base") if ledger is not None else None)
    scope = ledger.scope(phase="deploy_bank") if ledger is not None else None
    return analog, bank, program_bank(analog, bank, device, scope, seed=seed)


def _dense(layer: FusedLinear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return read_weight(layer.base), read_weight(layer.bank_a), read_weight(layer.bank_b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["lorahub", "linear"])
def test_one_hot_coefficients_give_base_plus_one_lora(backend: str, form: str) -> None:
    model, bank, programmed = _deployed(backend)
    fused = attach_fusion(model, programmed, form=form, coefficient_init="zeros")
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
    for name, layer in fused.layers.items():
        w0 = read_weight(layer.base)
        bias = layer.base.bias.detach()
        for i, task in enumerate(bank.source_tasks):
            with torch.no_grad():
                layer.coefficients.zero_()
                layer.coefficients[i] = 1.0
            layer.reset_magnitude()  # m at its initial value n(c)
            a, b = bank.entries[task][name]
            expected = x @ (w0 + bank.scale * b @ a).T + bias
            torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["lorahub", "linear"])
def test_gradients_of_c_and_m_match_autograd_on_the_dense_reference(backend: str, form: str) -> None:
    model, bank, programmed = _deployed(backend)
    fused = attach_fusion(model, programmed, form=form, seed=5)
    layer = fused.layers["blocks.1.v"]
    with torch.no_grad():
        layer.magnitude.mul_(torch.linspace(0.8, 1.2, layer.out_features))  # away from the init, so m matters
    x = torch.randn(9, 16, generator=torch.Generator().manual_seed(4))
    target = torch.randn(9, 16, generator=torch.Generator().manual_seed(5))
    loss = ((layer(x) - target) ** 2).sum()
    loss.backward()
    w0, a_stack, b_stack = _dense(layer)
    c = layer.coefficients.detach().clone().requires_grad_(True)
    m = layer.magnitude.detach().clone().requires_grad_(True)
    weight = fused_weight(w0, a_stack, b_stack, c, m, bank.scale, form)
    reference = ((x @ weight.T + layer.base.bias.detach() - target) ** 2).sum()
    reference.backward()
    torch.testing.assert_close(loss.detach(), reference.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.coefficients.grad, c.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.magnitude.grad, m.grad, rtol=1e-4, atol=1e-4)
    assert c.grad.abs().max() > 1e-3 and m.grad.abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_forms_agree_at_one_entry_with_c_squared(backend: str) -> None:
    """At N = 1 the lorahub form gives s c^2 B A and the linear form s c B A: lorahub at c equals linear at c^2
    (outputs, row norms), the gradients relate by d/dc = 2c d/d(c^2), and at c = 1 both are W0 + s B A."""
    model, bank, programmed = _deployed(backend, n_entries=1)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(6))
    hub = attach_fusion(model, programmed, form="lorahub", coefficient_init=torch.tensor([[0.7]] * 4).T)
    layer_hub = hub.layers["blocks.0.q"]
    out_hub = layer_hub(x)
    out_hub.sum().backward()
    norm_hub = layer_hub.row_norm()
    model2, _, programmed2 = _deployed(backend, n_entries=1)
    lin = attach_fusion(model2, programmed2, form="linear", coefficient_init=torch.tensor([[0.49]] * 4).T)
    layer_lin = lin.layers["blocks.0.q"]
    out_lin = layer_lin(x)
    out_lin.sum().backward()
    torch.testing.assert_close(out_hub, out_lin, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm_hub, layer_lin.row_norm(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer_hub.coefficients.grad, 2 * 0.7 * layer_lin.coefficients.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer_hub.magnitude.grad, layer_lin.magnitude.grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        layer_hub.coefficients.fill_(1.0)
        layer_lin.coefficients.fill_(1.0)
    torch.testing.assert_close(layer_hub.row_norm(), layer_lin.row_norm())


@pytest.mark.parametrize("backend", ["digital", "ideal", "reram_wan2022"])
@pytest.mark.parametrize("form", ["lorahub", "linear"])
def test_calibrated_row_norms_equal_direct_norms(backend: str, form: str) -> None:
    model, _, programmed = _deployed(backend, n_entries=4, rank=3)
    fused = attach_fusion(model, programmed, form=form, seed=2)
    generator = torch.Generator().manual_seed(8)
    for layer in fused.layers.values():
        w0, a_stack, b_stack = _dense(layer)
        for _ in range(3):
            c = torch.randn(4, generator=generator)
            direct = fused_row_norm(w0, fused_delta(a_stack, b_stack, c, layer.scale, form))
            torch.testing.assert_close(layer.row_norm(c), direct, rtol=1e-4, atol=1e-5)


def test_non_ideal_programmed_bank_differs_from_its_targets() -> None:
    """Guard for the test above: on reram_wan2022 the read-out really is not the bank itself."""
    _, bank, programmed = _deployed("reram_wan2022", n_entries=4, rank=3)
    a_target, _ = bank.stacked("blocks.0.q")
    a_read = read_weight(programmed.layers["blocks.0.q"].a)
    error = (a_read - a_target).abs().max() / a_target.abs().max()
    assert error > 1e-3


def test_magnitude_starts_at_the_norm_and_the_norm_is_cached() -> None:
    ledger = Ledger()
    model, _, programmed = _deployed("digital")
    fused = attach_fusion(model, programmed, seed=1)
    layer = fused.layers["blocks.0.v"]
    torch.testing.assert_close(layer.magnitude.detach(), layer.row_norm())
    scope = ledger.scope(phase="adapt", method="fusion")
    layer.ledger = scope
    layer(torch.randn(2, 16))  # the norm for this c was computed when m was initialised
    first = ledger.total("count", event="sram_read")
    layer(torch.randn(2, 16))
    assert ledger.total("count", event="sram_read") - first == first
    with torch.no_grad():
        layer.coefficients.add_(0.1)
    layer(torch.randn(2, 16))
    recomputed = ledger.total("count", event="sram_read") - 2 * first
    assert recomputed == first + layer.calibration.sram_words + layer.n_entries


def test_fused_layer_rejects_mismatched_parts() -> None:
    model, _, programmed = _deployed("digital")
    arrays = programmed.layers["blocks.0.q"]
    base = model.get_submodule("blocks.0.q")
    with pytest.raises(ValueError, match="coefficients must be"):
        FusedLinear(
            base,
            arrays.a,
            arrays.b,
            n_entries=3,
            rank=2,
            alpha=4,
            coefficients=torch.nn.Parameter(torch.zeros(4)),
            calibration=arrays.calibration,
        )
    with pytest.raises(ValueError, match="A_stack is"):
        FusedLinear(
            base,
            arrays.a,
            arrays.b,
            n_entries=2,
            rank=2,
            alpha=4,
            coefficients=torch.nn.Parameter(torch.zeros(2)),
            calibration=arrays.calibration,
        )
    with pytest.raises(ValueError, match="needs a calibration"):
        FusedLinear(
            base,
            arrays.a,
            arrays.b,
            n_entries=3,
            rank=2,
            alpha=4,
            coefficients=torch.nn.Parameter(torch.zeros(3)),
        )
    with pytest.raises(ValueError, match="form must be"):
        attach_fusion(model, programmed, form="sum")  # type: ignore[arg-type]


def test_bank_programming_and_calibration_are_recorded_in_their_phases() -> None:
    ledger = Ledger()
    model, _, programmed = _deployed("reram_wan2022", n_entries=3, rank=2, ledger=ledger)
    assert ledger.cell_write_pulses(phase="deploy_bank") > 0
    assert {r.layer for r in ledger.rows(phase="deploy_bank")} >= {"blocks.0.q.bank_A", "blocks.0.q.bank_B"}
    assert ledger.cell_write_pulses(phase="calibration") == 0
    # Read-out MVMs per layer (d = 16, N r = 6): A's rows by 6 transposed unit-vector MVMs, A A^T by 6 MVMs on A
    # with A's rows as inputs, W0 A^T by 6 MVMs on W0 with A's rows, W0 by 16 unit-vector MVMs, B by 6 unit-vector
    # MVMs. Conducting cells: the 2 cells per weight of every row driven in every bit-cycle (crossbar.scheme).
    from crossbar.scheme import input_activity

    d, width = 16, 6
    device = programmed.layers["blocks.0.q"].a.array_config
    cycles = device.scheme.cycles(device.dac_bits)
    a = programmed.layers["blocks.0.q"].a.programmed_weight()

    def drives(x):
        return input_activity(x, device.dac_bits, device.scheme).drives.sum()

    cells = {
        "blocks.0.q.bank_A": width * cycles * (2 * d) + drives(a) * (2 * width),
        "blocks.0.q": drives(a) * (2 * d) + d * cycles * (2 * d),
        "blocks.0.q.bank_B": width * cycles * (2 * d),
    }
    for layer, expected in cells.items():
        assert ledger.total("count", phase="calibration", event="cell_read", layer=layer) == expected, layer
    words = programmed.layers["blocks.0.q"].calibration.sram_words
    assert words == d + d * width + width * width + d * width
    assert ledger.total("count", phase="calibration", event="sram_write", layer="blocks.0.q") == words


def test_recording_the_calibration_does_not_change_the_model() -> None:
    """The ledger is passive: a deployment recorded into a ledger computes exactly what an unrecorded one does
    (the calibration read-out is recorded by count, without drawing read noise or setting ADC ranges)."""
    outputs = []
    for ledger in (None, Ledger()):
        model, _, programmed = _deployed("reram_wan2022", ledger=ledger)
        attach_fusion(model, programmed, seed=0)
        x = torch.randn(8, 12, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1])


def test_recalibration_after_drift_tracks_the_drifted_weights() -> None:
    """After drift the stored read-out is stale; recalibrate() reads it again (reads only, no writes) and the row
    norms then equal those of the weights the arrays hold now."""
    ledger = Ledger()
    model, _, programmed = _deployed("reram_wan2022")
    fused = attach_fusion(model, programmed, seed=0).layers["blocks.0.q"]

    def direct_norm() -> torch.Tensor:
        w0, a, b = _dense(fused)
        return fused_row_norm(w0, fused_delta(a, b, fused.coefficients.detach(), fused.scale, fused.form))

    torch.testing.assert_close(fused.row_norm(), direct_norm(), rtol=1e-4, atol=1e-5)
    from crossbar import analog_layers

    for _, layer in analog_layers(model):
        layer.drift_to(30 * 86_400.0)
    stale = fused.row_norm()
    assert not torch.allclose(stale, direct_norm(), rtol=1e-4, atol=1e-5)
    fused.recalibrate(ledger.scope(phase="calibration"))
    torch.testing.assert_close(fused.row_norm(), direct_norm(), rtol=1e-4, atol=1e-5)
    assert ledger.total("count", event="cell_read") > 0 and ledger.cell_write_pulses() == 0
