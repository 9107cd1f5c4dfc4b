"""The scenario runner (DESIGN sections 6 and 11): train base -> train bank -> program base and bank -> for each
unit (sweep point x seed x target task x method): adapt, evaluate (fresh and after drift) -> write results.

Execution. The runner plans the work and hands it to an `Executor` (`scenarios.execution`): serial, or Dask
distributed (a LocalCluster of single-threaded worker processes, or an existing cluster). Each function it
submits is pure: its result depends only on its arguments, never on what ran before it or where, so
`metrics.csv` is byte-identical whatever the number of workers and the order in which units finish.

Shared phases. Base model, bank and programmed arrays are content-addressed by the parts of the resolved config
that determine them (`scenarios.cache`), computed once per key - a read-noise sweep trains one base model and one
bank per seed and programs them once per device setting - and stored in `<run>/cache/` (or `--cache DIR`). They
travel to the workers as Dask data (`Blob`s of file bytes), so workers need no shared file system.

Resuming and faults. The driver alone writes the run directory: each finished unit becomes
`checkpoints/units/seed<S>/<task>__<method>.json`, listed with its SHA-256 in `checkpoints/manifest.json`. On
restart, listed units that match their checksum are loaded; missing, truncated or altered ones are recomputed, as
are cache entries that fail their manifest. A unit that raises is reported in one line and the other units go on;
the point it belongs to gets no results. A run directory is locked (`scenarios.lock`) and stamped with the
package version and git hash; resuming under another version is refused unless `allow_version_change`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crossbar import (
    DeviceConfig,
    adc_calibration,
    analog_layers,
    convert_to_analog,
    derive_seed,
    device_preset,
    program,
    record_all_to,
)
from energy import Ledger, atomic_write_text, cost_preset
from fusion import (
    FusedLinear,
    LoRABank,
    ProgrammedBank,
    adapt,
    build_bank,
    calibrate_deployed_adc,
    calibrate_norms,
    get_method,
    program_bank,
)
from fusion.digital_state import digital_state
from scenarios import phase_blobs
from scenarios.allocator import keep_freed_memory
from scenarios.cache import Blob, CacheStore, ChecksumManifest, content_key
from scenarios.errors import ScenarioError
from scenarios.execution import Executor, Handle, SerialExecutor
from scenarios.lifetime import LifetimeResult, simulate_lifetime, write_lifetime
from scenarios.lock import run_lock
from scenarios.names import check_name, inside
from scenarios.results import UnitResult, write_results
from scenarios.rundir import RunRecord, check_run_dir
from scenarios.schema import Scenario
from scenarios.stamp import run_stamp
from scenarios.sweep import Study, SweepPoint, write_sweep
from scenarios.wear import model_wear
from scenarios.workloads import TaskData, accuracy, build_model, build_tasks, class_count, load_task, train_classifier

__all__ = ["FAULT_KILL_ONCE_ENV", "RunOutcome", "run_scenario", "run_study"]

log = logging.getLogger("crossbar_sim.runner")

RUN_THREADS = 1
"""Torch and numba threads per process during a run. The default study's matrices are 64-128 wide: a second
thread costs more in synchronisation than it saves; parallelism comes from worker processes instead."""

PHASE_PRIORITY = 1_000
"""Dask priority of the shared phases (base model, bank parts, programmed arrays): above every unit, because each
unblocks a whole seed's units; units get the number of target tasks they cover (`_UnitPlan.priority`)."""

FAULT_KILL_ONCE_ENV = "CROSSBAR_SIM_FAULT_KILL_ONCE"
"""Fault injection for tests: when this environment variable names a file that exists, the first unit to remove it
writes its pid to `<file>.killed` and kills its own process (SIGKILL), as a crashed worker would."""


@dataclass
class RunOutcome:
    """What a run produced: its directory, the point directories that got results, and one line per failure."""

    run_dir: Path
    finished: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    cache_dir: Path | None = None,
    allow_version_change: bool = False,
) -> Path:
    """Run one scenario (all its seeds) into `out_dir` and return the run directory; raises RuntimeError naming
    the failed units if any failed. `executor` defaults to serial execution in this process."""
    outcome = run_study(
        Study.single(scenario), out_dir, fresh=fresh, progress=progress, executor=executor, cache_dir=cache_dir,
        allow_version_change=allow_version_change,
    )  # fmt: skip
    if outcome.failures:
        raise RuntimeError("; ".join(outcome.failures))
    return outcome.run_dir


def run_study(
    study: Study,
    out_dir: Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    cache_dir: Path | None = None,
    allow_version_change: bool = False,
) -> RunOutcome:
    """Run every point of `study` (a plain scenario is a study of one point) into `out_dir`."""
    run_dir = Path(out_dir)
    check_run_dir(run_dir)  # before the lock file: nothing is written into a folder crossbar-sim did not write
    with run_lock(run_dir):
        record = _prepare_run_dir(run_dir, study, fresh, allow_version_change, cache_dir)
        with _threads(RUN_THREADS), _log_to(run_dir / "run.log"):
            log.info("run %s into %s (%d point(s))", study.scenario.name, run_dir, len(study.points))
            own = executor is None
            executor = executor or SerialExecutor()
            log.info("executing on %s", executor.description)
            dashboard = getattr(executor, "dashboard", None)
            if dashboard:
                log.info("Dask dashboard: %s", dashboard)
                if progress:
                    tqdm.write(f"Dask dashboard: {dashboard}", file=sys.stderr)
            try:
                return _Run(study, run_dir, executor, Path(cache_dir) if cache_dir else run_dir / "cache",
                            progress, record).execute()  # fmt: skip
            finally:
                if own:
                    executor.close()


# --- planning and collecting (driver side) -------------------------------------------------------------------
@dataclass
class _UnitPlan:
    """One submitted piece of unit work: a (seed, task, method) unit, or for a task-sequence method
    (`fusion.Method.task_sequence`) the seed's whole sequence of target tasks in scenario order, run in one worker
    call because each task rewrites the arrays the previous one left. Either way one checkpoint per task."""

    point: SweepPoint
    point_dir: Path
    seed: int
    tasks: tuple[str, ...]
    method: str
    checkpoints: tuple[str, ...]

    @property
    def priority(self) -> int:
        """Longest work first (a task sequence before single tasks), so that no seed's long sequence is left to
        run alone at the end while the other workers idle."""
        return len(self.tasks)

    @property
    def label(self) -> str:
        where = f"point {self.point.label} " if self.point.values else ""
        return f"{where}seed {self.seed} {'>'.join(self.tasks)}/{self.method}"


class _Run:
    def __init__(self, study: Study, run_dir: Path, executor: Executor, cache_dir: Path, progress: bool,
                 record: RunRecord) -> None:  # fmt: skip
        self.study = study
        self.run_dir = run_dir
        self.record = record
        self.executor = executor
        self.store = CacheStore(cache_dir)
        self.progress = progress
        self.token = uuid.uuid4().hex[:8]  # Dask keys of this run (distinct from other runs on a shared cluster)
        self.stamp = run_stamp()
        self.phases: dict[str, Handle] = {}

    def point_dir(self, point: SweepPoint) -> Path:
        return inside(self.run_dir, "points", point.label) if self.study.is_sweep else self.run_dir

    def execute(self) -> RunOutcome:
        outcome = RunOutcome(self.run_dir)
        manifests: dict[Path, ChecksumManifest] = {}
        units: dict[tuple[Path, int, str, str], UnitResult] = {}
        programmed: dict[tuple[Path, int], Handle] = {}
        pending: list[tuple[_UnitPlan, Handle]] = []
        lifetimes: dict[tuple[Path, int, str], LifetimeResult] = {}
        life_pending: dict[str, tuple[Path, int, str]] = {}
        for point in self.study.points:
            point_dir = self.point_dir(point)
            if self.study.is_sweep:
                _write_point_config(point_dir, point.scenario, self.stamp, self.record)
            if point_dir not in manifests:
                self.record.add_checkpoints(point_dir / "checkpoints")
                manifests[point_dir] = ChecksumManifest(point_dir / "checkpoints")
            manifest = manifests[point_dir]
            for seed in point.scenario.seed_list:
                scenario = point.scenario.for_seed(seed)
                for plan in _unit_plans(point, point_dir, scenario, seed):
                    done = [_load_unit(manifest, checkpoint) for checkpoint in plan.checkpoints]
                    if all(unit is not None for unit in done):
                        for task, unit in zip(plan.tasks, done):
                            units[(point_dir, seed, task, plan.method)] = unit
                        continue
                    if (point_dir, seed) not in programmed:
                        programmed[(point_dir, seed)] = self._programmed(scenario)
                    handle = self.executor.submit(
                        _unit_task, programmed[(point_dir, seed)], _Shipped.of(scenario), plan.tasks, plan.method,
                        key=f"unit-{point.label}-s{seed}-{'-'.join(plan.tasks)}-{plan.method}-{self.token}",
                        priority=plan.priority,
                    )  # fmt: skip
                    pending.append((plan, handle))
                if scenario.lifetime is not None:
                    for spec in scenario.methods:
                        done_life = _load_lifetime(manifest, _lifetime_checkpoint(seed, spec.key))
                        if done_life is not None:
                            lifetimes[(point_dir, seed, spec.key)] = done_life
                            continue
                        if (point_dir, seed) not in programmed:
                            programmed[(point_dir, seed)] = self._programmed(scenario)
                        handle = self.executor.submit(
                            _lifetime_task, programmed[(point_dir, seed)], _Shipped.of(scenario), spec.key,
                            key=f"lifetime-{point.label}-s{seed}-{spec.key}-{self.token}",
                            priority=len(scenario.tasks.targets),
                        )  # fmt: skip
                        life_pending[handle.key] = (point_dir, seed, spec.key)
                        pending.append((_UnitPlan(point, point_dir, seed, ("lifetime",), spec.key, ()), handle))
            # deploy ledgers of points whose units are all checkpointed still come from the (cached) phases
            for seed in point.scenario.seed_list:
                if (point_dir, seed) not in programmed:
                    programmed[(point_dir, seed)] = self._programmed(point.scenario.for_seed(seed))
        if len(units):
            log.info("%d unit(s) loaded from checkpoints, %d to run", len(units), len(pending))
        failed_points: dict[Path, list[str]] = {}
        by_key = {handle.key: plan for plan, handle in pending}
        handles = [*self.phases.values(), *(h for _, h in pending)]
        with tqdm(total=len(pending), desc="units", unit="unit", disable=not self.progress) as bar:
            for handle in self.executor.as_completed(handles):
                if "kind" in handle.tags:
                    self._phase_finished(handle)
                    continue
                plan = by_key[handle.key]
                bar.update(1)
                if handle.error is not None:
                    line = f"{plan.label}: {_one_line(handle.error)}"
                    log.error("unit failed: %s", line)
                    failed_points.setdefault(plan.point_dir, []).append(line)
                    continue
                if handle.key in life_pending:
                    where = life_pending[handle.key]
                    manifests[plan.point_dir].write(_lifetime_checkpoint(where[1], where[2]),
                                                    json.dumps(handle.value.to_json()).encode())  # fmt: skip
                    lifetimes[where] = handle.value
                    log.info("%s: lifetime of %d rows", plan.label, len(handle.value.rows))
                    continue
                finished: list[UnitResult] = handle.value
                for task, checkpoint, unit in zip(plan.tasks, plan.checkpoints, finished):
                    manifests[plan.point_dir].write(checkpoint, json.dumps(unit.to_json()).encode())
                    units[(plan.point_dir, plan.seed, task, plan.method)] = unit
                    log.info("%s: %s accuracy %s, %d trainable, %.1f s", plan.label, task, unit.accuracies,
                             unit.trainable_params, unit.wall_s)  # fmt: skip
        for point in self.study.points:
            point_dir = self.point_dir(point)
            if point_dir in failed_points:
                outcome.failures.extend(failed_points[point_dir])
                continue
            deploy = Ledger(cost_preset(point.scenario.costs.preset, **point.scenario.costs.overrides))
            ordered: list[UnitResult] = []
            missing = False
            for seed in point.scenario.seed_list:
                phase = programmed[(point_dir, seed)]
                if phase.error is not None:
                    outcome.failures.append(f"{point.describe()}seed {seed}: {_one_line(phase.error)}")
                    missing = True
                    continue
                deploy = deploy.merge(Ledger.from_records(json.loads(phase.value["deploy_ledger.json"])))
            if missing:
                continue
            for task in point.scenario.tasks.targets:
                for spec in point.scenario.methods:
                    for seed in point.scenario.seed_list:
                        ordered.append(units[(point_dir, seed, task, spec.key)])
            outputs = point.scenario.outputs
            with self.record.watch(point_dir):  # the result files and figures these write, as crossbar-sim's
                write_results(point_dir, point.scenario, ordered, deploy, plots=outputs.plots,
                              formats=tuple(outputs.formats))  # fmt: skip
                if point.scenario.lifetime is not None:
                    write_lifetime(point_dir, point.scenario,
                                   [lifetimes[(point_dir, seed, spec.key)] for spec in point.scenario.methods
                                    for seed in point.scenario.seed_list],
                                   plots=outputs.plots, formats=tuple(outputs.formats))  # fmt: skip
            outcome.finished.append(point_dir)
        if self.study.is_sweep:
            with self.record.watch(self.run_dir):
                write_sweep(self.run_dir, self.study, {p.label: self.point_dir(p) for p in self.study.points
                                                        if self.point_dir(p) in outcome.finished})  # fmt: skip
        for line in outcome.failures:
            log.error("failed: %s", line)
        return outcome

    # --- shared phases ---------------------------------------------------------------------------------------
    def _phase(self, kind: str, parts: dict[str, Any], fn: Any, args: Callable[[], tuple[Any, ...]]) -> Handle:
        """The handle of a shared phase: loaded from the cache, or submitted with the arguments `args()` gives
        (its own dependencies, planned only when the phase must be computed)."""
        key = content_key({**parts, **self.stamp})
        if key in self.phases:
            return self.phases[key]
        blob = self.store.get(kind, key, check=lambda files: phase_blobs.blob_problem(kind, files))
        if blob is not None:
            log.info("%s %s loaded from cache %s", kind, key[:12], self.store.root)
            handle = self.executor.constant(blob, key=f"{kind}-{key[:12]}-{self.token}")
            handle.tags.update(kind=kind, cached=True)
        else:
            handle = self.executor.submit(fn, *args(), key=f"{kind}-{key[:12]}-{self.token}", kind=kind,
                                          content_key=key, parts=parts, priority=PHASE_PRIORITY)  # fmt: skip
        self.phases[key] = handle
        return handle

    def _phase_finished(self, handle: Handle) -> None:
        if handle.tags.get("cached"):
            return
        kind, key = handle.tags["kind"], handle.tags["content_key"]
        if handle.error is not None:
            log.error("%s %s failed: %s", kind, key[:12], _one_line(handle.error))
            return
        self.store.put(kind, key, handle.value, {**handle.tags["parts"], **self.stamp})
        log.info("%s %s computed and cached", kind, key[:12])

    def _programmed(self, scenario: Scenario) -> Handle:
        parts = _phase_parts(scenario)
        shipped = _Shipped.of(scenario)

        def base() -> Handle:
            return self._phase("base_model", parts["base_model"], _base_task, lambda: (shipped,))

        def bank_parts() -> tuple[Any, ...]:  # one task per source LoRA: they train in parallel
            part = parts["bank"]
            return (shipped, *(self._phase("bank_part", {**part, "source": name}, _bank_part_task,
                                           lambda name=name: (base(), shipped, name))
                               for name in scenario.tasks.sources))  # fmt: skip

        def bank() -> Handle:
            return self._phase("bank", parts["bank"], _bank_task, bank_parts)

        return self._phase("programmed", parts["programmed"], _programmed_task, lambda: (base(), bank(), shipped))


def _unit_plans(point: SweepPoint, point_dir: Path, scenario: Scenario, seed: int) -> list[_UnitPlan]:
    """The unit work of one seed: one plan per (task, method), except one per task-sequence method covering the
    target tasks in scenario order."""
    plans = []
    targets = tuple(scenario.tasks.targets)
    sequence = {spec.key for spec in scenario.methods if get_method(spec.name).task_sequence}
    for spec in scenario.methods:
        if spec.key in sequence:
            plans.append(_UnitPlan(point, point_dir, seed, targets, spec.key,
                                   tuple(_checkpoint(seed, task, spec.key) for task in targets)))  # fmt: skip
    for task in targets:
        for spec in scenario.methods:
            if spec.key not in sequence:
                plans.append(_UnitPlan(point, point_dir, seed, (task,), spec.key, (_checkpoint(seed, task, spec.key),)))
    return plans


def _checkpoint(seed: int, task: str, method_key: str) -> str:
    """A unit's checkpoint path in its point's `checkpoints/` (built from names the schema checked; checked again,
    as every path written is: `ChecksumManifest` keeps it inside its folder)."""
    return f"units/seed{int(seed)}/{check_name(task, 'task name')}__{check_name(method_key, 'method')}.json"


def _lifetime_checkpoint(seed: int, method_key: str) -> str:
    return f"lifetime/seed{int(seed)}/{check_name(method_key, 'method')}.json"


def _load_lifetime(manifest: ChecksumManifest, relative: str) -> LifetimeResult | None:
    data = manifest.read(relative)
    if data is None:
        return None
    try:
        return LifetimeResult.from_json(json.loads(data))
    except (ValueError, TypeError, KeyError) as error:
        log.warning("checkpoint %s is unreadable (%s): recomputing it", relative, error)
        return None


def _phase_parts(scenario: Scenario) -> dict[str, dict[str, Any]]:
    """The resolved-config parts each shared phase is a function of (its content key)."""
    resolved = scenario.resolved_dict()
    tasks = {k: v for k, v in resolved["tasks"].items() if k not in ("sources", "targets", "few_shot_train")}
    base = {"seed": resolved["seed"], "model": resolved["model"], "tasks": tasks}
    bank = {**base, "bank": resolved["bank"], "sources": resolved["tasks"]["sources"]}
    return {"base_model": base, "bank": bank,
            "programmed": {**bank, "device": resolved["device"], "costs": resolved["costs"],
                           "calibration": resolved["calibration"]}}  # fmt: skip


def _load_unit(manifest: ChecksumManifest, relative: str) -> UnitResult | None:
    data = manifest.read(relative)
    if data is None:
        return None
    try:
        return UnitResult.from_json(json.loads(data))
    except (ValueError, TypeError, KeyError) as error:
        log.warning("checkpoint %s is unreadable (%s): recomputing it", relative, error)
        return None


@dataclass(frozen=True)
class _Shipped:
    """A validated scenario as it travels to a worker: its resolved settings as plain JSON types. The worker imports
    the scenario's plugins first and validates again (milliseconds), so method and task-family types that plugins
    register never need to be unpickled before their plugin is imported."""

    resolved: dict[str, Any]
    source: str | None

    @classmethod
    def of(cls, scenario: Scenario) -> _Shipped:
        source = scenario.source_path
        return cls(scenario.resolved_dict(), str(source) if source is not None else None)

    def scenario(self) -> Scenario:
        from scenarios.plugins import load_plugins

        load_plugins(self.resolved.get("plugins") or [])
        scenario = Scenario.model_validate(self.resolved)
        scenario._source = Path(self.source) if self.source is not None else None
        return scenario


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:300]}"


# --- the pure functions the executor runs (worker side) --------------------------------------------------------
def _base_task(shipped: _Shipped) -> Blob:
    """Train the digital base model; its weights and clean accuracy (`scenarios.phase_blobs`). A pretrained encoder
    (`model.kind: hf_encoder`) is not trained: its blob holds its state and every task's zero-shot class
    embeddings (`scenarios.encoder`)."""
    scenario = shipped.scenario()
    with _threads(RUN_THREADS):
        spec = scenario.model
        if spec.kind == "hf_encoder":  # every task's class embeddings: all tasks
            from scenarios.encoder import EncoderWorkload

            suite = build_tasks(scenario)
            encoder = EncoderWorkload.from_scenario(scenario, [suite.base, *suite.sources.values(),
                                                               *suite.targets.values()])  # fmt: skip
            info = {"zero_shot_accuracy": encoder.accuracy(suite.base)}
            return phase_blobs.base_blob(encoder.model, info, encoder.class_embeddings)
        base = load_task(scenario, scenario.tasks.base, "base")
        n_classes = class_count(scenario, base)
        model = build_model(spec, n_classes, base.image_shape, seed=derive_seed(scenario.seed, "base_init"))
        train_classifier(
            model, base.x_train, base.y_train, epochs=spec.base_epochs, lr=spec.base_lr,
            batch_size=spec.batch_size, seed=derive_seed(scenario.seed, "base_train"), desc="base model",
            progress=False,
        )  # fmt: skip
        info = {"clean_accuracy": accuracy(model, base.x_test, base.y_test),
                "n_classes": n_classes, "image_shape": list(base.image_shape)}  # fmt: skip
        return phase_blobs.base_blob(model, info)


def _bank_part_task(base_blob: Blob, shipped: _Shipped, source: str) -> Blob:
    """Train the LoRA of one source task on the base model: a one-entry bank's files (`LoRABank.save`). Each LoRA's
    initialisation and batches come from a seed derived from the task name (`fusion.build_bank`), so training them
    one at a time, on any workers, gives the bank one call over all tasks would."""
    scenario = shipped.scenario()
    with _threads(RUN_THREADS):
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
        if scenario.model.kind == "hf_encoder":  # the source task's LoRA trains with its zero-shot classes
            bank = phase_blobs.load_encoder(base_blob, scenario).build_bank([task], **settings)
        else:
            bank = build_bank(phase_blobs.load_base(base_blob, scenario), {task.name: (task.x_train, task.y_train)},
                              **settings)  # fmt: skip
        return phase_blobs.bank_blob(bank)


def _bank_task(shipped: _Shipped, *parts: Blob) -> Blob:
    """The bank: the source tasks' one-entry banks joined in the scenario's order of sources."""
    scenario = shipped.scenario()
    banks = [phase_blobs.load_bank(part) for part in parts]
    bank = LoRABank(banks[0].rank, banks[0].alpha, banks[0].target_modules)
    for name, part in zip(scenario.tasks.sources, banks):
        bank.add(name, part.entries[name])
    return phase_blobs.bank_blob(bank)


def _programmed_task(base_blob: Blob, bank_blob: Blob, shipped: _Shipped) -> Blob:
    """Program base and bank into crossbars once, then calibrate them (phase `calibration`: the ADC ranges from the
    base task's training data when the device calibrates them, then fusion's norm read-out); the programmed arrays'
    state, the calibration set and the deployment ledger (`scenarios.phase_blobs`)."""
    scenario = shipped.scenario()
    with _threads(RUN_THREADS):
        encoder = phase_blobs.load_encoder(base_blob, scenario) if scenario.model.kind == "hf_encoder" else None
        base = encoder.model if encoder is not None else phase_blobs.load_base(base_blob, scenario)
        bank = phase_blobs.load_bank(bank_blob)
        device = _device(scenario)
        ledger = Ledger(cost_preset(scenario.costs.preset, **scenario.costs.overrides))
        analog = convert_to_analog(base, device, seed=derive_seed(scenario.seed, "analog"))
        program(analog, ledger.scope(phase="deploy_base"))
        programmed = program_bank(analog, bank, device, ledger.scope(phase="deploy_bank"),
                                  seed=derive_seed(scenario.seed, "bank"), calibrate_norms=False)  # fmt: skip
        calibration_set = None
        if device.adc_range == "calibrated":
            calibration_set = _calibration_set(scenario)
            spec = scenario.calibration
            calibrate_deployed_adc(
                analog, programmed, calibration_set, ledger.scope(phase="calibration"),
                percentile=spec.adc_percentile, granularity=spec.adc_granularity, forward=_calibration_forward,
            )  # fmt: skip
        calibrate_norms(analog, programmed, ledger.scope(phase="calibration"), reads=scenario.calibration.norm_reads,
                        storage=scenario.calibration.norm_storage)  # fmt: skip
        classes = encoder.class_embeddings if encoder is not None else None
        phase = phase_blobs.ProgrammedPhase(analog, programmed, classes, calibration_set)
        return {**phase_blobs.programmed_blob(phase, base_blob),
                "deploy_ledger.json": json.dumps(ledger.to_records()).encode()}  # fmt: skip


def _unit_task(programmed_blob: Blob, shipped: _Shipped, task_names: tuple[str, ...], method_key: str
               ) -> list[UnitResult]:  # fmt: skip
    """Adapt and evaluate (seed, task, method) units on the programmed arrays: one task, or a task-sequence
    method's targets in order, each task starting from the previous one's adapted model (its arrays rewritten)."""
    scenario = shipped.scenario()
    trigger = os.environ.get(FAULT_KILL_ONCE_ENV)
    if trigger and os.path.exists(trigger):
        try:
            os.remove(trigger)  # exactly one process wins the removal
        except FileNotFoundError:
            pass
        else:
            Path(f"{trigger}.killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    with _threads(RUN_THREADS):
        phase = phase_blobs.load_programmed_phase(programmed_blob, scenario)
        analog = phase.analog
        results: list[UnitResult] = []
        previous: nn.Module | None = None
        for task_name in task_names:
            if phase.class_embeddings is not None:  # a pretrained encoder: the task's zero-shot head
                analog.set_classes(phase.class_embeddings[task_name])
            unit, previous = _unit(analog, phase.bank, scenario, _target_task(scenario, task_name), method_key,
                                   calibration_set=phase.calibration_set, previous=previous)  # fmt: skip
            results.append(unit)
        return results


def _lifetime_task(programmed_blob: Blob, shipped: _Shipped, method_key: str) -> LifetimeResult:
    """One method's lifetime study (`scenarios.lifetime`) on the programmed arrays of one seed."""
    scenario = shipped.scenario()
    with _threads(RUN_THREADS):
        phase = phase_blobs.load_programmed_phase(programmed_blob, scenario)
        tasks = {name: _target_task(scenario, name) for name in scenario.tasks.targets}
        embeddings = phase.class_embeddings

        def set_task(model: nn.Module, name: str) -> None:  # a pretrained encoder: the task's zero-shot head
            model.set_classes(embeddings[name])

        return simulate_lifetime(phase.analog, phase.bank, scenario, tasks, method_key,
                                 set_task if embeddings is not None else None)  # fmt: skip


def _target_task(scenario: Scenario, name: str) -> TaskData:
    """One target task's data, as `build_tasks` makes it, loaded alone (`load_task`)."""
    return load_task(scenario, name, "target")


def _device(scenario: Scenario) -> DeviceConfig:
    return device_preset(scenario.device.preset, **scenario.device.overrides)


def _calibration_set(scenario: Scenario) -> torch.Tensor:
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


def _calibration_forward(model: nn.Module, x: torch.Tensor) -> None:
    """Run the calibration set through the analog layers in one call (a text encoder: its encoder only, no task
    head is installed at deployment)."""
    from scenarios.encoder import TextEncoderClassifier

    if isinstance(model, TextEncoderClassifier):
        model.embed(x)
    else:
        model(x)


def _unit(
    analog: nn.Module,
    bank: ProgrammedBank,
    scenario: Scenario,
    task: TaskData,
    method_key: str,
    calibration_set: torch.Tensor | None = None,
    previous: nn.Module | None = None,
) -> tuple[UnitResult, nn.Module]:
    """One adapted and evaluated task (after `previous`, the previous task's adapted model, on a task sequence);
    the unit's result and the adapted model."""
    spec = next(s for s in scenario.methods if s.key == method_key)
    device = _device(scenario)
    seed = derive_seed(scenario.seed, "unit", task.name, spec.key)
    ledger = Ledger(cost_preset(scenario.costs.preset, **scenario.costs.overrides))
    x = torch.cat([torch.as_tensor(task.x_train), torch.as_tensor(task.x_val)])
    y = torch.cat([torch.as_tensor(task.y_train), torch.as_tensor(task.y_val)])
    val_fraction = len(task.x_val) / len(x) if len(task.x_val) else 0.0
    result = adapt(
        spec.name, analog, bank, (x, y), spec.config(), device, ledger, task.name, seed,
        val_fraction=val_fraction, progress=False, previous=previous,
    )  # fmt: skip
    # adapt() files its records under the method's registered name; results are filed under the entry's key
    ledger = _relabel_method(ledger, spec.name, spec.key)
    wear = {name: w.as_dict() for name, w in model_wear(result.model, ledger).items()}
    state = digital_state(result.model, result.trainable_params, gradient_based=spec.name != "lorahub")
    accuracies = _evaluate(result.model, scenario, task, spec.key, seed, ledger, calibration_set)
    unit = UnitResult(
        task=task.name,
        method=spec.key,
        accuracies=accuracies,
        trainable_params=result.trainable_params,
        wear=wear,
        endurance_pulses=device.endurance_pulses,
        n_test=len(task.x_test),
        wall_s=result.wall_s,
        ledger_records=ledger.to_records(),
        seed=scenario.seed,
        digital_state=state.as_dict(),
        clipped_weights=int(result.details.get("clipped_weights", 0)),
    )
    return unit, result.model


def _evaluate(
    model: nn.Module,
    scenario: Scenario,
    task: TaskData,
    method: str,
    seed: int,
    ledger: Ledger,
    calibration_set: torch.Tensor | None = None,
) -> dict[float, list[float]]:
    """Test accuracy per drift time and repeat. Each (drift time, repeat) evaluates its own copy with read noise and
    drift drawn from (seed, drift time, repeat); the first fresh evaluation also records the inference energy into
    the ledger (phase `inference`). After drift, `calibration.renew_adc_after_drift` sets the ADC ranges again from
    the calibration set (reads only) and `evaluate.recalibrate_after_drift` re-reads fused layers' norms."""
    import copy

    evaluate = scenario.evaluate
    results: dict[float, list[float]] = {}
    for drift_s in evaluate.drift_times_s:
        results[float(drift_s)] = []
        for repeat in range(evaluate.repeats):
            copy_ = copy.deepcopy(model)
            _reseed(copy_, derive_seed(seed, "evaluate", repr(float(drift_s)), str(repeat)))
            if drift_s > 0:
                for _, layer in analog_layers(copy_):
                    layer.drift_to(float(drift_s))
                if scenario.calibration.renew_adc_after_drift and calibration_set is not None:
                    spec = scenario.calibration
                    scope = ledger.scope(phase="calibration", task=task.name, method=method) if repeat == 0 else None
                    with adc_calibration(copy_, scope, percentile=spec.adc_percentile,
                                         granularity=spec.adc_granularity):  # fmt: skip
                        _calibration_forward(copy_, calibration_set)
                if evaluate.recalibrate_after_drift:
                    scope = ledger.scope(phase="calibration", task=task.name, method=method) if repeat == 0 else None
                    for module in copy_.modules():
                        if isinstance(module, FusedLinear) and module.use_magnitude:
                            module.recalibrate(scope)
            record = drift_s == evaluate.drift_times_s[0] and repeat == 0
            scope = ledger.scope(phase="inference", task=task.name, method=method) if record else None
            with record_all_to(copy_, scope):
                results[float(drift_s)].append(accuracy(copy_, task.x_test, task.y_test))
    return results


# --- the run directory -----------------------------------------------------------------------------------------
def _prepare_run_dir(
    run_dir: Path, study: Study, fresh: bool, allow_version_change: bool, cache_dir: Path | None
) -> RunRecord:
    """Create the run directory, or check that an existing one is crossbar-sim's (`scenarios.rundir`) and belongs
    to the same study and package version; its record of what crossbar-sim writes there. `fresh` first deletes
    what that record lists (and the run's own cache entries unless `cache_dir` is elsewhere), nothing else."""
    record = RunRecord.claim(run_dir)
    config_path = run_dir / ("sweep.json" if study.is_sweep else "config.json")
    resolved = study.resolved_dict()
    if fresh:
        record.remove_outputs(caches=cache_dir is None)
    other = run_dir / ("config.json" if study.is_sweep else "sweep.json")
    if other.is_file():
        raise ScenarioError(
            f"{run_dir}: holds a {'plain run' if study.is_sweep else 'sweep'}, not a "
            f"{'sweep' if study.is_sweep else 'plain run'}; use --fresh to start over or --out to choose another "
            "directory"
        )
    stamp = run_stamp()
    if config_path.is_file():
        try:
            previous = json.loads(config_path.read_text())
        except ValueError:
            previous = {}
        if previous.get("scenario") != json.loads(json.dumps(resolved)):
            raise ScenarioError(
                f"{run_dir}: holds a run of a different scenario configuration; use --fresh to start over or "
                "--out to choose another directory"
            )
        before = {k: previous.get(k) for k in stamp}
        if before != stamp and not allow_version_change:
            raise ScenarioError(
                f"{run_dir}: was started by crossbar-sim {before['crossbar_sim_version']} (git "
                f"{before['git_hash']}), this is {stamp['crossbar_sim_version']} (git {stamp['git_hash']}); "
                "use --allow-version-change to resume anyway, or --fresh to start over"
            )
    record.add_files(config_path, run_dir / "run.log")  # before they are written
    if cache_dir is None:
        record.add_cache(run_dir / "cache")
    try:
        atomic_write_text(config_path, json.dumps({"scenario": resolved, **stamp}, indent=1))
    except OSError as error:
        raise ScenarioError(f"{run_dir}: cannot write the run directory ({error.strerror or error})") from None
    return record


def _write_point_config(point_dir: Path, scenario: Scenario, stamp: dict[str, str], record: RunRecord) -> None:
    record.add_files(point_dir / "config.json")
    point_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(point_dir / "config.json", json.dumps({"scenario": scenario.resolved_dict(), **stamp}, indent=1))


def _relabel_method(ledger: Ledger, old: str, new: str) -> Ledger:
    if old == new:
        return ledger
    records = [{**r, "method": new if r["method"] == old else r["method"]} for r in ledger.to_records()]
    return Ledger.from_records(records, ledger.costs)


def _reseed(model: nn.Module, seed: int) -> None:
    for name, layer in analog_layers(model):
        layer.reseed_noise(derive_seed(seed, name))


@contextmanager
def _threads(n: int) -> Iterator[None]:
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


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    handler = _RunLogHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crossbar_sim")
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


class _RunLogHandler(logging.FileHandler):
    """`run.log`'s handler: a line that cannot be written (a full disk) is dropped, not reported with logging's
    traceback on stderr; the error that matters reaches the user through the write that failed."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass
