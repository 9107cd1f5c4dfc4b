"""Statistics of a run over seeds (`scenarios.stats`): summary.csv, summary.json and paired.csv, written
byte-stable (`repr` floats) like metrics.csv; `scenarios.report` renders them into report.md."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simutil import atomic_write_text, finite_json, plain_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Statistics", "write_statistics"]


@dataclass(frozen=True)
class Statistics:
    """A run's summary over seeds (`scenarios.stats.summarise`) and paired comparison against fusion."""

    summary: object  # pandas.DataFrame
    paired: object  # pandas.DataFrame (empty without a fusion method)
    reference: str = "fusion"


def write_statistics(run_dir: Path, metrics: pd.DataFrame, reference: str = "fusion") -> Statistics:
    """Write summary.csv (mean and 95 % CI over seeds per method x task x drift time, `all` = mean over tasks,
    with the test set's Wilson interval), paired.csv (each method minus `reference` on the same seed and task) and
    summary.json (both, with the definitions of every interval)."""
    from scenarios import stats

    summary = stats.summarise(metrics)
    paired = stats.paired_differences(metrics, reference=reference)
    atomic_write_text(run_dir / "summary.csv", _frame_csv(summary))
    atomic_write_text(run_dir / "paired.csv", _frame_csv(paired))
    document = {
        "definitions": _DEFINITIONS | {"reference": reference},
        "summary": summary.to_dict("records"),
        "paired": paired.to_dict("records"),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(finite_json(plain_json(document)), indent=1))
    return Statistics(summary, paired, reference)


_DEFINITIONS = {
    "unit": "one metrics.csv row: (method, task, seed, drift_s); accuracy = mean over evaluate.repeats",
    "ci95": "Student-t 95 % interval over seeds: per task of the unit values; for task 'all' of the per-seed mean "
    "over target tasks (the target tasks are fixed, seeds are the random part); NaN with one seed",
    "binom": "Wilson score 95 % interval of the mean accuracy on the pooled test images "
    "(accuracy_binom_n = test images x tasks x seeds; repeats re-read the same images)",
    "paired": "method minus reference on the same (seed, task, drift_s) units; diff_ci95 is the t interval over seeds "
    "(task 'all': of the per-seed mean difference over tasks), t_p_value the two-sided one-sample t-test; "
    "wins/losses/ties and sign_p_value (exact two-sided binomial, ties dropped) over the (seed, task) pairs",
    "rounding": "half-widths to one significant digit (two if it is 1), values to the same decimal place "
    "(scenarios.stats.format_mean_ci)",
}  # fmt: skip


def _frame_csv(frame: object) -> str:
    """A DataFrame as CSV with `repr` floats (byte-stable, like metrics.csv)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(frame.columns))  # type: ignore[attr-defined]
    for row in frame.itertuples(index=False):  # type: ignore[attr-defined]
        writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()
