"""Render the README's result table for a run directory, so that no number in the README is typed by hand.

    python scripts/render_readme_tables.py runs/multitask            # print the markdown
    python scripts/render_readme_tables.py runs/multitask --readme README.md --marker default
    python scripts/render_readme_tables.py runs/multitask --readme README.md --marker default-tasks --per-task
    python scripts/render_readme_tables.py runs/multitask --figures README.md --prune-figures
    python scripts/render_readme_tables.py runs/lifetime --figures README.md --figure lifetime
    python scripts/render_readme_tables.py runs/fd --readme README.md --marker fusion-design --fusion

With `--readme`, the text between `<!-- results:MARKER -->` and `<!-- /results:MARKER -->` is replaced. With
`--figures`, every figure the markdown file references (`![...](docs/figures/NAME.png)`) that the run drew
(`RUN/figures/NAME.png`) is copied over the referenced file (`--figure NAME` restricts the copy to those figures);
`--prune-figures` deletes the images in the referenced folders that the file no longer references.

Numbers come from the run's `summary.csv` and `paired.csv` (written by every run; computed from `metrics.csv` with
the same code, `scenarios.stats`, for a run directory that predates them):
- accuracy: mean over target tasks and seeds ± the 95 % t interval over seeds of the per-seed mean over tasks;
- test set: the 95 % Wilson interval of that mean on the pooled test examples (examples × tasks × seeds);
- Δ vs fusion: the paired difference on the same (seed, task) units, its 95 % t interval over seeds, and on how
  many of the (seed, task) pairs the method wins / loses;
- energies, write pulses and digital state: means over tasks and seeds, rounded to their interval over seeds.
Every value is rounded by `scenarios.stats.format_mean_ci`: the half-width to one significant digit (two if it is
1), the value to the same decimal place; with one seed (no interval) accuracies follow the binomial half-width.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pandas as pd

from scenarios import stats
from scenarios.quantities import format_duration
from simutil import atomic_write_bytes, atomic_write_text

_REFERENCE = "fusion"


def _count(value: float) -> str:
    if math.isinf(value):
        return "never"
    return f"{float(f'{value:.2g}'):,.0f}"


def _tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(metrics, summary, paired) of a run directory."""
    metrics = pd.read_csv(run_dir / "metrics.csv", dtype={"method": str, "task": str}, keep_default_na=False)
    if "seed" not in metrics.columns:
        metrics["seed"] = 0
    if (run_dir / "summary.csv").is_file():
        summary = pd.read_csv(run_dir / "summary.csv", dtype={"method": str, "task": str}, keep_default_na=False)
        summary = summary.apply(lambda c: pd.to_numeric(c, errors="coerce") if c.name not in ("method", "task") else c)
    else:
        scenario = json.loads((run_dir / "config.json").read_text())["scenario"]
        summary = stats.summarise(metrics, n_test=int(scenario["tasks"]["test_size"]))
    paired_path = run_dir / "paired.csv"
    paired = pd.DataFrame()
    if paired_path.is_file() and paired_path.stat().st_size > 1:
        paired = pd.read_csv(paired_path, dtype={"method": str, "task": str}, keep_default_na=False)
        numeric = [c for c in paired.columns if c not in ("method", "reference", "task")]
        paired[numeric] = paired[numeric].apply(pd.to_numeric, errors="coerce")
    elif not paired_path.is_file():
        paired = stats.paired_differences(metrics, reference=_REFERENCE)
    return metrics, summary, paired


def _one(frame: pd.DataFrame, **match: object) -> pd.Series | None:
    mask = pd.Series(True, index=frame.index)
    for column, value in match.items():
        mask &= frame[column] == value
    rows = frame[mask]
    return rows.iloc[0] if len(rows) else None


def _accuracy(row: pd.Series) -> str:
    binomial = (row["accuracy_binom_high"] - row["accuracy_binom_low"]) / 2 if row["accuracy_binom_n"] else None
    return stats.format_mean_ci(row["accuracy_mean"], row["accuracy_ci95"], scale=100, unit=" %",
                                fallback_half=binomial)  # fmt: skip


def _wilson(row: pd.Series) -> str:
    if not row["accuracy_binom_n"]:
        return "n/a"
    low, high = 100 * row["accuracy_binom_low"], 100 * row["accuracy_binom_high"]
    decimals = max(stats.decimals_for((high - low) / 2) or 0, 0)
    return f"{low:.{decimals}f}-{high:.{decimals}f} %"


def _words(row: pd.Series) -> str:
    """Digital state words: an exact count when every seed has the same, else rounded to its interval."""
    if not row["digital_state_words_std"] > 0:  # 0, or NaN with one seed
        return f"{int(round(row['digital_state_words_mean'])):,}"
    return stats.format_mean_ci(*_value(row, "digital_state_words"), show_half=False)


def _value(row: pd.Series, column: str) -> tuple[float, float]:
    return float(row[f"{column}_mean"]), float(row[f"{column}_ci95"])


def _wearout(units: pd.DataFrame) -> float:
    """Worst-cell task switches to wear-out of a device cycling through the targets: the one definition report.md
    and the endurance figure use (scenarios.wear.rotation_switches); older runs without the per-cell columns fall
    back to the minimum over tasks of `switches_to_wearout`."""
    from scenarios.wear import rotation_switches

    if {"wear_max_pulses", "wear_mean_pulses", "endurance_pulses"} <= set(units.columns):
        return rotation_switches(units.to_dict("records"))[0]
    return float(pd.to_numeric(units["switches_to_wearout"]).min())


def render(run_dir: Path) -> str:
    metrics, summary, paired = _tables(run_dir)
    scenario = json.loads((run_dir / "config.json").read_text())["scenario"]
    overall = summary[summary["task"] == "all"]
    drift_times = sorted(overall["drift_s"].unique())
    fresh_s, last_s = drift_times[0], drift_times[-1]
    n_tasks = int(overall["n_tasks"].max())
    n_seeds = int(overall["n_seeds"].max())
    seeds = sorted(metrics["seed"].unique())
    n_test = int(overall["accuracy_binom_n"].max())
    methods = list(dict.fromkeys(summary["method"]))
    has_reference = _REFERENCE in methods and len(paired) > 0

    after = f"after {format_duration(last_s)}"
    header = ["method", "accuracy (95 % CI over seeds)", "test set (95 % Wilson)", after]
    if has_reference:
        header += [f"Δ vs {_REFERENCE} (paired, 95 % CI)", "wins / losses"]
    header += ["trainable values", "digital state (words)", "cell write pulses / task", "adaptation energy / task",
               "inference energy / sample", "task switches to wear-out*"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method in methods:
        row = _one(overall, method=method, drift_s=fresh_s)
        drifted = _one(overall, method=method, drift_s=last_s)
        if row is None:
            continue
        cells = [method, _accuracy(row), _wilson(row), _accuracy(drifted) if drifted is not None else ""]
        if has_reference:
            pair = _one(paired, method=method, task="all", drift_s=fresh_s)
            if pair is None:
                cells += ["—", "—"]
            else:
                binomial = (row["accuracy_binom_high"] - row["accuracy_binom_low"]) / 2
                cells += [stats.format_mean_ci(pair["diff_mean"], pair["diff_ci95"], scale=100, unit=" pt",
                                               fallback_half=binomial, signed=True),  # fmt: skip
                          f"{int(pair['wins'])} / {int(pair['losses'])}"]
        units = metrics[(metrics["method"] == method) & (metrics["drift_s"] == fresh_s)]
        cells += [
            f"{int(row['trainable_params_mean']):,}",
            _words(row),
            stats.format_mean_ci(*_value(row, "cell_write_pulses")),
            stats.format_si(*(v * 1e-12 for v in _value(row, "adapt_energy_pj")), "J"),
            stats.format_si(*(v * 1e-12 for v in _value(row, "inference_energy_pj_per_sample")), "J"),
            _count(_wearout(units)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    seed_text = f"{n_seeds} seed{'s' if n_seeds > 1 else ''} ({', '.join(str(s) for s in seeds)})"
    lines += [
        "",
        f"Rendered by `scripts/render_readme_tables.py` from a run of `{scenario['name']}` ({seed_text}, "
        f"{n_tasks} target tasks, {n_test:,} pooled test examples per method). Means over target tasks and seeds, "
        f"fresh devices (drift {format_duration(fresh_s)}) unless stated; ± is the 95 % t interval over seeds of the "
        "per-seed mean over tasks"
        + (" (none with one seed)" if n_seeds < 2 else "")
        + (f"; Δ is the paired difference against {_REFERENCE} on the same (seed, task) units" if has_reference else "")
        + ". Rounded to the interval's first significant digit.",
    ]
    return "\n".join(lines) + "\n"


def render_per_task(run_dir: Path) -> str:
    """Accuracy per target task (rows) and method (columns) on fresh devices: mean ± 95 % t interval over seeds."""
    _, summary, _ = _tables(run_dir)
    fresh_s = sorted(summary["drift_s"].unique())[0]
    fresh = summary[(summary["drift_s"] == fresh_s) & (summary["task"] != "all")]
    methods = list(dict.fromkeys(summary["method"]))
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for task in dict.fromkeys(fresh["task"]):
        cells = [f"`{task}`"]
        for method in methods:
            row = _one(fresh, method=method, task=task)
            cells.append("" if row is None else _accuracy(row))
        lines.append("| " + " | ".join(cells) + " |")
    n_seeds = int(fresh["n_seeds"].max())
    lines += ["", f"Accuracy per target task, fresh devices; ± is the 95 % t interval over {n_seeds} seeds "
              "(the binomial half-width of the task's test set with one seed)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def render_fusion(directory: Path) -> str:
    """Gain recovered per zero-write configuration (`fusion_pareto.csv` of a fusion design sweep, or of
    `python -m scenarios.plots_fusion RUN... --out DIR`): one row per (bank, method), fresh and after the last
    drift time, with the accuracy and digital state; rounded to the t interval over seeds, or with one seed to the
    test sets' binomial half-width (`recovered_pct_binom_half`)."""
    from scenarios.plots_fusion import AWARE_KEY, RANK_KEY, RECALIBRATE_KEY, SOURCES_KEY, point_label

    gains = pd.read_csv(directory / "fusion_pareto.csv")
    keys = [k for k in (SOURCES_KEY, RANK_KEY, AWARE_KEY, RECALIBRATE_KEY) if k in gains.columns]
    fresh_s, last_s = sorted(gains["drift_s"].unique())[0], sorted(gains["drift_s"].unique())[-1]
    fresh = gains[gains["drift_s"] == fresh_s].sort_values(["point", "recovered_pct_mean"], ascending=[True, False])
    drifted_column = [f"after {format_duration(last_s)}"] if last_s != fresh_s else []
    header = ["bank", "method", "gain recovered, fresh", *drifted_column, "accuracy, fresh", "digital state (words)",
              "on the front"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]

    def recovered(row: pd.Series | None) -> str:
        if row is None:
            return ""
        fallback = row.get("recovered_pct_binom_half")
        return stats.format_mean_ci(row["recovered_pct_mean"], row["recovered_pct_ci95"], unit=" %",
                                    fallback_half=None if pd.isna(fallback) else float(fallback))  # fmt: skip

    for _, row in fresh.iterrows():
        drifted = _one(gains, point=row["point"], method=row["method"], drift_s=last_s)
        bank = point_label(row, keys) if keys else str(row["point"])
        pooled = row.get("n_test_pooled", math.nan)
        low, high = stats.wilson_interval(row["accuracy_mean"], int(pooled) if pd.notna(pooled) else 0)
        accuracy = stats.format_mean_ci(row["accuracy_mean"], math.nan, scale=100, unit=" %",
                                        fallback_half=(high - low) / 2)  # the other tables' Wilson half-width
        cells = [bank, f"{row['method']} ({row['role']})", recovered(row)]
        cells += [recovered(drifted)] if drifted_column else []
        cells += [accuracy, f"{int(round(row['digital_state_words'])):,}", "yes" if row["on_front"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    n_seeds = int(gains["n_seeds"].max())
    reference = ", ".join(sorted(gains["reference"].dropna().unique()))
    lines += ["", f"Rendered by `scripts/render_readme_tables.py --fusion` from `{directory.name}/fusion_pareto.csv` "
              f"({n_seeds} seed{'s' if n_seeds != 1 else ''} with a LoRA gain to recover). Gain recovered: 100 × "
              "the method's gain over zero-shot "
              f"/ the best LoRA variant's ({reference}), paired on the same (seed, task) units, summed over tasks; "
              + ("± is the 95 % t interval over seeds" if n_seeds > 1 else
                 "one seed: no interval over seeds, values rounded to the test sets' binomial half-width "
                 "(conservative, unpaired)")
              + "; accuracy rounded to its pooled test set's binomial half-width. The front: no other configuration "
              "holds at most the words with at least the gain."]  # fmt: skip
    return "\n".join(lines) + "\n"


_IMAGE = re.compile(r"!\[[^\]]*\]\((?P<path>[^)\s]+\.(?:png|svg|jpg|jpeg|gif))\)")
_IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".pdf")


def referenced_figures(markdown: Path) -> list[Path]:
    """The local images a markdown file shows (`![alt](path)`), resolved against the file's folder, in order."""
    paths = [m.group("path") for m in _IMAGE.finditer(markdown.read_text())]
    return list(dict.fromkeys(markdown.parent / p for p in paths if "://" not in p))


def copy_figures(run_dir: Path, markdown: Path, only: list[str] | None = None, prune: bool = False) -> list[str]:
    """Copy the run's figures over the ones `markdown` references (same file name; `only`: these stems), and with
    `prune` delete the images in the referenced folders that nothing in `markdown` references. Returns one line
    per file copied, kept (the run did not draw it) or deleted."""
    referenced = referenced_figures(markdown)
    done = []
    for target in referenced:
        if only and target.stem not in only:
            continue
        source = run_dir / "figures" / target.name
        if source.is_file():
            atomic_write_bytes(target, source.read_bytes())
            done.append(f"copied {source} -> {target}")
        else:
            done.append(f"kept {target} (no {source})")
    if prune:
        for folder in dict.fromkeys(t.parent for t in referenced):
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in _IMAGE_SUFFIXES and path not in referenced:
                    path.unlink()
                    done.append(f"deleted {path} (not referenced by {markdown})")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--readme", type=Path, help="README to update in place")
    parser.add_argument("--marker", default="default", help="name of the <!-- results:NAME --> block")
    parser.add_argument("--per-task", action="store_true", help="the accuracy per target task instead")
    parser.add_argument("--fusion", action="store_true", help="the gain-recovered table of RUN_DIR/fusion_pareto.csv "
                        "(a fusion design sweep, or python -m scenarios.plots_fusion's --out folder)")
    parser.add_argument("--figures", type=Path, metavar="MARKDOWN",
                        help="copy the run's figures over those this markdown file references (by file name)")
    parser.add_argument("--figure", action="append", metavar="NAME", help="with --figures: only this figure stem "
                        "(repeatable)")
    parser.add_argument("--prune-figures", action="store_true",
                        help="with --figures: delete images in the referenced folders that it does not reference")
    args = parser.parse_args(argv)  # fmt: skip
    needed = "fusion_pareto.csv" if args.fusion else "metrics.csv"
    if not (args.run_dir / needed).is_file():
        parser.error(f"{args.run_dir}: no {needed} (not a finished run directory)")
    if (args.figure or args.prune_figures) and args.figures is None:
        parser.error("--figure and --prune-figures need --figures MARKDOWN")
    if args.figures is not None:
        if not args.figures.is_file():
            parser.error(f"{args.figures}: no such markdown file")
        print("\n".join(copy_figures(args.run_dir, args.figures, args.figure, args.prune_figures)))
        if args.readme is None:
            return
    if args.fusion:
        table = render_fusion(args.run_dir)
    else:
        table = render_per_task(args.run_dir) if args.per_task else render(args.run_dir)
    if args.readme is None:
        print(table, end="")
        return
    text = args.readme.read_text()
    pattern = re.compile(rf"(<!-- results:{args.marker} -->\n).*?(<!-- /results:{args.marker} -->)", re.S)
    if not pattern.search(text):
        parser.error(f"{args.readme}: no <!-- results:{args.marker} --> ... <!-- /results:{args.marker} --> block")
    atomic_write_text(args.readme, pattern.sub(lambda m: m.group(1) + table + m.group(2), text))


if __name__ == "__main__":
    main()
