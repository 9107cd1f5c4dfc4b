"""The worker side of a run: the pure functions the runner's executor runs (`scenarios.runner` plans them).

Shared phases: train the base model, one source task's LoRA (a bank part), join the bank, program base and bank
into crossbars and calibrate them. Units: adapt and evaluate target tasks (`scenarios.units`), or one method's
lifetime (`scenarios.lifetime`). What depends on the model kind is asked of the scenario's workload
(`scenarios.workload`). Each function's result depends only on its arguments, so it may run on any worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossbar import derive_seed
from fusion import LoRABank
from scenarios import phase_blobs
from scenarios.allocator import keep_freed_memory
from scenarios.cache import Blob
from scenarios.deployment import deploy
from scenarios.errors import ScenarioError
from scenarios.families import TaskData
from scenarios.hardware_bank import hardware_aware_bank_part
from scenarios.lifetime import LifetimeResult, simulate_lifetime
from scenarios.results import UnitResult
from scenarios.schema import Scenario
from scenarios.units import run_unit
from scenarios.workload import workload_for
from scenarios.workloads import load_task

__all__ = [
    "RUN_THREADS",
    "Shipped",
    "bank_part_task",
    "bank_task",
    "base_task",
    "calibration_set",
    "lifetime_task",
    "programmed_task",
    "target_task",
    "threads",
    "unit_task",
]

log = logging.getLogger("crossbar_sim.runner")

RUN_THREADS = 1
"""Torch and numba threads per process during a run. The default study's matrices are 64-128 wide: a second
thread costs more in synchronisation than it saves; parallelism comes from worker processes instead."""


@dataclass(frozen=True)
class Shipped:
    """A validated scenario as it travels to a worker: its resolved settings as plain JSON types. The worker imports
    the scenario's plugins first and validates again (milliseconds), so method and task-family types that plugins
    register never need to be unpickled before their plugin is imported."""

    resolved: dict[str, Any]
    source: str | None

    @classmethod
    def of(cls, scenario: Scenario) -> Shipped:
        source = scenario.source_path
        return cls(scenario.resolved_dict(), str(source) if source is not None else None)

    def scenario(self) -> Scenario:
        from scenarios.plugins import load_plugins

        load_plugins(self.resolved.get("plugins") or [])
        scenario = Scenario.model_validate(self.resolved)
        scenario._source = Path(self.source) if self.source is not None else None
        return scenario


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch and the numba kernels on `n` threads, restoring both afterwards; freed memory stays in the
    process (`scenarios.allocator`: large MVM buffers are not faulted in again on every call)."""
    import numba

    keep_freed_memory()
    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def base_task(shipped: Shipped) -> Blob:
    """The base model's files (`scenarios.phase_blobs`), built or trained by the scenario's workload."""
    scenario = shipped.scenario()
    with threads(RUN_THREADS):
        return workload_for(scenario).train_base()


def bank_part_task(base_blob: Blob, shipped: Shipped, source: str) -> Blob:
    """Train the LoRA of one source task on the base model: a one-entry bank's files (`LoRABank.save`). Each LoRA's
    initialisation and batches come from a seed derived from the task name (`fusion.build_bank`), so training them
    one at a time, on any workers, gives the bank one call over all tasks would."""
    scenario = shipped.scenario()
    with threads(RUN_THREADS):
        task = load_task(scenario, source, "source")
        spec = scenario.bank
        settings = dict(
            target_modules=list(spec.modules),
            rank=spec.rank,
            alpha=spec.alpha,
            epochs=spec.epochs,
            batch_size=spec.batch_size or scenario.model.batch_size,
            lr=spec.lr,
            seed=derive_seed(scenario.seed, "bank_train"),
            progress=False,
        )
        if spec.hardware_aware:  # the LoRA trains through the base as programmed (scenarios.hardware_bank)
            bank = hardware_aware_bank_part(scenario, base_blob, task, calibration_set, **settings)
        else:
            bank = workload_for(scenario).train_bank_part(base_blob, task, **settings)
        return phase_blobs.bank_blob(bank)


def bank_task(shipped: Shipped, *parts: Blob) -> Blob:
    """The bank: the source tasks' one-entry banks joined in the scenario's order of sources."""
    scenario = shipped.scenario()
    banks = [phase_blobs.load_bank(part) for part in parts]
    bank = LoRABank(banks[0].rank, banks[0].alpha, banks[0].target_modules)
    for name, part in zip(scenario.tasks.sources, banks):
        bank.add(name, part.entries[name])
    return phase_blobs.bank_blob(bank)


def programmed_task(base_blob: Blob, bank_blob: Blob, shipped: Shipped) -> Blob:
    """Program base and bank into crossbars once, then calibrate them (phase `calibration`: the ADC ranges from the
    base task's training data when the device calibrates them, then fusion's norm read-out); the programmed arrays'
    state, the calibration set and the deployment ledger (`scenarios.phase_blobs`)."""
    scenario = shipped.scenario()
    with threads(RUN_THREADS):
        workload = workload_for(scenario)
        base = workload.load_base(base_blob)
        bank = phase_blobs.load_bank(bank_blob)
        ledger = scenario.new_ledger()
        deployed = deploy(scenario, base, bank, ledger, calibration_set, forward=workload.calibration_forward)
        phase = phase_blobs.ProgrammedPhase(deployed.analog, deployed.bank, workload.task_heads(base_blob),
                                             deployed.calibration_set)
        return {**phase_blobs.programmed_blob(phase, base_blob),
                "deploy_ledger.json": json.dumps(ledger.to_records()).encode()}  # fmt: skip


def unit_task(programmed_blob: Blob, shipped: Shipped, task_names: tuple[str, ...], method_key: str
              ) -> list[UnitResult]:  # fmt: skip
    """Adapt and evaluate (seed, task, method) units on the programmed arrays: one task, or a task-sequence
    method's targets in order, each task starting from the previous one's adapted model (its arrays rewritten)."""
    scenario = shipped.scenario()
    with threads(RUN_THREADS):
        workload = workload_for(scenario)
        phase = phase_blobs.load_programmed_phase(programmed_blob, scenario)
        results: list[UnitResult] = []
        previous: nn.Module | None = None
        for task_name in task_names:
            workload.set_task(phase.analog, task_name, phase.task_heads)
            unit, previous = run_unit(phase.analog, phase.bank, scenario, workload, target_task(scenario, task_name),
                                      method_key, calibration_set=phase.calibration_set, previous=previous)  # fmt: skip
            results.append(unit)
        return results


def lifetime_task(programmed_blob: Blob, shipped: Shipped, method_key: str) -> LifetimeResult:
    """One method's lifetime study (`scenarios.lifetime`) on the programmed arrays of one seed."""
    scenario = shipped.scenario()
    with threads(RUN_THREADS):
        workload = workload_for(scenario)
        phase = phase_blobs.load_programmed_phase(programmed_blob, scenario)
        tasks = {name: target_task(scenario, name) for name in scenario.tasks.targets}

        def set_task(model: nn.Module, name: str) -> None:
            workload.set_task(model, name, phase.task_heads)

        return simulate_lifetime(phase.analog, phase.bank, scenario, tasks, method_key, set_task)


def target_task(scenario: Scenario, name: str) -> TaskData:
    """One target task's data, as `build_tasks` makes it, loaded alone (`load_task`)."""
    return load_task(scenario, name, "target")


def calibration_set(scenario: Scenario) -> torch.Tensor:
    """`calibration.samples` examples of the BASE task's training set (a seeded draw without replacement): the
    only data the ADC ranges are set from. Test sets and adaptation data never enter it. A base task without a
    training set (the text families' zero-shot `wn_all`) draws instead from the bank's source tasks' training
    pools, in the order of `tasks.sources`: data the deployment has before any target task is known, disjoint from
    every target's few-shot and test pools."""
    pool = np.asarray(load_task(scenario, scenario.tasks.base, "base").x_train)
    source = "base task"
    if len(pool) == 0:
        parts = [np.asarray(load_task(scenario, name, "source").x_train) for name in scenario.tasks.sources]
        parts = [part for part in parts if len(part)]
        if not parts:
            raise ScenarioError("calibration: neither the base task nor a source task has training examples to "
                                "calibrate the ADCs with")  # fmt: skip
        pool = np.concatenate(parts)
        source = "source tasks"
    count = min(scenario.calibration.samples, len(pool))
    rng = np.random.default_rng(derive_seed(scenario.seed, "adc_calibration_set"))
    index = np.sort(rng.choice(len(pool), size=count, replace=False))
    log.debug("calibration set: %d examples of the %s' training data", count, source)
    return torch.as_tensor(pool[index])
