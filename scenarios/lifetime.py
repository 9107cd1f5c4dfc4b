"""The lifetime study (scenario key `lifetime`): one device switching between the target tasks in rotation for
`switches` task switches, `interval_s` apart, so the conductances drift between switches.

Switch k (k = 1, 2, ...) adapts to target `targets[(k - 1) % n]` at time (k - 1) * interval_s after deployment:

- task-sequence methods (`fusion.Method.task_sequence`: the LoRA arrays) adapt anew on the base drifted to that
  time, rewriting the arrays the previous switch left, which have drifted for `interval_s` since (verify-first:
  cells still within tolerance get no pulse); `lora_in_situ` retrains on the device, `lora_program_once` trains
  digitally and writes once;
- every other method keeps its per-task state digitally (fusion's coefficients and magnitudes): it adapts to a
  task once, at that task's first switch, and at later switches its stored state runs on the arrays drifted to that
  time; fused layers re-read their norm calibration from the drifted arrays first (reads only, ledger phase
  `calibration`). A method of this kind that writes (full_finetune) is charged its first adaptation's writes only.

The first `simulate_exact` switches are simulated exactly (rows `kind = simulated`: accuracy on the task's test
set, pulses, exact per-cell wear accumulated from the arrays' pulse tallies). Beyond them nothing is simulated:
each cell's wear grows at its own measured rate per switch (its pulses over the simulated switches after the
first, which writes fabricated arrays; the first switch's own rate when only one is simulated), written at
`points` log-spaced switch counts (rows `kind = extrapolated`, accuracy empty). Wear fractions are cumulative pulses
over the preset's endurance (`scenarios.wear`); a fraction >= 1 means the cell is past its rated endurance.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from crossbar import AnalogLinear, analog_layers, derive_seed
from fusion import ProgrammedBank, get_method
from fusion.analog_lora import AnalogLoRALinear
from scenarios.families import TaskData
from scenarios.schema import Scenario
from scenarios.units import adapt_entry, method_entry, recalibrate_norms, reseed
from scenarios.workloads import accuracy
from simutil import atomic_write_text

__all__ = ["LIFETIME_COLUMNS", "LifetimeResult", "simulate_lifetime", "write_lifetime"]

LIFETIME_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "switch",
    "task",
    "time_s",
    "kind",
    "accuracy",
    "switch_pulses",
    "worst_cell_pulses",
    "mean_cell_pulses",
    "worst_cell_wear_fraction",
    "mean_cell_wear_fraction",
)
"""lifetime.csv: one row per (method, seed, switch); `kind` is `simulated` or `extrapolated` (accuracy and
switch_pulses empty); cell pulses are cumulative since deployment (adaptation writes only)."""


@dataclass
class LifetimeResult:
    """One (seed, method) lifetime: its rows and the switch counts at which the worst and the average cell reach
    their endurance (inf: never, at the measured rates)."""

    method: str
    seed: int
    rows: list[dict[str, object]] = field(default_factory=list)
    wearout_switch_worst_cell: float = math.inf
    wearout_switch_mean_cell: float = math.inf

    def to_json(self) -> dict[str, object]:
        def clean(value: object) -> object:
            if isinstance(value, float) and not math.isfinite(value):
                return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            return value

        return {
            "method": self.method, "seed": self.seed,
            "rows": [{k: clean(v) for k, v in row.items()} for row in self.rows],
            "wearout_switch_worst_cell": clean(self.wearout_switch_worst_cell),
            "wearout_switch_mean_cell": clean(self.wearout_switch_mean_cell),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LifetimeResult:
        def parse(value: object) -> object:
            return float(value) if value in ("nan", "inf", "-inf") else value

        rows = [{k: parse(v) for k, v in row.items()} for row in data["rows"]]  # type: ignore[union-attr]
        return cls(str(data["method"]), int(data["seed"]), rows,  # type: ignore[arg-type]
                   float(data["wearout_switch_worst_cell"]), float(data["wearout_switch_mean_cell"]))  # type: ignore[arg-type]  # fmt: skip


def simulate_lifetime(
    analog: nn.Module,
    bank: ProgrammedBank,
    scenario: Scenario,
    tasks: dict[str, TaskData],
    method_key: str,
    set_task: Callable[[nn.Module, str], None] | None = None,
) -> LifetimeResult:
    """Run one method's lifetime on the programmed `analog` model and `bank` (see the module docstring).
    `set_task(model, task)` prepares a model for a task before adapting (a pretrained encoder's zero-shot head)."""
    spec_life = scenario.lifetime
    if spec_life is None:
        raise ValueError("scenario has no lifetime section")
    spec = method_entry(scenario, method_key)
    sequence = get_method(spec.name).task_sequence
    endurance = float(scenario.device_config().endurance_pulses)
    targets = list(scenario.tasks.targets)
    interval = float(spec_life.interval_s)
    result = LifetimeResult(method_key, scenario.seed)
    cumulative: dict[str, np.ndarray] = {}
    after_first: dict[str, np.ndarray] = {}
    stored: dict[str, tuple[nn.Module, dict[str, float]]] = {}
    previous: nn.Module | None = None
    for switch in range(1, spec_life.simulate_exact + 1):
        task = tasks[targets[(switch - 1) % len(targets)]]
        time_s = (switch - 1) * interval
        seed = derive_seed(scenario.seed, "lifetime", method_key, str(switch))
        ledger = scenario.new_ledger()
        if sequence or task.name not in stored:
            base, base_bank = _drifted(analog, bank, time_s)
            if set_task is not None:
                set_task(base, task.name)
            if previous is not None:
                for module in previous.modules():
                    if isinstance(module, AnalogLoRALinear):
                        for array in (module.array_a, module.array_b):
                            array.drift_to(array.time_s + interval)
            adapted = adapt_entry(base, base_bank, scenario, task, spec, ledger, seed,
                                  previous if sequence else None).model  # fmt: skip
            for module in adapted.modules():
                if isinstance(module, AnalogLinear) and module.pulse_tally is not None and module.pulse_tally.size:
                    pulses = module.cell_pulses().astype(np.float64)
                    if pulses.any():
                        cumulative[module.name] = cumulative.get(module.name, 0.0) + pulses
                        if switch > 1:
                            after_first[module.name] = after_first.get(module.name, 0.0) + pulses
            if sequence:
                previous = adapted
            else:  # when each array was last programmed (deployment, or this adaptation if it rewrote it)
                stored[task.name] = (adapted, {name: time_s - layer.time_s for name, layer in analog_layers(adapted)})
            model = adapted
        else:
            held, programmed_at = stored[task.name]
            model = copy.deepcopy(held)
            if set_task is not None:
                set_task(model, task.name)
            for name, layer in analog_layers(model):  # drift clocks count from each array's latest programming
                layer.drift_to(max(time_s - programmed_at[name], layer.time_s))
            recalibrate_norms(model, ledger.scope(phase="calibration", task=task.name, method=method_key))
        evaluated = copy.deepcopy(model)
        reseed(evaluated, seed, "evaluate")
        worst, mean = _wear(cumulative)
        result.rows.append({
            "method": method_key, "seed": scenario.seed, "switch": switch, "task": task.name, "time_s": time_s,
            "kind": "simulated", "accuracy": accuracy(evaluated, task.x_test, task.y_test),
            "switch_pulses": ledger.cell_write_pulses(phase="adapt"), "worst_cell_pulses": worst,
            "mean_cell_pulses": mean, "worst_cell_wear_fraction": worst / endurance,
            "mean_cell_wear_fraction": mean / endurance,
        })  # fmt: skip
    _extrapolate(result, scenario, cumulative, after_first, endurance)
    return result


def _extrapolate(result: LifetimeResult, scenario: Scenario, cumulative: dict[str, np.ndarray],
                 after_first: dict[str, np.ndarray], endurance: float) -> None:  # fmt: skip
    """Append the extrapolated rows (each cell's wear growing at its measured rate per switch) and set the wear-out
    switch counts of `result`."""
    spec_life = scenario.lifetime
    assert spec_life is not None
    targets, interval = list(scenario.tasks.targets), float(spec_life.interval_s)
    exact = spec_life.simulate_exact
    rates = {name: (after_first[name] / (exact - 1) if exact > 1 and name in after_first else
                    (cumulative[name] if exact == 1 else np.zeros_like(cumulative[name])))
             for name in cumulative}  # fmt: skip
    if exact < spec_life.switches:
        grid = np.unique(np.round(np.geomspace(exact, spec_life.switches, spec_life.points)).astype(int))
        for switch in (int(n) for n in grid if n > exact):
            worst, mean = _wear({name: cumulative[name] + rates[name] * (switch - exact) for name in cumulative})
            result.rows.append({
                "method": result.method, "seed": scenario.seed, "switch": switch,
                "task": targets[(switch - 1) % len(targets)], "time_s": (switch - 1) * interval,
                "kind": "extrapolated", "accuracy": math.nan, "switch_pulses": math.nan, "worst_cell_pulses": worst,
                "mean_cell_pulses": mean, "worst_cell_wear_fraction": worst / endurance,
                "mean_cell_wear_fraction": mean / endurance,
            })  # fmt: skip
    result.wearout_switch_worst_cell, result.wearout_switch_mean_cell = _wearout(cumulative, rates, exact, endurance)


def _drifted(analog: nn.Module, bank: ProgrammedBank, time_s: float) -> tuple[nn.Module, ProgrammedBank]:
    """Copies of the deployed base and bank with every array drifted to `time_s` after deployment."""
    base, base_bank = copy.deepcopy((analog, bank))
    if time_s > 0:
        for _, layer in analog_layers(base):
            layer.drift_to(time_s)
        for pair in base_bank.layers.values():
            for layer in (pair.a, pair.b):
                layer.drift_to(time_s)
    return base, base_bank


def _wear(cumulative: dict[str, np.ndarray]) -> tuple[float, float]:
    """(worst cell, average cell) cumulative pulses over the written arrays (0, 0 when nothing was written)."""
    if not cumulative:
        return 0.0, 0.0
    worst = max(float(values.max()) for values in cumulative.values())
    cells = sum(values.size for values in cumulative.values())
    return worst, math.fsum(float(values.sum()) for values in cumulative.values()) / cells


def _wearout(cumulative: dict[str, np.ndarray], rates: dict[str, np.ndarray], exact: int, endurance: float
             ) -> tuple[float, float]:  # fmt: skip
    """Switch counts at which the first cell, and the average cell, reach `endurance` at the measured rates."""
    if not cumulative or math.isinf(endurance):
        return math.inf, math.inf
    first = math.inf
    total_now, total_rate, cells = 0.0, 0.0, 0
    for name, values in cumulative.items():
        rate = rates[name]
        if np.any(values >= endurance):
            first = min(first, float(exact))
        moving = rate > 0
        if moving.any():
            first = min(first, exact + float(np.min((endurance - values[moving]) / rate[moving])))
        total_now += float(values.sum())
        total_rate += float(rate.sum())
        cells += values.size
    mean_now, mean_rate = total_now / cells, total_rate / cells
    average = exact + (endurance - mean_now) / mean_rate if mean_rate > 0 else math.inf
    return max(first, 0.0), max(average, 0.0)


def write_lifetime(
    run_dir: Path, scenario: Scenario, results: list[LifetimeResult], *, plots: bool, formats: tuple[str, ...]
) -> None:
    """lifetime.csv (rows in method, seed, switch order), the lifetime figure, and a section appended to
    report.md (written by `scenarios.results.write_results` before)."""
    rows = [row for result in results for row in result.rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LIFETIME_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else repr(v) if isinstance(v, float) else v)
                         for k, v in row.items()})  # fmt: skip
    atomic_write_text(run_dir / "lifetime.csv", buffer.getvalue())
    report = run_dir / "report.md"
    text = report.read_text() if report.is_file() else ""
    atomic_write_text(report, text.rstrip("\n") + "\n" + "\n".join(_report_section(scenario, results)) + "\n")
    if plots:
        from scenarios.plots import plot_lifetime

        plot_lifetime(run_dir, formats=formats)


def _report_section(scenario: Scenario, results: list[LifetimeResult]) -> list[str]:
    life = scenario.lifetime
    assert life is not None
    lines = ["", "## Lifetime", "",
             f"{life.switches:,} task switches through the {len(scenario.tasks.targets)} targets in rotation, "
             f"{life.interval_s:g} s apart (arrays drift in between). Switches 1-{life.simulate_exact} simulated "
             f"exactly; beyond, each cell's wear is extrapolated from its measured pulses per switch (lifetime.csv "
             "column `kind`). Fused layers re-read their calibration after drift (reads only); LoRA arrays are "
             "rewritten at every switch. Means over seeds.", "",
             f"| method | accuracy, switch 1 | accuracy, switch {life.simulate_exact} | mean accuracy (simulated) | "
             f"worst-cell wear at switch {life.switches:,} | switches to wear-out: worst cell | average cell |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for method in dict.fromkeys(r.method for r in results):
        mine = [r for r in results if r.method == method]
        simulated = [row for r in mine for row in r.rows if row["kind"] == "simulated"]
        last_rows = [max(r.rows, key=lambda row: row["switch"]) for r in mine]

        def mean(values: list[float]) -> float:
            return math.fsum(values) / len(values)

        first = mean([float(row["accuracy"]) for row in simulated if row["switch"] == 1])
        final = mean([float(row["accuracy"]) for row in simulated if row["switch"] == life.simulate_exact])
        overall = mean([float(row["accuracy"]) for row in simulated])
        wear = mean([float(row["worst_cell_wear_fraction"]) for row in last_rows])
        worst = min(r.wearout_switch_worst_cell for r in mine)
        average = min(r.wearout_switch_mean_cell for r in mine)
        lines.append(
            f"| {method} | {100 * first:.1f} % | {100 * final:.1f} % | {100 * overall:.1f} % | {100 * wear:.3g} % | "
            f"{_count(worst)} | {_count(average)} |"
        )
    lines += ["", "Wear: cumulative exact pulses of the most-pulsed cell over the preset's endurance; switches to "
              "wear-out: when the first cell, and the average cell, reach the endurance at the measured per-switch "
              "rates (lowest over seeds). Figure: `figures/lifetime.png`."]  # fmt: skip
    return lines


def _count(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"
