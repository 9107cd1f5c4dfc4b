"""Statistics of a run's results: intervals over seeds, the test set's binomial error, paired comparisons, and the
one rounding rule every report, README table and figure label uses.

Definitions (also written into `summary.json`):

- **Unit value.** A metrics.csv row is one (method, target task, seed, drift time); its `accuracy` is the mean over
  the evaluation's read-noise/drift repeats (`evaluate.repeats`) on that seed's test set.
- **Mean and 95 % CI over seeds** (`t_interval`). Per task: the t interval over seeds of the unit values. For the
  mean over target tasks (`task` = `all`): per seed, the mean over the target tasks, then the t interval over
  seeds. The target tasks are the study's fixed set, not a sample, so only seeds (data split, base model, bank,
  programming, read noise: all redrawn per seed) are the random part. Half-width t(0.975, n-1) · s / sqrt(n), s with
  ddof 1; no interval (NaN) with one seed. `scenarios/sweep.py` uses the same function.
- **Test-set binomial error** (`wilson_interval`). Wilson score interval (z = 1.96) of the mean accuracy over
  the pooled test images, n = test images per task × tasks × seeds (repeats re-read the same images, so they do not
  add to n). It is the sampling error of the test set alone; since every seed draws its own test set, the interval
  over seeds already contains it.
- **Paired comparison** (`paired_differences`). For each method and the reference (fusion), the difference
  method - reference on the same (seed, task) unit. Per task: t interval over seeds of the differences; for `all`:
  per seed the mean difference over tasks, then the t interval over seeds, with the two-sided one-sample t-test
  p-value (df = seeds - 1). A sign test (exact two-sided binomial, ties dropped) over the (seed, task) pairs says
  on how many units the method wins and loses.
- **Rounding** (`decimals_for`, `format_mean_ci`). A half-width is shown to one significant digit (two when that
  digit is 1, so 0.14 is not shown as 0.1), and its value to the same decimal place. Without an interval a
  quantity that varies gets the caller's fallback (e.g. the binomial half-width for accuracies) and an exact one
  (counts, deterministic energies) two significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

__all__ = [
    "CONFIDENCE",
    "SUMMARY_METRICS",
    "Interval",
    "decimals_for",
    "format_mean_ci",
    "format_si",
    "over_seeds",
    "paired_differences",
    "round_to",
    "si_prefix",
    "sign_test",
    "summarise",
    "t_interval",
    "wilson_interval",
]

CONFIDENCE = 0.95
"""Two-sided confidence level of every interval here."""
_Z = 1.959963984540054  # standard normal quantile at 0.975

SUMMARY_METRICS: tuple[str, ...] = (
    "accuracy",
    "cell_write_pulses",
    "adapt_energy_pj",
    "adapt_latency_s",
    "inference_energy_pj_per_sample",
    "trainable_params",
    "digital_state_words",
    "adapt_state_words",
)
"""metrics.csv columns summarised with mean and 95 % CI over seeds (those present in the frame)."""


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation (ddof 1), count and 95 % t half-width of a sample (NaN when n < 2)."""

    mean: float
    std: float
    n: int
    half: float

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


@cache
def _t_quantile(dof: int) -> float:
    """The two-sided CONFIDENCE quantile of Student's t with `dof` degrees of freedom (scipy's ppf costs ~0.5 ms a
    call; a study asks for a handful of distinct `dof` thousands of times)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))


def t_interval(values: Iterable[float]) -> Interval:
    """Student-t 95 % interval of the mean of `values` (the one CI implementation of the package)."""
    array = np.asarray(list(values), dtype=float)
    n = int(array.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan)
    mean = float(array.mean())
    if n < 2:
        return Interval(mean, math.nan, n, math.nan)
    std = float(array.std(ddof=1))
    if std <= 1e-12 * float(np.abs(array).max()):  # equal values up to float rounding (0.07 - 0.075 etc.)
        std = 0.0
    half = _t_quantile(n - 1) * std / math.sqrt(n)
    return Interval(mean, std, n, half)


def t_test_p(interval: Interval) -> float:
    """Two-sided p-value of the one-sample t-test of mean = 0 (NaN when n < 2 or the sample has no spread)."""
    from scipy import stats

    if interval.n < 2 or not interval.std > 0:
        return math.nan
    statistic = interval.mean / (interval.std / math.sqrt(interval.n))
    return float(2 * stats.t.sf(abs(statistic), interval.n - 1))


def wilson_interval(p: float, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of a binomial proportion `p` observed on `n` trials (Wilson 1927)."""
    if n <= 0 or not math.isfinite(p):
        return math.nan, math.nan
    z2 = _Z * _Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if p <= 0 else max(0.0, centre - half)  # exact bounds at p = 0 and 1 (no float residue)
    high = 1.0 if p >= 1 else min(1.0, centre + half)
    return low, high


def sign_test(differences: Iterable[float]) -> tuple[int, int, int, float]:
    """(wins, losses, ties, two-sided exact binomial p-value over the non-tied pairs; NaN if all tie)."""
    from scipy import stats

    values = [float(d) for d in differences]
    wins = sum(d > 0 for d in values)
    losses = sum(d < 0 for d in values)
    ties = len(values) - wins - losses
    p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else math.nan
    return wins, losses, ties, p


# --- rounding ------------------------------------------------------------------------------------------------------
def decimals_for(half: float) -> int | None:
    """Decimal places that show `half` to one significant digit (two if that digit is 1); may be negative (tens,
    hundreds). None when there is no usable interval (NaN, inf or 0)."""
    if not (math.isfinite(half) and half > 0):
        return None
    exponent = math.floor(math.log10(half))
    leading = round(half / 10**exponent)
    if leading >= 10:  # 0.096 rounds to 0.1: one digit of the next decade
        exponent += 1
        leading = 1
    return -exponent + (1 if leading == 1 else 0)


def round_to(value: float, decimals: int) -> float:
    """`value` rounded to `decimals` places (negative: to tens, hundreds, ...)."""
    return float(round(value, decimals))


def _fixed(value: float, decimals: int) -> str:
    rounded = round_to(value, decimals) + 0.0  # + 0.0: no "-0"
    text = f"{rounded:,.{max(decimals, 0)}f}"
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def _significant(value: float, digits: int = 2) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return _fixed(value, decimals)


def format_mean_ci(
    mean: float,
    half: float,
    *,
    scale: float = 1.0,
    unit: str = "",
    fallback_half: float | None = None,
    show_half: bool = True,
    signed: bool = False,
) -> str:
    """`mean ± half` (both × `scale`) rounded by `decimals_for(half)`, then `unit` (e.g. " %").

    Without an interval (one seed, or no spread) the digits come from `fallback_half` when given (e.g. the test
    set's binomial half-width) and no ± is shown; otherwise two significant digits. `show_half=False` prints only
    the rounded value (a table column whose interval is in another column); `signed` writes a + before a positive
    value (differences)."""
    if not math.isfinite(mean):
        return "n/a"
    text = _format_mean_ci(mean, half, scale, unit, fallback_half, show_half)
    head = text.split(" ")[0]
    positive = not head.startswith("-") and any(c in "123456789" for c in head)
    return "+" + text if signed and positive else text


def _format_mean_ci(mean: float, half: float, scale: float, unit: str, fallback_half: float | None,
                    show_half: bool) -> str:  # fmt: skip
    value = mean * scale
    spread = half * scale if half is not None and math.isfinite(half) else math.nan
    decimals = decimals_for(spread)
    if decimals is None:
        fallback = decimals_for(fallback_half * scale) if fallback_half is not None else None
        text = _fixed(value, fallback) if fallback is not None else _significant(value)
        return f"{text}{unit}"
    if not show_half:
        return f"{_fixed(value, decimals)}{unit}"
    return f"{_fixed(value, decimals)} ± {_fixed(spread, decimals)}{unit}"


_SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"),
                (1e-12, "p"))  # fmt: skip


def si_prefix(magnitude: float) -> tuple[float, str]:
    """(factor, prefix) of the largest SI prefix not above `magnitude` (pico below 1e-12): the one choice of unit
    for report.md, the README tables and every figure axis (`scenarios.quantities.energy_unit`)."""
    return next(((f, p) for f, p in _SI_PREFIXES if magnitude >= f), _SI_PREFIXES[-1])


def format_si(mean: float, half: float, unit: str, *, show_half: bool = True) -> str:
    """`format_mean_ci` with an SI prefix chosen from the mean (e.g. "3.4 ± 0.2 mJ"); exactly 0 prints "0"."""
    if mean == 0 and not (math.isfinite(half) and half > 0):
        return "0"
    magnitude = abs(mean) if mean else abs(half)
    factor, prefix = si_prefix(magnitude)
    return format_mean_ci(mean, half, scale=1 / factor, unit=f" {prefix}{unit}", show_half=show_half)


# --- tables over a metrics frame -------------------------------------------------------------------------------------
def over_seeds(metrics: pd.DataFrame, by: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Per (`by`..., method, drift_s): each column averaged over the frame's tasks per seed, then mean, std, n and
    95 % t half-width over seeds (`{column}_mean`, `_std`, `_ci95`; `n_seeds`). Groups keep first-seen order."""
    keys = [*by, "method", "drift_s"]
    per_seed = metrics.groupby([*keys, "seed"], sort=False)[list(columns)].mean()
    rows = []
    for group, frame in per_seed.groupby(level=keys, sort=False):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["n_seeds"] = len(frame)
        for column in columns:
            interval = t_interval(frame[column].to_numpy(dtype=float))
            row |= {f"{column}_mean": interval.mean, f"{column}_std": interval.std, f"{column}_ci95": interval.half}
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(metrics: pd.DataFrame, n_test: int | None = None) -> pd.DataFrame:
    """Per method × drift time × task (each target task, then `all` = their mean): mean, std and 95 % t interval
    over seeds of every SUMMARY_METRICS column present; accuracy also with the t interval's bounds and the test
    set's Wilson interval over the pooled test images (each unit's `n_test` column; `n_test` images per task for a
    frame without that column)."""
    columns = [c for c in SUMMARY_METRICS if c in metrics.columns]
    frames = []
    tasks = list(dict.fromkeys(metrics["task"]))
    for task in tasks:
        frames.append(over_seeds(metrics[metrics["task"] == task], [], columns).assign(task=task, n_tasks=1))
    frames.append(over_seeds(metrics, [], columns).assign(task="all", n_tasks=len(tasks)))
    summary = pd.concat(frames, ignore_index=True)
    method_order = {m: i for i, m in enumerate(dict.fromkeys(metrics["method"]))}
    task_order = {t: i for i, t in enumerate([*tasks, "all"])}
    summary = summary.sort_values(
        ["method", "drift_s", "task"],
        key=lambda s: s.map(method_order) if s.name == "method" else s.map(task_order) if s.name == "task" else s,
        kind="stable",
    ).reset_index(drop=True)
    summary["accuracy_ci_low"] = summary["accuracy_mean"] - summary["accuracy_ci95"]
    summary["accuracy_ci_high"] = summary["accuracy_mean"] + summary["accuracy_ci95"]
    pooled = []
    for row in summary.itertuples():
        units = metrics[(metrics["method"] == row.method) & (metrics["drift_s"] == row.drift_s)]
        if row.task != "all":
            units = units[units["task"] == row.task]
        if "n_test" in units.columns:  # each unit's own test-set size (an npz task may have fewer images)
            pooled.append(int(units.drop_duplicates(["seed", "task"])["n_test"].sum()))
        else:
            pooled.append(int(n_test or 0) * int(row.n_tasks) * int(row.n_seeds))
    bounds = [wilson_interval(p, n) for p, n in zip(summary["accuracy_mean"], pooled)]
    summary["accuracy_binom_n"] = pooled
    summary["accuracy_binom_low"] = [lo for lo, _ in bounds]
    summary["accuracy_binom_high"] = [hi for _, hi in bounds]
    leading = ["method", "task", "drift_s", "n_seeds", "n_tasks"]
    return summary[leading + [c for c in summary.columns if c not in leading]]


def paired_differences(metrics: pd.DataFrame, reference: str = "fusion", column: str = "accuracy") -> pd.DataFrame:
    """Each method's `column` minus `reference`'s on the same (seed, task, drift) units: per method × drift × task
    (each task, then `all`), mean difference with its 95 % t interval over seeds, the t-test p-value and a sign
    test over the (seed, task) pairs. Empty when the reference method is absent."""
    keys = ["seed", "task", "drift_s"]
    base = metrics[metrics["method"] == reference].set_index(keys)[column]
    if base.empty:
        return pd.DataFrame()
    tasks = list(dict.fromkeys(metrics["task"]))
    rows = []
    for method in dict.fromkeys(metrics["method"]):
        if method == reference:
            continue
        mine = metrics[metrics["method"] == method].set_index(keys)[column]
        diff = (mine - base.reindex(mine.index)).dropna().rename("diff").reset_index()
        for drift_s in dict.fromkeys(diff["drift_s"]):
            at = diff[diff["drift_s"] == drift_s]
            for task in [*tasks, "all"]:
                units = at if task == "all" else at[at["task"] == task]
                if units.empty:
                    continue
                interval = t_interval(units.groupby("seed", sort=False)["diff"].mean())
                wins, losses, ties, sign_p = sign_test(units["diff"])
                rows.append({
                    "method": method, "reference": reference, "task": task, "drift_s": float(drift_s),
                    "n_seeds": interval.n, "n_pairs": len(units), "diff_mean": interval.mean,
                    "diff_std": interval.std, "diff_ci95": interval.half, "diff_ci_low": interval.low,
                    "diff_ci_high": interval.high, "t_p_value": t_test_p(interval), "wins": wins,
                    "losses": losses, "ties": ties, "sign_p_value": sign_p,
                })  # fmt: skip
    return pd.DataFrame(rows)
