"""Names are safe and crossbar-sim never touches what it did not write (issue 24, items 4 and 5).

Through the real entry point (`python -m scenarios`): task names that would escape the run directory, or are empty
or too long, are refused in one line before anything is written; a folder of someone else's files is refused as
`--out`, with or without `--fresh`, and each file survives byte for byte; `--fresh` in a real run directory removes
the run's own outputs and keeps every file dropped there later. In process: the one name rule for method labels,
run names and task families, and `inside`, which keeps every written path in its folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from scenarios.errors import ScenarioError
from scenarios.families import TaskFamily
from scenarios.loading import load_scenario
from scenarios.names import NAME_MAX_CHARS, inside
from scenarios.rundir import MARKER, RunRecord

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_SMALL = ["--serial", "--set", "methods=[{name: zero_shot}, {name: fusion, epochs: 1}]",
          "--set", "evaluate.drift_times_s=[0]", "--set", "tasks.test_size=50", "--set", "model.base_epochs=1",
          "--set", "bank.epochs=1", "--set", "tasks.base_train_size=100", "--set", "bank.train_size=50"]  # fmt: skip
"""A tiny run in seconds: two methods, one drift time, small data sets, one epoch."""


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "scenarios", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root` (relative path -> file bytes, None for a folder)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


# --- task names ---------------------------------------------------------------------------------------------------
def _npz_scenario(folder: Path, target: str) -> Path:
    """The tiny scenario on three npz tasks, the target task named `target`."""
    rng = np.random.default_rng(3)
    for stem in ("a", "b", "t"):
        arrays = {"x_train": rng.normal(size=(30, 8, 8)).astype(np.float32), "y_train": rng.integers(0, 4, 30),
                  "x_test": rng.normal(size=(9, 8, 8)).astype(np.float32), "y_test": rng.integers(0, 4, 9)}  # fmt: skip
        np.savez(folder / f"{stem}.npz", **arrays)
    tiny = load_scenario("tiny").resolved_dict()
    tiny["tasks"] = {"family": "npz", "base": "a", "sources": ["b"], "targets": [target], "few_shot_train": 20,
                     "few_shot_val": 5, "test_size": 9,
                     "npz": {"a": "a.npz", "b": "b.npz", target: "t.npz"}}  # fmt: skip
    tiny["methods"] = [{"name": "zero_shot"}]
    path = folder / "npz.yaml"
    path.write_text(yaml.safe_dump(tiny))
    return path


@pytest.mark.parametrize(
    "name",
    ["../../../../elsewhere/pwn", "/abs/path", "a/b", "", "x" * 250],
    ids=["dot_dot", "absolute", "slash", "empty", "250_chars"],
)
def test_unsafe_task_names_are_refused_in_one_line_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scenario = _npz_scenario(data, name)
    out = tmp_path / "d1" / "d2" / "d3" / "d4" / "run"  # '../' x4 from checkpoints/units/seed0 lands in d4
    before = _tree(tmp_path)
    for command in (["validate", str(scenario)], ["run", str(scenario), "--out", str(out), "--serial"]):
        result = _cli(*command)
        assert result.returncode == 2, (command, result.stdout[-2000:], result.stderr[-2000:])
        line = _one_line(result)
        assert "tasks.npz" in line and "letters, digits" in line, line
        assert ("250 characters" if len(name) > NAME_MAX_CHARS else repr(name)) in line, line
    assert _tree(tmp_path) == before, "nothing may be written, inside or outside the run directory"
    assert not Path("/abs").exists()


def test_method_labels_run_names_and_family_task_names_follow_the_rule() -> None:
    for override, where in (
        ('methods=[{name: fusion, label: "a/b"}]', "methods[0].label"),
        ('methods=[{name: fusion, label: ".."}]', "methods[0].label"),
        (f"name={'n' * (NAME_MAX_CHARS + 1)}", "name"),
        ("name=../run", "name"),
        ("tasks.targets=[rotate_+45, ../x]", "tasks.targets[1]"),
    ):
        with pytest.raises(ScenarioError, match=r"letters, digits") as caught:
            load_scenario("tiny", [override])
        assert f": {where}: got " in str(caught.value)
    # names the bundled scenarios use stay valid, '+' of the digits family's rotate_+30 included
    labelled = load_scenario("tiny", ['methods=[{name: fusion, label: "fusion+ft_v2.1"}]'])
    assert labelled.methods[0].key == "fusion+ft_v2.1"
    with pytest.raises(ValueError, match="task name"):
        TaskFamily("bad_names", lambda request: None, task_names=("ok", "../up"))


def test_inside_keeps_every_path_in_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    assert inside(root, "checkpoints", "units/seed0/t__m.json") == root / "checkpoints" / "units/seed0/t__m.json"
    (root / "link").symlink_to(tmp_path)
    for parts in (("../x",), ("/etc/passwd",), ("a", "../../x"), ("link", "x"), ("",), ("x" * 256,)):
        with pytest.raises(ScenarioError):
            inside(root, *parts)


def test_an_edited_marker_never_leads_fresh_outside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    record = RunRecord.claim(run)
    (run / "metrics.csv").write_text("ours")
    record.add_files(run / "metrics.csv")
    marker = json.loads((run / MARKER).read_text())
    marker["files"].append("../victim.txt")
    (run / MARKER).write_text(json.dumps(marker))
    RunRecord.claim(run).remove_outputs(caches=True)
    assert victim.read_text() == "keep me" and not (run / "metrics.csv").exists()


# --- folders crossbar-sim did not write -------------------------------------------------------------------------
_FOREIGN = ("report.md", "results.json", "summary.csv", "figures/x.png", "cache/y", "checkpoints/z", "other.txt")


def _plant(root: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    planted = {}
    for index, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"someone else's {name} #{index}\n".encode() + os.urandom(32))
        planted[name] = path.read_bytes()
    return planted


def test_foreign_folder_is_refused_as_out_even_with_fresh(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    _plant(folder, _FOREIGN)
    before = _tree(folder)
    for extra in ([], ["--fresh"]):
        result = _cli("run", "tiny", "--out", str(folder), *_SMALL, *extra)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "not a crossbar-sim run directory" in _one_line(result)
        assert _tree(folder) == before, "every file survives byte for byte, and nothing is added"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "small"
    result = _cli("run", "tiny", "--out", str(out), *_SMALL, "--set", "outputs.formats=[png, svg]")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_fresh_removes_the_runs_outputs_and_keeps_files_dropped_there(small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    own_svgs = sorted(p.name for p in (run / "figures").glob("*.svg"))
    assert own_svgs and (run / "checkpoints" / "manifest.json").is_file()
    foreign = ("notes.md", "sweep.csv", "lifetime.csv", "figures/mine.png", "cache/y", "checkpoints/z",
               "checkpoints/units/seed0/mine.json", "points/p000/metrics.csv")  # fmt: skip
    planted = _plant(run, foreign)
    # a fresh start with PNG figures only: the run's SVGs must go, as must its checkpoints and cache entries
    result = _cli("run", "tiny", "--out", str(run), *_SMALL, "--set", "outputs.formats=[png]", "--fresh")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: (run / name).read_bytes() for name in foreign} == planted
    assert not list((run / "figures").glob("*.svg")), "the run's own figures of the first run were removed"
    log = (run / "run.log").read_text()
    assert "base_model" in log and "computed and cached" in log and "loaded from cache" not in log
    assert "loaded from checkpoints" not in log
    listed = json.loads((run / MARKER).read_text())["files"]
    assert "metrics.csv" in listed and not set(listed) & set(foreign)


def test_run_directory_from_before_the_marker_is_adopted(small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "legacy"
    shutil.copytree(small_run, run)
    (run / MARKER).unlink()  # as a run directory written before the marker existed
    planted = _plant(run, ("notes.md",))
    result = _cli("run", "tiny", "--out", str(run), *_SMALL, "--set", "outputs.formats=[png, svg]")
    assert result.returncode == 0, result.stderr[-3000:]
    listed = json.loads((run / MARKER).read_text())["files"]
    assert "metrics.csv" in listed and "figures/endurance.svg" in listed and "notes.md" not in listed
    assert (run / "notes.md").read_bytes() == planted["notes.md"]
