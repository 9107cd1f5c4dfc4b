"""Helpers shared by the figure modules (`scenarios.plots`, `scenarios.plots_energy`): method styles, the rows and
statistics a figure draws (the same `scenarios.stats` summaries report.md prints), and figure furniture (legends
outside the data, value labels inside the axes, broken-axis marks)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "LABEL_HEADROOM",
    "accuracy_error",
    "break_marks",
    "fresh",
    "label",
    "legend_below",
    "natural_key",
    "ordered",
    "overall",
    "style",
    "summary",
]

_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")
LABEL_HEADROOM = 1.25
"""Top of a value-labelled axis as a multiple of its highest bar (+ error bar): room for the labels inside it."""


def ordered(values: pd.Series) -> list[str]:
    """Distinct values in order of first appearance (the runner writes methods in scenario order)."""
    return list(dict.fromkeys(values.tolist()))


def natural_key(text: str) -> list[object]:
    """Sort key that orders blocks.2.q before blocks.10.q."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def fresh(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows at the earliest drift time (normally 0 s: just after programming)."""
    return metrics[metrics["drift_s"] == metrics["drift_s"].min()]


def style(methods: Sequence[str]) -> dict[str, tuple[object, str]]:
    """(colour, marker) per method, fixed by the method's position so all figures agree."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {method: (palette(i % 10), _MARKERS[i % len(_MARKERS)]) for i, method in enumerate(methods)}


def summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % CI over seeds per method x task x drift time (task `all`: mean over tasks), as in summary.csv
    and report.md (`scenarios.stats.summarise`)."""
    from scenarios.stats import summarise

    return summarise(metrics)


def accuracy_error(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
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


def label(method: str, row: pd.Series | None) -> str:
    """Legend label `method: mean ± CI %` rounded by scenarios.stats.format_mean_ci."""
    from scenarios.stats import format_mean_ci

    if row is None:
        return method
    binomial = (row["accuracy_binom_high"] - row["accuracy_binom_low"]) / 2 if row["accuracy_binom_n"] else None
    text = format_mean_ci(row["accuracy_mean"], row["accuracy_ci95"], scale=100, unit=" %", fallback_half=binomial)
    return f"{method}: {text}"


def overall(summary_frame: pd.DataFrame, method: str, drift_s: float) -> pd.Series | None:
    """A method's summary row over all target tasks at `drift_s` (None if it has none)."""
    rows = summary_frame[(summary_frame["method"] == method) & (summary_frame["task"] == "all")
                         & (summary_frame["drift_s"] == drift_s)]  # fmt: skip
    return rows.iloc[0] if len(rows) else None


def legend_below(fig: Figure, handles: list, ncols: int, rows: int) -> None:
    """A figure legend under the axes (it covers no data), with the figure's bottom margin made room for."""
    height_in = fig.get_figheight()
    margin = min(0.45, (0.75 + 0.22 * rows) / height_in)
    fig.subplots_adjust(bottom=margin)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=ncols, fontsize=8,
               frameon=False)  # fmt: skip


def break_marks(left: Axes, right: Axes) -> None:
    """Broken-axis marks between two side-by-side panels that share a y axis: the spines between them hidden and
    a short slash drawn on each, so the gap reads as a cut in the x axis."""
    left.spines["right"].set_visible(False)
    right.spines["left"].set_visible(False)
    right.tick_params(axis="y", left=False)
    slash = {"marker": [(-1, -1.5), (1, 1.5)], "markersize": 9, "linestyle": "none", "color": "black",
             "mec": "black", "mew": 1, "clip_on": False}  # fmt: skip
    left.plot([1, 1], [0, 1], transform=left.transAxes, **slash)
    right.plot([0, 0], [0, 1], transform=right.transAxes, **slash)
