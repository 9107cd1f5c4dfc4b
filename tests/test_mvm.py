"""The analog MVM: numba kernels vs NumPy twins, the torch reference path, quantisers, noise statistics, tiling,
ADC clipping, the transposed MVM and ledger accounting."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch
from mvm_states import random_mvm_case, random_state, state_of
from naive_mvm import naive_accumulate, naive_dac, naive_mvm, naive_normals
from reference_mvm import analog_mvm_reference

from crossbar.engine_numba import (
    ArrayOperands,
    _dac_tiles,
    _partial_sums,
    adc_inputs,
    analog_mvm,
    analog_mvm_transposed,
)
from crossbar.mvm import MvmSettings, forward_operands, read_noise_normals, stacked_forward_operand
from crossbar.mvm_kernels import adc_accumulate_kernel, dac_tiles_kernel
from crossbar.periphery import adc_quantize, dac_quantize, quantizer_levels
from crossbar.presets import device_preset
from crossbar.pricing import fast_input_activity, record_mvm
from crossbar.rng import NORMAL_TABLE
from crossbar.scheme import ConductanceSums
from energy import Ledger


def _dac(x: np.ndarray, levels: int, tile: int):
    n_vec, d_in = x.shape
    n_tiles = -(-d_in // tile)
    xq = np.full((n_tiles, n_vec, tile), np.nan, dtype=np.float32)
    sum_sq = np.empty((n_tiles, n_vec), dtype=np.float32)
    scale = np.empty(n_vec, dtype=np.float32)
    bad = np.empty(n_vec, dtype=np.uint8)
    none = np.zeros(0, dtype=np.float64)
    n_bad = dac_tiles_kernel(x, x.view(np.int32), levels, xq, sum_sq, scale, bad, 0, False, none, none)
    assert n_bad == int(bad.sum())
    return xq, sum_sq, scale, bad


# --- kernels vs NumPy twins --------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [0, 1, 7, 127, 2**15 - 1])
@pytest.mark.parametrize(("d_in", "tile"), [(1, 4), (37, 16), (64, 32), (100, 128)])
def test_dac_kernel_matches_twin(levels, d_in, tile):
    rng = np.random.default_rng(levels + d_in)
    x = (rng.standard_normal((9, d_in)) * rng.uniform(0.01, 100, size=(9, 1))).astype(np.float32)
    x[3] = 0.0  # a zero vector: scale 0, zero output
    xq, sum_sq, scale, bad = _dac(x, levels, tile)
    ref_xq, ref_sum_sq, ref_scale = naive_dac(x, levels, tile)
    np.testing.assert_array_equal(xq, ref_xq)
    np.testing.assert_array_equal(sum_sq, ref_sum_sq)
    np.testing.assert_array_equal(scale, ref_scale)
    assert not bad.any()
    assert np.all(np.abs(xq) <= 1.0)
    if levels > 0:  # applied inputs sit on the DAC grid
        np.testing.assert_allclose(xq * levels, np.rint(xq * levels), atol=1e-3)


def test_dac_kernel_flags_non_finite_rows():
    x = np.ones((4, 10), dtype=np.float32)
    x[1, 3] = np.nan
    x[2, 0] = -np.inf
    _, _, _, bad = _dac(x, 127, 8)
    np.testing.assert_array_equal(bad, [0, 1, 1, 0])


@pytest.mark.parametrize("sigma_us", [0.0, 0.4])
@pytest.mark.parametrize("adc_levels", [0, 7, 127])
@pytest.mark.parametrize("n_out", [1, 6, 33])
def test_accumulate_kernel_matches_twin(sigma_us, adc_levels, n_out):
    rng = np.random.default_rng(n_out + adc_levels)
    n_tiles, n_vec = 3, 5
    partial = (rng.standard_normal((n_tiles, n_vec, n_out)) * 30).astype(np.float32)
    sum_sq = rng.uniform(0, 50, size=(n_tiles, n_vec)).astype(np.float32)
    scale = rng.uniform(0.1, 3, size=n_vec).astype(np.float32)
    col_scale = rng.uniform(0.01, 0.1, size=n_out).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    key = 0xDEADBEEF12345678
    step = rng.uniform(0.1, 0.6, size=(n_tiles, n_out)).astype(np.float32)  # every tile column its own range
    inv_step = (np.float32(1.0) / step).astype(np.float32)
    out = np.empty((n_vec, n_out), dtype=np.float32)
    adc_accumulate_kernel(
        partial, sum_sq, scale, col_scale, bias, np.uint64(key), sigma_us, adc_levels, step, inv_step, False,
        NORMAL_TABLE, out,
    )  # fmt: skip
    ref = naive_accumulate(partial, sum_sq, scale, col_scale, bias, key, sigma_us, adc_levels, step)
    np.testing.assert_array_equal(out, ref)
    one = np.float32(0.37)  # one range for every tile column: the uniform path
    adc_accumulate_kernel(
        partial, sum_sq, scale, col_scale, bias, np.uint64(key), sigma_us, adc_levels, np.full_like(step, one),
        np.full_like(step, np.float32(1.0) / one), True, NORMAL_TABLE, out,
    )  # fmt: skip
    ref = naive_accumulate(partial, sum_sq, scale, col_scale, bias, key, sigma_us, adc_levels, one)
    np.testing.assert_array_equal(out, ref)


def test_noise_draws_match_twin_and_do_not_depend_on_thread_count():
    key = 987654321
    np.testing.assert_array_equal(read_noise_normals(key, 2, 3, 7), naive_normals(key, 2, 3, 7))
    partial = np.random.default_rng(0).standard_normal((2, 64, 40)).astype(np.float32)
    args = (np.ones((2, 64), np.float32), np.ones(64, np.float32), np.ones(40, np.float32), np.zeros(40, np.float32))
    outs = []
    threads = numba.get_num_threads()
    try:
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            out = np.empty((64, 40), dtype=np.float32)
            step = np.full((2, 40), 0.05, dtype=np.float32)
            adc_accumulate_kernel(partial, *args, np.uint64(key), 0.5, 127, step, 1 / step, True, NORMAL_TABLE, out)
            outs.append(out)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(outs[0], outs[-1])


# --- whole MVM: fast path vs torch reference vs NumPy ------------------------------------------------------------


CONFIGS = [
    dict(dac_bits=None, adc_bits=None, read_noise_frac=0.0),
    dict(dac_bits=8, adc_bits=8, read_noise_frac=0.0),
    dict(dac_bits=6, adc_bits=None, read_noise_frac=0.02),
    dict(dac_bits=8, adc_bits=8, read_noise_frac=0.01),
    dict(dac_bits=4, adc_bits=5, read_noise_frac=0.05, adc_full_scale=3.0),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_path_matches_reference_and_numpy(config):
    rng = np.random.default_rng(1)
    device = device_preset("reram_wan2022", tile_rows=32, **config)
    state, g, out_scale, x = random_mvm_case(rng, device.tile_rows)
    bias = torch.randn(21)
    settings = MvmSettings.from_device(device)
    key = 4242
    fast = analog_mvm(x, state, out_scale, settings, key=key, bias=bias)
    ref = analog_mvm_reference(x, state, out_scale, settings, key=key, bias=bias)
    np_ref = naive_mvm(
        x.numpy(), g, out_scale.numpy(), tile=state.tile_rows, dac_bits=device.dac_bits, adc_bits=device.adc_bits,
        adc_full_scale=device.adc_full_scale, sigma_us=settings.sigma_us, g_range_us=device.g_range_us, key=key,
        bias=bias.numpy(),
    )  # fmt: skip
    # Same float32 operations everywhere; BLAS may sum a tile's products in another order (1-ulp partial sums).
    scale = float(np.abs(np_ref).max())
    np.testing.assert_allclose(fast.numpy(), ref.detach().numpy(), rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(fast.numpy(), np_ref, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize(("d_in", "batch"), [(96, 300), (96, 20), (95, 300)])
def test_prepared_operands_give_the_unprepared_result_bit_for_bit(d_in, batch):
    """Three full tiles (96 rows) may take one batched matmul over the tiles (always for a small batch; for a
    large one when the tiles share out evenly between torch's threads), a short last tile (95) per-tile matmuls;
    either way the prepared path gives exactly what the unprepared per-tile path gives."""
    rng = np.random.default_rng(7)
    device = device_preset("reram_wan2022", tile_rows=32)
    state, _, out_scale, x = random_mvm_case(rng, device.tile_rows, d_in=d_in, d_out=40, batch=batch)
    prepared = ArrayOperands.of(state, out_scale, device.tile_cols)
    assert (prepared.forward_stacked is not None) == (d_in == 96)
    settings = MvmSettings.from_device(device)
    plain = analog_mvm(x, state, out_scale, settings, key=99)
    fast = analog_mvm(x, state, out_scale, settings, key=99, prepared=prepared)
    assert torch.equal(plain, fast)


@pytest.mark.parametrize("batch", [20, 300])
def test_batched_and_per_tile_matmuls_give_the_same_partial_sums(batch):
    """`_partial_sums` picks bmm or per-tile matmuls by batch size and thread count; both give the same bits."""
    rng = np.random.default_rng(8)
    device = device_preset("reram_wan2022", tile_rows=32)
    state, _, out_scale, x = random_mvm_case(rng, device.tile_rows, d_in=96, d_out=40, batch=batch)
    xq, _, _ = _dac_tiles(x, MvmSettings.from_device(device).dac_levels, state.tile_rows, "x")
    operands, stacked = forward_operands(state), stacked_forward_operand(state)
    batched = torch.bmm(xq, stacked)
    assert torch.equal(_partial_sums(xq, operands, stacked), batched)
    assert torch.equal(_partial_sums(xq, operands), batched)


def test_fresh_noise_per_call_and_same_key_same_result():
    rng = np.random.default_rng(2)
    device = device_preset("reram_wan2022", tile_rows=32)
    state, _ = random_state(rng, 40, 8, 32)
    x = torch.randn(3, 40)
    settings = MvmSettings.from_device(device)
    a = analog_mvm(x, state, torch.ones(8), settings, key=1)
    b = analog_mvm(x, state, torch.ones(8), settings, key=1)
    c = analog_mvm(x, state, torch.ones(8), settings, key=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_read_noise_statistics():
    """Output-referred read noise: mean 0 and sigma_cell * sqrt(sum_i x_i^2) * input scale * out_scale per output
    (summed in quadrature over tiles), here with DAC and ADC off so the clean output is exact."""
    rng = np.random.default_rng(3)
    device = device_preset("reram_wan2022", tile_rows=16, dac_bits=None, adc_bits=None, read_noise_frac=0.02)
    state, _ = random_state(rng, 40, 6, 16)
    out_scale = torch.from_numpy(rng.uniform(0.5, 2.0, size=6).astype(np.float32))
    x_one = torch.from_numpy(rng.standard_normal(40).astype(np.float32))
    n = 20000
    x = x_one.expand(n, 40).contiguous()
    noisy = analog_mvm(x, state, out_scale, MvmSettings.from_device(device), key=11).double()
    clean = analog_mvm(x[:1], state, out_scale, MvmSettings.from_device(device.replace(read_noise_frac=0.0)), key=0)
    diff = noisy - clean.double()
    sigma_cell = math.sqrt(2.0) * 0.02 * device.g_range_us  # per cell x sqrt(2) for the pair, relative to the range
    m = float(x_one.abs().max())
    expected_sd = sigma_cell * float(torch.sqrt(((x_one.double() / m) ** 2).sum())) * m * out_scale.double()
    sd = diff.std(dim=0)
    mean = diff.mean(dim=0)
    assert torch.all((sd / expected_sd - 1).abs() < 0.03), sd / expected_sd
    assert torch.all(mean.abs() < 4 * expected_sd / n**0.5)
    # Gaussian shape: about 68.3 % within one sigma.
    inside = ((diff.abs() / expected_sd) < 1).double().mean()
    assert abs(float(inside) - 0.6827) < 0.01


def test_two_tiles_with_ideal_adc_equal_one_tile():
    rng = np.random.default_rng(4)
    g = rng.uniform(-40, 40, size=(10, 60)).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((7, 60)).astype(np.float32))
    device = device_preset("reram_wan2022", dac_bits=8, adc_bits=None, read_noise_frac=0.0)
    settings = MvmSettings.from_device(device)
    one = analog_mvm(x, state_of(g, 64), torch.ones(10), settings, key=0)
    two = analog_mvm(x, state_of(g, 32), torch.ones(10), settings, key=0)
    assert state_of(g, 32).n_tiles == 2
    torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-4)


def test_adc_clips_at_full_scale():
    # All weights at +g_range, all inputs 1: each tile's normalised partial sum is its row count (here 8),
    # an ADC with full scale 2 reads 2 per tile, so y = n_tiles * 2 * g_range * out_scale.
    device = device_preset("reram_wan2022", dac_bits=8, adc_bits=6, read_noise_frac=0.0, adc_full_scale=2.0)
    g = np.full((3, 24), device.g_range_us, dtype=np.float32)
    state = state_of(g, 8)
    y = analog_mvm(torch.ones(2, 24), state, torch.full((3,), 0.5), MvmSettings.from_device(device), key=0)
    torch.testing.assert_close(y, torch.full((2, 3), 3 * 2.0 * device.g_range_us * 0.5))
    # Unclipped with a larger range whose step (15.5 / 31 = 0.5) has 8 on the grid: 24 inputs x 40 uS x 0.5.
    device = device.replace(adc_full_scale=15.5)
    y = analog_mvm(torch.ones(2, 24), state, torch.full((3,), 0.5), MvmSettings.from_device(device), key=0)
    torch.testing.assert_close(y, torch.full((2, 3), 24 * 40.0 * 0.5))


def test_adc_inputs_are_the_normalised_partial_sums():
    g = np.full((3, 24), 20.0, dtype=np.float32)  # half the range
    state = state_of(g, 8)
    settings = MvmSettings.from_device(device_preset("reram_wan2022"))
    values = adc_inputs(torch.ones(2, 24), state, torch.ones(3), settings)
    assert values.shape == (3, 2, 3)  # (input tiles, vectors, columns): one value per conversion
    np.testing.assert_allclose(values, 8 * 0.5)
    per_cycle = MvmSettings.from_device(device_preset("isaac"))
    assert per_cycle.cycles > 1
    assert adc_inputs(torch.ones(2, 24), state, torch.ones(3), per_cycle).shape == (3, per_cycle.cycles * 2, 3)


@pytest.mark.parametrize("scheme", ["multi_bit", "isaac"])
def test_per_column_ranges_fast_path_matches_reference_and_numpy(scheme):
    rng = np.random.default_rng(11)
    device = device_preset("reram_wan2022", tile_rows=32, adc_bits=6, read_noise_frac=0.01, mvm_scheme=scheme)
    state, g, out_scale, x = random_mvm_case(rng, device.tile_rows)
    ranges = rng.uniform(0.5, 6.0, size=(3, 21)).astype(np.float32)  # every tile column its own range
    settings = MvmSettings.from_device(device, adc_ranges=ranges)
    fast = analog_mvm(x, state, out_scale, settings, key=77)
    ref = analog_mvm_reference(x, state, out_scale, settings, key=77)
    scale = float(fast.abs().max())
    np.testing.assert_allclose(fast.numpy(), ref.detach().numpy(), rtol=0, atol=1e-6 * scale)
    if scheme == "multi_bit":
        np_ref = naive_mvm(
            x.numpy(), g, out_scale.numpy(), tile=state.tile_rows, dac_bits=device.dac_bits, adc_bits=6,
            adc_full_scale=ranges,
            sigma_us=settings.sigma_us, g_range_us=device.g_range_us, key=77,
        )  # fmt: skip
        np.testing.assert_allclose(fast.numpy(), np_ref, rtol=0, atol=1e-6 * scale)
    # the ranges are used: one scalar range gives another result
    scalar = analog_mvm(x, state, out_scale, MvmSettings.from_device(device, adc_full_scale=3.0), key=77)
    assert not torch.allclose(fast, scalar)
    with pytest.raises(ValueError, match="adc_ranges has shape"):
        analog_mvm(x, state, out_scale, MvmSettings.from_device(device, adc_ranges=ranges[:, :20]), key=77)


@pytest.mark.parametrize("tile_cols", [4, 7, 64])
def test_transposed_mvm(tile_cols):
    rng = np.random.default_rng(5)
    state, g = random_state(rng, 30, 13, 8)
    out_scale = torch.from_numpy(rng.uniform(0.01, 0.02, size=13).astype(np.float32))
    weight = g * out_scale.numpy()[:, None]
    d = torch.from_numpy(rng.standard_normal((5, 13)).astype(np.float32))
    ideal = MvmSettings.from_device(device_preset("ideal"))
    y = analog_mvm_transposed(d, state, out_scale, ideal, key=0, tile_cols=tile_cols)
    np.testing.assert_allclose(y.numpy(), d.numpy() @ weight, rtol=1e-5, atol=1e-5)
    noisy = MvmSettings.from_device(device_preset("reram_wan2022", adc_full_scale=4.0))
    fast = analog_mvm_transposed(d, state, out_scale, noisy, key=9, tile_cols=tile_cols)
    ref = analog_mvm_reference(d, state, out_scale, noisy, key=9, transposed=True, tile_cols=tile_cols)
    np.testing.assert_allclose(fast.numpy(), ref.detach().numpy(), rtol=0, atol=1e-6 * float(fast.abs().max()))


def test_bad_inputs_raise_value_errors():
    state, _ = random_state(np.random.default_rng(6), 10, 4, 8)
    settings = MvmSettings.from_device(device_preset())
    with pytest.raises(ValueError, match="x must have shape"):
        analog_mvm(torch.ones(2, 11), state, torch.ones(4), settings, key=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        analog_mvm(torch.tensor([[float("nan")] * 10]), state, torch.ones(4), settings, key=0)
    with pytest.raises(ValueError, match="key"):
        analog_mvm(torch.ones(2, 10), state, torch.ones(4), settings, key=-1)
    with pytest.raises(ValueError, match="adc_full_scale"):
        MvmSettings.from_device(device_preset(), adc_full_scale=0.0)
    with pytest.raises(ValueError, match="dac_bits"):
        dac_quantize(torch.ones(3), 1)


# --- periphery (torch quantisers with a straight-through gradient) -----------------------------------------------


def test_quantisers_values_and_straight_through_gradient():
    assert quantizer_levels(8) == 127 and quantizer_levels(None) == 0
    x = torch.tensor([[0.5, -1.0, 0.26, 0.0], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    applied, scale = dac_quantize(x, 3)  # 3 levels per sign: grid {0, 1/3, 2/3, 1}
    torch.testing.assert_close(scale, torch.tensor([[1.0], [0.0]]))
    torch.testing.assert_close(applied[0], torch.tensor([2 / 3, -1.0, 1 / 3, 0.0]))
    torch.testing.assert_close(applied[1], torch.zeros(4))
    (applied * scale).sum().backward()
    torch.testing.assert_close(x.grad[0], torch.ones(4))  # STE: d(applied * scale)/dx = 1
    p = torch.tensor([0.1, 0.74, -5.0, 3.0], requires_grad=True)
    q = adc_quantize(p, 3, 1.5)  # 3 levels per sign, step 0.5, range +-1.5
    torch.testing.assert_close(q, torch.tensor([0.0, 0.5, -1.5, 1.5]))
    q.sum().backward()
    torch.testing.assert_close(p.grad, torch.ones(4))


def test_reference_path_is_differentiable_with_straight_through_gradient():
    rng = np.random.default_rng(7)
    state, g = random_state(rng, 20, 5, 8)
    out_scale = torch.full((5,), 0.01)
    x = torch.randn(3, 20, requires_grad=True)
    settings = MvmSettings.from_device(device_preset("reram_wan2022"))
    analog_mvm_reference(x, state, out_scale, settings, key=3).sum().backward()
    expected = (torch.from_numpy(g) * 0.01).sum(dim=0).expand(3, 20)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)


# --- ledger --------------------------------------------------------------------------------------------------------


def test_record_mvm_counts_and_energies():
    device = device_preset("reram_wan2022", tile_rows=64, tile_cols=32, mvm_scheme="multi_bit")
    ledger = Ledger()
    scope = ledger.scope(phase="inference")
    d_in, d_out, batch = 100, 40, 6
    rng = np.random.default_rng(0)
    row_us, col_us = rng.uniform(0, 80, d_in), rng.uniform(0, 200, d_out)
    sums = ConductanceSums(row_us=row_us, col_us=col_us)
    record_mvm(scope, layer="l", device=device, d_in=d_in, d_out=d_out, n_vectors=batch, conductance=sums, bias=True)
    costs = ledger.costs

    def total(event, field="count"):
        return ledger.total(field, event=event)

    # Without inputs: every row driven at full scale (upper bound), one multi-bit cycle.
    assert total("cell_read") == 2 * d_in * d_out * batch
    assert total("cell_read", "energy_pj") == pytest.approx(batch * 0.5**2 * row_us.sum() * 10.0 * 1e-3)
    assert total("cell_read", "latency_ns") == pytest.approx(batch * costs.mvm_cycle_ns)
    assert total("dac_conversion") == d_in * 2 * batch  # 2 column tiles of 32 for 40 outputs
    assert total("dac_conversion", "energy_pj") == pytest.approx(d_in * 2 * batch * costs.dac_conversion_pj(8))
    assert total("adc_conversion") == d_out * 2 * batch  # 2 row tiles of 64 for 100 inputs
    assert total("adc_conversion", "energy_pj") == pytest.approx(d_out * 2 * batch * costs.adc_conversion_pj(8))
    assert total("shift_add") == d_out * 2 * batch
    assert total("digital_add") == d_out * batch
    # With inputs, multi-bit: row i conducts at (c_i / L)^2 of V_read^2.
    x = torch.zeros(batch, d_in)
    x[:, 3] = 1.0
    x[:, 7] = -0.5
    ledger1 = Ledger()
    record_mvm(
        ledger1.scope(phase="inference"), layer="l", device=device, d_in=d_in, d_out=d_out, n_vectors=batch,
        conductance=sums, inputs=x,
    )  # fmt: skip
    code7 = np.rint(np.float32(-0.5) * np.float32(127)) / 127
    expected = batch * 0.25 * 10.0 * 1e-3 * (row_us[3] + code7**2 * row_us[7])
    assert ledger1.total("energy_pj", event="cell_read") == pytest.approx(expected)
    assert ledger1.total("count", event="cell_read") == 2 * 2 * d_out * batch
    # Transposed: inputs along d_out in column tiles, conversions on the rows of every column tile.
    ledger2 = Ledger()
    record_mvm(
        ledger2.scope(phase="adapt"), layer="l", device=device, d_in=d_in, d_out=d_out, n_vectors=batch,
        conductance=sums, transposed=True,
    )  # fmt: skip
    assert ledger2.total("count", event="dac_conversion") == d_out * 2 * batch
    assert ledger2.total("count", event="adc_conversion") == d_in * 2 * batch
    assert ledger2.total("count", event="cell_read") == 2 * d_in * d_out * batch
    assert ledger2.total("energy_pj", event="cell_read") == pytest.approx(batch * 0.25 * col_us.sum() * 1e-2)


@pytest.mark.parametrize("dac_bits", [None, 3, 8])
@pytest.mark.parametrize("scheme", ["multi_bit", "neurram"])
def test_input_activity_kernel_matches_numpy_twin(dac_bits, scheme):
    from crossbar.scheme import MVM_SCHEMES, input_activity

    rng = np.random.default_rng(7)
    x = rng.standard_normal((13, 37)).astype(np.float32)
    x[3] = 0.0  # an all-zero vector drives nothing
    x[5, ::2] = 0.0
    x = torch.from_numpy(x)
    fast = fast_input_activity(x, dac_bits, MVM_SCHEMES[scheme])
    ref = input_activity(x, dac_bits, MVM_SCHEMES[scheme])
    np.testing.assert_array_equal(fast.drives, ref.drives)
    np.testing.assert_array_equal(fast.energy_weight, ref.energy_weight)
    assert fast.drives.sum() > 0


@pytest.mark.parametrize("dac_bits", [None, 3, 8])
@pytest.mark.parametrize("scheme", ["multi_bit", "neurram"])
def test_dac_kernel_adds_the_activity_of_its_numpy_twin(dac_bits, scheme):
    """The DAC kernel's activity count (the ledger's, in the same pass) equals `crossbar.scheme.input_activity`
    bit for bit, added onto the sums it is given, at levels of its own (the priced DAC, not the simulated one); a
    batch with a NaN adds nothing."""
    from crossbar.pricing import _activity_levels
    from crossbar.scheme import MVM_SCHEMES, input_activity

    rng = np.random.default_rng(11)
    x = rng.standard_normal((13, 37)).astype(np.float32)
    x[3] = 0.0
    x[5, ::2] = 0.0
    levels = _activity_levels(dac_bits, MVM_SCHEMES[scheme])
    drives, weights = np.full(37, 2.0), np.zeros(37)  # drives: whole counts, exact in any order
    xq, sum_sq = np.empty((3, 13, 16), dtype=np.float32), np.empty((3, 13), dtype=np.float32)
    scale, bad = np.empty(13, dtype=np.float32), np.empty(13, dtype=np.uint8)
    args = (xq, sum_sq, scale, bad, levels, MVM_SCHEMES[scheme].bit_serial, drives, weights)
    assert dac_tiles_kernel(x, x.view(np.int32), 127, *args) == 0
    ref = input_activity(torch.from_numpy(x), dac_bits, MVM_SCHEMES[scheme])
    np.testing.assert_array_equal(drives, ref.drives + 2.0)
    np.testing.assert_array_equal(weights, ref.energy_weight)
    ref_xq, _, _ = naive_dac(x, 127, 16)
    np.testing.assert_array_equal(xq, ref_xq)  # the DAC output is unchanged by counting
    x[7, 2] = np.nan
    before = drives.copy()
    assert dac_tiles_kernel(x, x.view(np.int32), 127, *args) == 1
    np.testing.assert_array_equal(drives, before)


@pytest.mark.parametrize("dac_bits", [None, 8])
@pytest.mark.parametrize("scheme", ["multi_bit", "neurram"])
def test_scaled_activity_kernel_matches_numpy_twin(dac_bits, scheme):
    """The exact backward's one pass: d * col_scale as NumPy multiplies it, and that product's activity as
    `crossbar.scheme.input_activity` counts it, bit for bit; with empty sums only the product is written."""
    from crossbar.mvm_kernels import scaled_activity_kernel
    from crossbar.pricing import _activity_levels
    from crossbar.scheme import MVM_SCHEMES, input_activity

    rng = np.random.default_rng(5)
    d = rng.standard_normal((11, 29)).astype(np.float32)
    d[4] = 0.0
    col_scale = rng.uniform(0.01, 3.0, 29).astype(np.float32)
    scaled = np.full_like(d, np.nan)
    drives, weights = np.zeros(29), np.zeros(29)
    levels = _activity_levels(dac_bits, MVM_SCHEMES[scheme])
    bit_serial = MVM_SCHEMES[scheme].bit_serial
    scaled_activity_kernel(d, col_scale, levels, bit_serial, scaled, scaled.view(np.int32), drives, weights)
    np.testing.assert_array_equal(scaled, d * col_scale[None, :])
    ref = input_activity(torch.from_numpy(d * col_scale[None, :]), dac_bits, MVM_SCHEMES[scheme])
    np.testing.assert_array_equal(drives, ref.drives)
    np.testing.assert_array_equal(weights, ref.energy_weight)
    assert drives.sum() > 0
    none = np.zeros(0)
    scaled[:] = 0.0
    scaled_activity_kernel(d, col_scale, levels, bit_serial, scaled, scaled.view(np.int32), none, none)
    np.testing.assert_array_equal(scaled, d * col_scale[None, :])


def test_integer_mix_seed_equals_the_numpy_splitmix_twin():
    """`mix_seed_int` (Python ints, the MVM path's per-call key) gives the bits of the NumPy `splitmix64_np`
    composition `mix_seed` is defined by, including seeds and streams at and beyond 2^63."""
    from crossbar.rng import mix_seed, mix_seed_int, splitmix64_np

    rng = np.random.default_rng(0)
    seeds = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, *(int(v) for v in rng.integers(0, 2**63, 50))]
    streams = [0, 1, 7, 2**32, 2**64 - 1, *(int(v) for v in rng.integers(0, 2**40, 50))]
    for seed, stream in zip(seeds, streams):
        with np.errstate(over="ignore"):
            twin = splitmix64_np(np.uint64(seed) ^ splitmix64_np(np.uint64(stream)))
        assert mix_seed_int(seed, stream) == int(twin)
        assert mix_seed(seed, stream) == twin
