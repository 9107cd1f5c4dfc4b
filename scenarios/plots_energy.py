"""The energy and write figures of a run (`scenarios.plots.plot_run` draws and saves them).

Every energy is drawn in the unit that fits its magnitude (`scenarios.quantities.energy_unit`) and, like
report.md, as a per-seed mean with the 95 % t interval over seeds (`scenarios.stats`): per target task for
adaptation, per test sample for inference, per device for deployment. The ledger (`ledger.csv`) sums over seeds and
tasks; it gives each event's share, and the bars' totals are metrics.csv's means, the numbers report.md prints.
No energy axis is logarithmic through 0: methods that spend no adaptation energy get a panel of their own.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from energy import WRITE_EVENTS
from scenarios import plot_style as ps
from scenarios.quantities import energy_unit, format_count, format_energy
from scenarios.stats import format_mean_ci, format_si

__all__ = ["cell_writes_per_layer", "energy_breakdown", "energy_panels", "energy_vs_accuracy"]

CLUSTER_RATIO = 3.0
"""Adapting methods whose mean energies differ by more than this factor go to separate zoomed panels."""
MAX_ZOOMED_PANELS = 3
"""Above this many energy clusters, one logarithmic panel (it holds no zero) shows every adapting method."""
_DEPLOY_ORDER = ("deploy_base", "deploy_bank", "calibration")
"""Deployment phases in the order they happen (others after them)."""


def energy_panels(means_pj: dict[str, float]) -> list[tuple[str, list[str]]]:
    """Panels of the energy-vs-accuracy figure as (kind, methods): `zero` for methods without adaptation energy,
    then one `linear` panel per cluster of adapting methods (zoomed on them), or a single `log` panel when the
    clusters are too many; methods keep their given order inside a panel."""
    zero = [m for m, e in means_pj.items() if e == 0]
    clusters: list[list[tuple[float, str]]] = []
    for energy, method in sorted((e, m) for m, e in means_pj.items() if e > 0):
        if clusters and energy <= CLUSTER_RATIO * clusters[-1][-1][0]:
            clusters[-1].append((energy, method))
        else:
            clusters.append([(energy, method)])
    order = list(means_pj)
    groups = [sorted((m for _, m in cluster), key=order.index) for cluster in clusters]
    panels = [("zero", zero)] if zero else []
    if len(groups) > MAX_ZOOMED_PANELS:
        return [*panels, ("log", sorted((m for g in groups for m in g), key=order.index))]
    return [*panels, *(("linear", group) for group in groups)]


def energy_vs_accuracy(metrics: pd.DataFrame, methods: list[str], style: dict) -> Figure:
    """Accuracy vs adaptation energy per task on fresh devices: per-seed means with 95 % CIs over seeds on both
    axes, faint points per target task; zero-energy methods in a panel of their own, the others zoomed."""
    fresh = ps.fresh(metrics)
    summary = ps.summary(fresh)
    first_drift = float(fresh["drift_s"].min())
    points = fresh.groupby(["method", "task"], sort=False)[["adapt_energy_pj", "accuracy"]].mean()
    rows = {m: r for m in methods if (r := ps.overall(summary, m, first_drift)) is not None}
    panels = energy_panels({m: float(r["adapt_energy_pj_mean"]) for m, r in rows.items()})
    fig = Figure(figsize=(9.0, 5.8))
    widths = [1.0 if kind == "zero" else 1.2 + 0.6 * len(members) for kind, members in panels]
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False,
                        gridspec_kw={"width_ratios": widths, "wspace": 0.08})[0]  # fmt: skip
    interval = ""
    for ax, (kind, members) in zip(axes, panels):
        ax.set_label(f"energy:{kind}")
        values = [*points.loc[members, "adapt_energy_pj"], *(rows[m]["adapt_energy_pj_mean"] for m in members)]
        scale, unit = energy_unit(values)
        for i, method in enumerate(members):
            shift = (i - (len(members) - 1) / 2) * 0.5 if kind == "zero" else 0.0
            interval = _draw_method(ax, points.loc[method], rows[method], summary, style[method], scale, shift)
        _dress_panel(ax, kind, unit, len(members))
    for left, right in zip(axes[:-1], axes[1:]):
        ps.break_marks(left, right)
    axes[0].set_ylabel("target-task accuracy (%)")
    fig.suptitle(f"Adaptation energy per target task vs accuracy, fresh devices (error bars: {interval})\n"
                 "each panel in its own energy unit; // marks a cut in the energy axis", fontsize=10)  # fmt: skip
    fig.subplots_adjust(top=0.88)
    drawn = {lab.split(":")[0]: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    handles = [drawn[m] for m in methods if m in drawn]
    handles += [
        Line2D([], [], marker="o", linestyle="", color="grey", alpha=0.45, markersize=6, label="one target task"),
        Line2D([], [], marker="o", linestyle="", color="grey", markeredgecolor="black", markersize=9,
               label="mean over target tasks"),
    ]  # fmt: skip
    ps.legend_below(fig, handles, ncols=2, rows=math.ceil(len(handles) / 2))
    return fig


def _draw_method(ax: Axes, points: pd.DataFrame, row: pd.Series, summary: pd.DataFrame, style: tuple,
                 scale: float, shift: float) -> str:  # fmt: skip
    """One method's per-task points and its mean with error bars (x in the panel's unit, `shift` added for the
    zero panel's side-by-side placement); returns what the accuracy error bars are."""
    colour, marker = style
    method = str(row["method"])
    ax.scatter(points["adapt_energy_pj"] / scale + shift, 100 * points["accuracy"], color=colour, marker=marker,
               s=30, alpha=0.45)  # fmt: skip
    low, high, interval = ps.accuracy_error(summary.loc[[row.name]])
    energy_half = float(row["adapt_energy_pj_ci95"])
    energy_text = format_si(row["adapt_energy_pj_mean"] * 1e-12, energy_half * 1e-12, "J")
    energy_text = "0 J" if energy_text == "0" else energy_text
    ax.errorbar(row["adapt_energy_pj_mean"] / scale + shift, 100 * row["accuracy_mean"],
                yerr=np.array([low, high]).reshape(2, 1),
                xerr=energy_half / scale if math.isfinite(energy_half) and energy_half > 0 else None,
                color=colour, marker=marker, markersize=10, markeredgecolor="black", markeredgewidth=1.0,
                ecolor=colour, elinewidth=1.2, capsize=3, linestyle="", zorder=3, gid=f"mean:{method}",
                label=f"{ps.label(method, row)}, {energy_text}")  # fmt: skip
    return interval


def _dress_panel(ax: Axes, kind: str, unit: str, count: int) -> None:
    """Axis scale, limits, ticks and label of one energy panel."""
    ax.grid(True, which="major", alpha=0.3)
    if kind == "zero":
        half_width = 0.25 * count + 0.5
        ax.set_xlim(-half_width, half_width)
        ax.set_xticks([0.0], ["0"])
        ax.set_xlabel("no adaptation\nenergy", fontsize=9)
        return
    if kind == "log":
        ax.set_xscale("log")
        ax.set_xlabel(f"energy per task ({unit}, log scale)")
        return
    ax.xaxis.set_major_locator(MaxNLocator(nbins=2 + count, steps=[1, 2, 2.5, 5, 10]))
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    low, high = ax.dataLim.x0, ax.dataLim.x1
    pad = max(0.12 * (high - low), 0.03 * max(abs(low), abs(high))) or 1.0  # a lone method: +-3 %, not its CI
    ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(f"energy per task ({unit})")


def _per_method(ledger: pd.DataFrame, phase: str, summary: pd.DataFrame, column: str, methods: list[str],
                drift_s: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:  # fmt: skip
    """A phase's energy per method and event (pJ), scaled so that each method's total is its metrics.csv mean
    `column` (per task or per sample, over tasks and seeds), with those means and their 95 % CI over seeds."""
    table = ledger[ledger["phase"] == phase].groupby(["method", "event"])["energy_pj"].sum().unstack(fill_value=0.0)
    table = table.reindex(index=methods, fill_value=0.0)
    means, halves = np.zeros(len(methods)), np.full(len(methods), math.nan)
    for i, method in enumerate(methods):
        row = ps.overall(summary, method, drift_s)
        if row is not None:
            means[i], halves[i] = float(row[f"{column}_mean"]), float(row[f"{column}_ci95"])
    totals = table.sum(axis=1).to_numpy()
    factors = np.divide(means, totals, out=np.zeros_like(means), where=totals > 0)
    return table.mul(factors, axis=0), means, halves


def energy_breakdown(ledger: pd.DataFrame, metrics: pd.DataFrame, methods: list[str]) -> Figure:
    """Energy by event in three panels: deployment per device, adaptation per target task and inference per test
    sample, each a per-seed mean (the numbers report.md prints) with the 95 % CI over seeds where there is one."""
    from matplotlib import colormaps

    events = sorted(ledger["event"].unique(), key=ps.natural_key)
    colours = {event: colormaps["tab20"](i % 20) for i, event in enumerate(events)}
    n_seeds = int(metrics["seed"].nunique())
    fresh = ps.fresh(metrics)
    summary, first_drift = ps.summary(fresh), float(fresh["drift_s"].min())
    deploy_phases = sorted((p for p in ps.ordered(ledger["phase"]) if p not in ("adapt", "inference")),
                           key=lambda p: _DEPLOY_ORDER.index(p) if p in _DEPLOY_ORDER else len(_DEPLOY_ORDER))
    deploy = ledger[ledger["phase"].isin(deploy_phases)].groupby(["phase", "event"])["energy_pj"].sum()
    deploy = deploy.unstack(fill_value=0.0).reindex(index=deploy_phases, fill_value=0.0) / n_seeds
    adapt = _per_method(ledger, "adapt", summary, "adapt_energy_pj", methods, first_drift)
    infer = _per_method(ledger, "inference", summary, "inference_energy_pj_per_sample", methods, first_drift)
    seeds = f"{n_seeds} seed{'s' if n_seeds > 1 else ''}"
    panels = [
        (f"deployment, once per device\n(mean per seed over {seeds}; no CI kept)", "per device", deploy,
         deploy.sum(axis=1).to_numpy(), None),
        ("adaptation, per target task\n(mean over tasks and seeds)", "per task", *adapt),
        ("inference, per test sample\n(mean over tasks and seeds)", "per sample", *infer),
    ]  # fmt: skip
    fig = Figure(figsize=(13.0, 5.4))
    for ax, (title, per, table, totals, halves) in zip(fig.subplots(1, 3), panels):
        _stacked_panel(ax, table, totals, halves, events, colours)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(f"energy {per} ({energy_unit(totals)[1]})")
    fig.suptitle("Energy by phase and event (ledger.csv; error bars: 95 % CI over seeds)")
    fig.subplots_adjust(wspace=0.35, top=0.84)
    ps.legend_below(fig, [Patch(color=colours[e], label=e) for e in events], ncols=min(6, len(events)),
                    rows=math.ceil(len(events) / 6) + 1)  # fmt: skip
    return fig


def _stacked_panel(ax: Axes, table: pd.DataFrame, totals: np.ndarray, halves: np.ndarray | None, events: list[str],
                   colours: dict) -> None:  # fmt: skip
    """Bars stacked by event in the unit of the totals, the CI over seeds as an error bar on each total, and each
    total written above its bar as report.md rounds it, inside the axes (clear of the title)."""
    scale, _ = energy_unit(totals)
    positions = np.arange(len(table.index))
    bottom = np.zeros(len(positions))
    for event in events:
        if event in table.columns:
            values = table[event].to_numpy(dtype=float) / scale
            ax.bar(positions, values, bottom=bottom, color=colours[event], width=0.7)
            bottom += values
    spread = np.nan_to_num(halves if halves is not None else np.zeros(len(positions))) / scale
    if spread.any():
        ax.errorbar(positions, totals / scale, yerr=spread, fmt="none", ecolor="black", capsize=3, elinewidth=1)
    for x, (total, half) in enumerate(zip(totals, halves if halves is not None else [math.nan] * len(totals))):
        text = format_si(total * 1e-12, half * 1e-12, "J", show_half=False) if halves is not None else (
            format_energy(total))  # fmt: skip
        ax.annotate(text, (x, (total / scale) + spread[x]), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=7, gid="value-label")  # fmt: skip
    top = float(np.max(totals / scale + spread)) if len(totals) else 1.0
    ax.set_ylim(0, ps.LABEL_HEADROOM * top if top > 0 else 1.0)
    ax.set_xticks(positions, list(table.index), rotation=30, ha="right", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def cell_writes_per_layer(ledger: pd.DataFrame, metrics: pd.DataFrame, methods: list[str]) -> Figure:
    """SET + RESET pulses per layer during one adaptation: per target task, mean over tasks and seeds (report.md's
    `cell write pulses / task`), each method's total with its 95 % CI over seeds beside its name."""
    writes = ledger[ledger["event"].isin(sorted(WRITE_EVENTS))]
    adapt = writes[writes["phase"] == "adapt"]
    layers = sorted((layer for layer in (adapt if not adapt.empty else writes)["layer"].unique() if layer),
                    key=ps.natural_key) or ["(all layers)"]  # fmt: skip
    table = adapt.assign(layer=adapt["layer"].replace("", "(all layers)")).groupby(["method", "layer"])["count"].sum()
    table = table.unstack(fill_value=0.0).reindex(index=methods, columns=layers, fill_value=0.0)
    fresh = ps.fresh(metrics)
    units = fresh.drop_duplicates(["method", "seed", "task"]).groupby("method").size()
    grid = table.to_numpy(dtype=float) / units.reindex(methods, fill_value=1).to_numpy(dtype=float)[:, None]
    summary, first_drift = ps.summary(fresh), float(fresh["drift_s"].min())
    names = []
    for method in methods:
        row = ps.overall(summary, method, first_drift)
        total = format_mean_ci(row["cell_write_pulses_mean"], row["cell_write_pulses_ci95"]) if row is not None else ""
        names.append(f"{method}\n{total} / task")
    fig = Figure(figsize=(max(6.0, 0.45 * len(layers) + 3.5), max(3.0, 0.6 * len(methods) + 2.0)))
    ax = fig.add_subplot()
    positive = grid[grid > 0]
    ax.set_facecolor("#eeeeee")  # cells with zero writes show the background
    norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 10)) if len(positive) else None
    image = ax.imshow(np.ma.masked_less_equal(grid, 0), aspect="auto", cmap="viridis", norm=norm)
    if norm is not None:
        fig.colorbar(image, ax=ax, label="SET + RESET pulses per task (log scale)")
    if grid.size <= 200:
        for (row_index, col), value in np.ndenumerate(grid):
            bright = value == 0 or (norm is not None and norm(value) > 0.6)  # viridis is light at its top end
            ax.text(col, row_index, format_count(value), ha="center", va="center", fontsize=6,
                    color="black" if bright else "white")  # fmt: skip
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)), names, fontsize=8)
    ax.set_xlabel("layer (array written)")
    ax.set_title("Cell writes per layer during one adaptation\n(SET + RESET pulses per target task, mean over tasks "
                 "and seeds; ± 95 % CI over seeds; grey = none)", fontsize=10)  # fmt: skip
    return fig
