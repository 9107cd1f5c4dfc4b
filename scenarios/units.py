"""One unit of work on one seed's programmed arrays: adapt a target task with a method entry, then evaluate it
(fresh and after drift). The study runner (`scenarios.phases`) and the lifetime study (`scenarios.lifetime`) both
build on these pieces, so a ledger, a device, the `adapt` call, the noise reseeding and the norm re-read after
drift are written once.
"""

from __future__ import annotations

import copy

from torch import nn

from crossbar import adc_calibration, analog_layers, derive_seed, record_all_to
from energy import Ledger, LedgerScope
from fusion import AdaptResult, FusedLinear, ProgrammedBank, adapt, get_method
from fusion.digital_state import digital_state
from scenarios.families import TaskData
from scenarios.results import UnitResult
from scenarios.schema import MethodSpec, Scenario
from scenarios.wear import model_wear
from scenarios.workload import Workload

__all__ = ["adapt_entry", "evaluate", "method_entry", "recalibrate_norms", "reseed", "run_unit"]


def method_entry(scenario: Scenario, key: str) -> MethodSpec:
    """The scenario's `methods:` entry filed under `key` (its label, or its method's name)."""
    return next(spec for spec in scenario.methods if spec.key == key)


def adapt_entry(
    analog: nn.Module,
    bank: ProgrammedBank,
    scenario: Scenario,
    task: TaskData,
    spec: MethodSpec,
    ledger: Ledger,
    seed: int,
    previous: nn.Module | None = None,
) -> AdaptResult:
    """`fusion.adapt` with a method entry's settings on a task's few-shot data, on the scenario's device, filed in
    `ledger` under the entry's key."""
    x, y, val_fraction = scenario.adaptation_data(task)
    return adapt(
        spec.name, analog, bank, (x, y), spec.config(), scenario.device_config(), ledger, task.name, seed,
        val_fraction=val_fraction, progress=False, previous=previous, label=spec.key,
    )  # fmt: skip


def run_unit(
    analog: nn.Module,
    bank: ProgrammedBank,
    scenario: Scenario,
    workload: Workload,
    task: TaskData,
    method_key: str,
    calibration_set: object = None,
    previous: nn.Module | None = None,
) -> tuple[UnitResult, nn.Module]:
    """One adapted and evaluated task (after `previous`, the previous task's adapted model, on a task sequence);
    the unit's result and the adapted model."""
    spec = method_entry(scenario, method_key)
    seed = derive_seed(scenario.seed, "unit", task.name, spec.key)
    ledger = scenario.new_ledger()
    result = adapt_entry(analog, bank, scenario, task, spec, ledger, seed, previous)
    wear = {name: w.as_dict() for name, w in model_wear(result.model, ledger).items()}
    gradient_based = not get_method(spec.name).gradient_free
    state = digital_state(result.model, result.trainable_params, gradient_based=gradient_based)
    accuracies = evaluate(result.model, scenario, workload, task, spec.key, seed, ledger, calibration_set)
    unit = UnitResult(
        task=task.name,
        method=spec.key,
        accuracies=accuracies,
        trainable_params=result.trainable_params,
        wear=wear,
        endurance_pulses=scenario.device_config().endurance_pulses,
        n_test=len(task.x_test),
        wall_s=result.wall_s,
        ledger_records=ledger.to_records(),
        seed=scenario.seed,
        digital_state=state.as_dict(),
        clipped_weights=int(result.details.get("clipped_weights", 0)),
    )
    return unit, result.model


def evaluate(
    model: nn.Module,
    scenario: Scenario,
    workload: Workload,
    task: TaskData,
    method: str,
    seed: int,
    ledger: Ledger,
    calibration_set: object = None,
) -> dict[float, list[float]]:
    """Test accuracy per drift time and repeat. Each (drift time, repeat) evaluates its own copy with read noise and
    drift drawn from (seed, drift time, repeat); the first fresh evaluation also records the inference energy into
    the ledger (phase `inference`). After drift, `calibration.renew_adc_after_drift` sets the ADC ranges again from
    the calibration set (reads only) and `evaluate.recalibrate_after_drift` re-reads fused layers' norms."""
    spec = scenario.evaluate
    results: dict[float, list[float]] = {}
    for drift_s in spec.drift_times_s:
        results[float(drift_s)] = []
        for repeat in range(spec.repeats):
            copy_ = copy.deepcopy(model)
            reseed(copy_, derive_seed(seed, "evaluate", repr(float(drift_s)), str(repeat)))
            scope = ledger.scope(phase="calibration", task=task.name, method=method) if repeat == 0 else None
            if drift_s > 0:
                _after_drift(copy_, float(drift_s), scenario, workload, calibration_set, scope)
            record = drift_s == spec.drift_times_s[0] and repeat == 0
            inference = ledger.scope(phase="inference", task=task.name, method=method) if record else None
            with record_all_to(copy_, inference):
                results[float(drift_s)].append(workload.evaluate(copy_, task))
    return results


def _after_drift(model: nn.Module, drift_s: float, scenario: Scenario, workload: Workload, calibration_set: object,
                 scope: LedgerScope | None) -> None:  # fmt: skip
    """Drift every array of `model` to `drift_s`, then renew the ADC ranges and re-read the norms as configured."""
    for _, layer in analog_layers(model):
        layer.drift_to(drift_s)
    spec = scenario.calibration
    if spec.renew_adc_after_drift and calibration_set is not None:
        with adc_calibration(model, scope, percentile=spec.adc_percentile, granularity=spec.adc_granularity):
            workload.calibration_forward(model, calibration_set)
    if scenario.evaluate.recalibrate_after_drift:
        recalibrate_norms(model, scope)


def recalibrate_norms(model: nn.Module, scope: LedgerScope | None) -> None:
    """Fused layers with a DoRA magnitude re-read their norm calibration from their (drifted) arrays (reads only)."""
    for module in model.modules():
        if isinstance(module, FusedLinear) and module.use_magnitude:
            module.recalibrate(scope)


def reseed(model: nn.Module, seed: int, *labels: str) -> None:
    """Give every analog layer of `model` its own read-noise stream, drawn from (seed, labels, layer name)."""
    for name, layer in analog_layers(model):
        layer.reseed_noise(derive_seed(seed, *labels, name))
