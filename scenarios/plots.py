"""Figures of a run directory, drawn from its `metrics.csv` and `ledger.csv` (DESIGN section 6).

`metrics.csv` has one row per (method, task, drift time[, repeat]) with at least the columns in `METRIC_COLUMNS`;
`ledger.csv` is `energy.Ledger.to_csv` output. Each figure is written as `figures/<name>.<format>` (PNG and SVG by
default) with atomic writes, so a figure on disk is always whole. Matplotlib is used through `Figure` objects only
(no pyplot), so drawing leaves no global state behind and needs no display.

Zero values on log axes (no adaptation energy, drift time 0) are drawn on a symmetric-log axis whose linear part
ends at the smallest positive value, so 0 appears at its true place rather than being dropped.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from energy import KEYS, WRITE_EVENTS, Ledger, atomic_write_bytes
from scenarios.wear import rotation_switches

__all__ = ["FIGURES", "METRIC_COLUMNS", "ResultsError", "plot_lifetime", "plot_run"]

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

_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")
_ENERGY_UNITS = ((1e9, "mJ"), (1e6, "\u00b5J"), (1e3, "nJ"), (1.0, "pJ"))


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


def _ordered(values: pd.Series) -> list[str]:
    """Distinct values in order of first appearance (the runner writes methods in scenario order)."""
    return list(dict.fromkeys(values.tolist()))


def _natural_key(text: str) -> list[object]:
    """Sort key that orders blocks.2.q before blocks.10.q."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _fresh(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows at the earliest drift time (normally 0 s: just after programming)."""
    return metrics[metrics["drift_s"] == metrics["drift_s"].min()]


def _style(methods: Sequence[str]) -> dict[str, tuple[object, str]]:
    """(colour, marker) per method, fixed by the method's position so all figures agree."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {method: (palette(i % 10), _MARKERS[i % len(_MARKERS)]) for i, method in enumerate(methods)}


def _energy_unit(largest_pj: float) -> tuple[float, str]:
    for scale, unit in _ENERGY_UNITS:
        if largest_pj >= scale:
            return scale, unit
    return 1.0, "pJ"


def _log_axis_with_zero(ax, axis: str, values: np.ndarray, decade_ticks: bool = True) -> bool:
    """Log scale for `axis` ("x" or "y"); with zeros among the values, a symmetric log scale whose linear part ends
    a decade below the smallest positive value, ticked at 0 and at whole decades, so 0 sits at its true place and
    every positive value is in the logarithmic part (`decade_ticks=False` leaves ticks to the caller). Returns
    whether any zero is shown that way."""
    positive = values[values > 0]
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    if len(positive) == 0:
        return False
    if not (values <= 0).any():
        set_scale("log")
        return False
    linthresh = float(positive.min()) / 10
    set_scale("symlog", linthresh=linthresh, linscale=0.5)
    ax.minorticks_off()
    if not decade_ticks:
        return True
    first, last = math.ceil(math.log10(linthresh)), math.ceil(math.log10(float(positive.max())))
    ticks = [0.0, *(10.0**k for k in range(first, last + 1))]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)
    return True


# --- statistics for error bars (scenarios.stats: the same intervals and rounding as report.md) -------------------
def _summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % CI over seeds per method x task x drift time (task `all`: mean over tasks), as in summary.csv."""
    from scenarios.stats import summarise

    return summarise(metrics)


def _accuracy_error(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """(lower, upper) error-bar lengths in points for summary rows, and what they are: the 95 % t interval over
    seeds where there are several seeds, else the test set's 95 % Wilson interval (where n_test is known)."""
    means = 100 * rows["accuracy_mean"].to_numpy(dtype=float)
    if (rows["n_seeds"] > 1).all():
        half = 100 * rows["accuracy_ci95"].to_numpy(dtype=float)
        return half, half, "95 % CI over seeds"
    if (rows["accuracy_binom_n"] > 0).all():
        low = means - 100 * rows["accuracy_binom_low"].to_numpy(dtype=float)
        high = 100 * rows["accuracy_binom_high"].to_numpy(dtype=float) - means
        return low, high, "95 % Wilson interval of the test set (one seed)"
    nothing = np.zeros_like(means)
    return nothing, nothing, "no interval (one seed, test-set size unknown)"


def _label(method: str, row: pd.Series | None) -> str:
    """Legend label `method: mean ± CI %` rounded by scenarios.stats.format_mean_ci."""
    from scenarios.stats import format_mean_ci

    if row is None:
        return method
    binomial = (row["accuracy_binom_high"] - row["accuracy_binom_low"]) / 2 if row["accuracy_binom_n"] else None
    text = format_mean_ci(row["accuracy_mean"], row["accuracy_ci95"], scale=100, unit=" %", fallback_half=binomial)
    return f"{method}: {text}"


def _overall(summary: pd.DataFrame, method: str, drift_s: float) -> pd.Series | None:
    rows = summary[(summary["method"] == method) & (summary["task"] == "all") & (summary["drift_s"] == drift_s)]
    return rows.iloc[0] if len(rows) else None


# --- figures ---------------------------------------------------------------------------------------------------
def _energy_vs_accuracy(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    fresh = _fresh(metrics).groupby(["method", "task"], sort=False)[["adapt_energy_pj", "accuracy"]].mean()
    summary = _summary(_fresh(metrics))
    first_drift = float(metrics["drift_s"].min())
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot()
    interval = ""
    for method in methods:
        if method not in fresh.index.get_level_values(0):
            continue
        rows = fresh.loc[method]
        colour, marker = style[method]
        ax.scatter(rows["adapt_energy_pj"], 100 * rows["accuracy"], color=colour, marker=marker, s=30, alpha=0.45)
        overall = _overall(summary, method, first_drift)
        low, high, interval = _accuracy_error(summary.loc[[overall.name]]) if overall is not None else (0, 0, "")
        energy_half = overall["adapt_energy_pj_ci95"] if overall is not None else math.nan
        ax.errorbar(
            overall["adapt_energy_pj_mean"] if overall is not None else rows["adapt_energy_pj"].mean(),
            100 * overall["accuracy_mean"] if overall is not None else 100 * rows["accuracy"].mean(),
            yerr=np.array([low, high]).reshape(2, 1) if overall is not None else None,
            xerr=energy_half if math.isfinite(energy_half) and energy_half > 0 else None,
            color=colour, marker=marker, markersize=11, markeredgecolor="black", markeredgewidth=1.0,
            ecolor=colour, elinewidth=1.2, capsize=3, linestyle="", label=_label(method, overall), zorder=3,
        )  # fmt: skip
    zeros = _log_axis_with_zero(ax, "x", fresh["adapt_energy_pj"].to_numpy())
    note = " (log scale; 0 drawn at 0)" if zeros else " (log scale)"
    ax.set_xlabel(f"adaptation energy per task (pJ){note}")
    ax.set_ylabel("target-task accuracy (%)")
    ax.set_title(f"Adaptation energy vs accuracy (fresh devices; bars: {interval})" if interval else
                 "Adaptation energy vs accuracy (fresh devices)", fontsize=10)  # fmt: skip
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], marker="o", linestyle="", color="grey", alpha=0.45, markersize=6, label="one target task"),
        Line2D([], [], marker="o", linestyle="", color="grey", markeredgecolor="black", markersize=11, label="mean"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig


def _accuracy_by_task(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    fresh = _fresh(metrics)
    first_drift = float(fresh["drift_s"].min())
    tasks = _ordered(fresh["task"])
    summary = _summary(fresh)
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
        low, high, interval = _accuracy_error(rows[present])
        errors = np.zeros((2, len(groups)))
        errors[:, present] = [low, high]
        colour, _ = style[method]
        ax.bar(positions + (i - (len(methods) - 1) / 2) * width, 100 * rows["accuracy_mean"].to_numpy(dtype=float),
               width, color=colour, label=_label(method, _overall(summary, method, first_drift)),
               yerr=np.nan_to_num(errors), capsize=2, edgecolor="white", linewidth=0.5)  # fmt: skip
    ax.set_xticks(positions, groups, rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("target task")
    ax.set_title(f"Per-task accuracy by method (fresh devices; error bars: {interval})", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(3, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    return fig


def _energy_breakdown(ledger: pd.DataFrame, methods: list[str]) -> Figure:
    events = sorted(ledger["event"].unique(), key=_natural_key)
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    colours = {event: palette(i % 20) for i, event in enumerate(events)}
    deploy_phases = [p for p in _ordered(ledger["phase"]) if p not in ("adapt", "inference")]
    panels = [
        ("deployment (once)", "phase", deploy_phases, ledger[ledger["phase"].isin(deploy_phases)]),
        ("adaptation, all target tasks", "method", methods, ledger[ledger["phase"] == "adapt"]),
        ("inference, all evaluations", "method", methods, ledger[ledger["phase"] == "inference"]),
    ]
    fig = Figure(figsize=(13.0, 4.8))
    axes = fig.subplots(1, 3)
    for ax, (title, key, groups, rows) in zip(axes, panels):
        table = rows.groupby([key, "event"])["energy_pj"].sum().unstack(fill_value=0.0)
        table = table.reindex(index=groups, fill_value=0.0)
        scale, unit = _energy_unit(float(table.sum(axis=1).max()) if len(table.columns) else 0.0)
        bottom = np.zeros(len(groups))
        for event in events:
            if event in table.columns:
                values = table[event].to_numpy() / scale
                ax.bar(range(len(groups)), values, bottom=bottom, color=colours[event], width=0.7)
                bottom += values
        for x, total in enumerate(bottom):
            ax.annotate(f"{total:.3g}", (x, total), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"energy ({unit})")
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.12)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Energy breakdown by phase and event (from the ledger)")
    fig.legend(
        handles=[Patch(color=colours[e], label=e) for e in events],
        loc="lower center",
        ncols=min(6, len(events)),
        fontsize=8,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.subplots_adjust(bottom=0.3, wspace=0.35)
    return fig


def _cell_writes_per_layer(ledger: pd.DataFrame, methods: list[str]) -> Figure:
    writes = ledger[ledger["event"].isin(sorted(WRITE_EVENTS))]
    adapt = writes[writes["phase"] == "adapt"]
    layer_source = adapt if not adapt.empty else writes
    layers = sorted((layer for layer in layer_source["layer"].unique() if layer), key=_natural_key)
    if not layers:
        layers = ["(all layers)"]
    table = adapt.assign(layer=adapt["layer"].replace("", "(all layers)")).groupby(["method", "layer"])["count"].sum()
    table = table.unstack(fill_value=0.0).reindex(index=methods, columns=layers, fill_value=0.0)
    grid = table.to_numpy(dtype=float)
    fig = Figure(figsize=(max(6.0, 0.45 * len(layers) + 3.0), max(3.0, 0.5 * len(methods) + 1.8)))
    ax = fig.add_subplot()
    positive = grid[grid > 0]
    shown = np.ma.masked_less_equal(grid, 0)
    ax.set_facecolor("#eeeeee")  # cells with zero writes show the background
    norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 10)) if len(positive) else None
    image = ax.imshow(shown, aspect="auto", cmap="viridis", norm=norm)
    if norm is not None:
        fig.colorbar(image, ax=ax, label="SET + RESET pulses (count, log scale)")
    if grid.size <= 200:
        for (row, col), value in np.ndenumerate(grid):
            bright = value == 0 or (norm is not None and norm(value) > 0.6)  # viridis is light at its top end
            ax.text(col, row, "0" if value == 0 else f"{value:.2g}", ha="center", va="center", fontsize=6,
                    color="black" if bright else "white")  # fmt: skip
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("method")
    ax.set_title("Cell writes per layer during adaptation (all target tasks; grey = 0)")
    return fig


def _accuracy_vs_drift(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    summary = _summary(metrics)
    overall = summary[summary["task"] == "all"]
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    interval = ""
    for method in methods:
        rows = overall[overall["method"] == method].sort_values("drift_s")
        if rows.empty:
            continue
        colour, marker = style[method]
        times = rows["drift_s"].to_numpy(dtype=float)
        means = 100 * rows["accuracy_mean"].to_numpy(dtype=float)
        low, high, interval = _accuracy_error(rows)
        ax.plot(times, means, color=colour, marker=marker, label=method)
        ax.fill_between(times, means - np.nan_to_num(low), means + np.nan_to_num(high), color=colour, alpha=0.12)
    times = np.sort(metrics["drift_s"].unique().astype(float))
    _log_axis_with_zero(ax, "x", times, decade_ticks=False)
    ax.set_xticks(times, [_duration(t) for t in times], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("time since programming (log scale; 0 = fresh)")
    ax.set_ylabel("mean target-task accuracy (%)")
    ax.set_title(f"Accuracy vs conductance drift (band: {interval})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _duration(seconds: float) -> str:
    """A drift time as a short human label: 0, 30 s, 1 h, 1 d, 30 d, 1 y."""
    if seconds == 0:
        return "0"
    for size, unit in ((31_536_000, "y"), (86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _endurance(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    fresh = _fresh(metrics)
    # One definition with report.md: a device cycling through the target tasks (scenarios.wear.rotation_switches).
    lifetimes = {}
    for method in methods:
        rows = fresh[fresh["method"] == method]
        if len(rows):
            lifetimes[method] = rotation_switches(rows.to_dict("records"))
    finite = [v for pair in lifetimes.values() for v in pair if math.isfinite(v) and v > 0]
    top = max(finite) * 100 if finite else 10.0
    bottom = min(min(finite) / 10, 1.0) if finite else 0.1
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    ax.set_yscale("log")
    width = 0.38
    for x, (method, values) in enumerate(lifetimes.items()):
        colour, _ = style[method]
        if all(math.isinf(v) for v in values):
            ax.bar(x, top, bottom=bottom, width=2 * width, color=colour, alpha=0.35, hatch="//", edgecolor=colour)
            ax.annotate("no wear\n(no cell writes)", (x, math.sqrt(top * bottom)), ha="center", fontsize=8)
            continue
        for offset, value, alpha in ((-width / 2, values[0], 1.0), (width / 2, values[1], 0.45)):
            height = top - bottom if math.isinf(value) else (value - bottom if value > bottom else 0)
            ax.bar(x + offset, height, bottom=bottom, width=width, color=colour, alpha=alpha)
            label = "never" if math.isinf(value) else f"{value:.3g}"
            ax.annotate(label, (x + offset, min(max(value, bottom), top)), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(bottom, top)
    ax.set_xticks(range(len(lifetimes)), list(lifetimes), rotation=20, ha="right")
    ax.set_ylabel("task switches until wear-out (log scale)")
    ax.set_xlabel("method")
    ax.legend(handles=[Patch(color="0.3", label="worst cell"), Patch(color="0.3", alpha=0.45, label="average cell")],
              loc="upper right", fontsize=8)  # fmt: skip
    ax.set_title("Endurance: task switches until wear-out, cycling through the target tasks\n"
                 "(exact per-cell pulses; worst cell and average cell of the written arrays)")  # fmt: skip
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


def plot_run(run_dir: str | Path, formats: Sequence[str] = ("png", "svg"), *, lifetime: bool | None = None
             ) -> list[Path]:  # fmt: skip
    """Draw every figure of a run into `run_dir/figures/` and return the files written.

    Needs `metrics.csv`; the energy-breakdown and cell-write figures also need `ledger.csv` and are skipped (with
    a logged warning) without it. The lifetime figure is drawn with `lifetime`, or (None) when `lifetime.csv` is
    there. Raises ResultsError if a file is missing or lacks required columns.
    """
    run_dir = Path(run_dir)
    metrics = _read_metrics(run_dir)
    ledger = _read_ledger(run_dir)
    methods = _ordered(metrics["method"])
    style = _style(methods)
    folder = run_dir / "figures"
    drawers = {
        "energy_vs_accuracy": lambda: _energy_vs_accuracy(metrics, methods, style),
        "accuracy_by_task": lambda: _accuracy_by_task(metrics, methods, style),
        "energy_breakdown": (lambda: _energy_breakdown(ledger, methods)) if ledger is not None else None,
        "cell_writes_per_layer": (lambda: _cell_writes_per_layer(ledger, methods)) if ledger is not None else None,
        "accuracy_vs_drift": lambda: _accuracy_vs_drift(metrics, methods, style),
        "endurance": lambda: _endurance(metrics, methods, style),
    }
    written: list[Path] = []
    for stem in FIGURES:
        draw = drawers[stem]
        if draw is not None:
            written += _save(draw(), folder, stem, formats)
    if lifetime or (lifetime is None and (run_dir / "lifetime.csv").is_file()):
        written += plot_lifetime(run_dir, formats)
    return written


def plot_lifetime(run_dir: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """`figures/lifetime.<format>` from a lifetime study's `lifetime.csv` (`scenarios.lifetime`): accuracy (simulated
    switches) and the worst cell's wear fraction (solid: simulated, dashed: extrapolated) vs switch count."""
    run_dir = Path(run_dir)
    path = run_dir / "lifetime.csv"
    try:
        frame = pd.read_csv(path, dtype={"method": str, "task": str, "kind": str}, keep_default_na=False,
                            na_values={"accuracy": [""], "switch_pulses": [""]})  # fmt: skip
    except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ResultsError(f"{path}: not a readable lifetime table ({type(error).__name__})") from None
    needed = ("method", "seed", "switch", "kind", "accuracy", "worst_cell_wear_fraction", "mean_cell_wear_fraction")
    missing = [c for c in needed if c not in frame.columns]
    if missing or frame.empty:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing) or '(no rows)'}")
    methods = _ordered(frame["method"])
    style = _style(methods)
    fig = Figure(figsize=(11, 4.6))
    acc_ax, wear_ax = fig.subplots(1, 2)
    for method in methods:
        colour, marker = style[method]
        mine = frame[frame["method"] == method].groupby(["switch", "kind"], sort=True).mean(numeric_only=True)
        mine = mine.reset_index()
        simulated = mine[mine["kind"] == "simulated"]
        acc_ax.plot(simulated["switch"], 100 * simulated["accuracy"], marker=marker, color=colour, label=method,
                    markersize=4)  # fmt: skip
        wear = mine["worst_cell_wear_fraction"]
        if (wear > 0).any():
            wear_ax.plot(simulated["switch"], 100 * simulated["worst_cell_wear_fraction"], color=colour, label=method)
            extrapolated = pd.concat([simulated.tail(1), mine[mine["kind"] == "extrapolated"]])
            wear_ax.plot(extrapolated["switch"], 100 * extrapolated["worst_cell_wear_fraction"], color=colour,
                         linestyle="--")  # fmt: skip
    acc_ax.set_xlabel("task switch (simulated)")
    acc_ax.set_ylabel("test accuracy after the switch (%)")
    acc_ax.set_title("Accuracy over the device's life\n(drift between switches; fusion re-calibrates, LoRA rewrites)")
    acc_ax.grid(True, alpha=0.3)
    acc_ax.legend(fontsize=7)
    wear_ax.set_xscale("log")
    wear_ax.set_yscale("log")
    wear_ax.axhline(100, color="0.4", linewidth=0.8)
    wear_ax.set_xlabel("task switches (log scale)")
    wear_ax.set_ylabel("worst cell's pulses / endurance (%, log scale)")
    wear_ax.set_title("Worst-cell wear (solid: simulated, dashed: extrapolated)\nmethods without a line write nothing")
    wear_ax.grid(True, alpha=0.3, which="both")
    if wear_ax.get_legend_handles_labels()[0]:
        wear_ax.legend(fontsize=7)
    return _save(fig, run_dir / "figures", "lifetime", formats)
