"""Figures of a fusion design sweep (issue 28, `scenarios/fusion_design.yaml`): how much of a LoRA's gain each
zero-write method recovers, against the digital state it holds and against the bank's size.

Gain recovered, per sweep point and drift time: the reference is the LoRA variant (`LORA_REFERENCES`) with the best
mean accuracy at that point; on each seed, recovered = 100 x sum over tasks (acc_method - acc_zero_shot) /
sum over tasks (acc_reference - acc_zero_shot), the differences paired on the same (seed, task) units (summing over
tasks before dividing keeps a task whose LoRA gain is near zero from dominating); its mean and 95 % t interval over
seeds (`scenarios.stats.t_interval`; no interval with one seed). Digital state: metrics.csv's
`digital_state_words` (mean over tasks and seeds).

Outputs (from `scenarios.sweep.write_sweep`, when the sweep has zero_shot and a LoRA variant): `fusion_pareto.csv`
and `figures/fusion_pareto_<drift>.png/.svg` (drift as `0s`, `30days`; one marker per point and method, LoRA
variants as reference markers, the front of non-dominated configurations joined), `fusion_bank.csv` and
`figures/fusion_bank_size.png/.svg` (LoRAFusion's form and the best mixing method against the number of source
tasks, one line per rank and bank training). Several sweep runs (slices of one design, e.g. `--sweep bank.rank=8`)
merge with `python -m scenarios.plots_fusion RUN_DIR... --out DIR`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scenarios.quantities import format_duration

__all__ = [
    "LORA_REFERENCES",
    "MIXING_METHODS",
    "bank_table",
    "fusion_roles",
    "gain_table",
    "pareto_front",
    "point_label",
    "write_fusion_outputs",
]

LORA_REFERENCES = ("lora_digital", "lora_program_once", "lora_in_situ")
"""Method names whose best (mean accuracy at a point) is the yardstick of gain recovered."""
MIXING_METHODS = ("fusion_rank", "fusion_core", "fusion_gate")
"""The zero-write methods beyond one coefficient per LoRA (`fusion.methods.mixing_methods`)."""
SOURCES_KEY, RANK_KEY, AWARE_KEY = "tasks.sources", "bank.rank", "bank.hardware_aware"
RECALIBRATE_KEY = "evaluate.recalibrate_after_drift"


def fusion_roles(methods: Sequence[Any]) -> dict[str, str]:
    """Role per method key of a scenario's `methods:` entries: `zero_shot`, `reference` (a LoRA variant),
    `lorafusion` (fusion with `share: block`, LoRAFusion's granularity), `fusion` (other fusion settings),
    `mixing` (a new zero-write method) or `other`."""
    roles = {}
    for spec in methods:  # validated entries (MethodSpec) or their resolved dicts (a run's sweep.json)
        entry = spec if isinstance(spec, Mapping) else spec.model_dump()
        name, key = entry["name"], entry.get("label") or entry["name"]
        if name == "zero_shot":
            roles[key] = "zero_shot"
        elif name in LORA_REFERENCES:
            roles[key] = "reference"
        elif name == "fusion":
            roles[key] = "lorafusion" if entry.get("share") == "block" else "fusion"
        elif name in MIXING_METHODS:
            roles[key] = "mixing"
        else:
            roles[key] = "other"
    return roles


def _recovered(group: pd.DataFrame, roles: Mapping[str, str]) -> list[dict[str, Any]]:
    """The gain-recovered rows of one (point, drift) group of metrics rows (see the module docstring)."""
    from scenarios.stats import t_interval

    acc = group.pivot_table(index=["seed", "task"], columns="method", values="accuracy", aggfunc="mean")
    n_test = (group.pivot_table(index=["seed", "task"], columns="method", values="n_test", aggfunc="mean")
              if "n_test" in group.columns else None)  # fmt: skip
    zero = [m for m in acc.columns if roles.get(m) == "zero_shot"]
    refs = [m for m in acc.columns if roles.get(m) == "reference"]
    if not zero or not refs:
        return []
    base = acc[zero[0]]
    best = max(refs, key=lambda m: acc[m].mean())
    ref_gain = (acc[best] - base).groupby(level="seed").sum()
    rows = []
    for method in acc.columns:
        if method in zero:
            continue
        gain = (acc[method] - base).groupby(level="seed").sum()
        per_seed = [100.0 * gain[s] / ref_gain[s] if ref_gain[s] > 0 else math.nan for s in gain.index]
        interval = t_interval(v for v in per_seed if not math.isnan(v))
        binomial = _binomial_half(acc, n_test, method, zero[0], best) if n_test is not None else math.nan
        pooled = float(n_test[method].sum()) if n_test is not None else math.nan
        state = group.loc[group["method"] == method, "digital_state_words"].mean()
        rows.append({"method": method, "role": roles.get(method, "other"), "reference": best,
                     "recovered_pct_mean": interval.mean, "recovered_pct_ci95": interval.half,
                     "recovered_pct_binom_half": binomial,
                     "n_seeds": interval.n, "accuracy_mean": float(acc[method].mean()),
                     "zero_shot_accuracy": float(base.mean()), "n_test_pooled": pooled,
                     "digital_state_words": float(state)})  # fmt: skip
    return rows


def _binomial_half(acc: pd.DataFrame, n_test: pd.DataFrame, method: str, zero: str, best: str) -> float:
    """95 % half-width (percentage points of gain recovered) that the test sets' sampling alone gives, mean over
    seeds: each accuracy binomial on its n_test examples, the four accuracies of a (seed, task) taken independent
    (conservative for the paired ones), propagated to gain / reference gain to first order. It sets the rounding
    of a one-seed screening, which has no interval over seeds."""
    variance = {m: acc[m] * (1 - acc[m]) / n_test[m] for m in (method, zero, best)}
    gain = (acc[method] - acc[zero]).groupby(level="seed").sum()
    ref_gain = (acc[best] - acc[zero]).groupby(level="seed").sum()
    var_gain = (variance[method] + variance[zero]).groupby(level="seed").sum()
    var_ref = (variance[best] + variance[zero]).groupby(level="seed").sum()
    ratio = gain / ref_gain
    half = 196.0 * ((var_gain + ratio**2 * var_ref) ** 0.5) / ref_gain
    half = half[ref_gain > 0]
    return float(half.mean()) if len(half) else math.nan


def gain_table(metrics: pd.DataFrame, roles: Mapping[str, str], keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per (swept keys..., point, drift_s, method): gain recovered with its CI over seeds, accuracy, digital state
    and whether the configuration is on the Pareto front of its drift time (`pareto_front`)."""
    by = [*keys, "point"] if "point" in metrics.columns else list(keys)
    rows = []
    for values, group in metrics.groupby([*by, "drift_s"], sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        for row in _recovered(group, roles):
            rows.append({**dict(zip([*by, "drift_s"], values)), **row})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["on_front"] = False
    for _, frame in table.groupby("drift_s"):
        table.loc[pareto_front(frame).index, "on_front"] = True
    return table


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row dominates: none has at most their digital state and at least their gain recovered,
    one of them strictly. Sorted by digital state."""
    state = table["digital_state_words"].to_numpy(dtype=float)
    gain = table["recovered_pct_mean"].to_numpy(dtype=float)
    keep = []
    for i in range(len(table)):
        dominated = ((state <= state[i]) & (gain >= gain[i]) & ((state < state[i]) | (gain > gain[i]))).any()
        keep.append(not dominated and not math.isnan(gain[i]))
    return table.loc[pd.Series(keep, index=table.index, dtype=bool)].sort_values("digital_state_words")


def _n_sources(cell: Any) -> int | float:
    """Bank size from a sweep.csv `tasks.sources` cell (a JSON list)."""
    try:
        return len(json.loads(cell)) if isinstance(cell, str) else len(cell)
    except (TypeError, ValueError):
        return math.nan


def bank_table(gains: pd.DataFrame, drift_s: float | None = None) -> pd.DataFrame:
    """Gain recovered against bank size for LoRAFusion's form and the best mixing method (highest mean gain
    recovered over the sweep's points at `drift_s`, default the first drift time): one row per point and method,
    with `n_sources`, `rank` and `hardware_aware` (the swept values, or NaN where not swept)."""
    if gains.empty:
        return gains
    drift_s = float(gains["drift_s"].min()) if drift_s is None else drift_s
    rows = gains[gains["drift_s"] == drift_s]
    mixing = rows[rows["role"] == "mixing"]
    chosen = ["lorafusion"]
    if len(mixing):  # by gain recovered; by accuracy where no point has a gain to recover (a LoRA gained nothing)
        by = "recovered_pct_mean" if mixing["recovered_pct_mean"].notna().any() else "accuracy_mean"
        chosen_method = mixing.groupby("method")[by].mean().idxmax()
        rows = rows[(rows["role"] == "lorafusion") | (rows["method"] == chosen_method)]
    else:
        rows = rows[rows["role"].isin(chosen)]
    out = rows.assign(
        n_sources=rows[SOURCES_KEY].map(_n_sources) if SOURCES_KEY in rows else math.nan,
        rank=rows[RANK_KEY] if RANK_KEY in rows else math.nan,
        hardware_aware=rows[AWARE_KEY] if AWARE_KEY in rows else math.nan,
    )
    columns = ["method", "role", "n_sources", "rank", "hardware_aware", "recovered_pct_mean", "recovered_pct_ci95",
               "n_seeds", "digital_state_words"]  # fmt: skip
    out = out[columns].drop_duplicates(["method", "n_sources", "rank", "hardware_aware"])  # a slice differing only
    # after drift (evaluate.recalibrate_after_drift) repeats the fresh values
    return out.sort_values(["method", "rank", "hardware_aware", "n_sources"]).reset_index(drop=True)


def point_label(row: pd.Series, keys: Sequence[str]) -> str:
    """A sweep point's short label from its swept values: `8 src r4 dig`, plus `recal` when the norm read-out is
    re-read after drift; other keys as `name=value`."""
    parts = []
    for key in keys:
        if key == SOURCES_KEY:
            parts.append(f"{_n_sources(row[key])} src")
        elif key == RANK_KEY:
            parts.append(f"r{row[key]}")
        elif key == AWARE_KEY:
            parts.append("hw" if str(row[key]).lower() == "true" else "dig")
        elif key == RECALIBRATE_KEY:  # only when on: the norm read-out re-read after drift
            parts += ["recal"] if str(row[key]).lower() == "true" else []
        else:
            parts.append(f"{key.rsplit('.', 1)[-1]}={row[key]}")
    return " ".join(parts)


def draw_pareto(gains: pd.DataFrame, keys: Sequence[str], drift_s: float) -> Any:
    """Gain recovered against digital state words (log x) at `drift_s`: one marker per (point, method), colour and
    marker by method, error bars the 95 % CI over seeds (with one seed the test sets' binomial half-width), LoRA
    variants as black reference markers, the Pareto front joined."""
    import matplotlib.pyplot as plt

    from scenarios.plot_style import legend_below, ordered, style

    rows = gains[(gains["drift_s"] == drift_s) & gains["recovered_pct_mean"].notna()]
    methods = [m for m in ordered(rows["method"]) if (rows.loc[rows["method"] == m, "role"] != "reference").all()]
    colours = style(methods)
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    handles = []
    for method, frame in rows.groupby("method", sort=False):
        x = frame["digital_state_words"].clip(lower=1.0)  # zero state (program-once LoRA) drawn at 1 word
        if (frame["role"] == "reference").all():
            handles.append(ax.scatter(x, frame["recovered_pct_mean"], marker="x", color="black", s=50, zorder=3,
                                      label=f"{method} (reference)"))  # fmt: skip
            continue
        colour, marker = colours[method]
        half = frame["recovered_pct_ci95"]  # one seed: the test sets' binomial half-width instead
        if "recovered_pct_binom_half" in frame.columns:
            half = half.fillna(frame["recovered_pct_binom_half"])
        half = half.fillna(0.0)
        ax.errorbar(x, frame["recovered_pct_mean"], yerr=half, fmt="none", ecolor=colour, alpha=0.6)
        handles.append(ax.scatter(x, frame["recovered_pct_mean"], marker=marker, color=colour, s=36, label=method))
        if keys:
            for xi, (_, row) in zip(x, frame.iterrows()):
                ax.annotate(point_label(row, keys), (xi, row["recovered_pct_mean"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
    front = pareto_front(rows)
    ax.plot(front["digital_state_words"].clip(lower=1.0), front["recovered_pct_mean"], color="grey", lw=1, ls="--",
            zorder=1)  # fmt: skip
    ax.axhline(100, color="black", lw=0.8, ls=":")
    ax.axhline(95, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    if rows.empty:  # no LoRA gained over zero-shot at this drift time: nothing to recover
        ax.set_xlim(1, 1e6)
        ax.text(0.5, 0.5, "no LoRA gain over zero-shot", transform=ax.transAxes, ha="center")
    ax.set_xlabel("digital state (words, log)")
    ax.set_ylabel("gain recovered (% of the best LoRA's gain)")
    n_seeds = int(rows["n_seeds"].min()) if len(rows) else 0
    when = "fresh devices" if drift_s == 0 else f"{format_duration(drift_s)} after programming"
    interval = f"95 % CI over {n_seeds} seeds" if n_seeds > 1 else "1 seed: bars = test sets' binomial 95 %"
    ax.set_title(f"zero-write methods vs LoRA, {when} (mean, {interval})", fontsize=9)
    legend_below(fig, handles, ncols=max(1, min(4, len(handles))), rows=math.ceil(len(handles) / 4))
    return fig


def draw_bank(bank: pd.DataFrame) -> Any:
    """Gain recovered against the number of source tasks: one line per (method, rank, bank training)."""
    import matplotlib.pyplot as plt

    from scenarios.plot_style import legend_below, style

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    groups = list(bank.groupby(["method", "rank", "hardware_aware"], sort=False, dropna=False))
    colours = style([str(k) for k, _ in groups])
    handles = []
    for key, frame in groups:
        method, rank, aware = key
        colour, marker = colours[str(key)]
        frame = frame.sort_values("n_sources")
        half = frame["recovered_pct_ci95"]  # one seed: the test sets' binomial half-width instead
        if "recovered_pct_binom_half" in frame.columns:
            half = half.fillna(frame["recovered_pct_binom_half"])
        half = half.fillna(0.0)
        ax.fill_between(frame["n_sources"], frame["recovered_pct_mean"] - half, frame["recovered_pct_mean"] + half,
                        color=colour, alpha=0.15)  # fmt: skip
        training = "" if pd.isna(aware) else (" hw-aware" if str(aware).lower() == "true" else " digital bank")
        rank_text = "" if pd.isna(rank) else f" r{rank}"
        (line,) = ax.plot(frame["n_sources"], frame["recovered_pct_mean"], marker=marker, color=colour,
                          label=f"{method}{rank_text}{training}")  # fmt: skip
        handles.append(line)
    ax.axhline(100, color="black", lw=0.8, ls=":")
    ax.set_xlabel("bank size (source tasks)")
    ax.set_ylabel("gain recovered (% of the best LoRA's gain)")
    ax.set_title("gain recovered vs bank size (fresh devices)", fontsize=9)
    legend_below(fig, handles, ncols=2, rows=math.ceil(len(handles) / 2))
    return fig


def write_fusion_outputs(run_dir: Path, metrics: pd.DataFrame, roles: Mapping[str, str], keys: Sequence[str],
                         *, plots: bool = True, formats: Sequence[str] = ("png",)) -> pd.DataFrame:  # fmt: skip
    """Write fusion_pareto.csv and fusion_bank.csv into `run_dir` (and their figures under figures/ with `plots`);
    returns the gain table (empty, and nothing written, without zero_shot and a LoRA variant)."""
    import matplotlib.pyplot as plt

    from simutil import atomic_write_text

    gains = gain_table(metrics, roles, keys)
    if gains.empty:
        return gains
    bank = bank_table(gains)
    atomic_write_text(run_dir / "fusion_pareto.csv", gains.to_csv(index=False))
    atomic_write_text(run_dir / "fusion_bank.csv", bank.to_csv(index=False))
    if plots:
        folder = run_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        for drift_s in sorted(gains["drift_s"].unique()):
            fig = draw_pareto(gains, keys, float(drift_s))
            _save(fig, folder, f"fusion_pareto_{format_duration(float(drift_s)).replace(' ', '')}", formats)
            plt.close(fig)
        if len(bank) and bank["n_sources"].notna().any():
            fig = draw_bank(bank)
            _save(fig, folder, "fusion_bank_size", formats)
            plt.close(fig)
    return gains


def _save(fig: Any, folder: Path, stem: str, formats: Sequence[str]) -> None:
    """Write a figure as `scenarios.plots` does: no timestamp and a fixed SVG id salt (identical inputs, identical
    files)."""
    import io

    from matplotlib import rc_context

    from simutil import atomic_write_bytes

    for fmt in formats:
        buffer = io.BytesIO()
        with rc_context({"svg.hashsalt": "crossbar-sim"}):
            fig.savefig(
                buffer, format=fmt, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else {}
            )
        atomic_write_bytes(folder / f"{stem}.{fmt}", buffer.getvalue())


def merge_runs(run_dirs: Sequence[Path]) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """sweep.csv of several sweep runs of one design (slices), their points renamed `<run>/<point>` (a run without
    a sweep, e.g. the real study, is one point named after its directory); the method roles from each run's
    sweep.json or config.json; the swept keys of any of them, a run that did not sweep a key getting its scenario's
    value (so `--sweep evaluate.recalibrate_after_drift=true` beside the plain design labels both)."""
    frames, roles, keys, scenarios = [], {}, [], []
    for run_dir in run_dirs:
        if (run_dir / "sweep.csv").is_file():
            frame = pd.read_csv(run_dir / "sweep.csv")
            frame["point"] = run_dir.name + "/" + frame["point"].astype(str)
        else:  # one study (no sweep): its metrics are one point
            frame = pd.read_csv(run_dir / "metrics.csv")
            frame["point"] = run_dir.name
        record = run_dir / "sweep.json" if (run_dir / "sweep.json").is_file() else run_dir / "config.json"
        scenario = json.loads(record.read_text())["scenario"]
        roles.update(fusion_roles(scenario["methods"]))
        swept = [c for c in frame.columns if c in (SOURCES_KEY, RANK_KEY, AWARE_KEY) or c.count(".")]
        keys += [k for k in swept if k not in keys]
        frames.append(frame)
        scenarios.append(scenario)
    for frame, scenario in zip(frames, scenarios):
        for key in keys:
            if key not in frame.columns:
                value = _lookup(scenario, key)
                frame[key] = json.dumps(value) if isinstance(value, list) else value
    return pd.concat(frames, ignore_index=True), roles, keys


def _lookup(document: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key path of a resolved scenario (None where it has none)."""
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m scenarios.plots_fusion RUN_DIR... --out DIR`: the fusion outputs of merged sweep runs."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scenarios.plots_fusion", description=main.__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--formats", default="png,svg")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics, roles, keys = merge_runs(args.runs)
    gains = write_fusion_outputs(args.out, metrics, roles, keys, formats=args.formats.split(","))
    print(f"{len(gains)} rows -> {args.out / 'fusion_pareto.csv'}" if len(gains) else "no zero_shot/LoRA rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
