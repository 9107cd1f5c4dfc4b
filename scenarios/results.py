"""Result files of a run: metrics.csv, results.json, ledger.csv, report.md and the figures.

Every number here comes from a unit's ledger (energy, latency, pulses) or its evaluation (accuracy); nothing is
estimated on the side. Files are written atomically, in a fixed order of rows, with `repr` floats, so two runs
with the same seed write byte-identical `metrics.csv` files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from energy import Ledger, cost_preset
from scenarios.report import report_markdown
from scenarios.run_statistics import write_statistics
from scenarios.schema import Scenario
from scenarios.stamp import run_stamp
from scenarios.wear import SwitchWear, rotation_switches, switch_wear
from simutil import atomic_write_text, finite_json

__all__ = ["METRICS_COLUMNS", "UnitResult", "metrics_rows", "write_results"]

METRICS_COLUMNS: tuple[str, ...] = (
    "method",
    "task",
    "seed",
    "drift_s",
    "accuracy",
    "accuracy_std",
    "repeats",
    "n_test",
    "trainable_params",
    "digital_state_words",
    "digital_state_bytes",
    "adapt_state_words",
    "cell_write_pulses",
    "adapt_energy_pj",
    "adapt_latency_s",
    "inference_energy_pj_per_sample",
    "wear_array",
    "wear_p50_pulses",
    "wear_p99_pulses",
    "wear_max_pulses",
    "wear_mean_pulses",
    "endurance_pulses",
    "switches_to_wearout",
    "switches_to_wearout_mean_cell",
    "clipped_weights",
)


@dataclass
class UnitResult:
    """What one (target task, method) unit produced: accuracies per drift time, wear, and its ledger rows."""

    task: str
    method: str
    accuracies: dict[float, list[float]]
    """Test accuracy (fraction) per drift time (s), one entry per repeat."""
    trainable_params: int
    wear: dict[str, dict[str, float]]
    """Per written array (ledger label): `scenarios.wear.CellWear.as_dict()` of its exact per-cell pulses during
    this adaptation (cells, p50, p99, max, mean)."""
    endurance_pulses: float
    n_test: int
    wall_s: float
    ledger_records: list[dict[str, object]] = field(default_factory=list)
    """The unit's ledger (phases `adapt`, `calibration` if any, and `inference` for its first evaluation)."""
    seed: int = 0
    """The scenario seed this unit ran with (a unit is sweep point x seed x task x method)."""
    digital_state: dict[str, int] = field(default_factory=dict)
    """The method's digital state in datapath words (`fusion.digital_state.DigitalState.as_dict`): `words` held
    for inference (kept values + calibration read-out), `adapt_words` at the peak of adaptation, and their parts."""
    clipped_weights: int = 0
    """Weights the method's last writes clipped at a fixed-scale array's weight bound (LoRA arrays)."""

    def ledger(self) -> Ledger:
        return Ledger.from_records(self.ledger_records)

    @property
    def switch_wear(self) -> SwitchWear:
        """This adaptation's wear as one task switch (`scenarios.wear.switch_wear`)."""
        return switch_wear(self.wear)

    def to_json(self) -> dict[str, object]:
        # the fields themselves (JSON types already), not `asdict`'s deep copy of every ledger record
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["accuracies"] = [[drift, values] for drift, values in self.accuracies.items()]
        data["endurance_pulses"] = finite_json(self.endurance_pulses)
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> UnitResult:
        values = dict(data)
        values["accuracies"] = {float(drift): list(accs) for drift, accs in values["accuracies"]}  # type: ignore[union-attr]
        values["endurance_pulses"] = float(values["endurance_pulses"])  # type: ignore[arg-type]
        if "wear" not in values:
            raise ValueError("unit checkpoint from before per-cell wear (no 'wear'): recomputing it")
        return cls(**values)  # type: ignore[arg-type]


def metrics_rows(units: list[UnitResult], word_bits: int = 32) -> list[dict[str, object]]:
    """One row per (method, task, drift time), accuracy averaged over repeats. `word_bits`: the cost table's
    datapath word (`CostTable.word_bits`), for the digital state in bytes."""
    rows = []
    for unit in units:
        ledger = unit.ledger()
        adapt = {"phase": "adapt"}
        inference_pj = ledger.total("energy_pj", phase="inference")
        wear = unit.switch_wear
        worst, mean_cell = wear.switches_to_wearout(unit.endurance_pulses)
        for drift_s, accuracies in unit.accuracies.items():
            mean = math.fsum(accuracies) / len(accuracies)
            std = math.sqrt(math.fsum((a - mean) ** 2 for a in accuracies) / len(accuracies))
            rows.append(
                {
                    "method": unit.method,
                    "task": unit.task,
                    "seed": unit.seed,
                    "drift_s": drift_s,
                    "accuracy": mean,
                    "accuracy_std": std,
                    "repeats": len(accuracies),
                    "n_test": unit.n_test,
                    "trainable_params": unit.trainable_params,
                    "digital_state_words": unit.digital_state.get("words", 0),
                    "digital_state_bytes": unit.digital_state.get("words", 0) * word_bits // 8,
                    "adapt_state_words": unit.digital_state.get("adapt_words", 0),
                    "cell_write_pulses": ledger.cell_write_pulses(**adapt),
                    "adapt_energy_pj": ledger.total("energy_pj", **adapt),
                    "adapt_latency_s": ledger.total("latency_ns", **adapt) * 1e-9,
                    "inference_energy_pj_per_sample": inference_pj / unit.n_test,
                    "wear_array": wear.worst_array,
                    "wear_p50_pulses": wear.p50_pulses,
                    "wear_p99_pulses": wear.p99_pulses,
                    "wear_max_pulses": wear.max_pulses,
                    "wear_mean_pulses": wear.mean_pulses,
                    "endurance_pulses": unit.endurance_pulses,
                    "switches_to_wearout": worst,
                    "switches_to_wearout_mean_cell": mean_cell,
                    "clipped_weights": unit.clipped_weights,
                }
            )
    return rows


def write_results(
    run_dir: Path,
    scenario: Scenario,
    units: list[UnitResult],
    deploy_ledger: Ledger,
    *,
    plots: bool,
    formats: tuple[str, ...],
) -> Path:
    """Write every result file of a finished run into `run_dir` and return it."""
    word_bits = cost_preset(scenario.costs.preset, **scenario.costs.overrides).word_bits
    rows = metrics_rows(units, word_bits)
    _write_csv(run_dir / "metrics.csv", rows)
    ledger = deploy_ledger
    for unit in units:
        ledger = ledger.merge(unit.ledger())
    ledger.to_csv(run_dir / "ledger.csv")
    summary = _summary(rows, scenario)
    n_seeds = max(1, len({unit.seed for unit in units}))  # deploy_ledger sums every seed's deployment
    deploy = {
        phase: {
            "energy_pj": deploy_ledger.total("energy_pj", phase=phase) / n_seeds,
            "latency_s": deploy_ledger.total("latency_ns", phase=phase) * 1e-9 / n_seeds,
            "cell_write_pulses": deploy_ledger.cell_write_pulses(phase=phase) / n_seeds,
        }
        for phase in ("deploy_base", "deploy_bank", "calibration")
    }
    results = {
        "scenario": scenario.name,
        **run_stamp(),
        "seed": scenario.seed,
        "seeds": list(scenario.seed_list),
        "device": scenario.device.preset,
        "costs": scenario.costs.preset,
        "deploy": deploy,
        "summary": summary,
        "units": [{k: v for k, v in unit.to_json().items() if k != "ledger_records"} for unit in units],
    }
    atomic_write_text(run_dir / "results.json", json.dumps(finite_json(results), indent=1))
    import pandas as pd

    statistics = write_statistics(run_dir, pd.DataFrame(rows, columns=list(METRICS_COLUMNS)))
    atomic_write_text(run_dir / "report.md", report_markdown(scenario, summary, rows, deploy, statistics))
    if plots:
        from scenarios.plots import plot_run

        plot_run(run_dir, formats=formats, lifetime=False)  # a lifetime study's: `write_lifetime`, after its table
    return run_dir


def _summary(rows: list[dict[str, object]], scenario: Scenario) -> list[dict[str, object]]:
    """Per method, at the first drift time: mean over target tasks of accuracy, pulses and energies."""
    first_drift = float(scenario.evaluate.drift_times_s[0])
    summary = []
    for spec in scenario.methods:
        mine = [r for r in rows if r["method"] == spec.key and r["drift_s"] == first_drift]
        if not mine:
            continue

        def mean(column: str, rows_: list[dict[str, object]] = mine) -> float:
            return math.fsum(float(r[column]) for r in rows_) / len(rows_)

        summary.append(
            {
                "method": spec.key,
                "mean_accuracy": mean("accuracy"),
                "trainable_params": max(int(r["trainable_params"]) for r in mine),
                "digital_state_words": max(int(r["digital_state_words"]) for r in mine),
                "digital_state_bytes": max(int(r["digital_state_bytes"]) for r in mine),
                "adapt_state_words": max(int(r["adapt_state_words"]) for r in mine),
                "cell_write_pulses_per_task": mean("cell_write_pulses"),
                "adapt_energy_pj_per_task": mean("adapt_energy_pj"),
                "adapt_latency_s_per_task": mean("adapt_latency_s"),
                "inference_energy_pj_per_sample": mean("inference_energy_pj_per_sample"),
                **_rotation_summary(mine),
            }
        )
    return summary


def _rotation_summary(rows: list[dict[str, object]]) -> dict[str, float]:
    """A method's wear summary over its task switches (rows at one drift time, one per task and seed): mean
    per-switch pulses of the worst and the average cell, and task switches to wear-out of a device cycling through
    the targets (`scenarios.wear.rotation_switches`)."""
    worst, mean_cell = rotation_switches(rows)
    n = len(rows)
    return {
        "wear_max_pulses_per_switch": math.fsum(float(r["wear_max_pulses"]) for r in rows) / n,
        "wear_p99_pulses_per_switch": math.fsum(float(r["wear_p99_pulses"]) for r in rows) / n,
        "wear_mean_pulses_per_switch": math.fsum(float(r["wear_mean_pulses"]) for r in rows) / n,
        "switches_to_wearout": worst,
        "switches_to_wearout_mean_cell": mean_cell,
    }


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRICS_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
