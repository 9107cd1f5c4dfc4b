"""Methods and task families registered from outside the packages (a scenario's `plugins:` file) run through the
CLI like the built-in ones, and are validated by the schema their registrations derive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    # the first unknown name is the plugin's task family (the schema checks tasks: before methods:)
    assert "tasks.family: got 'bars', expected one of the task families: digits, npz" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- a plugin family with settings of its own -------------------------------------------------------------------
SETTINGS_PLUGIN = Path(__file__).parent / "plugins" / "family_settings_plugin.py"

STRIPES = {
    "name": "striped",
    "plugins": [str(SETTINGS_PLUGIN)],
    "device": {"preset": "ideal"},
    "model": {"d_model": 8, "n_blocks": 1, "n_heads": 2, "d_ff": 8, "patch_size": 2, "base_epochs": 1},
    "tasks": {"family": "stripes", "stripe_level": 2.5, "stripe_rows": 2, "base": "horizontal",
              "sources": ["vertical"], "targets": ["both"], "base_train_size": 16, "few_shot_train": 4,
              "few_shot_val": 1, "test_size": 8},
    "bank": {"rank": 2, "train_size": 8},
    "methods": [{"name": "zero_shot"}],
}  # fmt: skip


def test_a_plugin_family_declares_its_own_settings(tmp_path: Path) -> None:
    from scenarios.loading import load_scenario
    from scenarios.workloads import load_task

    scenario = load_scenario(_write(tmp_path, STRIPES))
    assert scenario.tasks.stripe_level == 2.5 and scenario.resolved_dict()["tasks"]["stripe_rows"] == 2
    task = load_task(scenario, "both", "target")  # the loader gets the settings: 2-row stripes 2.5 above the noise
    x, y = task.x_test[:, 0], task.y_test
    stripes = np.where((y == 0)[:, None, None], x[:, :2, :], x[:, :, :2].transpose(0, 2, 1))
    assert stripes.mean() == pytest.approx(2.5, abs=0.1)
    defaults = {**STRIPES, "tasks": {k: v for k, v in STRIPES["tasks"].items() if not k.startswith("stripe_")}}
    assert load_scenario(_write(tmp_path, defaults)).tasks.settings().stripe_level == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stripe_level": -1.0}, "plugged.yaml: tasks.stripe_level: got -1.0, expected > 0"),
        ({"stripe_level": "bright"}, "plugged.yaml: tasks.stripe_level: got 'bright', expected a number"),
        ({"stripe_rows": 4}, "plugged.yaml: tasks.stripe_rows: got 4, expected <= 3 (a stripe leaves one row"),
        ({"stripe_width": 2}, "plugged.yaml: tasks.stripe_width: unknown key, expected one of: family, base,"),
        ({"family": "digits", "base": "clean", "sources": ["blur"], "targets": ["invert"]},
         "plugged.yaml: tasks.stripe_level: not used by family digits (a setting of stripes); remove it"),
    ],
)  # fmt: skip
def test_a_bad_family_setting_is_one_line_naming_key_value_and_expectation(
    tmp_path: Path, change: dict, message: str
) -> None:
    from scenarios.loading import ScenarioError, load_scenario

    with pytest.raises(ScenarioError) as raised:
        load_scenario(_write(tmp_path, {**STRIPES, "tasks": {**STRIPES["tasks"], **change}}))
    assert "\n" not in str(raised.value) and str(raised.value).startswith(message), str(raised.value)
