"""Sweeps (DESIGN section 11): the points of a study, and the merged outputs of a finished sweep.

A `Study` is a scenario and its points: one point for a plain run, or the combinations of a `sweep:` section /
`--sweep` options (`scenarios.loading.load_study` expands and validates them). A sweep run directory holds one
folder per point (`points/p000/`, ... each a complete run directory) and, merged over the finished points:

- `sweep.csv`: every point's metrics.csv rows, with one column per swept key path first (and `point`);
- `sweep_summary.csv`: per point, method and drift time, each headline metric's mean over target tasks, then its
  mean, standard deviation, count and 95 % confidence interval (Student t) over seeds (`scenarios.stats`);
- `figures/sweep_<metric>_vs_<key>.png/.svg`: each headline metric against each swept numeric key, one line per
  method with its 95 % CI band (other swept keys at their first value; fresh evaluation, drift 0 or the first);
- with zero_shot and a LoRA variant among the methods, `fusion_pareto.csv`, `fusion_bank.csv` and their figures
  (`scenarios.plots_fusion`: gain recovered against digital state and bank size).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.names import inside
from scenarios.quantities import energy_unit
from scenarios.schema import Scenario
from simutil import atomic_write_text

__all__ = ["HEADLINE_METRICS", "Study", "SweepPoint", "summarise_over_seeds", "write_sweep"]

HEADLINE_METRICS: tuple[str, ...] = (
    "accuracy",
    "adapt_energy_pj",
    "cell_write_pulses",
    "inference_energy_pj_per_sample",
)
"""metrics.csv columns summarised over seeds and drawn against each swept parameter."""


@dataclass(frozen=True)
class SweepPoint:
    """One point: its folder name, the swept values (key path -> value) and the validated scenario."""

    index: int
    label: str
    values: dict[str, Any]
    scenario: Scenario

    def describe(self) -> str:
        if not self.values:
            return ""
        return f"point {self.label} ({', '.join(f'{k}={v}' for k, v in self.values.items())}) "


@dataclass(frozen=True)
class Study:
    """A scenario and the points it runs (one, or a sweep's)."""

    scenario: Scenario
    points: list[SweepPoint]
    keys: list[str] = field(default_factory=list)
    """The swept key paths (seed excluded: seeds are a unit dimension of every point)."""

    @classmethod
    def single(cls, scenario: Scenario) -> Study:
        return cls(scenario, [SweepPoint(0, "p000", {}, scenario)])

    @property
    def is_sweep(self) -> bool:
        return bool(self.keys)

    def resolved_dict(self) -> dict[str, Any]:
        """What the run directory records: the scenario with its sweep section as run (including --sweep)."""
        return self.scenario.resolved_dict()


def write_sweep(run_dir: Path, study: Study, finished: dict[str, Path]) -> None:
    """Merge the finished points' metrics into sweep.csv and sweep_summary.csv and draw the sweep figures."""
    import pandas as pd

    frames = []
    for point in study.points:
        if point.label not in finished:
            continue
        metrics = pd.read_csv(finished[point.label] / "metrics.csv")
        for position, key in enumerate(study.keys):
            metrics.insert(position, key, [_cell(point.values[key])] * len(metrics))
        metrics.insert(len(study.keys), "point", point.label)
        frames.append(metrics)
    if not frames:
        return
    merged = pd.concat(frames, ignore_index=True)
    atomic_write_text(run_dir / "sweep.csv", _csv(merged))
    summary = summarise_over_seeds(merged, [*study.keys, "point"])
    atomic_write_text(run_dir / "sweep_summary.csv", _csv(summary))
    points = [{"point": p.label, **p.values} for p in study.points]
    atomic_write_text(run_dir / "sweep_points.json", json.dumps(points, indent=1, default=str))
    if study.scenario.outputs.plots:
        _figures(run_dir / "figures", summary, study, tuple(study.scenario.outputs.formats))
    _fusion_outputs(run_dir, merged, study)


def _fusion_outputs(run_dir: Path, merged: Any, study: Study) -> None:
    """With zero_shot and a LoRA variant among the methods: gain recovered by each method against digital state and
    bank size (`scenarios.plots_fusion`: fusion_pareto.csv, fusion_bank.csv and their figures)."""
    from scenarios.plots_fusion import fusion_roles, write_fusion_outputs

    roles = fusion_roles(study.scenario.methods)
    if {"zero_shot", "reference"} <= set(roles.values()):
        outputs = study.scenario.outputs
        write_fusion_outputs(run_dir, merged, roles, study.keys, plots=outputs.plots, formats=tuple(outputs.formats))


def summarise_over_seeds(metrics: Any, by: list[str]) -> Any:
    """Per (`by`..., method, drift_s): each headline metric averaged over target tasks per seed, then its mean,
    std (ddof=1), n and 95 % CI half-width over seeds (Student t, `scenarios.stats.t_interval`; NaN with one
    seed: no interval)."""
    from scenarios.stats import over_seeds

    return over_seeds(metrics, by, HEADLINE_METRICS)


def _figures(folder: Path, summary: Any, study: Study, formats: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    first_drift = sorted(summary["drift_s"].unique())[0]
    fresh = summary[summary["drift_s"] == first_drift]
    for key in study.keys:
        numeric = pd.to_numeric(fresh[key], errors="coerce")
        if numeric.isna().any():
            continue  # a categorical key (e.g. a preset name): the table has it, no line plot
        others = [k for k in study.keys if k != key]
        rows = fresh.assign(_x=numeric)
        for other in others:  # the other swept keys at their first value
            rows = rows[rows[other] == fresh[other].iloc[0]]
        for metric in HEADLINE_METRICS:
            figure, axes = plt.subplots(figsize=(7.0, 3.8))
            scale, label = _axis_scale(metric, rows[f"{metric}_mean"])
            for method, frame in rows.groupby("method", sort=False):
                frame = frame.sort_values("_x")
                mean, half = frame[f"{metric}_mean"] / scale, frame[f"{metric}_ci95"] / scale
                axes.plot(frame["_x"], mean, marker="o", label=str(method))
                axes.fill_between(frame["_x"], mean - half, mean + half, alpha=0.2)
            n_seeds = int(rows["n_seeds"].min()) if len(rows) else 0
            axes.set_xlabel(key)
            axes.set_ylabel(label)
            axes.set_title(f"{metric} vs {key} (mean, 95 % CI over {n_seeds} seed(s); drift {first_drift:g} s)",
                           fontsize=8)  # fmt: skip
            if metric != "accuracy" and (rows[f"{metric}_mean"] > 0).all() and len(rows):
                axes.set_yscale("log")
            axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # off the bands
            figure.tight_layout()
            stem = f"sweep_{metric}_vs_{key.replace('.', '_')}"
            for fmt in formats:
                figure.savefig(inside(folder, f"{stem}.{fmt}"), dpi=120)
            plt.close(figure)


def _axis_scale(metric: str, means: Any) -> tuple[float, str]:
    """(divisor, axis label) of a headline metric: energies (pJ columns) in the unit that fits their magnitude."""
    if metric.endswith("_pj") or "_pj_" in metric:
        scale, unit = energy_unit(float(v) for v in means if v > 0)
        return scale, f"{metric.replace('_pj', '').replace('_', ' ')} ({unit})"
    return 1.0, metric.replace("_", " ")


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _csv(frame: Any) -> str:
    buffer = io.StringIO()
    columns = list(frame.columns)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in frame.itertuples(index=False):
        writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()
