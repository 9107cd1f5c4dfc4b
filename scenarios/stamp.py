"""Stamp a run with the package version and the git commit it ran from (peft-style `peft_version`)."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["git_hash", "package_version", "run_stamp"]


def package_version() -> str:
    try:
        return version("crossbar-sim")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def git_hash() -> str:
    """The commit of the source tree this package runs from, with `-dirty` for uncommitted changes; "unknown"
    outside a git checkout (e.g. an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def run_stamp() -> dict[str, str]:
    return {"crossbar_sim_version": package_version(), "git_hash": git_hash()}
