"""Analog forward speed: AnalogLinear (default preset) vs torch.nn.Linear, 768 x 768, batch 256, both timed here.

The default preset `reram_wan2022` has an 8-bit DAC and ADC, read noise of 1 % of g_max (drawn fresh for every
input vector and output of every forward, statistically exact for independent per-cell Gaussian noise), and
256 x 256 tiles (3 input tiles). The layer is programmed in statistical mode first (not timed), runs in eval mode
under torch.no_grad, with torch.set_num_threads(2). Timings are interleaved (one nn.Linear call, one AnalogLinear
call, repeated) after a warm-up, and the median of each is reported, so drifts of the machine's speed hit both.

Also reported, for the profile: the median time of each stage of the analog path measured on its own (DAC into
tile layout, tile matmuls, fused noise/ADC/tile-sum/scale kernel).

Run: python benchmarks/forward.py [--repeats N]. The last lines are JSON, one metric per line.
"""

from __future__ import annotations

import argparse

import torch
from _common import emit, median_ms, paired_times, time_ms
from torch import nn

from crossbar import AnalogLinear, device_preset
from crossbar.engine_numba import _accumulate, _dac_tiles, _partial_sums
from crossbar.mvm import MvmSettings, forward_operands, stacked_forward_operand

TARGET_RATIO = 1.25
D_IN = D_OUT = 768
BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    linear = nn.Linear(D_IN, D_OUT).eval()
    device = device_preset("reram_wan2022", programming_mode="statistical")
    layer = AnalogLinear.from_linear(linear, device, seed=0).eval()
    layer.program()  # not timed
    x = torch.randn(BATCH, D_IN)

    with torch.no_grad():
        t_linear, t_analog = paired_times(lambda: linear(x), lambda: layer(x), warmup=args.warmup, repeats=args.repeats)

        # Per-stage profile of the same forward, each stage timed on its own.
        state = layer.state
        settings = MvmSettings.from_device(device, layer.adc_full_scale)
        operands, stacked = forward_operands(state), stacked_forward_operand(state)
        xq, sum_sq, scale = _dac_tiles(x, settings.dac_levels, state.tile_rows, "x")
        partial = _partial_sums(xq, operands, stacked)
        col_scale = layer.out_scale.numpy()
        bias = layer.bias.detach().numpy()
        stages = {
            "dac_tiles": lambda: _dac_tiles(x, settings.dac_levels, state.tile_rows, "x"),
            "tile_matmuls": lambda: _partial_sums(xq, operands, stacked),
            "noise_adc_sum_scale": lambda: _accumulate(partial, sum_sq, scale, col_scale, bias, settings, 12345),
            "torch_linear": lambda: linear(x),
        }
        for fn in stages.values():
            for _ in range(args.warmup):
                fn()
        stage_ms = {name: time_ms(fn, args.repeats // 2) for name, fn in stages.items()}

    linear_ms = median_ms(t_linear)
    analog_ms = median_ms(t_analog)
    ratio = analog_ms / linear_ms
    print(f"torch.nn.Linear {D_IN}x{D_OUT}, batch {BATCH}: {linear_ms:.3f} ms (median of {args.repeats})")
    print(f"AnalogLinear reram_wan2022 (8-bit DAC/ADC, read noise, 256x256 tiles): {analog_ms:.3f} ms")
    print("stages on their own: " + ", ".join(f"{k} {v:.3f} ms" for k, v in stage_ms.items()))
    for name, value in stage_ms.items():
        emit(f"stage_{name}_ms", value, "ms")
    emit("torch_linear_ms", linear_ms, "ms")
    emit("analog_forward_ms", analog_ms, "ms")
    emit("analog_forward_vs_torch_linear", ratio, "ratio", target=TARGET_RATIO, digits=3)


if __name__ == "__main__":
    main()
