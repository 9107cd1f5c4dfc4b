"""Where the default study's time goes: `crossbar-sim run multitask` modelled from measured parts, once with the
analog arrays as they are and once as if every analog MVM cost what an `nn.Linear` of its programmed weights costs
(a free crossbar core), set against issue 25's target (3 seeds, 2 workers, <= 4 min).

Measured here, on one thread as in a run: the shared phases of one seed as the runner runs them (the base model's
training and one bank LoRA's: digital in the default study, the crossbar core plays no part), one training step of
each method family on the programmed arrays and on their digital twins (`benchmarks/train_step.py`'s models and
loops: the `fusion` step, also taken for `fusion_core`; the LoRA step for the three LoRA methods), and one
test-set evaluation (`scenarios.models.accuracy` on a target task's test set) on both.

Modelled from the scenario: per seed, base + sources x bank part + for each gradient method, targets x epochs x
ceil(few-shot examples / batch) steps + every unit's evaluations (drift times x repeats), then the seeds' work
shared evenly by the workers. Left out: cluster start-up, figures, lorahub's search, in-situ cell writes, drift,
model copies, per-unit set-up and every idle worker, so both figures are lower bounds of a run's wall; set against
`benchmarks/study.py`'s measured wall, the difference is what lies outside these parts. The analog minus the digital
figure is the most a faster crossbar core could save.

Run: python benchmarks/study_budget.py [--workers 2] [--steps 40] (about 1 min). The last lines are JSON.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _common import emit, time_ms
from train_step import bench_models, fusion_setup, lora_setup, summary, time_steps

from scenarios.loading import load_scenario
from scenarios.models import accuracy
from scenarios.phases import RUN_THREADS, Shipped, bank_part_task, base_task, target_task, threads

TARGET_WALL_S = 240.0
"""Issue 25 item 5: the default study (3 seeds, 2 workers) in at most 4 minutes."""
FAMILY = {"fusion": "fusion", "fusion_core": "fusion", "lora_program_once": "lora", "lora_in_situ": "lora",
          "lora_digital": "lora"}  # fmt: skip
"""Which measured step stands for each gradient method's step (`fusion_core`'s digital core is timed as fusion's
per-layer coefficients: the same bank MVMs, a few more digital multiplies)."""


def shared_phase_seconds(scenario) -> tuple[float, float]:
    """(base model, one bank part) wall seconds, each run once as the runner runs it."""
    shipped = Shipped.of(scenario)
    start = time.perf_counter()
    base = base_task(shipped)
    base_s = time.perf_counter() - start
    start = time.perf_counter()
    bank_part_task(base, shipped, scenario.tasks.sources[0])
    return base_s, time.perf_counter() - start


def evaluation_seconds(models: dict[str, torch.nn.Module], scenario, repeats: int = 3) -> dict[str, float]:
    """Median seconds of one test-set evaluation per model (after one warm-up), as a unit runs each."""
    task = target_task(scenario, scenario.tasks.targets[0])
    x, y = torch.as_tensor(task.x_test, dtype=torch.float32), torch.as_tensor(task.y_test)
    seconds = {}
    for kind, model in models.items():
        accuracy(model, x, y)
        seconds[kind] = time_ms(lambda model=model: accuracy(model, x, y), repeats) / 1e3
    return seconds


def shared_seconds(scenario, phases: tuple[float, float]) -> float:
    """One seed's shared phases (s): the base model and one LoRA per source task."""
    base_s, part_s = phases
    return base_s + len(scenario.tasks.sources) * part_s


def seed_seconds(scenario, phases: tuple[float, float], step_s: dict[str, float], eval_s: float) -> float:
    """One seed's modelled work (s): shared phases, every gradient method's steps, every unit's evaluations."""
    targets = len(scenario.tasks.targets)
    total = shared_seconds(scenario, phases)
    for spec in scenario.methods:
        if spec.key in FAMILY:
            config = spec.config()
            steps = config.epochs * math.ceil(scenario.tasks.few_shot_train / config.batch_size)
            total += targets * steps * step_s[FAMILY[spec.key]]
    evaluations = len(scenario.evaluate.drift_times_s) * scenario.evaluate.repeats
    return total + targets * len(scenario.methods) * evaluations * eval_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps per timed loop.")
    args = parser.parse_args()
    scenario = load_scenario("multitask")
    with threads(RUN_THREADS):
        phases = shared_phase_seconds(scenario)
        analog, bank, digital, digital_bank, x, y, scope = bench_models(scenario)
        step_s: dict[str, dict[str, float]] = {"analog": {}, "digital": {}}
        for family, make in {"fusion": fusion_setup, "lora": lora_setup}.items():
            setups = {"analog": make(scenario, analog, bank, scope),
                      "digital": make(scenario, digital, digital_bank, scope)}  # fmt: skip
            medians = summary(time_steps(setups, x, y, scope, rounds=2, steps=args.steps))
            for kind in step_s:
                step_s[kind][family] = medians[f"{kind}_wall"] / 1e3
        eval_s = evaluation_seconds({"analog": analog, "digital": digital}, scenario)
    n_seeds = len(scenario.seed_list)
    print(f"base {phases[0]:.1f} s, bank part {phases[1]:.1f} s; steps (ms) {step_s}; evaluation (s) {eval_s}")
    for kind in ("analog", "digital"):
        wall = n_seeds * seed_seconds(scenario, phases, step_s[kind], eval_s[kind]) / args.workers
        emit(f"study_modelled_wall_s_{kind}_mvm", wall, "s", TARGET_WALL_S, digits=0)
    emit("shared_phases_s_per_seed", shared_seconds(scenario, phases), "s", digits=1)


if __name__ == "__main__":
    main()
