"""Render the README's result table for a run directory, so that no number in the README is typed by hand.

    python scripts/render_readme_tables.py runs/multitask            # print the markdown
    python scripts/render_readme_tables.py runs/multitask --readme README.md --marker default

With `--readme`, the text between `<!-- results:MARKER -->` and `<!-- /results:MARKER -->` is replaced.

Accuracy is a mean over target tasks (and seeds, where the run has several); its ± is the 95 % binomial half-width
of the pooled test set (1.96·sqrt(p(1-p)/n), n = test images × tasks × seeds). That is the test set's sampling
error only: with one seed it does not include training-seed variance, which the README says next to the table.
Numbers are rounded to what that interval supports (whole percent for a half-width of one point or more).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pandas as pd

from energy import atomic_write_text

_SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def _si(value: float, unit: str) -> str:
    """Two significant digits with an SI prefix (the ledger's energies are exact, but no headline needs more)."""
    if value == 0:
        return "0"
    for factor, prefix in _SI_PREFIXES:
        if abs(value) >= factor:
            return f"{float(f'{value / factor:.2g}'):g} {prefix}{unit}"
    return f"{value:.2g} {unit}"


def _count(value: float) -> str:
    if math.isinf(value):
        return "never"
    return f"{float(f'{value:.2g}'):,.0f}"


def render(run_dir: Path) -> str:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    scenario = json.loads((run_dir / "config.json").read_text())["scenario"]
    n_tasks = metrics["task"].nunique()
    n_seeds = metrics["seed"].nunique() if "seed" in metrics else 1
    n_test = int(scenario["tasks"]["test_size"]) * n_tasks * n_seeds
    drift_times = sorted(metrics["drift_s"].unique())
    last_drift = drift_times[-1]
    fresh = metrics[metrics["drift_s"] == 0.0]
    drifted = metrics[metrics["drift_s"] == last_drift]
    methods = list(dict.fromkeys(metrics["method"]))

    lines = [
        f"| method | mean accuracy (95 % test-set CI) | after {last_drift / 86400:.0f} days | trainable values "
        "| digital state (words) | cell write pulses / task | adaptation energy / task | inference energy / sample "
        "| task switches to wear-out* |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in methods:
        rows = fresh[fresh["method"] == method]
        p = rows["accuracy"].mean()
        half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n_test) * 100
        digits = 0 if half >= 1.0 else 1
        p_drift = drifted[drifted["method"] == method]["accuracy"].mean()
        lines.append(
            f"| {method} | {p * 100:.{digits}f} ± {half:.{digits}f} % | {p_drift * 100:.{digits}f} % "
            f"| {int(rows['trainable_params'].mean()):,} | {int(rows['digital_state_words'].mean()):,} "
            f"| {_count(rows['cell_write_pulses'].mean())} | {_si(rows['adapt_energy_pj'].mean() * 1e-12, 'J')} "
            f"| {_si(rows['inference_energy_pj_per_sample'].mean() * 1e-12, 'J')} "
            f"| {_count(rows['switches_to_wearout'].min())} |"
        )
    lines.append("")
    lines.append(
        f"Rendered by `scripts/render_readme_tables.py` from a run of `{scenario['name']}` "
        f"({n_seeds} seed{'s' if n_seeds > 1 else ''}, {n_tasks} target tasks, {n_test:,} pooled test images)."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--readme", type=Path, help="README to update in place")
    parser.add_argument("--marker", default="default", help="name of the <!-- results:NAME --> block")
    args = parser.parse_args()
    table = render(args.run_dir)
    if args.readme is None:
        print(table, end="")
        return
    text = args.readme.read_text()
    pattern = re.compile(rf"(<!-- results:{args.marker} -->\n).*?(<!-- /results:{args.marker} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{args.readme}: no <!-- results:{args.marker} --> ... <!-- /results:{args.marker} --> block")
    atomic_write_text(args.readme, pattern.sub(lambda m: m.group(1) + table + m.group(2), text))


if __name__ == "__main__":
    main()
