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
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy import Ledger
from fusion import get_method
from scenarios import phase_blobs
from scenarios.cache import CacheStore, ChecksumManifest, content_key
from scenarios.execution import Executor, Handle, SerialExecutor
from scenarios.lifetime import LifetimeResult, write_lifetime
from scenarios.lock import run_lock
from scenarios.names import check_name, inside
from scenarios.phases import (
    RUN_THREADS,
    Shipped,
    bank_part_task,
    bank_task,
    base_task,
    lifetime_task,
    programmed_task,
    threads,
    unit_task,
)
from scenarios.progress import RunProgress, summary_line
from scenarios.results import UnitResult, write_results
from scenarios.rundir import RunRecord, check_run_dir, log_to, prepare_run_dir, write_point_config
from scenarios.schema import Scenario
from scenarios.stamp import run_stamp
from scenarios.sweep import Study, SweepPoint, write_sweep
from scenarios.workload import workload_for

__all__ = ["RunOutcome", "run_scenario", "run_study"]

log = logging.getLogger("crossbar_sim.runner")

PHASE_PRIORITY = 1_000
"""Dask priority of the shared phases (base model, bank parts, programmed arrays): above every unit, because each
unblocks a whole seed's units; units get the number of target tasks they cover (`_UnitPlan.priority`)."""


@dataclass
class RunOutcome:
    """What a run produced: its directory, the point directories that got results, one line per failure, and the
    summary line of a finished run (`scenarios.progress.summary_line`)."""

    run_dir: Path
    finished: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    summary: str = ""


def run_scenario(scenario: Scenario, out_dir: Path, **options: Any) -> Path:
    """Run one scenario (all its seeds) into `out_dir` and return the run directory; raises RuntimeError naming
    the failed units if any failed. `options`: those of `run_study` (`executor` defaults to serial execution in
    this process)."""
    outcome = run_study(Study.single(scenario), out_dir, **options)
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
        record = prepare_run_dir(run_dir, study, fresh, allow_version_change, cache_dir)
        with threads(RUN_THREADS), log_to(run_dir / "run.log"):
            log.info("run %s into %s (%d point(s))", study.scenario.name, run_dir, len(study.points))
            own = executor is None
            executor = executor or SerialExecutor()
            log.info("executing on %s", executor.description)
            dashboard = getattr(executor, "dashboard", None)
            if dashboard:
                log.info("Dask dashboard: %s", dashboard)
                if progress:
                    print(f"Dask dashboard: {dashboard}", file=sys.stderr)
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
    call because each task rewrites the arrays the previous one left; one checkpoint per task. A lifetime plan
    (`lifetime`) is one method's lifetime over the target tasks, with one checkpoint."""

    point: SweepPoint
    point_dir: Path
    seed: int
    tasks: tuple[str, ...]
    method: str
    checkpoints: tuple[str, ...]
    lifetime: bool = False

    @property
    def priority(self) -> int:
        """Longest work first (a task sequence before single tasks), so that no seed's long sequence is left to
        run alone at the end while the other workers idle."""
        return len(self.tasks)

    @property
    def label(self) -> str:
        where = f"point {self.point.label} " if self.point.values else ""
        return f"{where}seed {self.seed} {'lifetime' if self.lifetime else '>'.join(self.tasks)}/{self.method}"

    def key(self, token: str) -> str:
        """The Dask key of this work in the run with `token`."""
        if self.lifetime:
            return f"lifetime-{self.point.label}-s{self.seed}-{self.method}-{token}"
        return f"unit-{self.point.label}-s{self.seed}-{'-'.join(self.tasks)}-{self.method}-{token}"


@dataclass
class _Work:
    """The driver's state: checkpoint manifests per point, finished results, the plans to run and their handles."""

    manifests: dict[Path, ChecksumManifest] = field(default_factory=dict)
    units: dict[tuple[Path, int, str, str], UnitResult] = field(default_factory=dict)
    lifetimes: dict[tuple[Path, int, str], LifetimeResult] = field(default_factory=dict)
    todo: list[tuple[_UnitPlan, Scenario]] = field(default_factory=list)
    programmed: dict[tuple[Path, int], Handle] = field(default_factory=dict)
    pending: dict[str, tuple[_UnitPlan, Handle]] = field(default_factory=dict)
    failed: dict[Path, list[str]] = field(default_factory=dict)

    def keep(self, plan: _UnitPlan, results: list[Any]) -> None:
        """File the results of `plan` (loaded from checkpoints, or computed)."""
        if plan.lifetime:
            self.lifetimes[(plan.point_dir, plan.seed, plan.method)] = results[0]
            return
        for task, unit in zip(plan.tasks, results):
            self.units[(plan.point_dir, plan.seed, task, plan.method)] = unit


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
        self.seen: set[str] = set()  # keys of the handles whose results were taken
        self.bars = RunProgress(False, 0)

    def point_dir(self, point: SweepPoint) -> Path:
        return inside(self.run_dir, "points", point.label) if self.study.is_sweep else self.run_dir

    def execute(self) -> RunOutcome:
        work = self._plan()
        if work.units or work.lifetimes:
            log.info("%d unit(s) loaded from checkpoints, %d to run", len(work.units), len(work.todo))
        with RunProgress(self.progress, len(work.todo)) as self.bars:
            self._submit(work)
            handles = [*self.phases.values(), *(handle for _, handle in work.pending.values())]
            for handle in self.executor.as_completed(handles):
                if handle.key in self.seen:
                    continue
                if "kind" in handle.tags:
                    self._phase_finished(handle)
                else:
                    self._unit_finished(work, handle)
        outcome = RunOutcome(self.run_dir)
        for point in self.study.points:
            self._write_point(work, point, outcome)
        if self.study.is_sweep:
            with self.record.watch(self.run_dir):
                write_sweep(self.run_dir, self.study, {p.label: self.point_dir(p) for p in self.study.points
                                                        if self.point_dir(p) in outcome.finished})  # fmt: skip
        for line in outcome.failures:
            log.error("failed: %s", line)
        return outcome

    def _plan(self) -> _Work:
        """Every unit plan of the study: loaded from its checkpoints when they are all there, else to run."""
        work = _Work()
        for point in self.study.points:
            point_dir = self.point_dir(point)
            if self.study.is_sweep:
                write_point_config(point_dir, point.scenario, self.stamp, self.record)
            if point_dir not in work.manifests:
                self.record.add_checkpoints(point_dir / "checkpoints")
                work.manifests[point_dir] = ChecksumManifest(point_dir / "checkpoints")
            for seed in point.scenario.seed_list:
                scenario = point.scenario.for_seed(seed)
                for plan in _unit_plans(point, point_dir, scenario, seed):
                    kind = LifetimeResult if plan.lifetime else UnitResult
                    done = [_load(work.manifests[point_dir], checkpoint, kind) for checkpoint in plan.checkpoints]
                    if all(result is not None for result in done):
                        work.keep(plan, done)
                    else:
                        work.todo.append((plan, scenario))
        return work

    def _submit(self, work: _Work) -> None:
        """Submit the plans to run, each after its seed's shared phases; then the phases of every seed (their
        deployment ledgers enter the results even when all its units were checkpointed)."""
        for plan, scenario in work.todo:
            programmed = self._programmed_of(work, plan.point_dir, plan.seed, scenario)
            task = (lifetime_task, plan.method) if plan.lifetime else (unit_task, plan.tasks, plan.method)
            handle = self.executor.submit(task[0], programmed, Shipped.of(scenario), *task[1:],
                                          key=plan.key(self.token), priority=plan.priority)  # fmt: skip
            work.pending[handle.key] = (plan, handle)
            if handle.done:  # a serial executor runs at submission
                self._unit_finished(work, handle)
        for point in self.study.points:
            for seed in point.scenario.seed_list:
                self._programmed_of(work, self.point_dir(point), seed, point.scenario.for_seed(seed))

    def _unit_finished(self, work: _Work, handle: Handle) -> None:
        """Checkpoint and keep a finished plan's results, or note its failure in one line."""
        self.seen.add(handle.key)
        self.bars.unit_done()
        plan = work.pending[handle.key][0]
        if handle.error is not None:
            line = f"{plan.label}: {_one_line(handle.error)}"
            log.error("unit failed: %s", line)
            work.failed.setdefault(plan.point_dir, []).append(line)
            return
        results = [handle.value] if plan.lifetime else handle.value
        for checkpoint, result in zip(plan.checkpoints, results):
            work.manifests[plan.point_dir].write(checkpoint, json.dumps(result.to_json()).encode())
        work.keep(plan, results)
        if plan.lifetime:
            log.info("%s: lifetime of %d rows", plan.label, len(handle.value.rows))
        for task, unit in zip(plan.tasks, results if not plan.lifetime else []):
            log.info("%s: %s accuracy %s, %d trainable, %.1f s", plan.label, task, unit.accuracies,
                     unit.trainable_params, unit.wall_s)  # fmt: skip

    def _write_point(self, work: _Work, point: SweepPoint, outcome: RunOutcome) -> None:
        """A point's result files, figures and report, when its units and shared phases all finished."""
        point_dir, scenario = self.point_dir(point), point.scenario
        if point_dir in work.failed:
            outcome.failures.extend(work.failed[point_dir])
            return
        deploy = scenario.new_ledger()
        for seed in scenario.seed_list:
            phase = work.programmed[(point_dir, seed)]
            if phase.error is not None:
                outcome.failures.append(f"{point.describe()}seed {seed}: {_one_line(phase.error)}")
                continue
            deploy = deploy.merge(Ledger.from_records(json.loads(phase.value["deploy_ledger.json"])))
        if any(work.programmed[(point_dir, seed)].error is not None for seed in scenario.seed_list):
            return
        ordered = [work.units[(point_dir, seed, task, spec.key)] for task in scenario.tasks.targets
                   for spec in scenario.methods for seed in scenario.seed_list]  # fmt: skip
        plots, formats = scenario.outputs.plots, tuple(scenario.outputs.formats)
        with self.record.watch(point_dir):  # the result files and figures these write, as crossbar-sim's
            write_results(point_dir, scenario, ordered, deploy, plots=plots, formats=formats)
            if scenario.lifetime is not None:
                write_lifetime(point_dir, scenario, [work.lifetimes[(point_dir, seed, spec.key)]
                                                     for spec in scenario.methods for seed in scenario.seed_list],
                               plots=plots, formats=formats)  # fmt: skip
        outcome.finished.append(point_dir)
        outcome.summary = summary_line(self.run_dir, ordered, self.study.is_sweep)

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
            arguments = args()
            self.bars.phase_started(kind)
            handle = self.executor.submit(fn, *arguments, key=f"{kind}-{key[:12]}-{self.token}", kind=kind,
                                          content_key=key, parts=parts, priority=PHASE_PRIORITY)  # fmt: skip
            if handle.done:  # a serial executor runs at submission
                self._phase_finished(handle)
        self.phases[key] = handle
        return handle

    def _phase_finished(self, handle: Handle) -> None:
        self.seen.add(handle.key)
        if handle.tags.get("cached"):
            return
        kind, key = handle.tags["kind"], handle.tags["content_key"]
        self.bars.phase_done(kind)
        if handle.error is not None:
            log.error("%s %s failed: %s", kind, key[:12], _one_line(handle.error))
            return
        self.store.put(kind, key, handle.value, {**handle.tags["parts"], **self.stamp})
        log.info("%s %s computed and cached", kind, key[:12])

    def _programmed_of(self, work: _Work, point_dir: Path, seed: int, scenario: Scenario) -> Handle:
        """The programmed arrays of one point's seed (planned once)."""
        if (point_dir, seed) not in work.programmed:
            work.programmed[(point_dir, seed)] = self._programmed(scenario)
        return work.programmed[(point_dir, seed)]

    def _programmed(self, scenario: Scenario) -> Handle:
        parts = _phase_parts(scenario)
        shipped = Shipped.of(scenario)

        def base() -> Handle:
            return self._phase("base_model", parts["base_model"], base_task, lambda: (shipped,))

        def bank_parts() -> tuple[Any, ...]:  # one task per source LoRA: they train in parallel
            part = parts["bank"]
            return (shipped, *(self._phase("bank_part", {**part, "source": name}, bank_part_task,
                                           lambda name=name: (base(), shipped, name))
                               for name in scenario.tasks.sources))  # fmt: skip

        def bank() -> Handle:
            return self._phase("bank", parts["bank"], bank_task, bank_parts)

        return self._phase("programmed", parts["programmed"], programmed_task, lambda: (base(), bank(), shipped))


def _unit_plans(point: SweepPoint, point_dir: Path, scenario: Scenario, seed: int) -> list[_UnitPlan]:
    """The unit work of one seed: one plan per (task, method), except one per task-sequence method covering the
    target tasks in scenario order; then, with a `lifetime` section, one lifetime plan per method."""
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
    if scenario.lifetime is not None:
        for spec in scenario.methods:
            checkpoint = f"lifetime/seed{int(seed)}/{check_name(spec.key, 'method')}.json"
            plans.append(_UnitPlan(point, point_dir, seed, targets, spec.key, (checkpoint,), lifetime=True))
    return plans


def _checkpoint(seed: int, task: str, method_key: str) -> str:
    """A unit's checkpoint path in its point's `checkpoints/` (built from names the schema checked; checked again,
    as every path written is: `ChecksumManifest` keeps it inside its folder)."""
    return f"units/seed{int(seed)}/{check_name(task, 'task name')}__{check_name(method_key, 'method')}.json"


def _load(manifest: ChecksumManifest, relative: str, kind: Any) -> Any:
    """A checkpoint's `UnitResult` or `LifetimeResult` (`kind`); None when it is missing or unreadable."""
    data = manifest.read(relative)
    if data is None:
        return None
    try:
        return kind.from_json(json.loads(data))
    except (ValueError, TypeError, KeyError) as error:
        log.warning("checkpoint %s is unreadable (%s): recomputing it", relative, error)
        return None


def _phase_parts(scenario: Scenario) -> dict[str, dict[str, Any]]:
    """The resolved-config parts each shared phase is a function of (its content key)."""
    resolved = scenario.resolved_dict()
    tasks = {k: v for k, v in resolved["tasks"].items() if k not in ("sources", "targets", "few_shot_train")}
    base = {"seed": resolved["seed"], "model": resolved["model"], "tasks": tasks}
    bank = {**base, "bank": resolved["bank"], "sources": resolved["tasks"]["sources"]}
    if resolved["bank"].get("hardware_aware"):  # its LoRAs train through the programmed, calibrated base
        bank = {**bank, "device": resolved["device"], "calibration": resolved["calibration"]}
    programmed = {**bank, **{key: resolved[key] for key in ("device", "costs", "calibration")}}
    if workload_for(scenario).heads_per_task:  # the base phase embeds, and the arrays carry, every named task's head
        names = {"task_names": [resolved["tasks"]["sources"], resolved["tasks"]["targets"]]}
        base, programmed = {**base, **names}, {**programmed, **names}
    return {"base_model": base, "bank": bank, "programmed": programmed}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:300]}"
