"""report.md of a run: the human-readable summary (means, intervals over seeds, wear per cell, deployment)
written next to the machine-readable files of `scenarios.results`."""

from __future__ import annotations

import math

from scenarios.quantities import format_duration, format_energy
from scenarios.run_statistics import Statistics
from scenarios.schema import Scenario

__all__ = ["report_markdown"]


def report_markdown(
    scenario: Scenario,
    summary: list[dict[str, object]],
    rows: list[dict[str, object]],
    deploy: dict,
    statistics: Statistics | None = None,
) -> str:
    """report.md's text: per-method means (rounded to their interval over seeds), wear, deployment, statistics."""
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
