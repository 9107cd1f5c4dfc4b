"""benchmarks/fidelity.py's rows at small sizes: every model agrees with the source it cites (seeded; sigma within
10 %, pulse counts within 20 %, drift sigma within 10 %), and the IR-drop model against an exact nodal solve."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402
from naive_ir_drop import nodal_weight_outputs  # noqa: E402
from reference_mvm import analog_mvm_reference  # noqa: E402

from crossbar.engine_numba import analog_mvm  # noqa: E402
from crossbar.ir_drop import ir_drop_conductances  # noqa: E402
from crossbar.mvm import MvmSettings  # noqa: E402
from crossbar.presets import device_preset  # noqa: E402
from crossbar.state import ArrayState  # noqa: E402


def _assert_rows(rows) -> None:
    checked = [r for r in rows if r.tolerance is not None]
    assert checked
    bad = [(r.group, r.item, r.ours, r.source) for r in checked if not r.ok]
    assert not bad, bad


def test_programming_sigma_at_levels_matches_fits() -> None:
    # 64 x 64 = 4096 cells per level: the sample sigma's relative error is ~1/sqrt(2 * 4096) = 1.1 % (<< 10 %)
    _assert_rows(fidelity.sigma_rows(64, 64, seed=1))


def test_weight_error_of_a_random_matrix_matches_fits() -> None:
    _assert_rows(fidelity.weight_error_rows(32, 128, seed=2))


def test_pulse_counts_match_neurosim_formula() -> None:
    rows = fidelity.pulse_rows(32, 64, seed=3)
    _assert_rows(rows)
    lora = [r for r in rows if r.group == "write energy neurosim_rram per_pulse" and "LoRA" in r.item][0]
    assert lora.ours == pytest.approx(lora.source, rel=0.1)  # per pulse ~ per write for small, mid-range writes
    full = {r.group: r for r in rows if r.item == "full swing" and r.group.startswith("write energy neurosim_rram")}
    assert full["write energy neurosim_rram per_pulse"].ours > 10 * full["write energy neurosim_rram neurosim"].ours
    neurosim = [r for r in rows if r.group.endswith(" neurosim")]
    assert len(neurosim) == 4 and sum(r.tolerance is not None for r in neurosim) == 3
    zero = [r for r in neurosim if r.tolerance is None][0]  # reram_wan2022's full swing from g_min = 0 uS
    assert zero.source == 0.0 and zero.ours == 0.0


def test_drift_matches_fits() -> None:
    """Every Wan row with a source fit (the idle cell and four levels, 1 day and 2 days, in 1 and 24 steps) within
    10 % of the source's clamped-Gaussian moments; rows without a fit carry no tolerance and no source value."""
    rows = fidelity.drift_rows(64, 64, seed=4)
    _assert_rows(rows)
    idle = [r for r in rows if "idle cell" in r.item and r.group.startswith("drift") and "wan" in r.group]
    assert len([r for r in idle if r.tolerance is not None]) == 8  # mean and sigma, 2 times, 1 and 24 steps
    for row in rows:
        assert (row.tolerance is None) == (not np.isfinite(row.source) or "cmo" in row.group and "idle" in row.item)
    high = [r for r in rows if r.group == "drift mean G reram_wan2022" and "G = 20 uS" in r.item]
    assert all(abs(r.ours - 20.0) < 0.25 for r in high)  # no mean shift where the clamp does not act


def test_read_noise_matches_w_noise_convention() -> None:
    _assert_rows(fidelity.read_noise_rows(2000, seed=6))


def test_source_formulas_by_hand() -> None:
    assert fidelity.aihwkit_wan_sigma(np.array(40.0)) == pytest.approx(1.103)
    assert fidelity.crosssim_milo_sigma(np.array(600.0)) == 0.0
    neurosim = device_preset("neurosim_rram")
    pulses, _ = fidelity.neurosim_write(np.array([1.0, 2.0]), np.array([3.0, 2.01]), neurosim)
    delta = neurosim.g_range_us / 60
    assert pulses[0] == np.ceil(2.0 / delta) and pulses[1] == 0.0
    # clamped rms of a normal at 0 with its mean at the clamp: sqrt(1/2) sigma
    assert fidelity.clamped_rms(np.array(0.0), np.array(2.0)) == pytest.approx(2.0 * np.sqrt(0.5))


# --- IR drop ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m", "r_ohm"), [(4, 3, 1.0), (16, 8, 2.1), (24, 24, 0.5)])
def test_first_order_ir_drop_against_nodal_solve(n, m, r_ohm) -> None:
    """Small r G n^2: the first-order model's error is second order (<< the IR drop itself)."""
    rng = np.random.default_rng(n)
    gp, gn = rng.uniform(0, 40, (n, m)), rng.uniform(0, 40, (n, m))
    x = rng.uniform(-1, 1, (5, n))
    exact = nodal_weight_outputs(gp, gn, x, r_ohm)
    ep, en = ir_drop_conductances(gp[None], gn[None], r_ohm, m)
    first = x @ (ep[0] - en[0])
    ideal = x @ (gp - gn)
    drop = np.abs(ideal - exact).max()
    assert drop > 0
    assert np.abs(first - exact).max() < 0.1 * drop


def test_ir_drop_tiles_and_nodal_limit() -> None:
    """Column tiles are separate arrays (the row wire restarts); r -> 0 gives the ideal conductances."""
    rng = np.random.default_rng(0)
    gp, gn = rng.uniform(0, 40, (1, 8, 6)), rng.uniform(0, 40, (1, 8, 6))
    ep, en = ir_drop_conductances(gp, gn, 1.0, 3)
    ep_a, en_a = ir_drop_conductances(gp[:, :, :3], gn[:, :, :3], 1.0, 3)
    np.testing.assert_allclose(ep[:, :, :3], ep_a)
    np.testing.assert_allclose(en[:, :, :3], en_a)
    zp, _ = ir_drop_conductances(gp, gn, 0.0, 3)
    np.testing.assert_allclose(zp, gp)
    x = rng.uniform(-1, 1, (2, 8))
    tiny = nodal_weight_outputs(gp[0], gn[0], x, 1e-6)
    np.testing.assert_allclose(tiny, x @ (gp[0] - gn[0]), rtol=1e-4, atol=1e-6)


def test_mvm_applies_ir_drop_only_when_wired() -> None:
    device = device_preset("reram_wan2022", dac_bits=None, adc_bits=None, read_noise_frac=0.0, tile_rows=16,
                           tile_cols=8)  # fmt: skip
    rng = np.random.default_rng(1)
    state = ArrayState.fresh(16, 8, device)
    state.g_neg_us[...] = rng.uniform(0, 20, state.g_neg_us.shape).astype(np.float32)
    state.g_diff_us[...] = rng.uniform(-20, 20, state.g_diff_us.shape).astype(np.float32)
    x = torch.from_numpy(rng.uniform(-1, 1, (4, 16)).astype(np.float32))
    x[:, 0] = 1.0  # max |x| = 1: the DAC's normalisation leaves x unchanged
    ones = torch.ones(8)
    plain = analog_mvm(x, state, ones, MvmSettings.from_device(device), key=0)
    wired = device.replace(wire_resistance_ohm=2.0)
    settings = MvmSettings.from_device(wired)
    y = analog_mvm(x, state, ones, settings, key=0)
    ref = analog_mvm_reference(x, state, ones, settings, key=0)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)
    exact = nodal_weight_outputs(state.g_pos_us()[0].astype(np.float64), state.g_neg_us[0].astype(np.float64),
                                 x.double().numpy(), 2.0)  # fmt: skip
    assert np.abs(y.numpy() - exact).max() < 0.2 * np.abs(plain.numpy() - exact).max()
    assert device_preset("reram_wan2022").wire_resistance_ohm == 0.0  # off without wire data


def test_output_noise_adds_in_quadrature() -> None:
    """out_noise_frac: one Gaussian draw per tile column and vector, sigma out_noise * range, on top of read
    noise (aihwkit IOParameters.out_noise)."""
    device = device_preset("reram_wan2022", dac_bits=None, adc_bits=None, tile_rows=32, read_noise_frac=0.01,
                           out_noise_frac=0.05)  # fmt: skip
    state = ArrayState.fresh(32, 4, device)
    x_one = np.zeros(32, dtype=np.float32)
    x_one[:4] = 1.0
    x = torch.from_numpy(np.tile(x_one, (20000, 1)))
    y = analog_mvm(x, state, torch.ones(4), MvmSettings.from_device(device), key=3).double()
    expected = np.sqrt((np.sqrt(2) * 0.01 * 40.0) ** 2 * 4 + (0.05 * 40.0) ** 2)
    assert y.std(dim=0).numpy() == pytest.approx(np.full(4, expected), rel=0.03)
    ref = analog_mvm_reference(x[:8], state, torch.ones(4), MvmSettings.from_device(device), key=3)
    torch.testing.assert_close(analog_mvm(x[:8], state, torch.ones(4), MvmSettings.from_device(device), key=3), ref,
                               rtol=1e-5, atol=1e-4)  # fmt: skip


# --- line charging and ADC energy vs NeuroSim V2.1 (benchmarks/fidelity_lines.py) -----------------------------------
def test_line_charging_and_adc_rows_against_neurosim() -> None:
    """Write line charge per pulse step within 5 % of NeuroSim's formula (per cell within the pulse-count
    tolerance), read column lines within 5 %; NeuroSim as coded (sqrt(2) x V_write) is 2x and only stated; the ADC
    default equals the source it follows, and NeuroSim V2.1's own (32 nm LP, column term) is shown beside it."""
    import fidelity_lines

    rows = fidelity_lines.line_write_rows(seed=5) + fidelity_lines.line_read_rows(16, seed=5)
    _assert_rows(rows)
    per_step = [r for r in rows if r.item.endswith("per row pulse step")]
    assert len(per_step) == 3 and all(r.tolerance == fidelity.WRITE_ENERGY_TOL for r in per_step)
    coded = [r for r in rows if r.item.endswith("NeuroSim as coded")]
    assert len(coded) == 3 and all(r.tolerance is None for r in coded)
    for row in coded:
        plain = next(r for r in rows if r.item == row.item.removesuffix(", NeuroSim as coded"))
        assert row.source == pytest.approx(2 * plain.source, rel=0.01)  # V = sqrt(2) x 4 V (the WL stays at Vdd)
    adc = fidelity_lines.adc_rows()
    _assert_rows(adc)
    stated = {r.item: r for r in adc if r.tolerance is None}
    assert len(stated) == 4
    assert stated["vs V2.1 32 nm LP, 128 cells at Ron"].source > stated["vs V2.1 32 nm LP, 64 cells at Ron"].source
    assert fidelity_lines.neurosim_sar_adc_pj(5, np.inf) == pytest.approx(1e-6 * 6e-9 * 1e12)  # SarADC.cpp 167-168


def test_neurosim_write_lines_by_hand() -> None:
    """ProcessingUnit.cpp 964-971 on a 2 x 2 sub-array: row 0 SETs one cell and row 1 RESETs one, by 1.5 unit
    steps each (2 pulses, 892): per phase the WL at Vdd, the other column's line and the BL once per written cell."""
    import fidelity_lines

    device = device_preset("neurosim_rram")
    delta = device.g_range_us / device.pulse_levels
    g0 = np.full((2, 2), 1.0)
    g1 = g0 + np.array([[1.5 * delta, 0.0], [0.0, -1.5 * delta]])
    pj, steps = fidelity_lines.neurosim_write_lines(g0, g1, device, 4.0, 1.0)
    assert steps == 4
    c_row = c_col = 2.0  # fF, 2 cells of 1 fF
    v2, vdd2 = 16.0, 0.81
    expected = 2 * (c_row * vdd2 * 2 + c_col * v2 * 1 * 2 + c_row * v2 * 1 * 2)
    assert pj == pytest.approx(expected * 1e-3)
