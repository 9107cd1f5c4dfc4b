from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive_programming import apply_drift_np, fault_np
from scipy.stats import ks_2samp

from crossbar.mapping import Targets
from crossbar.noise import apply_drift, drift_sigma_total_us, fabricate_faults, programming_sigma_us
from crossbar.nonideal.drift import WAN2022_DRIFT_COEFFS_US
from crossbar.presets import device_preset
from crossbar.programming import program_state
from crossbar.rng import DOMAIN_FAULT, domain_key
from crossbar.state import STUCK, ArrayState

WAN = device_preset("reram_wan2022")


def _views(state: ArrayState) -> list[np.ndarray]:
    rows = state.n_tiles * state.tile_rows
    return [a.reshape(rows, state.d_out) for a in (state.g_diff_us, state.g_neg_us, state.writes_pos, state.writes_neg)]


def _assert_same_state(a: ArrayState, b: ArrayState) -> None:
    for name in ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _filled(device, d_in, d_out, seed, *, g_pos=None, g_neg=None, stuck_frac=0.0) -> ArrayState:
    rng = np.random.default_rng(seed)
    state = ArrayState.fresh(d_in, d_out, device)
    shape = state.g_diff_us.shape
    real = state.valid_rows()
    gp = rng.uniform(device.g_min_us, device.g_max_us, shape) if g_pos is None else np.full(shape, g_pos)
    gn = rng.uniform(device.g_min_us, device.g_max_us, shape) if g_neg is None else np.full(shape, g_neg)
    gp, gn = gp.astype(np.float32), gn.astype(np.float32)
    state.g_neg_us[...] = np.where(real, gn, 0.0)
    state.g_diff_us[...] = np.where(real, gp - gn, 0.0)
    for writes in (state.writes_pos, state.writes_neg):
        writes[...] = rng.integers(0, 100, shape)
        writes[rng.random(shape) < stuck_frac] = STUCK
    return state


# --- programming sigma -------------------------------------------------------------------------------------------
def test_programming_sigma_values_by_hand() -> None:
    # Wan 2022 (aihwkit, t = 1 s): sigma(0) = c0, sigma(G_max) = sum of the coefficients, g = G / 40 uS
    c = (0.348, 16.030, -43.853, 45.393, -16.815)
    g = np.array([0.0, 10.0, 40.0])
    u = g / 40.0
    expected = sum(ck * u**k for k, ck in enumerate(c))
    np.testing.assert_allclose(programming_sigma_us(g, WAN), expected, rtol=1e-12)
    assert programming_sigma_us(np.array(40.0), WAN) == pytest.approx(1.103)
    # Milo 2021 (CrossSim): max(4.782 - 0.009107 G, 0), clamped at zero beyond 525 uS
    milo = device_preset("reram_milo2021")
    np.testing.assert_allclose(
        programming_sigma_us(np.array([50.0, 225.0, 600.0]), milo), [4.782 - 0.45535, 4.782 - 2.049075, 0.0]
    )
    # CMO/HfOx (aihwkit, 2 % acceptance): 0.0112 + 0.0113 G
    cmo = device_preset("reram_cmo_hfox")
    assert cmo.programming_noise == "cmo_hfox"
    assert programming_sigma_us(np.array(4.0), cmo) == pytest.approx(0.0112185391 + 0.01129027418 * 4.0)
    assert np.all(programming_sigma_us(np.linspace(0, 40, 9), device_preset("ideal")) == 0.0)


def test_wan_sigma_scales_g_to_the_device_range() -> None:
    shifted = WAN.replace(g_min_us=10.0, g_max_us=50.0)
    np.testing.assert_allclose(
        programming_sigma_us(np.array([10.0, 30.0, 50.0]), shifted),
        programming_sigma_us(np.array([0.0, 20.0, 40.0]), WAN),
    )


# --- drift ---------------------------------------------------------------------------------------------------
CMO = device_preset("reram_cmo_hfox")


@pytest.mark.parametrize("device", [WAN, CMO], ids=["wan", "cmo"])
@pytest.mark.parametrize(("t_from", "t_to"), [(0.0, 3600.0), (10.0, 1e5), (1e5, 3e6)])
@pytest.mark.parametrize(("d_in", "d_out", "tile_rows"), [(1, 1, 1), (5, 7, 4), (37, 20, 16)])
def test_drift_kernel_matches_twin(device, t_from, t_to, d_in, d_out, tile_rows) -> None:
    """Origin and two successive steps (the second from the first's origin), kernels against the NumPy twins;
    some cells sit at exactly 0 uS, so the origin's redraw below 0 is exercised."""
    device = device.replace(tile_rows=tile_rows)
    state = _filled(device, d_in, d_out, seed=d_in, stuck_frac=0.1)
    state.g_neg_us[..., ::3] = 0.0
    twin = state.copy()
    origin = apply_drift(state, device, t_from_s=t_from, t_to_s=t_to, seed=3, stream=4)
    twin_origin = apply_drift_np(twin, device, t_from_s=t_from, t_to_s=t_to, seed=3, stream=4)
    _assert_same_state(state, twin)
    np.testing.assert_array_equal(origin.cells, twin_origin)
    apply_drift(state, device, t_from_s=t_to, t_to_s=2 * t_to, seed=3, stream=5, origin=origin)
    apply_drift_np(twin, device, t_from_s=t_to, t_to_s=2 * t_to, seed=3, stream=5, origin=twin_origin)
    _assert_same_state(state, twin)
    np.testing.assert_array_equal(origin.cells, twin_origin)


def _programmed(device, g, seed=0):
    """256 x 100 weights with G+ programmed (statistical) to g, G- to g_min: the cells and their targets."""
    state = ArrayState.fresh(256, 100, device.replace(programming_mode="statistical"))
    shape = state.g_diff_us.shape
    targets = Targets(np.full(shape, g, np.float32), np.full(shape, device.g_min_us, np.float32), np.ones(100))
    program_state(state, targets, device.replace(programming_mode="statistical"), seed=seed, stream=0)
    return state


@pytest.mark.parametrize("t_s", [3600.0, 86400.0, 30 * 86400.0])
@pytest.mark.parametrize("g", [10.0, 25.0])
def test_wan_drift_total_sigma_follows_the_fits(t_s, g) -> None:
    """Programmed at 1 s, drifted to t: the spread around the target is the Wan fit at t (ln-t interpolated,
    held past 2 days) and the mean stays at the target (no mean shift)."""
    state = _programmed(WAN, g)
    apply_drift(state, WAN, t_from_s=0.0, t_to_s=t_s, seed=1, stream=0)
    error = state.g_pos_us().astype(np.float64).ravel() - g
    sigma = float(drift_sigma_total_us(np.array(g), WAN, t_s))
    assert error.std() == pytest.approx(sigma, rel=0.05)
    assert abs(error.mean()) < 5 * sigma / math.sqrt(error.size)


def test_wan_drift_sigma_values_by_hand() -> None:
    c1, c_day, c_2day = (WAN2022_DRIFT_COEFFS_US[t] for t in (1.0, 86400.0, 172800.0))
    u = 20.0 / 40.0
    s1, s_day, s_2day = (sum(ck * u**k for k, ck in enumerate(c)) for c in (c1, c_day, c_2day))
    w = math.log(3600.0) / math.log(86400.0)
    assert float(drift_sigma_total_us(np.array(20.0), WAN, 3600.0)) == pytest.approx((1 - w) * s1 + w * s_day)
    assert float(drift_sigma_total_us(np.array(20.0), WAN, 86400.0)) == pytest.approx(s_day)
    assert float(drift_sigma_total_us(np.array(20.0), WAN, 30 * 86400.0)) == pytest.approx(s_2day)
    assert float(drift_sigma_total_us(np.array(20.0), WAN, 0.5)) == pytest.approx(s1)


@pytest.mark.parametrize("t_s", [3600.0, 86400.0, 30 * 86400.0])
def test_cmo_drift_mean_and_total_sigma(t_s) -> None:
    """CMO/HfOx (aihwkit ReRamCMONoiseModel): mean -0.089 ln t, total sigma = programming (+) relaxation
    0.042 ln t + 0.412 (+) 1/f term, in quadrature; both cells of a pair shift alike (no clamp at g_min)."""
    g = 40.0
    state = _programmed(CMO, g)
    apply_drift(state, CMO, t_from_s=0.0, t_to_s=t_s, seed=2, stream=0)
    error = state.g_pos_us().astype(np.float64).ravel() - g
    relax = 0.04201137 * math.log(t_s) + 0.41183342
    read = 0.0277316483 * math.log10(g) * math.sqrt(math.log((t_s + 1e-6) / 2e-6))
    prog = 0.0112185391 + 0.01129027418 * g
    sigma = math.sqrt(prog**2 + relax**2 + read**2)
    assert float(drift_sigma_total_us(np.array(g), CMO, t_s)) == pytest.approx(sigma)
    assert error.std() == pytest.approx(sigma, rel=0.05)
    assert error.mean() == pytest.approx(-0.08900206 * math.log(t_s), abs=5 * sigma / math.sqrt(error.size))
    idle = state.g_neg_us.astype(np.float64).ravel() - CMO.g_min_us
    assert idle.mean() == pytest.approx(-0.08900206 * math.log(t_s), abs=0.05)  # the idle cell follows too


def _drifted_in_steps(device, g, times, seed=1):
    """G+ at `g` and the idle G- (at g_min) of `_programmed`, drifted through `times` (s) with one origin."""
    state = _programmed(device, g)
    origin, t_from = None, 0.0
    for k, t_to in enumerate(times):
        origin = apply_drift(state, device, t_from_s=t_from, t_to_s=t_to, seed=seed, stream=k, origin=origin)
        t_from = t_to
    real = state.valid_rows()[..., 0]
    return state.g_pos_us()[real].astype(np.float64).ravel(), state.g_neg_us[real].astype(np.float64).ravel()


@pytest.mark.parametrize("device", [WAN, CMO], ids=["wan", "cmo"])
@pytest.mark.parametrize("above_g_min", [0.5, 25.0])
def test_drift_in_steps_equals_one_step_in_distribution(device, above_g_min) -> None:
    """One day in 1, 4 or 100 steps: the same distribution of both cells (two-sample KS), also near 0 uS where
    the read clamp acts; different draws."""
    g = device.g_min_us + above_g_min
    one_pos, one_neg = _drifted_in_steps(device, g, [86400.0])
    for n in (4, 100):
        pos, neg = _drifted_in_steps(device, g, list(np.geomspace(10.0, 86400.0, n)))
        for a, b in ((one_pos, pos), (one_neg, neg)):
            assert ks_2samp(a, b).pvalue > 1e-3
            assert a.std() == pytest.approx(b.std(), rel=0.05)
        assert not np.array_equal(one_pos, pos)


def _clamped_gaussian_moments(sigma: float) -> tuple[float, float]:
    """Mean and sigma of max(sigma z, 0): sigma / sqrt(2 pi) and sigma sqrt(1/2 - 1/(2 pi))."""
    return sigma / math.sqrt(2 * math.pi), sigma * math.sqrt(0.5 - 1 / (2 * math.pi))


@pytest.mark.parametrize("n_steps", [1, 24])
def test_wan_idle_cell_after_one_day_is_the_sources_clamped_gaussian(n_steps) -> None:
    """aihwkit's Wan model reads max(G_target + sigma_1day(G_target) z, 0) (reram.py 163-165): for the idle cell
    (target 0 uS) a clamped Gaussian with sigma_1day(0) = 0.701 uS. Programmed (statistical, clamped at 0) then
    drifted to one day in 1 or 24 hourly steps, ours matches its mean and sigma within 5 %."""
    times = [86400.0] if n_steps == 1 else [3600.0 * (k + 1) for k in range(24)]
    _, idle = _drifted_in_steps(WAN, 20.0, times)
    mean, sigma = _clamped_gaussian_moments(WAN2022_DRIFT_COEFFS_US[86400.0][0])
    assert idle.mean() == pytest.approx(mean, rel=0.05)
    assert idle.std() == pytest.approx(sigma, rel=0.05)
    assert (idle == 0).mean() == pytest.approx(0.5, abs=0.02)


def test_drift_before_one_second_and_none_model_do_nothing() -> None:
    state = _filled(WAN, 8, 8, seed=0)
    before = state.copy()
    apply_drift(state, WAN, t_from_s=0.0, t_to_s=0.9, seed=0, stream=0)
    apply_drift(state, WAN.replace(drift_model="none"), t_from_s=0.0, t_to_s=1e6, seed=0, stream=0)
    apply_drift(state, WAN, t_from_s=5.0, t_to_s=5.0, seed=0, stream=0)
    _assert_same_state(state, before)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 10), st.integers(1, 10), st.sampled_from([1, 4]), st.floats(0.0, 1e3), st.floats(1.0, 1e6),
    st.integers(0, 2**31), st.sampled_from(["reram_wan2022", "reram_cmo_hfox"]),
)  # fmt: skip
def test_drift_properties(d_in, d_out, tile_rows, t_from, dt, seed, preset) -> None:
    device = device_preset(preset, tile_rows=tile_rows)
    state = _filled(device, d_in, d_out, seed=seed % 997, stuck_frac=0.3)
    stuck_pos, stuck_neg = state.stuck_pos(), state.stuck_neg()
    g_pos0, g_neg0 = state.g_pos_us(), state.g_neg_us.copy()
    counts = (state.writes_pos.copy(), state.writes_neg.copy())
    apply_drift(state, device, t_from_s=t_from, t_to_s=t_from + dt, seed=seed, stream=0)
    slack = 2 * float(np.spacing(np.float32(device.g_max_us)))
    real = state.valid_rows()[..., 0]
    for g in (state.g_pos_us()[real], state.g_neg_us[real]):
        assert g.min() >= -slack and np.all(np.isfinite(g))  # clamped at 0 uS only
    np.testing.assert_array_equal(state.g_neg_us[stuck_neg], g_neg0[stuck_neg])
    np.testing.assert_allclose(state.g_pos_us()[stuck_pos], g_pos0[stuck_pos], rtol=0, atol=slack)
    np.testing.assert_array_equal(state.writes_pos, counts[0])
    np.testing.assert_array_equal(state.writes_neg, counts[1])
    assert np.all(state.g_neg_us[~real] == 0) and np.all(state.g_diff_us[~real] == 0)


def test_drift_bad_times_raise() -> None:
    state = ArrayState.fresh(4, 4, WAN)
    with pytest.raises(ValueError, match="t_to_s"):
        apply_drift(state, WAN, t_from_s=10.0, t_to_s=5.0, seed=0, stream=0)
    with pytest.raises(ValueError, match="t_from_s"):
        apply_drift(state, WAN, t_from_s=-1.0, t_to_s=5.0, seed=0, stream=0)
    with pytest.raises(ValueError, match="t_to_s"):
        apply_drift(state, WAN, t_from_s=0.0, t_to_s=math.inf, seed=0, stream=0)
    with pytest.raises(ValueError, match="seed"):
        apply_drift(state, WAN, t_from_s=0.0, t_to_s=5.0, seed=-2, stream=0)


# --- fabrication faults ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("d_in", "d_out", "tile_rows"), [(1, 1, 1), (5, 7, 4), (37, 20, 16)])
def test_fault_kernel_matches_twin(d_in, d_out, tile_rows) -> None:
    device = WAN.replace(tile_rows=tile_rows, stuck_at_min_rate=0.1, stuck_at_max_rate=0.15)
    state = _filled(device, d_in, d_out, seed=d_in, stuck_frac=0.1)
    twin = state.copy()
    count = fabricate_faults(state, device, seed=9)
    twin_count = fault_np(*_views(twin), d_in, g_min=0.0, g_max=40.0, rate_min=0.1, rate_max=0.15,
                          key=domain_key(9, 0, DOMAIN_FAULT))  # fmt: skip
    assert count == twin_count
    _assert_same_state(state, twin)


def test_fault_rates_within_binomial_tolerance() -> None:
    rate_min, rate_max = 0.01, 0.03
    device = WAN.replace(stuck_at_min_rate=rate_min, stuck_at_max_rate=rate_max)
    state = ArrayState.fresh(256, 200, device)
    state.g_diff_us[...] = 20.0  # G+ at 20 uS, G- at g_min
    n_new = fabricate_faults(state, device, seed=5)
    stuck = np.concatenate([state.stuck_pos().ravel(), state.stuck_neg().ravel()])
    g = np.concatenate([state.g_pos_us().ravel(), state.g_neg_us.ravel()])
    n = state.n_cells
    assert n_new == int(stuck.sum())
    sa0 = int((stuck & (g == device.g_min_us)).sum())
    sa1 = int((stuck & (g == device.g_max_us)).sum())
    assert sa0 + sa1 == n_new
    for observed, rate in ((sa0, rate_min), (sa1, rate_max)):
        assert abs(observed - n * rate) < 5 * math.sqrt(n * rate * (1 - rate))
    again = fabricate_faults(state, device, seed=5)  # same seed: the same cells, already stuck
    assert again == 0
    other = ArrayState.fresh(256, 200, device)
    fabricate_faults(other, device, seed=6)
    assert not np.array_equal(other.writes_pos, state.writes_pos)


def test_no_faults_when_rates_are_zero() -> None:
    state = ArrayState.fresh(16, 16, WAN)
    before = state.copy()
    assert fabricate_faults(state, WAN, seed=0) == 0
    _assert_same_state(state, before)
    with pytest.raises(ValueError, match="seed"):
        fabricate_faults(state, WAN, seed="0")
