"""Absurd sizes are refused before anything runs (`scenarios.budget`), with the estimate and the key to blame, and an
npz file is refused from its headers when it declares far more than the scenario reads."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from scenarios.budget import WORK_BOUND_CORE_S, check_budget, estimate_study, read_npz_headers
from scenarios.errors import ScenarioError
from scenarios.loading import bundled_scenarios, load_scenario, load_study
from scenarios.tasks import load_npz_task


def _cli(*args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "scenarios", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def load_time_s() -> float:
    """Wall time of `validate tiny` here: interpreter, imports and loading, before any budget check matters."""
    result, elapsed = _cli("validate", "tiny")
    assert result.returncode == 0, result.stderr
    return elapsed


ABSURD = [
    ("tasks.test_size=1000000000000", "tasks.test_size=1000000000000"),
    ("model.d_model=1000000", "model.d_model=1000000"),
    ("model.d_ff=1000000000", "model.d_ff=1000000000"),
    ("model.n_blocks=1000000", "model.n_blocks=1000000"),
    ("evaluate.repeats=1000000000", "evaluate.repeats=1000000000"),
    ("methods.fusion.epochs=1000000000", "methods[1].epochs=1000000000"),
]


@pytest.mark.parametrize(("override", "blamed"), ABSURD, ids=[case[0].split("=")[0] for case in ABSURD])
def test_run_refuses_absurd_sizes_in_one_line(tmp_path: Path, load_time_s: float, override: str, blamed: str) -> None:
    out = tmp_path / "run"
    result, elapsed = _cli("run", "multitask", "--out", str(out), "--set", override)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "needs an estimated" in lines[0] and blamed in lines[0] and "--allow-large" in lines[0]
    assert elapsed < load_time_s + 5.0, f"refused after {elapsed:.1f} s (loading alone: {load_time_s:.1f} s)"
    assert not out.exists()


def test_validate_prints_estimates_and_warns_without_failing() -> None:
    ok, _ = _cli("validate", "multitask")
    assert ok.returncode == 0 and "warning" not in ok.stderr
    phases = [line.split()[1] for line in ok.stdout.splitlines() if line.startswith("estimate ")]
    assert phases == ["data", "base", "bank", "program", "adapt", "evaluate", "total"]
    assert "MiB" in ok.stdout and "core-" in ok.stdout
    large, _ = _cli("validate", "multitask", "--set", "evaluate.repeats=1000000000")
    assert large.returncode == 0 and large.stdout.startswith("OK: ")
    assert "warning" in large.stderr and "evaluate.repeats=1000000000" in large.stderr


def test_allow_large_lets_run_past_the_budget(tmp_path: Path) -> None:
    """--allow-large: the budget only warns, and the run goes on to its next check (here a refused flag pair, so
    nothing runs)."""
    out = tmp_path / "run"
    args = ["run", "multitask", "--out", str(out), "--set", "model.d_ff=1000000000", "--serial", "--workers", "1"]
    result, _ = _cli(*args, "--allow-large")
    assert result.returncode == 2 and "--serial runs in this process" in result.stderr
    assert "warning" in result.stderr and "model.d_ff=1000000000" in result.stderr
    assert not out.exists()


def test_bundled_scenarios_are_within_the_budget() -> None:
    for name in bundled_scenarios():
        study = load_study(name)
        assert check_budget(study) == [], name
        assert sum(phase.core_s for phase in estimate_study(study)) < WORK_BOUND_CORE_S / 4, name
    default = {phase.phase: phase for phase in estimate_study(load_study("multitask"))}
    assert 2**29 < default["adapt"].peak_bytes < 2**30  # measured: 633 MiB for a fusion unit
    assert 300 < sum(phase.core_s for phase in default.values()) < 3000  # 594 s on one idle core (README)


def test_capped_sizes_give_the_budget_message_not_an_overflow() -> None:
    scenario = load_scenario("multitask", [f"model.d_ff={10**400}"])
    with pytest.raises(ScenarioError, match=r"comes mostly from model\.d_ff.*--allow-large"):
        check_budget(load_study("multitask", [f"model.d_ff={10**400}"]))
    assert scenario.model.d_ff == 10**400


# --- npz files declaring more than they hold or than the scenario reads ---------------------------------------
SHAPE = (12_000_000, 1, 8, 8)  # float32: 3.07 GB of zeros


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zeros_bomb(path: Path) -> None:
    """An npz whose x_train member is 3.07 GB of float32 zeros deflated into ~13 MB, with small y_train, x_test,
    y_test: the deflate stream of one 64 MiB block of zeros is repeated (each block ends in a full flush, so they
    are independent). The member's CRC is left 0: nothing may read that far."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": SHAPE})
    size, block = int(np.prod(SHAPE)) * 4, 64 << 20
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = deflate.compress(header.getvalue()) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = deflate.compress(bytes(block)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(bytes(size % block)) + deflate.flush()
    data_size = len(head) + (size // block) * len(body) + len(tail)
    name = b"x_train.npy"
    total = size + len(header.getvalue())
    with path.open("wb") as file:
        file.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, data_size, total, len(name), 0) + name)
        file.write(head)
        for _ in range(size // block):
            file.write(body)
        file.write(tail)
        central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, 0, data_size, total, len(name),
                              0, 0, 0, 0, 0, 0) + name  # fmt: skip
        start = file.tell()
        file.write(central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), start, 0))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("y_train.npy", _npy(np.zeros(SHAPE[0] // 1000, dtype=np.int64)))
        archive.writestr("x_test.npy", _npy(np.zeros((10, 8, 8), dtype=np.float32)))
        archive.writestr("y_test.npy", _npy(np.zeros(10, dtype=np.int64)))


def _small(path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.normal(size=(40, 8, 8)).astype(np.float32), y_train=rng.integers(0, 3, 40),
             x_test=rng.normal(size=(10, 8, 8)).astype(np.float32), y_test=rng.integers(0, 3, 10))  # fmt: skip


_PEAK_REPORTING_VALIDATE = """
import atexit, sys
from pathlib import Path

def report_peak():  # VmHWM: this process's peak resident memory since exec, in kB. A child's ru_maxrss would
    # also count the memory of the pytest process it was forked from, which the kernel carries over exec.
    status = Path("/proc/self/status").read_text()
    Path(sys.argv[1]).write_text(status.split("VmHWM:")[1].split()[0])

atexit.register(report_peak)
from scenarios.cli import main
main(["validate", sys.argv[2]])
"""


def test_npz_declaring_3_gb_is_refused_from_its_headers(tmp_path: Path) -> None:
    _zeros_bomb(tmp_path / "a.npz")
    assert read_npz_headers(tmp_path / "a.npz")["x_train"][0] == SHAPE
    for name in ("b", "c", "t"):
        _small(tmp_path / f"{name}.npz")
    tiny = load_scenario("tiny").resolved_dict()
    tiny["tasks"] = {"family": "npz", "base": "a", "sources": ["b", "c"], "targets": ["t"], "few_shot_train": 20,
                     "npz": {name: f"{name}.npz" for name in ("a", "b", "c", "t")}}  # fmt: skip
    (tmp_path / "bomb.yaml").write_text(yaml.safe_dump(tiny))
    peak_file = tmp_path / "peak_kib"
    result = subprocess.run([sys.executable, "-c", _PEAK_REPORTING_VALIDATE, str(peak_file),
                             str(tmp_path / "bomb.yaml")], capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "a.npz" in lines[0] and "x_train declares shape (12000000, 1, 8, 8) float32 (2.86 GiB)" in lines[0]
    assert "expected at most 3005 rows" in lines[0]  # tasks.base_train_size 3000 + tasks.few_shot_val 5
    peak_kib = int(peak_file.read_text())
    assert peak_kib * 1024 < 500e6, f"peak {peak_kib / 1024:.0f} MiB"


def test_npz_rows_beyond_the_memory_are_refused_from_the_header(tmp_path: Path) -> None:
    """A member whose rows the scenario all reads, but whose declared size exceeds the machine's memory: refused
    from its header (the member holds nothing past it)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8, 8)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x_train.npy", header.getvalue())
        for key, array in (("y_train", np.zeros(4, np.int64)), ("x_test", np.zeros((4, 8, 8))), ("y_test", [0] * 4)):
            archive.writestr(f"{key}.npy", _npy(np.asarray(array)))
    with pytest.raises(ScenarioError, match=r"huge\.npz: x_train declares shape \(1000000000000, 8, 8\) float32 "
                       r"\(233 TiB\): the 1000000000000 rows .* of memory available"):  # fmt: skip
        load_npz_task(tmp_path / "huge.npz", "huge", n_train=10**12, n_val=0, n_test=4, patch_size=2)


def test_a_hardware_aware_bank_is_priced_with_its_programmings() -> None:
    """bank.hardware_aware programs and calibrates the base once per source task and trains each LoRA through the
    arrays: the bank phase holds the arrays (more memory) and its work includes every source's programming."""
    digital, aware = (
        {p.phase: p for p in estimate_study(load_study("tiny", [f"bank.hardware_aware={flag}"]))}
        for flag in ("false", "true")
    )
    assert aware["bank"].peak_bytes > digital["bank"].peak_bytes
    assert aware["bank"].core_s != digital["bank"].core_s
    program_one = aware["program"].core_s  # one base + bank programming and calibration per seed
    assert aware["bank"].core_s > program_one * 0.5  # three sources' base programmings at least
