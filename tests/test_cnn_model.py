"""`model.kind: cnn` for the digits study: convolutions on arrays (AnalogConv2d), a LoRA bank on fc1/fc2, a whole
run end to end, and the schema's rules for the kind."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from crossbar import AnalogConv2d, analog_layers, convert_to_analog, device_preset, program
from scenarios.runner import run_scenario
from scenarios.schema import Scenario
from scenarios.workloads import build_model

RAW = {
    "name": "cnn_digits",
    "device": {"preset": "ideal"},
    "model": {"kind": "cnn", "d_model": 8, "d_ff": 8, "base_epochs": 2, "batch_size": 32},
    "tasks": {"base": "clean", "sources": ["blur", "invert"], "targets": ["blur_shift"], "base_train_size": 128,
              "few_shot_train": 10, "few_shot_val": 2, "test_size": 40},
    "bank": {"rank": 2, "alpha": 4.0, "epochs": 1, "train_size": 32, "target_modules": ["fc1", "fc2"]},
    "methods": [{"name": "zero_shot"}, {"name": "fusion", "epochs": 1}],
    "evaluate": {"drift_times_s": [0.0]},
    "outputs": {"plots": False},
}  # fmt: skip


def test_cnn_converts_its_convolutions_and_matches_on_the_ideal_preset() -> None:
    scenario = Scenario.model_validate(RAW)
    model = build_model(scenario.model, 10, (1, 8, 8), seed=0).eval()
    analog = convert_to_analog(model, device_preset("ideal"), seed=0)
    assert isinstance(analog.conv1, AnalogConv2d) and isinstance(analog.conv2, AnalogConv2d)
    assert {layer.name for _, layer in analog_layers(analog)} == {"conv1", "conv2", "fc1", "fc2", "head"}
    program(analog)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(analog(x), model(x), rtol=1e-3, atol=1e-3)


def test_cnn_digits_study_runs_end_to_end(tmp_path) -> None:
    run = run_scenario(Scenario.model_validate(RAW), tmp_path / "run", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    assert set(metrics["method"]) == {"zero_shot", "fusion"}
    assert (metrics.loc[metrics["method"] == "fusion", "cell_write_pulses"] == 0).all()
    assert metrics.loc[metrics["method"] == "fusion", "trainable_params"].iloc[0] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bank": {**RAW["bank"], "target_modules": ["q", "v"]}}, "fc1 and/or fc2 for model.kind cnn"),
        ({"model": {**RAW["model"], "patch_size": 4}}, "not used by kind cnn"),
    ],
)
def test_schema_rules_for_the_cnn_kind(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario.model_validate({**RAW, **change})
