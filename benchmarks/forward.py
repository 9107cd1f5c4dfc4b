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
import json
import time

import numpy as np
import torch
from torch import nn

from crossbar import AnalogLinear, device_preset
from crossbar.mvm import MvmSettings, _accumulate, _dac_tiles, _forward_operands, _partial_sums

TARGET_RATIO = 1.25
D_IN = D_OUT = 768
BATCH = 256


def _median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def _time(fn, repeats: int) -> float:  # noqa: ANN001
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return _median_ms(samples)


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
        for _ in range(args.warmup):
            linear(x)
            layer(x)
        t_linear, t_analog = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            linear(x)
            mid = time.perf_counter()
            layer(x)
            end = time.perf_counter()
            t_linear.append(mid - start)
            t_analog.append(end - mid)

        # Per-stage profile of the same forward, each stage timed on its own.
        state = layer.state
        settings = MvmSettings.from_device(device, layer.adc_full_scale)
        operands = _forward_operands(state)
        xq, sum_sq, scale = _dac_tiles(x, settings.dac_levels, state.tile_rows, "x")
        partial = _partial_sums(xq, operands)
        col_scale = layer.out_scale.numpy()
        bias = layer.bias.detach().numpy()
        stages = {
            "dac_tiles": lambda: _dac_tiles(x, settings.dac_levels, state.tile_rows, "x"),
            "tile_matmuls": lambda: _partial_sums(xq, operands),
            "noise_adc_sum_scale": lambda: _accumulate(partial, sum_sq, scale, col_scale, bias, settings, 12345),
            "torch_linear": lambda: linear(x),
        }
        for fn in stages.values():
            for _ in range(args.warmup):
                fn()
        stage_ms = {name: _time(fn, args.repeats // 2) for name, fn in stages.items()}

    linear_ms = _median_ms(t_linear)
    analog_ms = _median_ms(t_analog)
    ratio = analog_ms / linear_ms
    print(f"torch.nn.Linear {D_IN}x{D_OUT}, batch {BATCH}: {linear_ms:.3f} ms (median of {args.repeats})")
    print(f"AnalogLinear reram_wan2022 (8-bit DAC/ADC, read noise, 256x256 tiles): {analog_ms:.3f} ms")
    print("stages on their own: " + ", ".join(f"{k} {v:.3f} ms" for k, v in stage_ms.items()))
    for name, value in stage_ms.items():
        print(json.dumps({"metric": f"stage_{name}_ms", "value": round(value, 4), "unit": "ms"}))
    print(json.dumps({"metric": "torch_linear_ms", "value": round(linear_ms, 4), "unit": "ms"}))
    print(json.dumps({"metric": "analog_forward_ms", "value": round(analog_ms, 4), "unit": "ms"}))
    print(
        json.dumps(
            {
                "metric": "analog_forward_vs_torch_linear",
                "value": round(ratio, 3),
                "target": TARGET_RATIO,
                "unit": "ratio",
            }
        )
    )


if __name__ == "__main__":
    main()
