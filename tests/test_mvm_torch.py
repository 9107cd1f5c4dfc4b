"""The pure-torch MVM path (`crossbar.engine_torch`), forced on the CPU: same draws and same results as the numba
path and its NumPy twin, forward, transposed and per-cycle; and an AnalogLinear using it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mvm_states import random_mvm_case
from naive_mvm import naive_mvm

from crossbar import AnalogLinear, device_preset
from crossbar.engine_numba import analog_mvm, analog_mvm_transposed
from crossbar.engine_torch import analog_mvm_torch, read_noise_normals_torch
from crossbar.mvm import MvmSettings, read_noise_normals

CONFIGS = [
    dict(dac_bits=None, adc_bits=None, read_noise_frac=0.0),
    dict(dac_bits=8, adc_bits=8, read_noise_frac=0.0),
    dict(dac_bits=6, adc_bits=None, read_noise_frac=0.02),
    dict(dac_bits=8, adc_bits=8, read_noise_frac=0.01, out_noise_frac=0.01),
    dict(dac_bits=4, adc_bits=5, read_noise_frac=0.05, adc_full_scale=3.0),
    dict(dac_bits=4, adc_bits=6, read_noise_frac=0.02, mvm_scheme="isaac"),
]


def test_noise_draws_equal_the_numpy_draws():
    for key in (0, 12345, 2**64 - 1, 2**63 + 17):
        np.testing.assert_array_equal(
            read_noise_normals_torch(key, 2, 3, 9, torch.device("cpu")).numpy(), read_noise_normals(key, 2, 3, 9)
        )


@pytest.mark.parametrize("config", CONFIGS)
def test_torch_path_matches_numba_path_and_numpy(config):
    rng = np.random.default_rng(3)
    device = device_preset("reram_wan2022", tile_rows=32, **config)
    state, g, out_scale, x = random_mvm_case(rng, device.tile_rows)
    bias = torch.randn(21)
    settings = MvmSettings.from_device(device)
    fast = analog_mvm(x, state, out_scale, settings, key=99, bias=bias)
    torch_y = analog_mvm_torch(x, torch.from_numpy(state.g_diff_us), 70, out_scale, settings, key=99, bias=bias)
    scale = float(fast.abs().max())
    assert scale > 0
    # BLAS may sum a tile's products in another order (1-ulp partial sums); ADC codes and draws are the same.
    np.testing.assert_allclose(torch_y.numpy(), fast.numpy(), rtol=0, atol=1e-6 * scale)
    if settings.cycles == 1 and settings.out_noise_us == 0:
        np_ref = naive_mvm(
            x.numpy(), g, out_scale.numpy(), tile=state.tile_rows, dac_bits=device.dac_bits, adc_bits=device.adc_bits,
            adc_full_scale=device.adc_full_scale, sigma_us=settings.sigma_us, g_range_us=device.g_range_us, key=99,
            bias=bias.numpy(),
        )  # fmt: skip
        np.testing.assert_allclose(torch_y.numpy(), np_ref, rtol=0, atol=1e-6 * scale)
    # Transposed direction.
    d = torch.from_numpy(rng.standard_normal((5, 21)).astype(np.float32))
    fast_t = analog_mvm_transposed(d, state, out_scale, settings, key=7, tile_cols=8)
    torch_t = analog_mvm_torch(d, torch.from_numpy(state.g_diff_us), 70, out_scale, settings, key=7,
                               transposed=True, tile_cols=8)  # fmt: skip
    np.testing.assert_allclose(torch_t.numpy(), fast_t.numpy(), rtol=0, atol=1e-6 * float(fast_t.abs().max()))


def test_layer_forced_onto_the_torch_path_matches_and_meta_still_moves():
    torch.manual_seed(0)
    linear = torch.nn.Linear(40, 12)
    device = device_preset("reram_wan2022", programming_mode="statistical", tile_rows=16)
    numba_layer = AnalogLinear.from_linear(linear, device, seed=3)
    numba_layer.program()
    torch_layer = AnalogLinear.from_linear(linear, device, seed=3)
    torch_layer.program()
    torch_layer.mvm_backend = "torch"
    x = torch.randn(4, 7, 40)
    with torch.no_grad():
        a, b = numba_layer(x), torch_layer(x)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6 * float(a.abs().max()))
    # Training-mode forward with a gradient to the input, and the analog backward, on the torch path.
    torch_layer.backward_mode = numba_layer.backward_mode = "analog"
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    for layer, xi in zip((numba_layer, torch_layer), xs):
        layer(xi).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=0, atol=1e-6 * float(xs[0].grad.abs().max()))
    meta = torch_layer.to("meta")
    assert meta.g_diff_us.device.type == "meta"
    with pytest.raises(RuntimeError, match="meta"):
        meta(torch.randn(2, 40, device="meta"))
