"""LoRAFusion at its own scale: a FLAN-T5-large-shaped model on simulated crossbars, twenty rank-16 LoRAs on q and v
as the programmed bank, one fusion training step; peak memory, programming time, step time and the ledger.

Workload (LoRAFusion's setting: Guo et al., GLSVLSI 2025, FLAN-T5-large, 20 rank-16 LoRAs on q and v):
- model: `T5ForConditionalGeneration` from FLAN-T5-large's config (d_model 1024, d_kv 64 x 16 heads, d_ff 2816
  gated-GELU, 24 + 24 blocks, vocabulary 32128, untied LM head), random weights from `crossbar.hf.random_hf_model`
  (built without transformers' default init: one seeded pass of draws). Every linear layer is converted to analog,
  the LM head included (the embedding and the norms stay digital): 750 M weights on crossbars;
- device: the default preset `reram_wan2022` in the `statistical` programming mode; base and bank programmed once
  (`crossbar.hf.convert_and_program`, block by block, then `fusion.program_bank` with its calibration read-out);
- bank: 20 random rank-16 LoRAs (alpha 32) on the 144 q and v projections (encoder self-attention, decoder self-
  and cross-attention), built directly as a `LoRABank` (A like peft's init, B ~ N(0, 0.02); no training);
- fusion: `attach_fusion` on the model itself (no deep copy), lorahub form, one coefficient vector per block as
  LoRAFusion's code (20 x 48 coefficients + 144 x 1024 magnitudes = 148,416 trainable values), then exactly one
  step of the fusion training loop (`fusion.loop.train_loop`: forward, cross-entropy, L1 on c, backward, Adam on
  coefficients and magnitudes), train mode (dropout 0.1 as in the config), with the ledger attached;
- batch: 8 sequences of 128 random encoder tokens and 128 decoder tokens (labels 8 x 128 random tokens).

Reported: peak resident memory (`ru_maxrss`) and the resident memory after each phase, the bytes of the simulator
state (base arrays, bank arrays, calibration, digital bank copy), wall times (build, program base, program bank,
attach, step), the trainable-parameter count and the ledger's totals (energy and write pulses by phase, energy by
event). Targets: peak memory <= 16 GiB, programming (base + bank) <= 10 minutes, completes on 2 cores.

The process hands freed blocks of 1 MiB and up back to the system at once (`simutil.memory.release_large_frees`):
with glibc's rising threshold, one step left ~5 GiB of freed activations resident in the heap. That costs time
(every large block is mapped and zeroed anew): `--keep-allocator` leaves glibc's default, for the comparison.

Run: python benchmarks/lorafusion_scale.py [--small] [--profile]. `--small` is a quick check (4 + 4 blocks,
d_model 256). The last lines are JSON, one metric per line.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import resource
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from crossbar import analog_layers, device_preset
from crossbar.hf import HFLogits, convert_and_program, random_hf_model
from energy import Ledger
from fusion import FusionConfig, LoRABank, attach_fusion, program_bank, t5_attention_shapes
from fusion.loop import ParamGroup, train_loop
from fusion.params import count_trainable
from simutil.memory import release_large_frees

GIB = 2**30
TARGET_PEAK_GIB = 16.0
TARGET_PROGRAMMING_S = 600.0


def t5_config(*, small: bool = False, tiny: bool = False) -> object:
    """FLAN-T5-large's architecture (google/flan-t5-large config.json), or a small/tiny one of the same shape."""
    from transformers import T5Config

    if tiny:  # for the test of this code path
        sizes = {"d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
        sizes["vocab_size"] = 64
    elif small:
        sizes = {"d_model": 256, "d_kv": 32, "d_ff": 704, "num_layers": 4, "num_decoder_layers": 4, "num_heads": 8}
        sizes["vocab_size"] = 32128
    else:
        sizes = {"d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24, "num_decoder_layers": 24, "num_heads": 16}
        sizes["vocab_size"] = 32128
    return T5Config(
        **sizes, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1, decoder_start_token_id=0
    )


def random_bank(config: object, n_entries: int, rank: int, alpha: float, seed: int) -> LoRABank:
    """`n_entries` random rank-`rank` LoRAs on every q and v projection of a T5 model (no training): A uniform in
    +-1/sqrt(d_in) (peft's Kaiming-uniform init), B ~ N(0, 0.02)."""
    shapes = t5_attention_shapes(
        config.num_layers, config.num_decoder_layers, config.d_model, config.num_heads * config.d_kv, ("q", "v")
    )
    generator = torch.Generator().manual_seed(seed)
    bank = LoRABank(rank, alpha, ["q", "v"])
    for entry in range(n_entries):
        lora = {}
        for shape in shapes:
            bound = 1.0 / math.sqrt(shape.d_in)
            a = torch.empty(rank, shape.d_in).uniform_(-bound, bound, generator=generator)
            b = torch.empty(shape.d_out, rank).normal_(0.0, 0.02, generator=generator)
            lora[shape.name] = (a, b)
        bank.add(f"lora{entry:02d}", lora)
    return bank


def rss_bytes() -> int | None:
    """Current resident set size (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class ScaleResult:
    times_s: dict[str, float] = field(default_factory=dict)
    rss_after: dict[str, int | None] = field(default_factory=dict)
    bytes_held: dict[str, int] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    ledger: Ledger | None = None
    loss: float = math.nan
    peak_rss: int = 0
    profile: str = ""


def run(
    config: object,
    *,
    n_entries: int = 20,
    rank: int = 16,
    alpha: float = 32.0,
    batch: int = 8,
    source_length: int = 128,
    target_length: int = 128,
    seed: int = 0,
    checkpointing: bool = True,
    profile: bool = False,
    log=print,  # noqa: ANN001
) -> ScaleResult:
    """Build, convert and program the model, program the bank, attach fusion and run one fusion training step.

    `checkpointing` recomputes each T5 block's activations in the backward pass instead of keeping them (transformers'
    activation checkpointing, non-reentrant): the activations of one step at this size would otherwise take about
    as much memory as the programmed model. The recomputed forward runs on the arrays again (fresh read noise) and
    is recorded in the ledger, as a device recomputing would spend it."""
    from transformers import T5ForConditionalGeneration

    result = ScaleResult()
    device = device_preset("reram_wan2022", programming_mode="statistical")
    ledger = Ledger()
    result.ledger = ledger

    def phase_done(name: str, start: float) -> None:
        gc.collect()
        result.times_s[name] = time.perf_counter() - start
        result.rss_after[name] = rss_bytes()
        rss = result.rss_after[name]
        log(f"{name}: {result.times_s[name]:.1f} s, RSS {rss / GIB if rss else float('nan'):.2f} GiB")

    start = time.perf_counter()
    # FLAN-T5-large's LM head is its own matrix (tie_word_embeddings=False); transformers 5's T5Config forces the
    # tie flag on (the flag only switches the output scaling), so the head is built untied here.
    model = random_hf_model(T5ForConditionalGeneration, config, seed=seed, tie_weights=False)
    n_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    result.counts["linear_weights"] = n_linear
    phase_done("build", start)

    start = time.perf_counter()
    convert_and_program(model, device, seed=seed, ledger=ledger.scope(phase="deploy_base"))
    phase_done("program_base", start)
    layers = analog_layers(model)
    result.counts["analog_layers"] = len(layers)
    result.bytes_held["base_state"] = sum(layer.state.nbytes for _, layer in layers)

    start = time.perf_counter()
    bank = random_bank(config, n_entries, rank, alpha, seed + 1)
    phase_done("build_bank", start)
    result.bytes_held["bank_digital"] = sum(
        a.nbytes + b.nbytes for entry in bank.entries.values() for a, b in entry.values()
    )

    start = time.perf_counter()
    programmed = program_bank(model, bank, device, ledger.scope(phase="deploy_bank"), seed=seed)
    phase_done("program_bank", start)
    result.bytes_held["bank_state"] = sum(
        arrays.a.state.nbytes + arrays.b.state.nbytes for arrays in programmed.layers.values()
    )
    result.bytes_held["calibration"] = sum(4 * arrays.calibration.sram_words for arrays in programmed.layers.values())

    settings = FusionConfig()
    adapt_scope = ledger.scope(phase="adapt", task="scale", method="fusion")
    start = time.perf_counter()
    fused = attach_fusion(
        model, programmed, form=settings.form, sharing="block", seed=seed, scope=adapt_scope, use_magnitude=True
    )
    phase_done("attach_fusion", start)
    groups = [
        ParamGroup(
            "coefficients", list(fused.coefficients.values()), lr=settings.coefficient_lr,
            weight_decay=settings.weight_decay, l1=settings.l1, keep_best=True,
        ),
        ParamGroup("magnitude", fused.magnitudes(), lr=settings.magnitude_lr),
    ]  # fmt: skip
    result.counts["trainable_params"] = count_trainable(p for g in groups for p in g.params)
    result.counts["fused_layers"] = len(fused.layers)

    generator = torch.Generator().manual_seed(seed + 2)
    vocab = config.vocab_size
    source = torch.randint(0, vocab, (batch, source_length), generator=generator)
    decoder_in = torch.randint(0, vocab, (batch, target_length), generator=generator)
    labels = torch.randint(0, vocab, (batch, target_length), generator=generator)
    if checkpointing:
        _enable_checkpointing(model)
    wrapped = HFLogits(model, decoder_length=target_length, use_cache=False)
    x = torch.cat([source, decoder_in], dim=1)
    # transformers' dropout layers draw from torch's global generator (they take none): seed it for this run
    torch.manual_seed(seed)
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    loop = train_loop(
        wrapped, x, labels, groups, epochs=1, batch_size=batch, seed=seed, scope=adapt_scope, progress=False
    )
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        result.profile = text.getvalue()
    phase_done("fusion_step", start)
    result.counts["steps"] = loop.steps
    result.counts["checkpointing"] = float(checkpointing)
    result.loss = loop.step_losses[0]
    result.peak_rss = peak_rss_bytes()
    return result


def _enable_checkpointing(model: torch.nn.Module) -> None:
    """transformers' per-block activation checkpointing, non-reentrant (no input gradients needed); the name of the
    switch changed in transformers 5."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # enabling it also makes the embeddings' output require grad (for PEFT's reentrant case): not needed here, and it
    # would add backward MVMs in front of the first fused layer
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()


def start_memory_guard(limit_gib: float, interval_s: float = 0.2) -> None:
    """Abort the process (exit 3, one line on stderr) if its resident memory passes `limit_gib`, so that a run that
    does not fit cannot push the machine into the out-of-memory killer (which may pick another process)."""
    if rss_bytes() is None:
        return

    def watch() -> None:
        while True:
            rss = rss_bytes() or 0
            if rss > limit_gib * GIB:
                sys.stderr.write(
                    f"lorafusion_scale: resident memory {rss / GIB:.2f} GiB passed --max-rss-gib {limit_gib}\n"
                )
                sys.stderr.flush()
                os._exit(3)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="memory-guard", daemon=True).start()


def metrics(result: ScaleResult, *, full_size: bool) -> list[dict[str, object]]:
    """The JSON lines: memory, times, counts and the ledger's totals."""
    ledger = result.ledger
    assert ledger is not None
    lines: list[dict[str, object]] = []

    def add(metric: str, value: float | None, unit: str, target: float | None = None, **extra: object) -> None:
        if value is None:
            return
        line: dict[str, object] = {"metric": metric, "value": round(float(value), 4), "unit": unit}
        if target is not None and full_size:
            line["target"] = target
        line.update(extra)
        lines.append(line)

    add("peak_rss_gib", result.peak_rss / GIB, "GiB", TARGET_PEAK_GIB)
    for phase, rss in result.rss_after.items():
        add(f"rss_after_{phase}_gib", None if rss is None else rss / GIB, "GiB")
    for name, size in result.bytes_held.items():
        add(f"{name}_gib", size / GIB, "GiB")
    programming = result.times_s["program_base"] + result.times_s["program_bank"]
    add("programming_s", programming, "s", TARGET_PROGRAMMING_S)
    for phase, seconds in result.times_s.items():
        add(f"{phase}_s", seconds, "s")
    add("linear_weights", result.counts["linear_weights"], "weights")
    add("base_state_bytes_per_weight", result.bytes_held["base_state"] / result.counts["linear_weights"], "bytes", 12)
    add("trainable_params", result.counts["trainable_params"], "values")
    add("fusion_step_loss", result.loss, "nats")
    for phase in ("deploy_base", "deploy_bank", "calibration", "adapt"):
        add(f"energy_{phase}_uj", ledger.total("energy_pj", phase=phase) * 1e-6, "uJ")
        add(f"write_pulses_{phase}", ledger.cell_write_pulses(phase=phase), "pulses")
        add(f"latency_{phase}_s", ledger.total("latency_ns", phase=phase) * 1e-9, "s")
    for (event,), energy in sorted(ledger.group_by("event", phase="adapt").items()):
        add(f"adapt_energy_{event}_uj", energy * 1e-6, "uJ")
    add("torch_threads", torch.get_num_threads(), "threads")
    add("activation_checkpointing", float(result.counts.get("checkpointing", 0)), "bool")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="4 + 4 blocks, d_model 256: a quick check")
    parser.add_argument("--profile", action="store_true", help="cProfile the fusion step (top 25 by cumulative)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-checkpointing", action="store_true", help="keep every activation for the backward pass (more memory)"
    )
    parser.add_argument(
        "--max-rss-gib", type=float, default=20.0, help="abort once resident memory passes this (default 20)"
    )
    parser.add_argument("--keep-allocator", action="store_true", help="leave glibc's mmap threshold as it is")
    args = parser.parse_args(argv)
    if not args.keep_allocator:
        release_large_frees()
    start_memory_guard(args.max_rss_gib)
    config = t5_config(small=args.small)
    print(
        f"T5 {'small check' if args.small else 'FLAN-T5-large shape'}: d_model {config.d_model}, "
        f"{config.num_layers}+{config.num_decoder_layers} blocks, d_ff {config.d_ff}; torch threads "
        f"{torch.get_num_threads()}, CPUs {os.cpu_count()}"
    )
    result = run(config, seed=args.seed, profile=args.profile, checkpointing=not args.no_checkpointing)
    if result.profile:
        print(result.profile)
    ledger = result.ledger
    print(f"peak RSS {result.peak_rss / GIB:.2f} GiB; trainable {int(result.counts['trainable_params']):,} values")
    for (phase,), energy in sorted(ledger.group_by("phase").items()):
        print(f"  {phase:12s} {energy * 1e-6:14.1f} uJ, {ledger.cell_write_pulses(phase=phase):16,.0f} write pulses")
    for line in metrics(result, full_size=not args.small):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
