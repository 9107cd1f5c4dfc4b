"""The scenario runner: train base -> program base -> train bank -> program bank -> adapt and evaluate each target
task with each method -> write results (DESIGN section 6). Resumable from per-phase checkpoints.

Not wired yet: the CLI already validates scenarios and calls `run_scenario`.
"""

from __future__ import annotations

from pathlib import Path

from scenarios.schema import Scenario

__all__ = ["run_scenario"]


def run_scenario(scenario: Scenario, out_dir: Path, *, fresh: bool = False) -> Path:
    """Run every phase of `scenario` into `out_dir` (resuming from its checkpoints unless `fresh`) and return the
    run directory, which then holds the resolved config, results.json, metrics.csv, ledger.csv, figures and
    report.md."""
    raise NotImplementedError("the scenario runner is not wired to the crossbar and fusion engines yet")
