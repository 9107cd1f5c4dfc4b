"""Training-step speed of the default study: one `fusion` step and one LoRA step (`lora_digital`, the training of
`lora_program_once` too) on the programmed analog arrays, against the same step with every analog array replaced
by an `nn.Linear` holding its programmed weights (`AnalogLinear.programmed_weight()`), both timed here.

The model is the default study's (scenarios/multitask.yaml: patch transformer, 4 blocks of 64 x 64 q/k/v/o and
64 x 128 MLP layers, a bank of 8 rank-4 LoRAs on q and v), built, programmed and calibrated as the runner's
`programmed_task` does, on one thread (`scenarios.phases.RUN_THREADS`, as in a run). For speed the base is not
trained and the bank's LoRAs are random draws of LoRA-like size: the time of a step does not depend on the values.
Each method's parameter groups are those the method builds (`fusion.methods`), and the step is `fusion.loop`'s
`train_loop` itself (batch 5 of a target task's few-shot examples, ledger scope on, MVM records deferred as in
the study): a step is the time between two consecutive `after_step` calls. Analog and digital loops alternate in
rounds, so drifts of the machine's speed hit both; the first round is warm-up. Forward-only: the model's forward
on a batch of 5 under no_grad in eval mode with the ledger on, as evaluation runs it, interleaved call by call.
Medians of wall time and of this process's CPU time are both reported (the CPU ratio is the steadier one on a
shared, loaded machine).

Run: python benchmarks/train_step.py [--rounds N] [--steps N] [--forwards N] [--profile FILE] (about 1-2 min on a
quiet machine). `--profile` writes a cProfile of the analog steps of both methods (pstats files FILE.fusion,
FILE.lora) instead of timing. The last lines are JSON, one metric per line.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import time
from collections.abc import Callable

import torch
from _common import emit, median_ms
from torch import nn

from crossbar import analog_layers, derive_seed, record_all_to
from energy import LedgerScope
from fusion import LoRABank
from fusion.deploy import BankArrays, ProgrammedBank, attach_fusion
from fusion.loop import ParamGroup, train_loop
from fusion.lora import attach_lora, set_module
from scenarios.deployment import deploy
from scenarios.loading import load_scenario
from scenarios.models import build_model
from scenarios.phases import RUN_THREADS, calibration_set, target_task, threads
from scenarios.units import method_entry

TARGET_RATIO = 1.5
"""Issue 25 item 5: a training step at most 1.5 x the digital one, for both methods."""
BATCH = 5
"""The study's adaptation batch (scenarios/multitask.yaml `methods: batch_size`)."""


def build_programmed(scenario) -> tuple[nn.Module, ProgrammedBank]:
    """Base and bank of the scenario's shapes, programmed and calibrated as `scenarios.phases.programmed_task` does."""
    spec = scenario.model
    base = build_model(spec, 10, (1, 8, 8), seed=derive_seed(scenario.seed, "base_init")).eval()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    bank_spec = scenario.bank
    generator = torch.Generator().manual_seed(1)
    bank = LoRABank(bank_spec.rank, bank_spec.alpha, list(bank_spec.modules))
    targets = [
        n for n, m in base.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in bank_spec.modules
    ]
    for source in scenario.tasks.sources:
        entry = {}
        for name in targets:
            layer = base.get_submodule(name)
            a = torch.randn(bank_spec.rank, layer.in_features, generator=generator) / layer.in_features**0.5
            b = torch.randn(layer.out_features, bank_spec.rank, generator=generator) * 0.02
            entry[name] = (a, b)
        bank.add(source, entry)
    deployed = deploy(scenario, base, bank, scenario.new_ledger(), calibration_set)
    return deployed.analog, deployed.bank


def _digital(layer: nn.Module) -> nn.Linear:
    """An `nn.Linear` holding an analog layer's programmed weights and its bias, frozen."""
    bias = getattr(layer, "bias", None)
    linear = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(layer.programmed_weight())
        if bias is not None:
            linear.bias.copy_(bias)
    linear.requires_grad_(False)
    return linear


def digital_twin(model: nn.Module, bank: ProgrammedBank) -> tuple[nn.Module, ProgrammedBank]:
    """Copies of `model` and `bank` with every analog array replaced by `_digital` of it (same calibration)."""
    twin = copy.deepcopy(model)
    for name, layer in analog_layers(twin):
        set_module(twin, name, _digital(layer))
    layers = {n: BankArrays(_digital(a.a), _digital(a.b), a.calibration) for n, a in bank.layers.items()}
    return twin, ProgrammedBank(bank.bank, layers)


def fusion_setup(scenario, model: nn.Module, bank: ProgrammedBank, scope: LedgerScope) -> tuple[nn.Module, list]:
    """The fused model and parameter groups `fusion.methods.fused_methods.adapt_fusion` trains."""
    s = method_entry(scenario, "fusion").config()
    model = copy.deepcopy(model)
    fused = attach_fusion(model, bank, form=s.form, sharing=s.share, coefficient_init="xavier", use_magnitude=True,
                          seed=1, scope=scope)  # fmt: skip
    groups = [ParamGroup("coefficients", list(fused.coefficients.values()), lr=s.coefficient_lr,
                         weight_decay=s.weight_decay, l1=s.l1, keep_best=True),
              ParamGroup("magnitude", fused.magnitudes(), lr=s.magnitude_lr)]  # fmt: skip
    return model, groups


def lora_setup(scenario, model: nn.Module, bank: ProgrammedBank, scope: LedgerScope) -> tuple[nn.Module, list]:
    """The LoRA model and parameter group `fusion.methods.lora_methods` trains (`lora_digital`)."""
    s = method_entry(scenario, "lora_digital").config()
    model = copy.deepcopy(model)
    layers = attach_lora(model, list(scenario.bank.modules), bank.rank, bank.alpha, seed=1)
    params = [p for layer in layers.values() for p in (layer.lora_A, layer.lora_B)]
    return model, [ParamGroup("lora_digital", params, lr=s.lr, weight_decay=s.weight_decay, keep_best=True)]


def bench_models(scenario) -> tuple:
    """(analog model, its bank, their digital twins, the first target task's few-shot x and y, a ledger scope):
    what the step benchmarks time, built on the calling thread's settings."""
    analog, bank = build_programmed(scenario)
    digital, digital_bank = digital_twin(analog, bank)
    task = target_task(scenario, scenario.tasks.targets[0])
    x, y, _ = scenario.adaptation_data(task)
    scope = scenario.new_ledger().scope(phase="adapt", task=task.name, method="bench")
    return analog, bank, digital, digital_bank, x.to(torch.float32), y.to(torch.int64), scope


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""Each step is timed on both: wall time is what a run waits, this process's CPU time is what a loaded shared machine
distorts least (the steps run on one thread)."""


def _stamp() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def step_times(model: nn.Module, groups: list, x: torch.Tensor, y: torch.Tensor, scope: LedgerScope, steps: int,
               seed: int) -> list[tuple[float, float]]:  # fmt: skip
    """(wall, cpu) seconds of `steps` - 1 steps of one `train_loop` epoch of `steps` batches of BATCH."""
    stamps: list[tuple[float, float]] = []
    index = torch.arange(steps * BATCH) % len(x)
    train_loop(model, x[index], y[index], groups, epochs=1, batch_size=BATCH, seed=seed, scope=scope,
               after_step=lambda _: stamps.append(_stamp()), progress=False)  # fmt: skip
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def time_steps(setups: dict[str, tuple[nn.Module, list]], x, y, scope, rounds: int, steps: int
               ) -> dict[str, list[tuple[float, float]]]:  # fmt: skip
    """Alternating loops of analog and digital steps; the first round is warm-up."""
    times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in setups}
    for round_ in range(rounds + 1):
        for kind, (model, groups) in setups.items():
            samples = step_times(model, groups, x, y, scope, steps, seed=round_)
            if round_:
                times[kind].extend(samples)
    return times


def time_forwards(setups: dict[str, tuple[nn.Module, list]], x: torch.Tensor, scope: LedgerScope, repeats: int
                  ) -> dict[str, list[tuple[float, float]]]:  # fmt: skip
    """(wall, cpu) of the models' forwards, interleaved call by call after a warm-up, as evaluation runs them."""
    models = {kind: model.eval() for kind, (model, _) in setups.items()}
    times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in models}
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        for model in models.values():
            stack.enter_context(record_all_to(model, scope))
        for repeat in range(repeats + 20):
            for kind, model in models.items():
                before = _stamp()
                model(x)
                after = _stamp()
                if repeat >= 20:
                    times[kind].append((after[0] - before[0], after[1] - before[1]))
    return times


def summary(times: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Median ms per kind and clock (`analog_wall`, `digital_cpu`, ...) and the sample count."""
    out = {f"{kind}_{clock}": median_ms([t[i] for t in samples])
           for kind, samples in times.items() for i, clock in enumerate(CLOCKS)}  # fmt: skip
    out["n"] = len(times["analog"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="Timed rounds (one analog and one digital loop each).")
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps per loop.")
    parser.add_argument("--forwards", type=int, default=200, help="Timed forwards per model.")
    parser.add_argument("--profile", default=None, help="Write a cProfile of the analog steps to this file instead.")
    args = parser.parse_args()
    start = time.perf_counter()
    scenario = load_scenario("multitask")
    with threads(RUN_THREADS):
        analog, bank, digital, digital_bank, x, y, scope = bench_models(scenario)
        makers: dict[str, Callable] = {"fusion": fusion_setup, "lora": lora_setup}
        setup_s = time.perf_counter() - start
        if args.profile:
            _profile(makers, scenario, analog, bank, x, y, scope, args)
            return
        rows: dict[tuple[str, str], dict[str, float]] = {}
        for method, make in makers.items():
            setups = {"analog": make(scenario, analog, bank, scope),
                      "digital": make(scenario, digital, digital_bank, scope)}  # fmt: skip
            rows[(method, "step")] = summary(time_steps(setups, x, y, scope, args.rounds, args.steps))
            rows[(method, "forward")] = summary(time_forwards(setups, x[:BATCH], scope, args.forwards))
    _report(rows, setup_s)


def _report(rows: dict[tuple[str, str], dict[str, float]], setup_s: float) -> None:
    print(f"default study model (multitask), batch {BATCH}, ledger on, 1 thread; set-up {setup_s:.1f} s")
    print(f"{'median per call':<24}{'analog ms':>10}{'digital ms':>11}{'ratio':>7}{'cpu ratio':>10}{'n':>6}")
    for (method, kind), r in rows.items():
        label = f"{method} {'train step' if kind == 'step' else 'forward (no_grad)'}"
        wall, cpu = (r[f"analog_{c}"] / r[f"digital_{c}"] for c in CLOCKS)
        print(f"{label:<24}{r['analog_wall']:>10.2f}{r['digital_wall']:>11.2f}{wall:>7.2f}{cpu:>10.2f}{int(r['n']):>6}")
    for (method, kind), r in rows.items():
        target = TARGET_RATIO if kind == "step" else None
        for clock in CLOCKS:
            suffix = "" if clock == "wall" else "_cpu"
            emit(f"{method}_{kind}_analog_ms{suffix}", r[f"analog_{clock}"], "ms")
            emit(f"{method}_{kind}_digital_ms{suffix}", r[f"digital_{clock}"], "ms")
            ratio = r[f"analog_{clock}"] / r[f"digital_{clock}"]
            emit(f"{method}_{kind}_analog_vs_digital{suffix}", ratio, "ratio", target=target, digits=3)


def _profile(makers, scenario, analog, bank, x, y, scope, args) -> None:
    """cProfile of `args.rounds` analog loops of each method (after one warm-up loop), saved to `args.profile`."""
    prepared = {method: make(scenario, analog, bank, scope) for method, make in makers.items()}
    for model, groups in prepared.values():
        step_times(model, groups, x, y, scope, 5, seed=0)
    for method, (model, groups) in prepared.items():
        profiler = cProfile.Profile()
        profiler.enable()
        for round_ in range(args.rounds):
            step_times(model, groups, x, y, scope, args.steps, seed=round_ + 1)
        profiler.disable()
        profiler.dump_stats(f"{args.profile}.{method}")
    print(f"profiles written: {args.profile}.fusion, {args.profile}.lora")


if __name__ == "__main__":
    main()
