"""End-to-end runs of the bundled tiny scenario through the CLI: files, columns, the zero-write invariant,
determinism whatever the executor, kill-and-resume, worker faults, corrupted checkpoints, locks, version stamps and
sweeps. The CLI runs execute on one 2-process Dask LocalCluster started once for this module
(`CROSSBAR_SIM_SCHEDULER`), so each run pays no cluster start-up."""

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
from scenarios.execution import SCHEDULER_ENV
from scenarios.results import METRICS_COLUMNS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FAULT_PLUGIN = Path(__file__).parent / "plugins" / "fault_plugin.py"
FAULT_KILL_ONCE_ENV = "CROSSBAR_SIM_FAULT_KILL_ONCE"
"""Read by the fault plugin (tests/plugins/fault_plugin.py): a file whose existence kills one worker."""


_ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-worker LocalCluster shared by this module's runs; its address reaches the CLI through the environment."""
    from distributed import Client, LocalCluster

    # workers inherit the fault trigger's path; a test arms it by creating the file
    os.environ[FAULT_KILL_ONCE_ENV] = str(tmp_path_factory.mktemp("fault") / "kill_a_worker")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with Client(local) as client:
            _ENV[SCHEDULER_ENV] = local.scheduler_address
            yield client
            _ENV.pop(SCHEDULER_ENV, None)
    os.environ.pop(FAULT_KILL_ONCE_ENV, None)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg", **_ENV}
    return subprocess.run(
        [sys.executable, "-m", "scenarios", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cluster) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = _cli("run", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Dask cluster at tcp://" in (out / "run.log").read_text()
    return out


def test_run_writes_every_output(tiny_run: Path) -> None:
    for name in ("config.json", "results.json", "metrics.csv", "ledger.csv", "report.md", "run.log", "summary.csv",
                 "summary.json", "paired.csv"):  # fmt: skip
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


def test_tiny_results_match_the_golden_file(tiny_run: Path) -> None:
    """Regression check against tests/golden/tiny.json (tolerances in scripts/update_golden.py). After an intended
    change of results: commit, run `python scripts/update_golden.py` (refuses a dirty tree), commit the file."""
    from script_module import load_script

    module = load_script("update_golden")
    golden = json.loads(module.GOLDEN.read_text())
    problems = module.compare(golden, module.extract(tiny_run))
    assert not problems, (f"{len(problems)} difference(s) from tests/golden/tiny.json (made at git "
                          f"{golden['git_hash'][:12]}): " + "; ".join(problems[:5]))  # fmt: skip


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


def test_serial_run_gives_the_same_bytes_as_two_workers(tiny_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = _cli("run", "tiny", "--out", str(again), "--serial")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serial" in (again / "run.log").read_text()
    assert (again / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()


def test_killed_run_resumes_to_the_same_results(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "MPLBACKEND": "Agg", **_ENV}
    process = subprocess.Popen(
        [sys.executable, "-m", "scenarios", "run", "tiny", "--out", str(out), "--cache", str(tiny_run / "cache")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    units = out / "checkpoints" / "units" / "seed0"
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
    assert "bank" in (out / "run.log").read_text() and "loaded from cache" in (out / "run.log").read_text()
    assert len(done_before) < len(list(units.glob("*.json"))), "the resumed run finished the missing units"


def test_resume_skips_finished_units(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    for name in ("metrics.csv", "results.json", "report.md"):
        (copy / name).unlink()
    units = sorted((copy / "checkpoints" / "units" / "seed0").glob("*.json"))
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
    assert "--fresh" in _one_line(result)


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


def test_recalibration_after_drift_is_reads_only(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "recal"
    result = _cli("run", "tiny", "--out", str(out), "--set", "evaluate.recalibrate_after_drift=true",
                  "--cache", str(tiny_run / "cache"))  # the same base, bank and arrays: nothing retrained
    assert result.returncode == 0, result.stderr[-3000:]
    ledger = Ledger.from_csv(out / "ledger.csv")
    assert ledger.total("count", phase="calibration", method="fusion", event="cell_read") > 0
    assert ledger.cell_write_pulses(phase="calibration") == 0
    # LoraHub's fused layers use no DoRA magnitude, so their norms are not needed and not re-read
    assert ledger.total("count", phase="calibration", method="lorahub") == 0
    assert pd.read_csv(out / "metrics.csv")["accuracy"].between(0, 1).all()


def test_worker_killed_mid_unit_is_retried_with_identical_results(cluster, tiny_run: Path, tmp_path: Path) -> None:
    trigger = Path(os.environ[FAULT_KILL_ONCE_ENV])
    trigger.touch()
    out = tmp_path / "fault"
    try:
        result = _cli("run", "tiny", "--out", str(out), "--cache", str(tiny_run / "cache"),
                      "--set", f"plugins=[{FAULT_PLUGIN}]")  # fmt: skip
    finally:
        trigger.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr[-3000:]
    killed_file = Path(f"{trigger}.killed")
    assert killed_file.is_file(), "no worker was killed"
    killed = int(killed_file.read_text())
    killed_file.unlink()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the nanny replaces the killed worker process
        cluster.wait_for_workers(2, timeout=60)
        pids = cluster.run(os.getpid, on_error="ignore").values()
        if len(pids) == 2 and killed not in pids:
            break
        time.sleep(0.5)
    assert killed not in pids, "the killed worker is still there"
    assert (out / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()


def test_long_work_and_shared_phases_get_the_scheduler_priority(cluster) -> None:
    from scenarios.execution import DaskExecutor
    from scenarios.loading import load_scenario
    from scenarios.runner import PHASE_PRIORITY, _unit_plans
    from scenarios.sweep import SweepPoint

    scenario = load_scenario("tiny")
    plans = _unit_plans(SweepPoint(0, "", {}, scenario), Path("point"), scenario, 0)
    sequences = [plan for plan in plans if len(plan.tasks) > 1]
    assert sequences, "the tiny scenario has a task-sequence method"
    assert min(p.priority for p in sequences) > max(p.priority for p in plans if len(p.tasks) == 1)
    assert PHASE_PRIORITY > max(p.priority for p in plans)

    executor = DaskExecutor(scheduler=cluster.scheduler.address)
    try:
        handles = [executor.submit(time.sleep, 0.5, key=f"priority-test-{p}", priority=p) for p in (1, 4)]
        list(executor.as_completed(handles))  # finished, still held: the scheduler keeps their task states
        keys = [handle.key for handle in handles]
        seen = cluster.run_on_scheduler(lambda dask_scheduler: {k: dask_scheduler.tasks[k].priority[0] for k in keys})
    finally:
        executor.close()
    assert seen == {"priority-test-1": -1, "priority-test-4": -4}  # Dask orders by -priority: 4 starts first


def test_corrupted_checkpoints_are_recomputed(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "corrupt"
    shutil.copytree(tiny_run, copy)
    (copy / "metrics.csv").unlink()
    unit = sorted((copy / "checkpoints" / "units" / "seed0").glob("*.json"))[1]
    unit.write_bytes(unit.read_bytes()[:40])  # truncated unit JSON
    base = next((copy / "cache").glob("base_model-*")) / "base_model.safetensors"
    base.write_bytes(base.read_bytes()[:100])  # truncated safetensors
    result = _cli("run", "tiny", "--out", str(copy))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    log = (copy / "run.log").read_text()
    assert "does not match its checksum" in log and "corrupted" in log
    assert "base_model" in log and "computed and cached" in log
    assert (copy / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()


def test_second_run_in_a_locked_directory_is_refused(tmp_path: Path) -> None:
    from scenarios.lock import run_lock

    out = tmp_path / "locked"
    with run_lock(out):
        result = _cli("run", "tiny", "--out", str(out), "--serial")
    assert result.returncode == 2
    line = _one_line(result)
    assert "another run is using this directory" in line and f"pid {os.getpid()}" in line


def test_resume_under_another_version_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "version"
    shutil.copytree(tiny_run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["git_hash"] = "0123abcd"
    (copy / "config.json").write_text(json.dumps(config))
    result = _cli("run", "tiny", "--out", str(copy), "--serial")
    assert result.returncode == 2
    assert "0123abcd" in _one_line(result) and "--allow-version-change" in _one_line(result)
    result = _cli("run", "tiny", "--out", str(copy), "--serial", "--allow-version-change")
    assert result.returncode == 0, result.stderr[-3000:]


_SMALL = ["--set", "methods=[{name: zero_shot}, {name: fusion, epochs: 1}]", "--set", "evaluate.drift_times_s=[0]",
          "--set", "outputs.formats=[png]"]  # fmt: skip


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, cluster) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sweep"
    result = _cli("run", "tiny", "--out", str(out), *_SMALL, "--sweep", "device.overrides.read_noise_frac=0.005,0.02",
                  "--sweep", "seed=0,1", "--cache", str(out.parent / "shared_cache"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_sweep_merges_points_and_seeds_with_confidence_intervals(sweep_run: Path) -> None:
    sweep = pd.read_csv(sweep_run / "sweep.csv")
    assert list(sweep.columns[:2]) == ["device.overrides.read_noise_frac", "point"]
    assert sorted(sweep["device.overrides.read_noise_frac"].unique()) == [0.005, 0.02]
    assert sorted(sweep["seed"].unique()) == [0, 1]
    assert len(sweep) == 2 * 2 * 2 * 2  # points x seeds x targets x methods, one drift time
    for point in ("p000", "p001"):
        assert (sweep_run / "points" / point / "metrics.csv").is_file()
    summary = pd.read_csv(sweep_run / "sweep_summary.csv")
    assert len(summary) == 2 * 2 and (summary["n_seeds"] == 2).all()
    for row in summary.itertuples():
        mine = sweep[(sweep["point"] == row.point) & (sweep["method"] == row.method)]
        per_seed = mine.groupby("seed")["accuracy"].mean()
        assert row.accuracy_mean == pytest.approx(per_seed.mean())
        half = 12.706 * per_seed.std(ddof=1) / 2**0.5  # t(0.975, 1 dof)
        assert row.accuracy_ci95 == pytest.approx(half, rel=1e-3)
    assert (sweep_run / "figures" / "sweep_accuracy_vs_device_overrides_read_noise_frac.png").is_file()


def test_point_with_two_seeds_reports_intervals_and_paired_differences(sweep_run: Path) -> None:
    point = sweep_run / "points" / "p000"
    metrics = pd.read_csv(point / "metrics.csv")
    summary = pd.read_csv(point / "summary.csv")
    overall = summary[summary["task"] == "all"]
    assert set(overall["method"]) == set(metrics["method"]) and (overall["n_seeds"] == 2).all()
    for row in overall.itertuples():  # t interval over the 2 seeds of the per-seed mean over the 2 targets
        per_seed = metrics[metrics["method"] == row.method].groupby("seed")["accuracy"].mean()
        assert row.accuracy_ci95 == pytest.approx(12.706 * per_seed.std(ddof=1) / 2**0.5, rel=1e-3, abs=1e-12)
        assert row.accuracy_binom_n == 2 * 2 * int(metrics["n_test"].iloc[0])
        assert row.accuracy_binom_low <= row.accuracy_mean <= row.accuracy_binom_high
    paired = pd.read_csv(point / "paired.csv")
    assert set(paired["reference"]) == {"fusion"} and "fusion" not in set(paired["method"])
    assert (paired[paired["task"] == "all"]["n_pairs"] == 4).all()
    document = json.loads((point / "summary.json").read_text())
    assert {"ci95", "binom", "paired", "rounding"} <= set(document["definitions"])
    report = (point / "report.md").read_text()
    assert "## Statistics over seeds (2 seeds: 0, 1)" in report and "Δ vs fusion" in report


def test_sweep_computes_each_shared_phase_once(sweep_run: Path) -> None:
    log = (sweep_run / "run.log").read_text()
    lines = [line for line in log.splitlines() if line.endswith("computed and cached")]
    computed = {kind: sum(f"crossbar_sim.runner: {kind} " in line for line in lines)
                for kind in ("base_model", "bank_part", "bank", "programmed")}  # fmt: skip
    # base model and bank (one part per source LoRA, 3 sources) once per seed: read noise does not change them;
    # programmed arrays once per seed and point
    assert computed == {"base_model": 2, "bank_part": 2 * 3, "bank": 2, "programmed": 4}


def test_failed_point_is_one_line_and_the_others_finish(sweep_run: Path, tmp_path: Path, monkeypatch) -> None:
    import scenarios.phases
    import scenarios.runner
    from scenarios.loading import load_study

    real_unit = scenarios.phases.run_unit

    def failing(analog, bank, scenario, workload, task, method_key, **kwargs):
        if scenario.device.overrides["read_noise_frac"] == 0.02 and method_key == "fusion":
            raise FloatingPointError("simulated failure\nwith a second line")
        return real_unit(analog, bank, scenario, workload, task, method_key, **kwargs)

    monkeypatch.setattr(scenarios.phases, "run_unit", failing)
    study = load_study("tiny", [s for s in _SMALL if s != "--set"],
                       ["device.overrides.read_noise_frac=0.005,0.02", "seed=0,1"])  # fmt: skip
    outcome = scenarios.runner.run_study(study, tmp_path / "fails", progress=False,
                                         cache_dir=sweep_run.parent / "shared_cache")  # fmt: skip
    assert outcome.finished == [tmp_path / "fails" / "points" / "p000"]
    assert len(outcome.failures) == 4 and all("\n" not in line for line in outcome.failures)
    assert all("point p001" in line and "FloatingPointError: simulated failure" in line for line in outcome.failures)
    merged = pd.read_csv(tmp_path / "fails" / "sweep.csv")
    assert set(merged["point"]) == {"p000"}
    assert "computed" not in (tmp_path / "fails" / "run.log").read_text(), "the shared cache was not reused"
