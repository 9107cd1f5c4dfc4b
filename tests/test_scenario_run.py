"""End-to-end runs of the bundled tiny scenario through the CLI: files, columns, the zero-write invariant,
determinism, and kill-and-resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from energy import Ledger
from scenarios.results import METRICS_COLUMNS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "scenarios", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = _cli("run", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_run_writes_every_output(tiny_run: Path) -> None:
    for name in ("config.json", "results.json", "metrics.csv", "ledger.csv", "report.md", "run.log"):
        assert (tiny_run / name).is_file(), name
    for figure in ("energy_vs_accuracy", "accuracy_by_task", "energy_breakdown", "cell_writes_per_layer",
                   "accuracy_vs_drift", "endurance"):  # fmt: skip
        assert (tiny_run / "figures" / f"{figure}.png").is_file(), figure
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["scenario"]["name"] == "tiny" and config["crossbar_sim_version"] and config["git_hash"]
    assert "| fusion |" in (tiny_run / "report.md").read_text()


def test_metrics_columns_and_invariants(tiny_run: Path) -> None:
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    assert list(metrics.columns) == list(METRICS_COLUMNS)
    # one row per (method, task, drift time): 6 methods x 2 targets x 2 drift times in tiny.yaml
    assert len(metrics) == 6 * 2 * 2
    assert not metrics.duplicated(["method", "task", "drift_s"]).any()
    assert metrics["accuracy"].between(0, 1).all()
    by_method = metrics.groupby("method")
    assert (by_method.get_group("fusion")["cell_write_pulses"] == 0).all()
    assert (by_method.get_group("lorahub")["cell_write_pulses"] == 0).all()
    assert (by_method.get_group("lora_in_situ")["cell_write_pulses"] > 0).all()
    assert (by_method.get_group("lora_program_once")["cell_write_pulses"] > 0).all()
    assert (by_method.get_group("fusion")["switches_to_wearout"] == float("inf")).all()
    assert (by_method.get_group("lora_in_situ")["switches_to_wearout"] < float("inf")).all()
    assert (metrics["inference_energy_pj_per_sample"] > 0).all()
    assert (by_method.get_group("fusion")["adapt_energy_pj"] > 0).all()
    # Digital state: fusion holds its trained values plus the calibration read-out; tiny.yaml: d_model 32, rank 2,
    # 3 sources, q and v of 2 blocks -> per layer 32 + 32*6 + 6*6 + 32*6 words of read-out.
    state = by_method.get_group("fusion")
    calibration_words = 4 * (32 + 32 * 6 + 6 * 6 + 32 * 6)
    assert (state["digital_state_words"] == state["trainable_params"] + calibration_words).all()
    assert (state["adapt_state_words"] == 4 * state["trainable_params"] + calibration_words).all()
    assert (state["digital_state_bytes"] == 2 * state["digital_state_words"]).all()  # int16 datapath (ISAAC)
    assert (by_method.get_group("zero_shot")["digital_state_words"] == 0).all()
    lora_digital = by_method.get_group("lora_digital")
    assert (lora_digital["digital_state_words"] == lora_digital["trainable_params"]).all()
    for written in ("lora_program_once", "lora_in_situ"):  # in arrays after adaptation; Adam while training
        group = by_method.get_group(written)
        assert (group["digital_state_words"] == 0).all()
        assert (group["adapt_state_words"] == 4 * group["trainable_params"]).all()
    report = (tiny_run / "report.md").read_text()
    assert "digital state (words / bytes)" in report


def test_metrics_agree_with_the_ledger(tiny_run: Path) -> None:
    """metrics.csv is derived from ledger.csv, never estimated on the side."""
    ledger = Ledger.from_csv(tiny_run / "ledger.csv")
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    fresh = metrics[metrics["drift_s"] == 0]
    for row in fresh.itertuples():
        labels = {"phase": "adapt", "task": row.task, "method": row.method}
        assert row.cell_write_pulses == pytest.approx(ledger.cell_write_pulses(**labels))
        assert row.adapt_energy_pj == pytest.approx(ledger.total("energy_pj", **labels))
    assert ledger.cell_write_pulses(phase="deploy_base") > 0
    assert ledger.cell_write_pulses(phase="deploy_bank") > 0


def test_same_seed_gives_identical_metrics(tiny_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = _cli("run", "tiny", "--out", str(again))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (again / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()


def test_killed_run_resumes_to_the_same_results(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    process = subprocess.Popen(
        [sys.executable, "-m", "scenarios", "run", "tiny", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    units = out / "checkpoints" / "units"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if units.is_dir() and len(list(units.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed: nothing was resumed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "metrics.csv").exists(), "a killed run must not look finished"
    done_before = {p.name for p in units.glob("*.json")}
    result = _cli("run", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()
    assert "bank loaded" in (out / "run.log").read_text()
    assert len(done_before) < len(list(units.glob("*.json"))), "the resumed run finished the missing units"


def test_resume_skips_finished_units(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    for name in ("metrics.csv", "results.json", "report.md"):
        (copy / name).unlink()
    units = sorted((copy / "checkpoints" / "units").glob("*.json"))
    units[0].unlink()  # one unit "did not finish"
    stamps = {p.name: p.stat().st_mtime_ns for p in units[1:]}
    result = _cli("run", "tiny", "--out", str(copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in units[1:]), "finished units were redone"
    assert units[0].exists()
    assert (copy / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()


def test_other_scenario_in_same_directory_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "other"
    shutil.copytree(tiny_run, copy)
    result = _cli("run", "tiny", "--out", str(copy), "--set", "seed=7")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--fresh" in lines[0]


def test_unusable_out_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = _cli("run", "tiny", "--out", str(blocker / "run"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write the run directory" in lines[0] and "Traceback" not in result.stderr


def test_plot_redraws_figures(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "plots"
    shutil.copytree(tiny_run, copy)
    shutil.rmtree(copy / "figures")
    result = _cli("plot", str(copy))
    assert result.returncode == 0, result.stderr
    assert (copy / "figures" / "endurance.png").is_file()


def test_recalibration_after_drift_is_reads_only(tmp_path: Path) -> None:
    out = tmp_path / "recal"
    result = _cli("run", "tiny", "--out", str(out), "--set", "evaluate.recalibrate_after_drift=true")
    assert result.returncode == 0, result.stderr[-3000:]
    ledger = Ledger.from_csv(out / "ledger.csv")
    assert ledger.total("count", phase="calibration", method="fusion", event="cell_read") > 0
    assert ledger.cell_write_pulses(phase="calibration") == 0
    # LoraHub's fused layers use no DoRA magnitude, so their norms are not needed and not re-read
    assert ledger.total("count", phase="calibration", method="lorahub") == 0
    assert pd.read_csv(out / "metrics.csv")["accuracy"].between(0, 1).all()
