"""Figures of a run directory, drawn from its `metrics.csv` and `ledger.csv` (DESIGN section 6).

`metrics.csv` has one row per (method, task, seed, drift time) with at least the columns in `METRIC_COLUMNS`;
`ledger.csv` is `energy.Ledger.to_csv` output. Each figure is written as `figures/<name>.<format>` (PNG and SVG by
default) with atomic writes, so a figure on disk is always whole. Matplotlib is used through `Figure` objects only
(no pyplot), so drawing leaves no global state behind and needs no display; `draw_figures` returns them unsaved.

What every figure shares (and tests check on the drawn data): per-seed means with the 95 % t interval over seeds,
as report.md and summary.csv give them (`scenarios.stats`); energies in the unit that fits their magnitude and
drift times in human units (`scenarios.quantities`); no logarithmic axis through 0; legends outside the data; value
labels inside their axes. The energy and write figures live in `scenarios.plots_energy`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from energy import KEYS, Ledger
from scenarios import plot_style as ps
from scenarios.plots_energy import cell_writes_per_layer, energy_breakdown, energy_vs_accuracy
from scenarios.quantities import format_duration
from scenarios.stats import t_interval
from scenarios.wear import rotation_switches, switches_to_wearout
from simutil import atomic_write_bytes

__all__ = ["FIGURES", "METRIC_COLUMNS", "ResultsError", "draw_figures", "draw_lifetime", "plot_lifetime", "plot_run"]

logger = logging.getLogger(__name__)

METRIC_COLUMNS: tuple[str, ...] = (
    "method",
    "task",
    "drift_s",
    "accuracy",
    "trainable_params",
    "cell_write_pulses",
    "adapt_energy_pj",
    "adapt_latency_s",
    "inference_energy_pj_per_sample",
    "switches_to_wearout",
    "wear_max_pulses",
    "wear_mean_pulses",
    "endurance_pulses",
)
"""Columns plot_run needs in metrics.csv (accuracy as a fraction in [0, 1]; switches_to_wearout and
endurance_pulses may be inf)."""

FIGURES: tuple[str, ...] = (
    "energy_vs_accuracy",
    "accuracy_by_task",
    "energy_breakdown",
    "cell_writes_per_layer",
    "accuracy_vs_drift",
    "endurance",
)
"""File stems of the figures, in drawing order. The two ledger figures are skipped when ledger.csv is absent."""


class ResultsError(ValueError):
    """A run directory's result files are missing or malformed (one-line message naming the file)."""


# --- reading ---------------------------------------------------------------------------------------------------
def _read_metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv with the METRIC_COLUMNS checked present and numeric (extra columns are kept)."""
    path = run_dir / "metrics.csv"
    label_columns = ("method", "task")
    try:
        frame = pd.read_csv(path, dtype={column: str for column in label_columns}, keep_default_na=False)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not a readable CSV file ({type(error).__name__})") from None
    missing = [column for column in METRIC_COLUMNS if column not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}, expected {', '.join(METRIC_COLUMNS)}")
    if frame.empty:
        raise ResultsError(f"{path}: has no rows, expected one row per method, task and drift time")
    if "seed" not in frame.columns:  # metrics.csv from before seeds: one seed
        frame["seed"] = 0
    for column in METRIC_COLUMNS:
        if column not in label_columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():
                raise ResultsError(f"{path}: column {column} has non-numeric values, expected numbers")
            frame[column] = values.astype(float)
    return frame


def _read_ledger(run_dir: Path) -> pd.DataFrame | None:
    """The ledger's rows, read and checked by `energy.Ledger.from_csv`; None (with a warning) if there is none."""
    path = run_dir / "ledger.csv"
    if not path.is_file():
        logger.warning("%s not found: skipping the energy breakdown and cell-write figures", path)
        return None
    try:
        records = Ledger.from_csv(path).to_records()
    except (ValueError, KeyError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not a valid ledger export ({' '.join(str(error).split())[:160]})") from None
    return pd.DataFrame(records, columns=list(KEYS) + ["count", "energy_pj", "latency_ns"])


# --- accuracy figures ------------------------------------------------------------------------------------------
def _accuracy_by_task(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    fresh = ps.fresh(metrics)
    first_drift = float(fresh["drift_s"].min())
    tasks = ps.ordered(fresh["task"])
    summary = ps.summary(fresh)
    groups = [*tasks, "mean"]
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(max(7.0, 1.3 * len(groups) + 2.5), 4.8))
    ax = fig.add_subplot()
    positions = np.arange(len(groups))
    interval = ""
    for i, method in enumerate(methods):
        mine = summary[summary["method"] == method].set_index("task")
        if mine.empty:
            continue
        rows = mine.reindex([*tasks, "all"])
        present = rows["accuracy_mean"].notna().to_numpy()
        low, high, interval = ps.accuracy_error(rows[present])
        errors = np.zeros((2, len(groups)))
        errors[:, present] = [low, high]
        colour, _ = style[method]
        ax.bar(positions + (i - (len(methods) - 1) / 2) * width, 100 * rows["accuracy_mean"].to_numpy(dtype=float),
               width, color=colour, label=ps.label(method, ps.overall(summary, method, first_drift)),
               yerr=np.nan_to_num(errors), capsize=2, edgecolor="white", linewidth=0.5)  # fmt: skip
    ax.set_xticks(positions, groups, rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("target task")
    ax.set_title(f"Per-task accuracy by method (fresh devices; error bars: {interval})", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(3, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    return fig


def _accuracy_vs_drift(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    """Mean accuracy over target tasks at each evaluated drift time (evenly spaced, labelled in human units), each
    method's points side by side with the 95 % CI over seeds as error bars; the legend outside the axes."""
    summary = ps.summary(metrics)
    overall = summary[summary["task"] == "all"]
    times = sorted(float(t) for t in metrics["drift_s"].unique())
    position = {t: i for i, t in enumerate(times)}
    fig = Figure(figsize=(8.5, 4.8))
    ax = fig.add_subplot()
    interval = ""
    step = 0.5 / max(1, len(methods))
    for i, method in enumerate(methods):
        rows = overall[overall["method"] == method].sort_values("drift_s")
        if rows.empty:
            continue
        colour, marker = style[method]
        x = np.array([position[float(t)] for t in rows["drift_s"]]) + (i - (len(methods) - 1) / 2) * step
        low, high, interval = ps.accuracy_error(rows)
        ax.errorbar(x, 100 * rows["accuracy_mean"].to_numpy(dtype=float), yerr=[np.nan_to_num(low),
                    np.nan_to_num(high)], color=colour, marker=marker, markersize=5, capsize=2, linewidth=1.2,
                    label=method)  # fmt: skip
    ax.set_xticks(range(len(times)), [format_duration(t) for t in times])
    ax.set_xlim(-0.5, len(times) - 0.5)
    ax.set_xlabel("time since programming (the evaluated drift times, evenly spaced; 0 s = fresh)")
    ax.set_ylabel("mean target-task accuracy (%)")
    ax.set_title(f"Accuracy vs conductance drift (mean over target tasks; error bars: {interval})", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


# --- endurance -------------------------------------------------------------------------------------------------
def _wearout_over_seeds(rows: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """(switches to wear-out, 95 % CI low, high) for the worst and the average cell of a device cycling through
    the target tasks. The value is report.md's (`scenarios.wear.rotation_switches`); the interval is the t interval
    over seeds of the per-seed mean pulses per switch, mapped through endurance / pulses (inf where it reaches 0)."""
    worst, average = rotation_switches(rows.to_dict("records"))
    endurance = float(rows["endurance_pulses"].iloc[0])
    result = {}
    cells = (("worst cell", "wear_max_pulses", worst), ("average cell", "wear_mean_pulses", average))
    for name, column, value in cells:
        interval = t_interval(rows.groupby("seed")[column].mean())
        if math.isinf(value) or not math.isfinite(interval.half):
            result[name] = (value, value, value)
            continue
        high_pulses, low_pulses = interval.mean + interval.half, interval.mean - interval.half
        upper = switches_to_wearout(low_pulses, endurance) if low_pulses > 0 else math.inf
        result[name] = (value, switches_to_wearout(high_pulses, endurance), upper)
    return result


def _endurance(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    """Task switches until the worst and the average cell wear out (report.md's numbers) with their 95 % CI over
    seeds on a log axis; methods that never write are marked `never` at the top edge, with no bar or point."""
    fresh = ps.fresh(metrics)
    lifetimes = {m: _wearout_over_seeds(fresh[fresh["method"] == m]) for m in methods if (fresh["method"] == m).any()}
    finite = [v for entry in lifetimes.values() for triple in entry.values() for v in triple if math.isfinite(v)]
    bottom, top = (min(finite) / 5, max(finite) * 40) if finite else (1.0, 1e3)
    fig = Figure(figsize=(8.5, 4.8))
    ax = fig.add_subplot()
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    for x, (method, entry) in enumerate(lifetimes.items()):
        colour, marker = style[method]
        if all(math.isinf(value) for value, _, _ in entry.values()):
            ax.text(x, 0.97, "never\n(no writes)", ha="center", va="top", fontsize=7.5, color=colour,
                    fontweight="bold", transform=edge, gid=f"never:{method}")  # fmt: skip
            continue
        for offset, (name, (value, low, high)) in zip((-0.12, 0.12), entry.items()):
            shown_high = min(high, top)
            ax.errorbar(x + offset, value, yerr=[[value - low], [shown_high - value]], color=colour, marker=marker,
                        markersize=8, markerfacecolor=colour if name == "worst cell" else "white", capsize=3,
                        linestyle="", gid=f"{name}:{method}")  # fmt: skip
            ax.annotate(f"{value:,.0f}", (x + offset, value), xytext=(-7 if offset < 0 else 7, 0),
                        textcoords="offset points", ha="right" if offset < 0 else "left", va="center",
                        fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(lifetimes)), list(lifetimes), rotation=20, ha="right")
    ax.set_xlim(-0.6, len(lifetimes) - 0.4)
    ax.set_ylabel("task switches until wear-out (log scale)")
    ax.set_xlabel("method")
    ax.legend(handles=[Line2D([], [], marker="o", color="0.3", linestyle="", label="worst cell"),
                       Line2D([], [], marker="o", color="0.3", markerfacecolor="white", linestyle="",
                              label="average cell\n(of the written arrays)")],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)  # fmt: skip
    ax.set_title("Endurance: task switches until wear-out, cycling through the target tasks\n"
                 "(exact per-cell pulses; error bars: 95 % CI over seeds)", fontsize=10)  # fmt: skip
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# --- entry point -----------------------------------------------------------------------------------------------
def _save(fig: Figure, folder: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        # No timestamp and a fixed id salt in SVGs: identical inputs give identical files.
        metadata = {"Date": None} if fmt == "svg" else {}
        with rc_context({"svg.hashsalt": "crossbar-sim"}):
            fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
        path = folder / f"{stem}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def draw_figures(run_dir: str | Path) -> dict[str, Figure]:
    """Every figure of a run directory, drawn but not saved, by file stem in FIGURES order (the two ledger figures
    only with `ledger.csv`). Raises ResultsError if a file is missing or lacks required columns."""
    run_dir = Path(run_dir)
    metrics = _read_metrics(run_dir)
    ledger = _read_ledger(run_dir)
    methods = ps.ordered(metrics["method"])
    style = ps.style(methods)
    drawers = {
        "energy_vs_accuracy": lambda: energy_vs_accuracy(metrics, methods, style),
        "accuracy_by_task": lambda: _accuracy_by_task(metrics, methods, style),
        "energy_breakdown": lambda: energy_breakdown(ledger, metrics, methods),
        "cell_writes_per_layer": lambda: cell_writes_per_layer(ledger, metrics, methods),
        "accuracy_vs_drift": lambda: _accuracy_vs_drift(metrics, methods, style),
        "endurance": lambda: _endurance(metrics, methods, style),
    }
    needs_ledger = {"energy_breakdown", "cell_writes_per_layer"}
    return {stem: drawers[stem]() for stem in FIGURES if ledger is not None or stem not in needs_ledger}


def plot_run(run_dir: str | Path, formats: Sequence[str] = ("png", "svg"), *, lifetime: bool | None = None
             ) -> list[Path]:  # fmt: skip
    """Draw every figure of a run into `run_dir/figures/` and return the files written.

    Needs `metrics.csv`; the energy-breakdown and cell-write figures also need `ledger.csv` and are skipped (with
    a logged warning) without it. The lifetime figure is drawn with `lifetime`, or (None) when `lifetime.csv` is
    there. Raises ResultsError if a file is missing or lacks required columns.
    """
    run_dir = Path(run_dir)
    written: list[Path] = []
    for stem, fig in draw_figures(run_dir).items():
        written += _save(fig, run_dir / "figures", stem, formats)
    if lifetime or (lifetime is None and (run_dir / "lifetime.csv").is_file()):
        written += plot_lifetime(run_dir, formats)
    return written


# --- lifetime --------------------------------------------------------------------------------------------------
def _read_lifetime(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "lifetime.csv"
    try:
        frame = pd.read_csv(path, dtype={"method": str, "task": str, "kind": str}, keep_default_na=False,
                            na_values={"accuracy": [""], "switch_pulses": [""]})  # fmt: skip
    except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ResultsError(f"{path}: not a readable lifetime table ({type(error).__name__})") from None
    needed = ("method", "seed", "switch", "task", "kind", "accuracy", "worst_cell_wear_fraction")
    missing = [c for c in needed if c not in frame.columns]
    if missing or frame.empty:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing) or '(no rows)'}")
    return frame


def _lifetime_accuracy(ax: Axes, frame: pd.DataFrame, methods: list[str], style: dict) -> list[Line2D]:
    """Accuracy after each simulated switch, one line per (method, task) joining the switches to that task (so
    alternating tasks do not zig-zag), mean with the 95 % CI over seeds; x ticks name each switch's task. Returns
    the legend handles that say which line style is which task."""
    simulated = frame[frame["kind"] == "simulated"]
    tasks = ps.ordered(simulated["task"])
    dashes = dict(zip(tasks, cycle(["-", "--", ":", "-."])))
    for method in methods:
        colour, marker = style[method]
        for task in tasks:
            rows = simulated[(simulated["method"] == method) & (simulated["task"] == task)]
            if rows.empty:
                continue
            intervals = [(s, t_interval(g["accuracy"])) for s, g in rows.groupby("switch", sort=True)]
            ax.errorbar([s for s, _ in intervals], [100 * i.mean for _, i in intervals],
                        yerr=[100 * np.nan_to_num(i.half) for _, i in intervals], color=colour, marker=marker,
                        markersize=4, linestyle=dashes[task], capsize=2, gid=f"{method}|{task}")  # fmt: skip
    switch_task = simulated.drop_duplicates("switch").sort_values("switch").set_index("switch")["task"]
    if len(switch_task) <= 12:
        ax.set_xticks(list(switch_task.index), [f"{s}\n{t}" for s, t in switch_task.items()], fontsize=7)
    ax.set_xlabel("task switch (simulated) and the task switched to")
    ax.set_ylabel("test accuracy after the switch (%)")
    ax.set_title("Accuracy after each task switch\n(drift between switches; fusion re-calibrates, LoRA rewrites)",
                 fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    return [Line2D([], [], color="0.3", linestyle=dashes[task],
                   label=f"{task} (switches {', '.join(str(s) for s in switch_task.index[switch_task == task][:4])}"
                   f"{', ...' if (switch_task == task).sum() > 4 else ''})") for task in tasks]  # fmt: skip


def _lifetime_wear(ax: Axes, frame: pd.DataFrame, methods: list[str], style: dict) -> None:
    """The worst cell's cumulative pulses / endurance vs switch count (solid: simulated, dashed: extrapolated)."""
    for method in methods:
        colour, _ = style[method]
        mine = frame[frame["method"] == method].groupby(["switch", "kind"], sort=True).mean(numeric_only=True)
        mine = mine.reset_index()
        if not (mine["worst_cell_wear_fraction"] > 0).any():
            continue
        simulated = mine[mine["kind"] == "simulated"]
        ax.plot(simulated["switch"], 100 * simulated["worst_cell_wear_fraction"], color=colour)
        extrapolated = pd.concat([simulated.tail(1), mine[mine["kind"] == "extrapolated"]])
        ax.plot(extrapolated["switch"], 100 * extrapolated["worst_cell_wear_fraction"], color=colour, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(100, color="0.4", linewidth=0.8)
    ax.set_xlabel("task switches (log scale)")
    ax.set_ylabel("worst cell's pulses / endurance (%, log scale)")
    ax.set_title("Worst-cell wear (solid: simulated, dashed: extrapolated)\nmethods without a line write nothing",
                 fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3, which="both")


def draw_lifetime(run_dir: str | Path) -> Figure:
    """The lifetime figure of a lifetime study's `lifetime.csv` (`scenarios.lifetime`), drawn but not saved."""
    frame = _read_lifetime(Path(run_dir))
    methods = ps.ordered(frame["method"])
    style = ps.style(methods)
    fig = Figure(figsize=(12, 5.6))
    acc_ax, wear_ax = fig.subplots(1, 2)
    task_handles = _lifetime_accuracy(acc_ax, frame, methods, style)
    _lifetime_wear(wear_ax, frame, methods, style)
    method_handles = [Line2D([], [], color=style[m][0], marker=style[m][1], label=m) for m in methods]
    fig.subplots_adjust(wspace=0.3)
    ps.legend_below(fig, [*method_handles, *task_handles], ncols=max(len(methods), len(task_handles)), rows=2)
    return fig


def plot_lifetime(run_dir: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """`figures/lifetime.<format>` from a lifetime study's `lifetime.csv`: accuracy after each simulated switch
    (one line per task) and the worst cell's wear fraction (solid: simulated, dashed: extrapolated)."""
    return _save(draw_lifetime(run_dir), Path(run_dir) / "figures", "lifetime", formats)
