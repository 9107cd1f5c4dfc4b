"""The lifetime study (issue 11, item 6) on a tiny version of the tiny scenario: rows marked simulated or
extrapolated, wear that only grows, fusion without writes, the figure and the report section, and resume."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from scenarios.lifetime import LIFETIME_COLUMNS
from scenarios.loading import load_scenario
from scenarios.runner import run_scenario

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OVERRIDES = [
    "methods=[{name: fusion, epochs: 1}, {name: lora_program_once, epochs: 1}]",
    "tasks.targets=[rotate_+45, invert_noise]",
    "evaluate.drift_times_s=[0]",
    "lifetime={switches: 300, interval_s: 86400, simulate_exact: 3, points: 6}",
    "outputs.formats=[png]",
]


@pytest.fixture(scope="module")
def life_run(tmp_path_factory) -> Path:
    scenario = load_scenario("tiny", OVERRIDES)
    return run_scenario(scenario, tmp_path_factory.mktemp("life") / "run", progress=False)


def test_lifetime_rows_are_marked_simulated_or_extrapolated(life_run: Path) -> None:
    table = pd.read_csv(life_run / "lifetime.csv")
    assert tuple(table.columns) == LIFETIME_COLUMNS
    for method, rows in table.groupby("method", sort=False):
        simulated = rows[rows["kind"] == "simulated"]
        extrapolated = rows[rows["kind"] == "extrapolated"]
        assert list(simulated["switch"]) == [1, 2, 3]
        assert list(simulated["task"]) == ["rotate_+45", "invert_noise", "rotate_+45"]  # targets in rotation
        assert list(simulated["time_s"]) == [0.0, 86400.0, 2 * 86400.0]
        assert simulated["accuracy"].between(0, 1).all() and simulated["accuracy"].notna().all()
        assert extrapolated["accuracy"].isna().all() and extrapolated["switch_pulses"].isna().all()
        assert extrapolated["switch"].min() > 3 and extrapolated["switch"].max() == 300
        assert set(rows["kind"]) == {"simulated", "extrapolated"}
        wear = rows.sort_values("switch")["worst_cell_pulses"].to_numpy()
        assert (wear[1:] >= wear[:-1]).all(), method  # cumulative wear never decreases
    fusion = table[table["method"] == "fusion"]
    assert (fusion["worst_cell_pulses"] == 0).all() and (fusion["switch_pulses"].fillna(0) == 0).all()
    lora = table[table["method"] == "lora_program_once"].sort_values("switch")
    simulated = lora[lora["kind"] == "simulated"]
    assert (simulated["switch_pulses"] > 0).all()  # every switch rewrites the LoRA arrays
    # extrapolation continues each cell's measured rate: the worst cell grows linearly beyond switch 3
    ext = lora[lora["kind"] == "extrapolated"]
    last = simulated.iloc[-1]
    slopes = (ext["worst_cell_pulses"] - last["worst_cell_pulses"]) / (ext["switch"] - 3)
    assert (slopes > 0).all()
    assert math.isclose(lora["worst_cell_wear_fraction"].iloc[-1] * 1e6, lora["worst_cell_pulses"].iloc[-1])


def test_lifetime_report_figure_and_resume(life_run: Path) -> None:
    report = (life_run / "report.md").read_text()
    assert "## Lifetime" in report and "| fusion |" in report.split("## Lifetime")[1]
    assert (life_run / "figures" / "lifetime.png").stat().st_size > 1000
    before = (life_run / "lifetime.csv").read_bytes()
    run_scenario(load_scenario("tiny", OVERRIDES), life_run, progress=False)  # everything from checkpoints
    assert (life_run / "lifetime.csv").read_bytes() == before
    assert "lifetime of" not in (life_run / "run.log").read_text().split("loaded from checkpoints")[-1]
