"""Exit codes and what a user sees, through the real entry point in a subprocess: 0 success, 1 failed units (or a
full disk), 2 user error, 130 interrupted; one line, never a traceback; no stale lock; outputs readable as the
user's umask says. Runs a toy scenario (the `bars` family of tests/plugins/external_plugin.py) whose shared
phases are cached once for the module."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_plugins import SCENARIO as PLUGIN_SCENARIO

PLUGINS = Path(__file__).parent / "plugins"
ABORTED = "crossbar-sim: aborted; resume with the same command"
SCENARIO = {
    **PLUGIN_SCENARIO,
    "name": "codes",
    "plugins": [str(PLUGINS / "external_plugin.py"), str(PLUGINS / "exit_codes_plugin.py")],
    "methods": [{"name": "zero_shot"}, {"name": "logit_bias", "epochs": 2}],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Shared phases (base model, bank, programmed arrays) for every run of this module."""
    return tmp_path_factory.mktemp("shared_cache")


def _scenario(folder: Path, methods: list[dict] | None = None, **changes: object) -> Path:
    path = folder / "codes.yaml"
    path.write_text(yaml.safe_dump({**SCENARIO, **({"methods": methods} if methods else {}), **changes}))
    return path


def _popen(*args: str, env: dict[str, str] | None = None, umask: int | None = None) -> subprocess.Popen[str]:
    """The CLI in its own process group, as a terminal's foreground job: SIGINT at its default even when the tests
    themselves run as a background job of a shell without job control (which starts them with SIGINT ignored, and
    a child inherits that), so the Ctrl-C tests test the program, not how pytest was started."""

    def child_setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if umask is not None:
            os.umask(umask)

    return subprocess.Popen(
        [sys.executable, "-m", "scenarios", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MPLBACKEND": "Agg", **(env or {})}, start_new_session=True, preexec_fn=child_setup,
    )  # fmt: skip


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    process = _popen(*args, **kwargs)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _lines(text: str) -> list[str]:
    """The messages of an output: its non-empty lines other than the progress bars (`units: NN%|...|`,
    `shared phases: N of M done [...]`)."""
    return [line for line in text.splitlines() if line.strip() and not _PROGRESS.match(line)]


_PROGRESS = re.compile(r"^\s*([\w ]+:\s+\d+%\||shared phases: \d+ of \d+ done \[)")


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    for marker in ("Traceback", "KeyboardInterrupt", "CommClosedError", "Warning"):
        assert marker not in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache: Path) -> Path:
    """A successful run (exit 0), with umask 027: its outputs are group-readable, not 0600."""
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "run"
    result = _cli("run", str(_scenario(folder)), "--out", str(out), "--serial", "--cache", str(cache), umask=0o027)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _lines(result.stdout)[-1].startswith(f"results in {out}: {out / 'report.md'}; accuracy")  # summary
    return out


def test_success_exits_0_leaves_no_lock_and_honours_the_umask(reference: Path) -> None:
    assert not (reference / ".lock").exists()
    for name in ("metrics.csv", "report.md", "checkpoints/manifest.json"):
        assert (reference / name).stat().st_mode & 0o777 == 0o640, name


def test_failed_units_exit_1_keep_finished_work_and_say_how_to_resume(tmp_path: Path, cache: Path) -> None:
    path = _scenario(tmp_path, [{"name": "zero_shot"}, {"name": "always_fails"}])
    out = tmp_path / "run"
    for attempt in range(2):  # the second run resumes: the finished unit is loaded, the failing one fails again
        result = _cli("run", str(path), "--out", str(out), "--serial", "--cache", str(cache))
        assert result.returncode == 1, result.stderr[-3000:]
        _no_traceback(result)
        lines = _lines(result.stderr)
        assert "crossbar-sim: failed: seed 0 dimmer/always_fails: RuntimeError: always_fails on task dimmer" in lines
        assert "1 failure(s)" in lines[-1] and "rerun the same command to resume" in lines[-1]
        assert (out / "checkpoints" / "units" / "seed0" / "dimmer__zero_shot.json").is_file()
        assert not (out / ".lock").exists()
        if attempt:
            assert "1 unit(s) loaded from checkpoints" in (out / "run.log").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--set", "model.bogus=1"], "model.bogus"),
        (["--cache", "FILE"], "is a file, expected a folder"),
        (["--set", f"plugins=[{PLUGINS / 'exiting_plugin.py'}]"], "called sys.exit(0) while being imported"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, change: list[str], message: str) -> None:
    (tmp_path / "FILE").write_text("not a folder\n")
    change = [str(tmp_path / "FILE") if part == "FILE" else part for part in change]
    result = _cli("run", str(_scenario(tmp_path)), "--out", str(tmp_path / "run"), "--serial", *change)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = _lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("crossbar-sim: error:") and message in lines[0], lines


def test_validate_says_that_it_imports_plugins(tmp_path: Path) -> None:
    result = _cli("validate", str(_scenario(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "imported plugins" in result.stdout and "exit_codes_plugin.py" in result.stdout


@pytest.mark.parametrize("where", [["--serial"], ["--workers", "2"]])
def test_ctrl_c_exits_130_with_one_line_and_no_worker_tracebacks(tmp_path: Path, cache: Path, where) -> None:
    started = tmp_path / "started"
    path = _scenario(tmp_path, [{"name": "zero_shot"}, {"name": "waits_for_signal"}])
    process = _popen("run", str(path), "--out", str(tmp_path / "run"), "--cache", str(cache), *where,
                     env={"CROSSBAR_SIM_TEST_STARTED": str(started)})  # fmt: skip
    deadline = time.monotonic() + 240
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), "no unit started"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert result.returncode == 130, err[-3000:]
    _no_traceback(result)
    assert _lines(err)[-1] == ABORTED
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_killed_worker_is_reported_in_one_line(tmp_path: Path, cache: Path, reference: Path) -> None:
    trigger = tmp_path / "kill_a_worker"
    trigger.touch()
    out = tmp_path / "run"
    plugins = [*SCENARIO["plugins"], str(PLUGINS / "fault_plugin.py")]  # kills the first unit's worker
    result = _cli("run", str(_scenario(tmp_path, plugins=plugins)), "--out", str(out), "--workers", "2", "--cache",
                  str(cache), env={"CROSSBAR_SIM_FAULT_KILL_ONCE": str(trigger)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(f"{trigger}.killed").is_file(), "no worker was killed"
    _no_traceback(result)
    assert sum("lost Dask worker" in line for line in _lines(result.stderr)) == 1, result.stderr
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_a_full_disk_gives_one_line_and_the_same_command_resumes(tmp_path: Path, cache: Path,
                                                                  reference: Path) -> None:  # fmt: skip
    disk = tmp_path / "small_disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        filler = disk / "filler"  # leave room for the checkpoints but not for the results
        filler.write_bytes(b"\0" * (256 * 1024 - 48 * 1024))
        out = disk / "run"
        command = ("run", str(_scenario(tmp_path)), "--out", str(out), "--serial", "--cache", str(cache))
        result = _cli(*command)
        assert result.returncode == 1, result.stderr[-3000:]
        _no_traceback(result)
        lines = _lines(result.stderr)
        assert len(lines) == 1 and "no space left on the device" in lines[0], lines
        assert "rerun the same command to resume" in lines[0]
        filler.unlink()
        result = _cli(*command)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    finally:
        subprocess.run(["umount", str(disk)], check=False)
