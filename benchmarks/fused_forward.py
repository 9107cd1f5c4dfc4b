"""Fused layer forward vs plain analog forward: 20 LoRAs of rank 16 on a 1024 x 1024 layer, both timed here.

The base W0 (1024 x 1024) and the bank's A_stack (320 x 1024) and B_stack (1024 x 320) are programmed on the default
preset `reram_wan2022` (8-bit DAC/ADC, read noise, 256 x 256 tiles) in statistical mode (not timed). The fused layer
(lorahub form, DoRA magnitude, coefficients Xavier-initialised) and the plain `AnalogLinear` of the same base run on
a batch of 256 under torch.no_grad with torch.set_num_threads(2), interleaved after a warm-up (one plain call, one
fused call, repeated). The reported ratio is the median over the repeats of fused time / plain time of each
back-to-back pair, which cancels slow changes of the machine's speed (other processes on a shared machine); the
median times are printed too, and the ratio of the fastest calls (least disturbed by other processes).

The fused forward is three analog MVMs (W0, A_stack, B_stack) plus the digital combine and scaling, so its
floating-point work is

    flop_ratio = (2 d_in d_out + 2 N r d_in + 2 d_out N r + 3 N r + 4 d_out) / (2 d_in d_out + d_out)

(MACs as 2 flops; the lorahub combine is 2 N r multiplies and N r adds per vector; s * v, the add to W0 x, the
magnitude scale and the bias are 4 d_out; the plain layer adds its bias). Target: time ratio <= 1.2 x flop_ratio.
Also printed for the profile: each stage of the fused forward timed on its own.

Run: python benchmarks/fused_forward.py [--repeats N]. The last lines are JSON, one metric per line.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import emit, median_ms, paired_times, time_ms
from torch import nn

from crossbar import AnalogLinear, device_preset
from fusion import LoRABank, attach_fusion, program_bank

D_IN = D_OUT = 1024
N_ENTRIES = 20
RANK = 16
ALPHA = 32.0
BATCH = 256
TARGET_FACTOR = 1.2


def flop_ratio(d_in: int, d_out: int, n_entries: int, rank: int) -> float:
    width = n_entries * rank
    fused = 2 * d_in * d_out + 2 * width * d_in + 2 * d_out * width + 3 * width + 4 * d_out
    return fused / (2 * d_in * d_out + d_out)


class _OneLayer(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.q = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)

    device = device_preset("reram_wan2022", programming_mode="statistical")
    linear = nn.Linear(D_IN, D_OUT)
    with torch.no_grad():
        linear.weight.normal_(0.0, D_IN**-0.5, generator=generator)
        linear.bias.normal_(0.0, 0.02, generator=generator)
    base = AnalogLinear.from_linear(linear, device, seed=0, name="q")
    base.program()  # not timed
    bank = LoRABank(RANK, ALPHA, ["q"])
    for i in range(N_ENTRIES):
        a = torch.randn(RANK, D_IN, generator=generator) * D_IN**-0.5
        b = torch.randn(D_OUT, RANK, generator=generator) * 0.02
        bank.add(f"task{i}", {"q": (a, b)})
    model = _OneLayer(base).eval()
    programmed = program_bank(model, bank, device, seed=0)  # not timed
    fused_layers = attach_fusion(model, programmed, form="lorahub", seed=0)
    fused = fused_layers.layers["q"].eval()
    x = torch.randn(BATCH, D_IN, generator=generator)

    with torch.no_grad():
        t_base, t_fused = paired_times(lambda: base(x), lambda: fused(x), warmup=args.warmup, repeats=args.repeats)

        c = fused.coefficients
        u = fused.bank_a.mvm(x).unflatten(-1, (N_ENTRIES, RANK))
        u_mix = (c[:, None] * torch.einsum("...nr,n->...r", u, c).unsqueeze(-2)).flatten(-2)
        stages = {
            "base_mvm": lambda: fused.base.mvm(x),
            "bank_a_mvm": lambda: fused.bank_a.mvm(x),
            "combine": lambda: (c[:, None] * torch.einsum("...nr,n->...r", u, c).unsqueeze(-2)).flatten(-2),
            "bank_b_mvm": lambda: fused.bank_b.mvm(u_mix),
        }
        for fn in stages.values():
            for _ in range(args.warmup):
                fn()
        stage_ms = {name: time_ms(fn, args.repeats // 2) for name, fn in stages.items()}

    base_ms, fused_ms = median_ms(t_base), median_ms(t_fused)
    ratio = float(np.median(np.asarray(t_fused) / np.asarray(t_base)))
    flops = flop_ratio(D_IN, D_OUT, N_ENTRIES, RANK)
    print(f"AnalogLinear {D_OUT}x{D_IN} reram_wan2022, batch {BATCH}: {base_ms:.3f} ms (median of {args.repeats})")
    print(f"FusedLinear, {N_ENTRIES} LoRAs of rank {RANK} (lorahub form, DoRA magnitude): {fused_ms:.3f} ms")
    print("stages on their own: " + ", ".join(f"{k} {v:.3f} ms" for k, v in stage_ms.items()))
    for name, value in stage_ms.items():
        emit(f"fused_stage_{name}_ms", value, "ms")
    emit("analog_forward_1024_ms", base_ms, "ms")
    emit("fused_forward_1024_ms", fused_ms, "ms")
    emit("fused_forward_vs_analog_forward_min_times", min(t_fused) / min(t_base), "ratio", digits=3)
    emit("fused_forward_flop_ratio", flops, "ratio")
    emit("fused_forward_vs_analog_forward", ratio, "ratio", target=round(TARGET_FACTOR * flops, 3), digits=3)


if __name__ == "__main__":
    main()
