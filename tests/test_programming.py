from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive_programming import pulse_table_np, statistical_np, write_verify_np

from crossbar.kernels import LANES, pulse_table_kernel
from crossbar.mapping import Targets
from crossbar.noise import programming_sigma_us
from crossbar.presets import device_preset
from crossbar.programming import (
    ProgramReport,
    expected_pulse_table,
    fitted_error_polynomial,
    program_state,
    pulse_model_params,
)
from crossbar.rng import DOMAIN_D2D, DOMAIN_PROGRAM, DOMAIN_TABLE, NORMAL_TABLE, domain_key
from crossbar.state import STUCK, ArrayState, pulses_per_count
from energy import CostTable, Ledger, pulse_energy_pj

WAN = device_preset("reram_wan2022")


def _targets(state: ArrayState, pos: np.ndarray, neg: np.ndarray) -> Targets:
    return Targets(pos_us=pos.astype(np.float32), neg_us=neg.astype(np.float32), out_scale=np.ones(state.d_out))


def _random_case(device, d_in, d_out, seed, *, stuck_frac=0.0, preprogram=False):
    """A state with random conductances/counters (some stuck) and random targets on the real rows."""
    rng = np.random.default_rng(seed)
    state = ArrayState.fresh(d_in, d_out, device)
    shape = state.g_diff_us.shape
    real = state.valid_rows()
    lo, hi = device.g_min_us, device.g_max_us
    if preprogram:
        gp = rng.uniform(lo, hi, shape).astype(np.float32)
        gn = rng.uniform(lo, hi, shape).astype(np.float32)
        state.g_neg_us[...] = np.where(real, gn, 0.0)
        state.g_diff_us[...] = np.where(real, gp - gn, 0.0)
        state.writes_pos[...] = rng.integers(0, 500, shape)
        state.writes_neg[...] = rng.integers(0, 500, shape)
    for writes in (state.writes_pos, state.writes_neg):
        writes[rng.random(shape) < stuck_frac] = STUCK
    pos = np.where(real, rng.uniform(lo, hi, shape), 0.0)
    neg = np.where(real, rng.uniform(lo, hi, shape), 0.0)
    # some targets exactly where the cell already is (verify-first: zero pulses)
    same = rng.random(shape) < 0.1
    pos = np.where(same & real, state.g_pos_us(), pos)
    neg = np.where(same & real, state.g_neg_us, neg)
    return state, _targets(state, pos, neg)


def _twin_args(device, seed, stream):
    span = device.g_range_us
    scale, offset, coeffs = fitted_error_polynomial(device)
    return {
        "poly_scale": scale,
        "poly_offset": offset,
        "coeffs": coeffs,
        "g_min": float(device.g_min_us),
        "g_max": float(device.g_max_us),
        "tol": device.verify_tolerance_frac * span,
        "max_pulses": device.max_pulses,
        "endurance": float(device.endurance_pulses),
        "ppc": pulses_per_count(device),
        "key": domain_key(seed, stream, DOMAIN_PROGRAM),
        "write_coef": pulse_energy_pj(device.write_voltage_v, 1.0, device.write_pulse_ns),
        "read_coef": pulse_energy_pj(device.read_voltage_v, 1.0, device.read_pulse_ns),
    }


def _run_twin(device, state, targets, changed, seed, stream):
    rows = state.n_tiles * state.tile_rows
    views = [
        a.reshape(rows, state.d_out) for a in (state.g_diff_us, state.g_neg_us, state.writes_pos, state.writes_neg)
    ]
    tp = targets.pos_us.reshape(rows, state.d_out)
    tn = targets.neg_us.reshape(rows, state.d_out)
    ch = None if changed is None else changed.reshape(rows, state.d_out)
    args = _twin_args(device, seed, stream)
    if device.programming_mode == "write_verify":
        totals, pp, pn = write_verify_np(
            *views, tp, tn, ch, state.d_in, pm=pulse_model_params(device), d2d_key=domain_key(seed, 0, DOMAIN_D2D),
            **args,
        )  # fmt: skip
    else:
        totals, pp, pn = statistical_np(
            *views, tp, tn, ch, state.d_in, pulse_table=expected_pulse_table(device), **args,
        )  # fmt: skip
    return totals, pp.reshape(state.g_diff_us.shape), pn.reshape(state.g_diff_us.shape)


def _assert_same_state(a: ArrayState, b: ArrayState) -> None:
    for name in ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _check_against_twin(device, state, targets, changed=None, seed=3, stream=5):
    twin_state = state.copy()
    report, pp, pn = program_state(
        state, targets, device, seed=seed, stream=stream, changed=changed, return_pulses=True
    )
    totals, tpp, tpn = _run_twin(device, twin_state, targets, changed, seed, stream)
    _assert_same_state(state, twin_state)
    np.testing.assert_array_equal(pp, tpp)
    np.testing.assert_array_equal(pn, tpn)
    assert report.cells_targeted == totals["cells"]
    assert report.set_pulses == totals["set"]
    assert report.reset_pulses == totals["reset"]
    t_w, t_r = device.write_pulse_ns, device.read_pulse_ns
    latency = (totals["row_set"] + totals["row_reset"]) * (t_w + t_r) + totals["rows"] * t_r
    assert report.latency_ns == pytest.approx(latency)
    energy = totals["e_set"] + totals["e_reset"] + totals["e_read"]
    assert report.energy_pj == pytest.approx(energy, rel=1e-6, abs=1e-9)
    return report


SHAPES = [(1, 1, 1), (5, 7, 4), (16, 33, 8), (37, 20, 16), (3, LANES + 3, 2)]
DEVICES = {
    "wan": WAN.replace(endurance_pulses=math.inf),
    "wan_ppc16": WAN,  # endurance 1e6 -> 16 pulses per counter step
    "wan_endurance": WAN.replace(endurance_pulses=520),  # some pre-worn cells pass it
    "milo": device_preset("reram_milo2021", max_pulses=7),  # 50-225 uS, cells that give up
    "neurosim": device_preset("neurosim_rram", wire_cap_ff_per_cell=0.0),  # the twin prices no lines (test_lines.py)
}


@pytest.mark.parametrize("mode", ["write_verify", "statistical"])
@pytest.mark.parametrize("device_name", sorted(DEVICES))
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_numpy_twin(mode, device_name, shape) -> None:
    d_in, d_out, tile_rows = shape
    device = DEVICES[device_name].replace(tile_rows=tile_rows, programming_mode=mode)
    state, targets = _random_case(device, d_in, d_out, seed=d_in * 100 + d_out, stuck_frac=0.05, preprogram=True)
    _check_against_twin(device, state, targets)


@pytest.mark.parametrize("mode", ["write_verify", "statistical"])
def test_changed_mask_and_padding_match_twin(mode) -> None:
    device = WAN.replace(tile_rows=8, programming_mode=mode)
    state, targets = _random_case(device, 21, 40, seed=1, stuck_frac=0.03, preprogram=True)
    changed = np.random.default_rng(2).random(state.g_diff_us.shape) < 0.4
    before = state.copy()
    report = _check_against_twin(device, state, targets, changed=changed)
    real = state.valid_rows()
    assert report.cells_targeted == 2 * int((changed & real).sum())
    untouched = ~changed | ~real
    for name in ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg"):
        np.testing.assert_array_equal(getattr(state, name)[untouched], getattr(before, name)[untouched])


def test_tolerance_edge_matches_twin() -> None:
    device = WAN.replace(tile_rows=4, c2c_sigma_frac=0.0, pulse_scheme="ideal_jump", programming_noise="none")
    state = ArrayState.fresh(4, 10, device)
    tol = device.verify_tolerance_frac * device.g_range_us
    g = np.float32(15.0)
    state.g_diff_us[...] = g
    step = device.max_step_frac * device.g_range_us
    # without c2c noise the pulses land exactly: after one or two full steps the cell sits exactly tol away
    offsets = np.array([0.0, tol, -tol, np.nextafter(tol, 2 * tol), -np.nextafter(tol, 2 * tol), 3 * tol,
                        step + tol, -(step + tol), 2 * step + tol, step + np.nextafter(tol, 2 * tol)])  # fmt: skip
    pos = (g + np.resize(offsets, state.g_diff_us.shape)).astype(np.float32)
    targets = _targets(state, pos, np.zeros_like(pos))
    twin_state = state.copy()
    _, pp, _ = program_state(state, targets, device, seed=0, stream=0, return_pulses=True)
    _, tpp, _ = _run_twin(device, twin_state, targets, None, 0, 0)
    np.testing.assert_array_equal(pp, tpp)
    inside = np.abs(pos.astype(np.float64) - np.float64(g)) <= tol
    assert np.all(pp[inside] == 0) and np.all(pp[~inside] >= 1)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pulse_scheme": "ideal_jump"}, {"pulse_nl_a": 0.5, "d2d_step_sigma_frac": 0.2}],
)
def test_pulse_table_kernel_matches_twin(overrides) -> None:
    pm = pulse_model_params(WAN.replace(**overrides))
    kwargs = {"g_min": 0.0, "g_max": 40.0, "tol": 1.0, "pm": pm, "max_pulses": 60}
    key = domain_key(0, 0, DOMAIN_TABLE)
    table = pulse_table_kernel(5, 2 * LANES, *kwargs.values(), key, NORMAL_TABLE)
    twin = pulse_table_np(5, 2 * LANES, key=key, **kwargs)
    np.testing.assert_array_equal(table[0], twin[0])
    np.testing.assert_allclose(table[1:], twin[1:], rtol=1e-9)


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def test_single_cell_energy_and_latency_by_hand() -> None:
    """No noise: 0 -> 15 uS with identical 1.25 uS unit pulses (40 uS / 32) is 12 SET pulses, each priced at
    V^2 t / mean(R_before, R_after) (NeuroSim), 2 first verify reads and one after each pulse; one row:
    latency t_read + 12 (t_write + t_read)."""
    device = WAN.replace(
        tile_rows=1, c2c_sigma_frac=0.0, d2d_step_sigma_frac=0.0, endurance_pulses=math.inf, programming_noise="none"
    )
    state = ArrayState.fresh(1, 1, device)
    targets = _targets(state, np.full((1, 1, 1), 15.0), np.zeros((1, 1, 1)))
    ledger = Ledger()
    report = program_state(state, targets, device, seed=0, stream=0, ledger=ledger.scope(phase="deploy_base"))
    v_w, t_w, v_r, t_r = device.write_voltage_v, device.write_pulse_ns, device.read_voltage_v, device.read_pulse_ns
    levels = [1.25 * k for k in range(13)]
    pulses = sum(pulse_energy_pj(v_w, _harmonic(a, b), t_w) for a, b in zip(levels[:-1], levels[1:], strict=True))
    reads = pulse_energy_pj(v_r, 0.0, t_r) * 2 + sum(pulse_energy_pj(v_r, g, t_r) for g in levels[1:])
    assert (report.set_pulses, report.reset_pulses, report.verify_reads, report.cells_targeted) == (12, 0, 14, 2)
    assert report.energy_pj == pytest.approx(pulses + reads)
    assert report.latency_ns == pytest.approx(t_r + 12 * (t_w + t_r))
    assert ledger.total("latency_ns") == pytest.approx(report.latency_ns)
    assert state.g_pos_us()[0, 0, 0] == pytest.approx(15.0)
    assert state.writes_pos[0, 0, 0] == 12 and state.writes_neg[0, 0, 0] == 0


def test_neurosim_write_energy_convention_by_hand() -> None:
    """CostTable.write_energy = "neurosim": 5 -> 15 uS in 8 unit pulses is priced 8 V^2 t / mean(R_5, R_15) (one
    per-write harmonic mean, NeuroSim V2.1 ProcessingUnit.cpp 895); a write from 0 uS costs nothing (R infinite);
    pulse counts, reads and latency are the per-pulse convention's."""
    device = WAN.replace(
        tile_rows=1, c2c_sigma_frac=0.0, d2d_step_sigma_frac=0.0, endurance_pulses=math.inf, programming_noise="none"
    )
    results = {}
    for convention in ("per_pulse", "neurosim"):
        state = ArrayState.fresh(1, 2, device)
        state.g_diff_us[0, 0, 0] = 5.0
        targets = _targets(state, np.array([[[15.0, 15.0]]]), np.zeros((1, 1, 2)))
        ledger = Ledger(CostTable(write_energy=convention))
        report = program_state(state, targets, device, seed=0, stream=0, ledger=ledger.scope(phase="adapt"))
        write = ledger.total("energy_pj", event="set_pulse") + ledger.total("energy_pj", event="reset_pulse")
        results[convention] = (report, write)
    (per_pulse, per_pulse_write), (neurosim, neurosim_write) = results["per_pulse"], results["neurosim"]
    assert neurosim.set_pulses == per_pulse.set_pulses == 8 + 12
    assert neurosim.latency_ns == per_pulse.latency_ns and neurosim.verify_reads == per_pulse.verify_reads
    expected = 8 * pulse_energy_pj(device.write_voltage_v, _harmonic(5.0, 15.0), device.write_pulse_ns)
    assert neurosim_write == pytest.approx(expected)
    assert per_pulse_write > neurosim_write
    with pytest.raises(ValueError, match="CostTable.write_energy must be one of"):
        CostTable(write_energy="per_cell")


def test_ideal_jump_keeps_the_former_controller() -> None:
    """pulse_scheme ideal_jump: 0 -> 15 uS with 10 uS jumps is two SET pulses (0->10, 10->15)."""
    device = WAN.replace(
        tile_rows=1, c2c_sigma_frac=0.0, endurance_pulses=math.inf, programming_noise="none",
        pulse_scheme="ideal_jump",
    )  # fmt: skip
    state = ArrayState.fresh(1, 1, device)
    report = program_state(state, _targets(state, np.full((1, 1, 1), 15.0), np.zeros((1, 1, 1))), device, seed=0,
                           stream=0)  # fmt: skip
    t_w, t_r = device.write_pulse_ns, device.read_pulse_ns
    assert (report.set_pulses, report.verify_reads) == (2, 4)
    assert report.energy_pj == pytest.approx(
        pulse_energy_pj(device.write_voltage_v, _harmonic(10.0, 15.0), t_w)
        + sum(pulse_energy_pj(device.read_voltage_v, g, t_r) for g in (0.0, 0.0, 10.0, 15.0))
    )
    assert state.g_pos_us()[0, 0, 0] == 15.0


def test_row_latency_is_the_slowest_cell_of_each_row() -> None:
    """Two rows: one cell needs 12 SET pulses, the others fewer; a RESET cell adds its own phase."""
    device = WAN.replace(
        tile_rows=2, c2c_sigma_frac=0.0, d2d_step_sigma_frac=0.0, endurance_pulses=math.inf, programming_noise="none"
    )
    state = ArrayState.fresh(2, 3, device)
    state.g_diff_us[0, 1, 2] = 10.0  # G+ of weight (row 1, col 2) starts at 10 uS and is RESET to 5 uS (4 pulses)
    pos = np.array([[[15.0, 2.5, 0.0], [1.25, 0.0, 5.0]]])
    targets = _targets(state, pos, np.zeros_like(pos))
    report = program_state(state, targets, device, seed=0, stream=0)
    t_w, t_r = device.write_pulse_ns, device.read_pulse_ns
    assert report.latency_ns == pytest.approx(2 * t_r + (12 + 1 + 4) * (t_w + t_r))


@pytest.mark.parametrize("mode", ["write_verify", "statistical"])
def test_ledger_totals_equal_report(mode) -> None:
    device = WAN.replace(programming_mode=mode, tile_rows=16)
    state, targets = _random_case(device, 40, 24, seed=7, stuck_frac=0.02)
    ledger = Ledger()
    report = program_state(state, targets, device, seed=1, stream=2, ledger=ledger.scope(phase="adapt"), layer="fc")
    assert ledger.total("count", event="set_pulse", layer="fc") == report.set_pulses
    assert ledger.total("count", event="reset_pulse", layer="fc") == report.reset_pulses
    assert ledger.total("count", event="verify_read", layer="fc") == report.verify_reads
    assert ledger.total("energy_pj", phase="adapt") == pytest.approx(report.energy_pj)
    assert ledger.total("latency_ns", phase="adapt") == pytest.approx(report.latency_ns)
    assert report.verify_reads == report.cells_targeted + report.pulses
    assert ledger.cell_write_pulses() == report.pulses


def test_report_addition() -> None:
    a = ProgramReport(2, 3, 4, 9, 1.5, 10.0)
    b = ProgramReport(1, 1, 0, 2, 0.5, 1.0)
    assert a + b == ProgramReport(3, 4, 4, 11, 2.0, 11.0)
    assert a + ProgramReport.empty() == a
    assert sum([a, b], ProgramReport.empty()) == a + b
    assert (a + b).pulses == 8


def test_mean_pulses_from_fresh_to_uniform_targets() -> None:
    """reram_wan2022, write-verify, g_min -> uniform targets: identical 1.25 uS pulses, so about mean |dG| / step
    = 20 / 1.25 = 16 pulses plus the verify loop's extra pulses from cycle-to-cycle noise (measured ~17.6)."""
    device = WAN.replace(programming_noise="none")
    state = ArrayState.fresh(256, 128, device)
    rng = np.random.default_rng(0)
    shape = state.g_diff_us.shape
    targets = _targets(state, rng.uniform(0, 40, shape), rng.uniform(0, 40, shape))
    report, pp, pn = program_state(state, targets, device, seed=0, stream=0, return_pulses=True)
    assert 15.0 <= report.pulses_per_cell <= 20.0
    assert report.pulses == int(pp.sum()) + int(pn.sum())
    # every cell that did not give up converged within tolerance (no fitted error applied after the loop)
    tol = device.verify_tolerance_frac * device.g_range_us
    for pulses, g, target in ((pn, state.g_neg_us, targets.neg_us), (pp, state.g_pos_us(), targets.pos_us)):
        done = pulses < device.max_pulses
        assert done.mean() > 0.995
        assert np.abs(g - target)[done].max() <= tol + 1e-5


def test_statistical_pulses_and_energy_track_write_verify() -> None:
    """The statistical mode counts, on average, the pulses and energy of simulating them."""
    rng = np.random.default_rng(4)
    reports = {}
    for mode in ("write_verify", "statistical"):
        device = WAN.replace(programming_mode=mode)
        state, _ = _random_case(device, 256, 128, seed=9, preprogram=True)
        if not reports:
            pos = rng.uniform(0, 40, state.g_diff_us.shape)
        targets = _targets(state, pos, np.zeros_like(pos))  # idle G- cells go back to g_min
        reports[mode] = program_state(state, targets, device, seed=0, stream=0)
    wv, stat = reports["write_verify"], reports["statistical"]
    assert stat.pulses == pytest.approx(wv.pulses, rel=0.03)
    assert stat.energy_pj == pytest.approx(wv.energy_pj, rel=0.03)


@pytest.mark.parametrize("mode", ["write_verify", "statistical"])
@pytest.mark.parametrize(
    ("preset", "levels"), [("reram_wan2022", (8.0, 20.0, 32.0)), ("reram_milo2021", (80.0, 150.0))]
)
def test_programming_residual_sigma(preset, levels, mode) -> None:
    """Both modes: every programmed cell ends with the preset's fitted sigma(G) around its target."""
    device = device_preset(preset, programming_mode=mode, tile_rows=256)
    for g in levels:
        state = ArrayState.fresh(256, 100, device)  # 25,600 weights: G+ to g, G- stays at g_min
        targets = _targets(state, np.full(state.g_diff_us.shape, g), np.full(state.g_diff_us.shape, device.g_min_us))
        program_state(state, targets, device, seed=11, stream=int(g))
        residual = state.g_pos_us().astype(np.float64) - g
        sigma = float(programming_sigma_us(np.array(g), device))
        assert residual.std() == pytest.approx(sigma, rel=0.05)
        assert abs(residual.mean()) < 4 * sigma / math.sqrt(residual.size)


def test_unchanged_targets_cost_zero_pulses_write_verify() -> None:
    device = WAN.replace(endurance_pulses=math.inf, programming_noise="none", d2d_step_sigma_frac=0.0)
    state, targets = _random_case(device, 64, 64, seed=3)
    first = program_state(state, targets, device, seed=0, stream=0)
    assert first.pulses > 0
    second, pp, pn = program_state(state, targets, device, seed=0, stream=1, return_pulses=True)
    assert second.pulses == 0 and pp.sum() == 0 and pn.sum() == 0
    assert second.verify_reads == second.cells_targeted == state.n_cells


def test_endurance_makes_cells_stuck() -> None:
    device = WAN.replace(endurance_pulses=3, tile_rows=32, pulse_scheme="ideal_jump", programming_noise="none")
    state = ArrayState.fresh(32, 64, device)
    shape = state.g_diff_us.shape
    targets = _targets(state, np.full(shape, 25.0), np.zeros(shape))  # about 3 pulses from 0 uS
    twin_state = state.copy()
    _, pp, _ = program_state(state, targets, device, seed=0, stream=0, return_pulses=True)
    _run_twin(device, twin_state, targets, None, 0, 0)
    _assert_same_state(state, twin_state)
    assert np.any(pp == 3) and np.any(pp < 3)
    assert np.all(state.writes_pos[pp >= 3] == STUCK)
    assert np.all(state.writes_pos[pp < 3] == pp[pp < 3])
    frozen = state.g_pos_us().copy()
    stuck = state.writes_pos == STUCK
    again = program_state(state, _targets(state, np.full(shape, 5.0), np.zeros(shape)), device, seed=0, stream=1)
    np.testing.assert_array_equal(state.g_pos_us()[stuck], frozen[stuck])
    assert again.pulses >= int(stuck.sum()) * device.max_pulses


def test_counter_rounding_is_unbiased() -> None:
    """With 16 pulses per counter step, counters grow by pulses / 16 on average."""
    assert pulses_per_count(WAN) == 16
    state = ArrayState.fresh(256, 128, WAN)
    shape = state.g_diff_us.shape
    rng = np.random.default_rng(5)
    targets = _targets(state, rng.uniform(0, 40, shape), rng.uniform(0, 40, shape))
    report = program_state(state, targets, WAN, seed=1, stream=0)
    counted = float(state.writes_pos.sum(dtype=np.int64) + state.writes_neg.sum(dtype=np.int64)) * 16
    # increments are floor(x + u): variance <= 1/4 per cell, so the total is within ~4 sigma of the truth
    assert abs(counted - report.pulses) < 4 * 16 * 0.5 * math.sqrt(state.n_cells)


@pytest.mark.parametrize("mode", ["write_verify", "statistical"])
def test_deterministic_and_thread_count_independent(mode) -> None:
    device = WAN.replace(programming_mode=mode, tile_rows=32)
    results = []
    threads = numba.get_num_threads()
    try:
        for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS), threads):
            numba.set_num_threads(n_threads)
            state, targets = _random_case(device, 96, 64, seed=8, stuck_frac=0.02, preprogram=True)
            report, pp, pn = program_state(state, targets, device, seed=4, stream=9, return_pulses=True)
            results.append((state, report, pp, pn))
    finally:
        numba.set_num_threads(threads)
    for state, report, pp, pn in results[1:]:
        _assert_same_state(state, results[0][0])
        assert report == results[0][1]
        np.testing.assert_array_equal(pp, results[0][2])
        np.testing.assert_array_equal(pn, results[0][3])
    state, targets = _random_case(device, 96, 64, seed=8, stuck_frac=0.02, preprogram=True)
    program_state(state, targets, device, seed=4, stream=10)
    assert not np.array_equal(state.g_neg_us, results[0][0].g_neg_us)  # another stream, other draws


def test_expected_pulse_table_is_cached_and_sane() -> None:
    table = expected_pulse_table(WAN)
    assert table is expected_pulse_table(WAN.replace(read_noise_frac=0.5))  # same pulse model, same table
    assert table.shape[0] == 3 and np.all(table[0] >= 1.0) and np.all(table[0] <= WAN.max_pulses)
    assert np.all((table[1:] >= WAN.g_min_us) & (table[1:] <= WAN.g_max_us))
    assert table[0, 0, -1] > table[0, 0, 1]  # farther takes more pulses


# --- hypothesis properties ---------------------------------------------------------------------------------------
CASES = st.tuples(
    st.integers(1, 12),  # d_in
    st.integers(1, 12),  # d_out
    st.sampled_from([1, 4, 8]),  # tile_rows
    st.sampled_from(["write_verify", "statistical"]),
    st.sampled_from(["reram_wan2022", "reram_milo2021", "neurosim_rram"]),
    st.integers(0, 2**32),  # seed
    st.floats(0.0, 0.3),  # stuck fraction
    st.sampled_from([math.inf, 1e6, 40.0]),  # endurance
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES)
def test_properties_of_programming(case) -> None:
    d_in, d_out, tile_rows, mode, preset, seed, stuck_frac, endurance = case
    device = device_preset(preset, tile_rows=tile_rows, programming_mode=mode, endurance_pulses=endurance)
    state, targets = _random_case(device, d_in, d_out, seed % 1000, stuck_frac=stuck_frac, preprogram=seed % 2 == 0)
    slack = 2 * float(np.spacing(np.float32(device.g_max_us)))  # G+ = g_diff + g_neg is exact to float32 rounding
    real = state.valid_rows()[..., 0]
    stuck_pos, stuck_neg = state.stuck_pos(), state.stuck_neg()
    g_pos0, g_neg0 = state.g_pos_us(), state.g_neg_us.copy()
    counts0 = (state.writes_pos.copy(), state.writes_neg.copy())
    report, pp, pn = program_state(state, targets, device, seed=seed, stream=0, return_pulses=True)
    # the fitted error is clamped at 0 uS only (as aihwkit and CrossSim), so G may leave [g_min, g_max] a little
    sigma_max = float(programming_sigma_us(np.linspace(device.g_min_us, device.g_max_us, 65), device).max())
    for g in (state.g_pos_us()[real], state.g_neg_us[real]):
        assert g.min() >= -slack and g.max() <= device.g_max_us + 5 * sigma_max + slack
    assert np.all(state.writes_pos >= counts0[0]) and np.all(state.writes_neg >= counts0[1])
    np.testing.assert_array_equal(state.g_neg_us[stuck_neg], g_neg0[stuck_neg])
    np.testing.assert_allclose(state.g_pos_us()[stuck_pos], g_pos0[stuck_pos], rtol=0, atol=slack)
    assert np.all(pp[stuck_pos & real[..., None]] == device.max_pulses * (pp[stuck_pos & real[..., None]] > 0))
    assert report.pulses == int(pp.sum(dtype=np.int64) + pn.sum(dtype=np.int64))
    assert report.energy_pj >= 0 and report.latency_ns >= 0
    if mode == "write_verify":
        # reprogramming the same targets: cells that reached tolerance cost nothing (only stuck or given-up
        # cells pulse again)
        tol = device.verify_tolerance_frac * device.g_range_us
        settled_pos = np.abs(state.g_pos_us().astype(np.float64) - targets.pos_us) <= tol
        settled_neg = np.abs(state.g_neg_us.astype(np.float64) - targets.neg_us) <= tol
        _, pp2, pn2 = program_state(state, targets, device, seed=seed, stream=1, return_pulses=True)
        assert np.all(pp2[settled_pos] == 0) and np.all(pn2[settled_neg] == 0)


# --- bad input ---------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors() -> None:
    device = WAN.replace(tile_rows=4)
    state = ArrayState.fresh(6, 5, device)
    shape = state.g_diff_us.shape
    good = _targets(state, np.full(shape, 10.0), np.zeros(shape))
    with pytest.raises(ValueError, match="targets.pos_us"):
        program_state(state, _targets(state, np.zeros((2, 4, 4)), np.zeros(shape)), device, seed=0, stream=0)
    with pytest.raises(ValueError, match="targets.neg_us"):
        program_state(state, Targets(good.pos_us, np.zeros(shape, dtype=np.int32), good.out_scale), device, seed=0,
                      stream=0)  # fmt: skip
    with pytest.raises(ValueError, match="within"):
        program_state(state, _targets(state, np.full(shape, 41.0), np.zeros(shape)), device, seed=0, stream=0)
    with pytest.raises(ValueError, match="within"):
        program_state(state, _targets(state, np.full(shape, np.nan), np.zeros(shape)), device, seed=0, stream=0)
    with pytest.raises(ValueError, match="changed"):
        program_state(state, good, device, seed=0, stream=0, changed=np.ones(shape, dtype=np.uint8))
    with pytest.raises(ValueError, match="seed"):
        program_state(state, good, device, seed=-1, stream=0)
    with pytest.raises(ValueError, match="stream"):
        program_state(state, good, device, seed=0, stream=1.5)
    with pytest.raises(ValueError, match="ledger"):
        program_state(state, good, device, seed=0, stream=0, ledger=Ledger())
    with pytest.raises(ValueError, match="tile_rows"):
        program_state(state, good, WAN, seed=0, stream=0)
    with pytest.raises(ValueError, match="state"):
        program_state("not a state", good, device, seed=0, stream=0)
    state.writes_pos = state.writes_pos.astype(np.int32)
    with pytest.raises(ValueError, match="state.writes_pos"):
        program_state(state, good, device, seed=0, stream=0)
    # padding rows may hold anything (they are never written)
    fresh = ArrayState.fresh(6, 5, device_preset("reram_milo2021", tile_rows=4))
    milo_targets = _targets(fresh, np.full(shape, 100.0) * fresh.valid_rows(), np.full(shape, 50.0))
    program_state(fresh, milo_targets, device_preset("reram_milo2021", tile_rows=4), seed=0, stream=0)


def test_store_state_kernel_matches_twin() -> None:
    from naive_programming import store_state_np

    from crossbar.bandwidth import store_state_kernel

    rng = np.random.default_rng(5)
    pos, neg = (rng.uniform(0, 40, (9, 13)).astype(np.float32) for _ in range(2))
    out = [np.zeros((9, 13), np.float32), np.zeros((9, 13), np.float32), np.zeros((9, 13), np.uint16),
           np.zeros((9, 13), np.uint16)]  # fmt: skip
    store_state_kernel(pos, neg, *out)
    for got, want in zip(out, store_state_np(pos, neg)):
        np.testing.assert_array_equal(got, want)
