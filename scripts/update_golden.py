"""Regenerate the tiny scenario's golden results (tests/golden/tiny.json) that tests/test_scenario_run.py checks.

    python scripts/update_golden.py                  # runs `crossbar-sim run tiny --serial` in a temporary folder
    python scripts/update_golden.py --run-dir DIR    # or takes a finished tiny run made from this same commit

Refuses (one line, exit 2) to write from a dirty git tree (`git status --porcelain` not empty), as peft's regression
tests do: a golden file must come from a commit, recorded in the file, so that a change of results can be traced
to the commit that made it. Commit your change first, regenerate, then commit tests/golden/tiny.json.

The comparison (`compare`) allows for a different CPU / BLAS (the same machine reproduces metrics.csv byte for
byte): accuracy within 0.025 absolute per (method, task, seed, drift) row (5 of tiny's 200 test images); write
pulses, energies and latency within 2 % relative; trainable values and digital-state words exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "tiny.json"
SCENARIO = "tiny"
KEYS = ("method", "task", "seed", "drift_s")
TOLERANCES: dict[str, dict[str, float]] = {
    "accuracy": {"abs": 0.025},
    "cell_write_pulses": {"rel": 0.02},
    "adapt_energy_pj": {"rel": 0.02},
    "adapt_latency_s": {"rel": 0.02},
    "inference_energy_pj_per_sample": {"rel": 0.02},
    "trainable_params": {"abs": 0.0},
    "digital_state_words": {"abs": 0.0},
}
"""Per metrics.csv column: allowed |actual - golden| (abs) or |actual - golden| / |golden| (rel)."""


def dirty_paths(repo: Path) -> list[str]:
    """`git status --porcelain` lines of `repo` (untracked files included, ignored ones not)."""
    done = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"update_golden: {repo} is not a git work tree ({done.stderr.strip()[:120]})")
    return [line for line in done.stdout.splitlines() if line.strip()]


def _head(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def extract(run_dir: Path) -> list[dict[str, object]]:
    """The golden rows of a run: the key columns and every TOLERANCES column of its metrics.csv."""
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv", dtype={"method": str, "task": str}, keep_default_na=False)
    rows = []
    for record in metrics.to_dict("records"):
        row = {key: record[key] for key in KEYS}
        row |= {column: float(record[column]) for column in TOLERANCES if column in record}
        rows.append(row)
    return rows


def compare(golden: dict, rows: list[dict[str, object]]) -> list[str]:
    """Differences of `rows` from the golden file beyond its tolerances, one line each (empty: they agree)."""
    tolerances = golden.get("tolerances", TOLERANCES)
    expected = {tuple(row[key] for key in KEYS): row for row in golden["rows"]}
    actual = {tuple(row[key] for key in KEYS): row for row in rows}
    problems = [f"missing row {key}" for key in expected if key not in actual]
    problems += [f"unexpected row {key}" for key in actual if key not in expected]
    for key, want in expected.items():
        got = actual.get(key)
        if got is None:
            continue
        for column, tolerance in tolerances.items():
            if column not in want:
                continue
            if column not in got:
                problems.append(f"{key}: column {column} missing")
                continue
            a, b = float(got[column]), float(want[column])  # type: ignore[arg-type]
            if math.isinf(a) or math.isinf(b):
                ok = a == b
            elif "rel" in tolerance:
                ok = abs(a - b) <= tolerance["rel"] * abs(b) + 1e-12
            else:
                ok = abs(a - b) <= tolerance["abs"] + 1e-12
            if not ok:
                problems.append(f"{key}: {column} = {a!r}, golden {b!r} (tolerance {tolerance})")
    return problems


def _run_tiny(out: Path) -> None:
    command = [sys.executable, "-m", "scenarios", "run", SCENARIO, "--serial", "--out", str(out), "--fresh"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"update_golden: `{' '.join(command[1:])}` failed: {done.stderr.strip()[-400:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a finished tiny run made from this commit (default: run one)")
    parser.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)  # tests: a temporary repository
    parser.add_argument("--out", type=Path, default=GOLDEN, help=f"golden file to write (default {GOLDEN})")
    args = parser.parse_args(argv)
    dirty = dirty_paths(args.repo)
    if dirty:
        print(f"update_golden: refusing to regenerate from a dirty git tree ({len(dirty)} changed path(s), e.g. "
              f"{dirty[0].strip()}); commit or stash first", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    head = _head(args.repo)
    with tempfile.TemporaryDirectory() as folder:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(folder) / SCENARIO
            _run_tiny(run_dir)
        config = json.loads((run_dir / "config.json").read_text())
        if config.get("git_hash") != head or config["scenario"]["name"] != SCENARIO:
            print(f"update_golden: {run_dir} is a run of {config['scenario']['name']} at {config.get('git_hash')}, "
                  f"not of {SCENARIO} at HEAD {head}", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        golden = {
            "scenario": SCENARIO,
            "command": f"crossbar-sim run {SCENARIO} --serial",
            "git_hash": head,
            "crossbar_sim_version": config.get("crossbar_sim_version"),
            "regenerate": "python scripts/update_golden.py (from a clean git tree)",
            "tolerances": TOLERANCES,
            "rows": extract(run_dir),
        }
    from simutil import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(golden, indent=1, allow_nan=False, default=str) + "\n")
    print(f"wrote {args.out} ({len(golden['rows'])} rows, git {head[:12]})")


if __name__ == "__main__":
    main()
