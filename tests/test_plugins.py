"""Methods and task families registered from outside the packages (a scenario's `plugins:` file) run through the
CLI like the built-in ones, and are validated by the schema their registrations derive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

PLUGIN = Path(__file__).parent / "plugins" / "external_plugin.py"

SCENARIO = {
    "name": "plugged",
    "seed": 0,
    "plugins": [str(PLUGIN)],
    "device": {"preset": "ideal"},
    "model": {"d_model": 8, "n_blocks": 1, "n_heads": 2, "d_ff": 8, "patch_size": 2, "base_epochs": 2,
              "batch_size": 16},
    "tasks": {"family": "bars", "base": "bright", "sources": ["dim", "faint"], "targets": ["dimmer"],
              "base_train_size": 64, "few_shot_train": 10, "few_shot_val": 2, "test_size": 30},
    "bank": {"rank": 2, "alpha": 4.0, "epochs": 1, "train_size": 16},
    "methods": [{"name": "zero_shot"}, {"name": "logit_bias", "epochs": 2, "lr": 0.1}],
    "outputs": {"plots": False},
}  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "scenarios", *args], capture_output=True, text=True, timeout=300, env=env
    )


def _write(folder: Path, scenario: dict) -> Path:
    path = folder / "plugged.yaml"
    path.write_text(yaml.safe_dump(scenario))
    return path


def test_external_method_and_task_family_run_through_the_cli(tmp_path: Path) -> None:
    path = _write(tmp_path, SCENARIO)
    out = tmp_path / "run"
    result = _cli("run", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["method"]) == {"zero_shot", "logit_bias"}
    assert set(metrics["task"]) == {"dimmer"}
    row = metrics[metrics["method"] == "logit_bias"].iloc[0]
    assert row["trainable_params"] == 3 and row["cell_write_pulses"] == 0
    assert metrics["accuracy"].between(0, 1).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": [{"name": "logit_bias", "lr": -1.0}]}, "methods[0].lr: got -1.0, expected > 0"),
        ({"methods": [{"name": "logit_bias", "rank": 2}]}, "methods[0].rank: unknown key, expected one of:"),
        ({"tasks": {**SCENARIO["tasks"], "targets": ["dimmerr"]}}, "did you mean 'dimmer'"),
        ({"plugins": ["missing_plugin.py"]}, "plugins: plugin"),
    ],
)
def test_plugin_registrations_are_validated(tmp_path: Path, change: dict, message: str) -> None:
    result = _cli("validate", str(_write(tmp_path, {**SCENARIO, **change})))
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_without_the_plugin_its_names_are_unknown(tmp_path: Path) -> None:
    result = _cli("validate", str(_write(tmp_path, {k: v for k, v in SCENARIO.items() if k != "plugins"})))
    assert result.returncode == 2
    assert "methods[1].name: got 'logit_bias', expected one of: zero_shot, fusion" in result.stderr
