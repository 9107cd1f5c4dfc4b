from __future__ import annotations

import subprocess
import sys

import pytest

from scenarios.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scenarios", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_version_and_help() -> None:
    assert _run("--version").stdout.startswith("crossbar-sim ")
    assert "presets" in _run("--help").stdout


def test_presets_lists_sources(capsys) -> None:
    main(["presets"])
    out = capsys.readouterr().out
    assert "isaac_horowitz" in out and "Horowitz ISSCC 2014" in out and "write_pulse_pj" in out


@pytest.mark.parametrize("args", [["nonsense"], ["presets", "--bad-flag"]])
def test_user_errors_exit_2_with_one_line(args) -> None:
    result = _run(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("crossbar-sim: error:")
    assert "Traceback" not in result.stderr
