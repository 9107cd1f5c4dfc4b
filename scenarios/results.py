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
from scenarios.quantities import format_duration, format_energy
from scenarios.schema import Scenario
from scenarios.stamp import run_stamp
from scenarios.wear import SwitchWear, rotation_switches, switch_wear
from simutil import atomic_write_text

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
        data["endurance_pulses"] = _json_float(self.endurance_pulses)
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
    atomic_write_text(run_dir / "results.json", json.dumps(_jsonable(results), indent=1))
    statistics = write_statistics(run_dir, rows)
    atomic_write_text(run_dir / "report.md", _report(scenario, summary, rows, deploy, statistics))
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


def _report(
    scenario: Scenario,
    summary: list[dict[str, object]],
    rows: list[dict[str, object]],
    deploy: dict,
    statistics: Statistics | None = None,
) -> str:
    first_drift = float(scenario.evaluate.drift_times_s[0])
    lines = [
        f"# {scenario.name}: results",
        "",
        f"Device `{scenario.device.preset}`, costs `{scenario.costs.preset}`, "
        f"seed{'s' if len(scenario.seed_list) > 1 else ''} {', '.join(map(str, scenario.seed_list))}. "
        f"Means over {len(scenario.tasks.targets)} target tasks (and seeds) at drift time "
        f"{format_duration(first_drift)}; "
        "accuracy ± its 95 % CI over seeds (see Statistics).",
        "",
        "| method | mean accuracy | trainable params | digital state (words / bytes)† | adapt peak state (words) | "
        "cell write pulses / task | adapt energy / task | inference energy / sample | task switches to wear-out* |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        switches = s["switches_to_wearout"]
        lines.append(
            f"| {s['method']} | {_accuracy_text(statistics, str(s['method']), first_drift) or _percent(s)} | "
            f"{int(s['trainable_params']):,} | "
            f"{int(s['digital_state_words']):,} / {int(s['digital_state_bytes']):,} B | "
            f"{int(s['adapt_state_words']):,} | "
            f"{_rounded(statistics, s, first_drift, 'cell_write_pulses', 'cell_write_pulses_per_task')} | "
            f"{_rounded(statistics, s, first_drift, 'adapt_energy_pj', 'adapt_energy_pj_per_task')} | "
            f"{_rounded(statistics, s, first_drift, 'inference_energy_pj_per_sample')} | "
            f"{'never' if math.isinf(float(switches)) else f'{float(switches):,.0f}'} |"
        )
    lines += ["", "\\* of the most-pulsed cell, for a device cycling through the target tasks (one adaptation = one "
              "task switch): endurance / that cell's mean pulses per switch; see \"Wear per cell\" below.",
              "", "† held digitally after adaptation: trained values computed digitally at inference (fusion, "
              "lorahub: coefficients and magnitudes; lora_digital: A and B) plus fused layers' calibration read-out "
              "(W0 A^T, A A^T, B_stack, ||W0||^2 per row). Adapt peak adds every trained value, its gradient and "
              "Adam's two moments (fusion.accounting.DigitalState)."]  # fmt: skip
    lines += _wear_section(scenario, summary, rows)
    n_seeds = len(scenario.seed_list)
    per_seed = f", mean per seed over {n_seeds} seeds" if n_seeds > 1 else ""
    lines += ["", f"## Deployment (once, shared by every method{per_seed})", "",
              "| phase | energy | latency | write pulses |", "|---|---:|---:|---:|"]  # fmt: skip
    for phase, values in deploy.items():
        lines.append(
            f"| {phase} | {format_energy(values['energy_pj'])} | {values['latency_s']:.3g} s | "
            f"{values['cell_write_pulses']:,.0f} |"
        )
    if statistics is not None:
        lines += _statistics_report(statistics, scenario)
    lines += ["", "Figures: `figures/` (PNG and SVG). Every energy and pulse figure comes from `ledger.csv`.", ""]
    return "\n".join(lines)


def _wear_section(scenario: Scenario, summary: list[dict[str, object]], rows: list[dict[str, object]]) -> list[str]:
    """report.md's wear table: per method, exact per-cell pulses of one task switch (mean over the target tasks of
    each switch's worst array p50 / p99 / max and its average cell) and task switches to wear-out
    (`scenarios.wear`, the definition metrics.csv and the endurance figure use)."""
    first_drift = float(scenario.evaluate.drift_times_s[0])
    endurance = {float(r["endurance_pulses"]) for r in rows}
    lines = ["", "## Wear per cell (per task switch)", "",
             f"Exact SET + RESET pulses per cell during one adaptation, from per-cell tallies; endurance "
             f"{', '.join(f'{e:,.0f}' for e in sorted(endurance))} pulses per cell (device preset). Worst array: the "
             "one holding the most-pulsed cell; p50 / p99 / max over its cells; average cell: all cells of the "
             "arrays written. Means over the target tasks.", "",
             "| method | worst array(s) | p50 | p99 | max | average cell | switches to wear-out: worst cell | "
             "average cell |", "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for s in summary:
        mine = [r for r in rows if r["method"] == s["method"] and r["drift_s"] == first_drift]
        arrays = sorted({str(r["wear_array"]) for r in mine if r["wear_array"]})
        p50 = math.fsum(float(r["wear_p50_pulses"]) for r in mine) / len(mine)
        lines.append(
            f"| {s['method']} | {', '.join(f'`{a}`' for a in arrays) or '(none written)'} | {p50:.3g} | "
            f"{float(s['wear_p99_pulses_per_switch']):.3g} | {float(s['wear_max_pulses_per_switch']):.3g} | "
            f"{float(s['wear_mean_pulses_per_switch']):.3g} | {_switches(float(s['switches_to_wearout']))} | "
            f"{_switches(float(s['switches_to_wearout_mean_cell']))} |"
        )
    return lines


def _switches(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"


# --- statistics over seeds (scenarios.stats): summary.csv, summary.json, paired.csv and the report's sections -----
STATISTICS_FILES: tuple[str, ...] = ("summary.csv", "summary.json", "paired.csv")


@dataclass(frozen=True)
class Statistics:
    """A run's summary over seeds (`scenarios.stats.summarise`) and paired comparison against fusion."""

    summary: object  # pandas.DataFrame
    paired: object  # pandas.DataFrame (empty without a fusion method)
    reference: str = "fusion"


def write_statistics(run_dir: Path, rows: list[dict[str, object]], reference: str = "fusion") -> Statistics:
    """Write summary.csv (mean and 95 % CI over seeds per method x task x drift time, `all` = mean over tasks,
    with the test set's Wilson interval), paired.csv (each method minus `reference` on the same seed and task) and
    summary.json (both, with the definitions of every interval)."""
    import pandas as pd

    from scenarios import stats

    metrics = pd.DataFrame(rows, columns=list(METRICS_COLUMNS))
    summary = stats.summarise(metrics)
    paired = stats.paired_differences(metrics, reference=reference)
    atomic_write_text(run_dir / "summary.csv", _frame_csv(summary))
    atomic_write_text(run_dir / "paired.csv", _frame_csv(paired))
    document = {
        "definitions": _DEFINITIONS | {"reference": reference},
        "summary": summary.to_dict("records"),
        "paired": paired.to_dict("records"),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(_jsonable(_plain(document)), indent=1))
    return Statistics(summary, paired, reference)


_DEFINITIONS = {
    "unit": "one metrics.csv row: (method, task, seed, drift_s); accuracy = mean over evaluate.repeats",
    "ci95": "Student-t 95 % interval over seeds: per task of the unit values; for task 'all' of the per-seed mean "
    "over target tasks (the target tasks are fixed, seeds are the random part); NaN with one seed",
    "binom": "Wilson score 95 % interval of the mean accuracy on the pooled test images "
    "(accuracy_binom_n = test images x tasks x seeds; repeats re-read the same images)",
    "paired": "method minus reference on the same (seed, task, drift_s) units; diff_ci95 is the t interval over seeds "
    "(task 'all': of the per-seed mean difference over tasks), t_p_value the two-sided one-sample t-test; "
    "wins/losses/ties and sign_p_value (exact two-sided binomial, ties dropped) over the (seed, task) pairs",
    "rounding": "half-widths to one significant digit (two if it is 1), values to the same decimal place "
    "(scenarios.stats.format_mean_ci)",
}  # fmt: skip


def _accuracy_text(statistics: Statistics | None, method: str, drift_s: float, task: str = "all") -> str:
    """A method's accuracy as `mean ± CI %` (over seeds), rounded by scenarios.stats; without an interval the
    digits follow the test set's binomial half-width."""
    from scenarios import stats

    if statistics is None:
        return ""
    frame = statistics.summary
    match = frame[(frame["method"] == method) & (frame["task"] == task) & (frame["drift_s"] == drift_s)]
    if match.empty:
        return ""
    row = match.iloc[0]
    binomial_half = (row["accuracy_binom_high"] - row["accuracy_binom_low"]) / 2
    return stats.format_mean_ci(row["accuracy_mean"], row["accuracy_ci95"], scale=100, unit=" %",
                                fallback_half=binomial_half)  # fmt: skip


def _statistics_report(statistics: Statistics, scenario: Scenario) -> list[str]:
    """The report's statistics section: accuracy with both intervals, the paired comparison, energies over seeds,
    and accuracy by task and drift time (mean ± CI over seeds)."""
    from scenarios import stats

    summary, paired, reference = statistics.summary, statistics.paired, statistics.reference
    seeds = scenario.seed_list
    drifts = list(dict.fromkeys(summary["drift_s"]))
    overall = summary[summary["task"] == "all"]
    plural = "s" if len(seeds) > 1 else ""
    lines = [
        "", f"## Statistics over seeds ({len(seeds)} seed{plural}: {', '.join(map(str, seeds))})", "",
        "Mean ± 95 % CI: Student t over seeds of the per-seed mean over target tasks (no ± with one seed). Test set: "
        "Wilson 95 % interval on the pooled test images. Δ vs " + reference + ": the paired difference on the same "
        "(seed, task) units, t interval over seeds, t-test p, and wins/losses over the (seed, task) pairs. Values "
        "are rounded to their interval's first significant digit. Definitions: `summary.json`; numbers: "
        "`summary.csv`, `paired.csv`.", "",
    ]  # fmt: skip
    for drift_s in drifts:
        lines += [f"### Drift time {format_duration(drift_s)}", "",
                  f"| method | accuracy (95 % CI, seeds) | test set (95 % Wilson) | Δ vs {reference} (95 % CI) | "
                  "t-test p | wins / losses | adapt energy / task | inference energy / sample | "
                  "write pulses / task |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in overall[overall["drift_s"] == drift_s].to_dict("records"):
            method = row["method"]
            low, high = row["accuracy_binom_low"], row["accuracy_binom_high"]
            decimals = stats.decimals_for(100 * (high - low) / 2)
            wilson = f"[{100 * low:.{max(decimals or 0, 0)}f}, {100 * high:.{max(decimals or 0, 0)}f}] %"
            delta = p_text = wins = ""
            if len(paired) and method != reference:
                match = paired[(paired["method"] == method) & (paired["task"] == "all")
                               & (paired["drift_s"] == drift_s)]  # fmt: skip
                if len(match):
                    pair = match.iloc[0]
                    delta = stats.format_mean_ci(pair["diff_mean"], pair["diff_ci95"], scale=100, unit=" pt",
                                                 fallback_half=(high - low) / 2, signed=True)  # fmt: skip
                    p_text = "n/a" if pair["t_p_value"] != pair["t_p_value"] else f"{pair['t_p_value']:.2g}"
                    wins = f"{int(pair['wins'])} / {int(pair['losses'])}"
            adapt = stats.format_si(row["adapt_energy_pj_mean"] * 1e-12, row["adapt_energy_pj_ci95"] * 1e-12, "J")
            inference = stats.format_si(row["inference_energy_pj_per_sample_mean"] * 1e-12,
                                        row["inference_energy_pj_per_sample_ci95"] * 1e-12, "J")  # fmt: skip
            pulses = stats.format_mean_ci(row["cell_write_pulses_mean"], row["cell_write_pulses_ci95"])
            lines.append(f"| {method} | {_accuracy_text(statistics, method, drift_s)} | {wilson} | {delta} | "
                         f"{p_text} | {wins} | {adapt} | {inference} | {pulses} |")  # fmt: skip
        lines.append("")
    tasks = [t for t in dict.fromkeys(summary["task"]) if t != "all"]
    lines += ["## Accuracy by task and drift time (mean ± 95 % CI over seeds)", "",
              "| method | task | " + " | ".join(format_duration(d) for d in drifts) + " |",
              "|---|---|" + "---:|" * len(drifts)]  # fmt: skip
    for method in dict.fromkeys(summary["method"]):
        for task in tasks:
            cells = [_accuracy_text(statistics, method, d, task) for d in drifts]
            lines.append(f"| {method} | {task} | " + " | ".join(cells) + " |")
    return lines


def _frame_csv(frame: object) -> str:
    """A DataFrame as CSV with `repr` floats (byte-stable, like metrics.csv)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(frame.columns))  # type: ignore[attr-defined]
    for row in frame.itertuples(index=False):  # type: ignore[attr-defined]
        writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def _plain(value: object) -> object:
    """NumPy scalars as Python numbers, NaN as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rounded(statistics: Statistics | None, summary_row: dict[str, object], drift_s: float, column: str,
             summary_key: str | None = None) -> str:  # fmt: skip
    """A summary value rounded to its interval over seeds (value only; the ± is in the statistics section)."""
    from scenarios import stats

    value = float(summary_row[summary_key or column])  # type: ignore[arg-type]
    half = math.nan
    if statistics is not None:
        frame = statistics.summary
        match = frame[(frame["method"] == summary_row["method"]) & (frame["task"] == "all")
                      & (frame["drift_s"] == drift_s)]  # fmt: skip
        if len(match):
            value, half = float(match.iloc[0][f"{column}_mean"]), float(match.iloc[0][f"{column}_ci95"])
    if column.endswith("_pj") or column.endswith("_pj_per_sample"):
        return stats.format_si(value * 1e-12, half * 1e-12, "J", show_half=False)
    return stats.format_mean_ci(value, half, show_half=False)


def _percent(summary_row: dict[str, object]) -> str:
    return f"{100 * float(summary_row['mean_accuracy']):.1f} %"


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRICS_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _jsonable(value: object) -> object:
    """Infinite floats as the strings "inf"/"-inf" (strict JSON has no infinity)."""
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
