"""A run directory's marker, and the record of everything crossbar-sim wrote into it.

`<run>/.crossbar-sim-run` (JSON) marks a folder as a crossbar-sim run directory and lists what the program wrote
there: `files` (config, log, result files, figures, sweep points' configs; paths relative to the run directory),
`checkpoints` (checkpoint folders, whose `manifest.json` lists their files: `scenarios.cache.ChecksumManifest`)
and `caches` (the run's own `cache/`, whose entries each list their files). Paths are recorded before the program
writes them where it names them itself, or just after a writer that names its own files (`RunRecord.watch`).

Nothing else is ever touched. `check_run_dir` refuses, before anything is written, an `--out` folder that holds
anything but is not a run directory; `RunRecord.remove_outputs` (`--fresh`) deletes only the recorded files, so
a user's own files inside the run directory (a `notes.md`, `figures/mine.png`, `cache/y`) survive.

Run directories written before the marker existed: a folder whose `config.json` or `sweep.json` is a JSON object
stamped with `crossbar_sim_version` is a crossbar-sim run directory. Its marker is written when it is next used,
listing what it holds under the names crossbar-sim writes (`LEGACY_OUTPUTS`, `figures/*.png|svg|pdf`, the same
in `points/p*/`, its checkpoint folders and `cache/`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scenarios.cache import CacheStore, ChecksumManifest
from scenarios.errors import ScenarioError
from scenarios.lock import LOCK_FILE
from scenarios.names import inside
from scenarios.stamp import run_stamp
from simutil import atomic_write_text

if TYPE_CHECKING:
    from scenarios.schema import Scenario
    from scenarios.sweep import Study

__all__ = ["LEGACY_OUTPUTS", "MARKER", "RunRecord", "check_run_dir", "log_to", "prepare_run_dir",
           "write_point_config"]

log = logging.getLogger("crossbar_sim.rundir")

MARKER = ".crossbar-sim-run"
MARKER_FORMAT = 1
LEGACY_OUTPUTS = ("config.json", "sweep.json", "results.json", "metrics.csv", "ledger.csv", "report.md", "run.log",
                  "sweep.csv", "sweep_summary.csv", "sweep_points.json", "summary.csv", "summary.json", "paired.csv",
                  "lifetime.csv")  # fmt: skip
"""Top-level files of a run directory written before the marker existed (adopted as crossbar-sim's)."""
_FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
_LISTS = ("files", "checkpoints", "caches")


def check_run_dir(run_dir: Path) -> None:
    """Refuse (ScenarioError, one line) a `run_dir` that exists and holds anything, unless crossbar-sim wrote it
    (its marker, or a stamped config of a run from before the marker). Reads only: called before the lock."""
    _ownership(Path(run_dir))


def _ownership(run_dir: Path) -> str:
    """'new' (absent or empty), 'marked' or 'legacy'; a ScenarioError for anything else."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return "new"
    if not run_dir.is_dir():
        raise ScenarioError(f"{run_dir}: is not a folder, expected a new or empty folder or a run directory")
    if (run_dir / MARKER).is_file():
        return "marked"
    if _stamped(run_dir / "config.json") or _stamped(run_dir / "sweep.json"):
        return "legacy"
    try:
        entries = sorted(name for name in os.listdir(run_dir) if not _our_lock(run_dir, name))
    except OSError as error:
        raise ScenarioError(f"{run_dir}: cannot read the folder ({error.strerror or error})") from None
    if not entries:
        return "new"
    count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    raise ScenarioError(
        f"{run_dir}: is not a crossbar-sim run directory (it holds {count}, e.g. {entries[0]!r}, and no {MARKER} "
        "marker); refusing to write there: choose a new or empty folder with --out"
    )


def _stamped(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("crossbar_sim_version"), str)


def _our_lock(run_dir: Path, name: str) -> bool:
    """Whether `name` is a run lock file as `scenarios.lock` writes it (empty, or pid/host/since): the only entry
    a folder may hold before its marker (a run that waits for, or is refused by, the lock of another)."""
    if name != LOCK_FILE:
        return False
    try:
        text = (run_dir / name).read_text()
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(holder, dict) and set(holder) <= {"pid", "host", "since"}


class RunRecord:
    """The marker of one run directory: what crossbar-sim wrote there. Every change is saved at once."""

    def __init__(self, run_dir: Path, lists: dict[str, list[str]]) -> None:
        self.run_dir = Path(run_dir)
        self.lists = {key: list(dict.fromkeys(lists.get(key, []))) for key in _LISTS}
        self.stamp = run_stamp()  # of the program writing the marker now (git is asked once)

    @classmethod
    def claim(cls, run_dir: Path) -> RunRecord:
        """The record of `run_dir` (the lock held): read from its marker, or created (a new folder, or a run
        directory from before the marker, adopted). A ScenarioError for a folder crossbar-sim did not write."""
        run_dir = Path(run_dir)
        kind = _ownership(run_dir)
        if kind == "marked":
            return cls(run_dir, _read_marker(run_dir / MARKER))
        record = cls(run_dir, _adopted(run_dir) if kind == "legacy" else {})
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ScenarioError(f"{run_dir}: cannot write the run directory ({error.strerror or error})") from None
        record.save()
        return record

    def save(self) -> None:
        document = {"program": "crossbar-sim", "format": MARKER_FORMAT, **self.stamp, **self.lists}
        try:
            atomic_write_text(self.run_dir / MARKER, json.dumps(document, indent=1))
        except OSError as error:
            raise ScenarioError(f"{self.run_dir}: cannot write the run directory ({error.strerror or error})") from None

    def _add(self, key: str, paths: tuple[Path, ...]) -> None:
        before = len(self.lists[key])
        for path in paths:
            relative = Path(path).relative_to(self.run_dir).as_posix()
            if relative not in self.lists[key]:
                self.lists[key].append(relative)
        if len(self.lists[key]) != before:
            self.save()

    def add_files(self, *paths: Path) -> None:
        """Record files (paths under the run directory) that crossbar-sim writes or has written."""
        self._add("files", paths)

    def add_checkpoints(self, folder: Path) -> None:
        """Record a checkpoint folder: its manifest lists the files in it."""
        self._add("checkpoints", (folder,))

    def add_cache(self, folder: Path) -> None:
        """Record the run's own cache folder: each entry lists its files."""
        self._add("caches", (folder,))

    @contextmanager
    def watch(self, folder: Path) -> Iterator[None]:
        """Record the files that appear or change in `folder` and `folder/figures` while the block runs: what a
        writer that names its own files (results, figures, sweep tables) wrote."""
        before = _snapshot(folder)
        try:
            yield
        finally:
            after = _snapshot(folder)
            self.add_files(*sorted(path for path, state in after.items() if before.get(path) != state))

    def remove_outputs(self, *, caches: bool) -> None:
        """`--fresh`: delete every recorded file, the files each recorded checkpoint folder's manifest lists and,
        with `caches`, the entries of the recorded caches; then the folders this left empty. Nothing else."""
        emptied: set[Path] = set()
        for relative in self.lists["files"]:
            path = self._inside(relative)
            if path is not None and (path.is_file() or path.is_symlink()):
                path.unlink()
                emptied.add(path.parent)
        for relative in self.lists["checkpoints"]:
            folder = self._inside(relative)
            if folder is not None and folder.is_dir():
                emptied.update(path.parent for path in ChecksumManifest(folder).remove_all())
        for relative in self.lists["caches"] if caches else ():
            folder = self._inside(relative)
            if folder is not None and folder.is_dir():
                emptied.update(path.parent for path in CacheStore(folder).remove_entries())
        for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
            _remove_empty(folder, self.run_dir)
        self.lists = {"files": [], "checkpoints": [], "caches": [] if caches else self.lists["caches"]}
        self.save()

    def _inside(self, relative: str) -> Path | None:
        try:
            return inside(self.run_dir, relative)
        except ScenarioError as error:  # an edited marker: never follow it out of the run directory
            log.warning("%s lists a path it will not touch: %s", self.run_dir / MARKER, error)
            return None


def _read_marker(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("program") != "crossbar-sim":
            raise ValueError("not a crossbar-sim marker")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ScenarioError(
            f"{path}: unreadable ({error}), expected the JSON marker crossbar-sim writes into a run directory; "
            "choose another --out"
        ) from None
    return {key: [item for item in data.get(key) or [] if isinstance(item, str)] for key in _LISTS}


def _adopted(run_dir: Path) -> dict[str, list[str]]:
    """What a run directory from before the marker holds under the names crossbar-sim writes."""
    homes = [run_dir, *sorted(p for p in (run_dir / "points").glob("p[0-9]*") if p.is_dir() and not p.is_symlink())]
    files: list[Path] = []
    checkpoints: list[Path] = []
    for home in homes:
        files += [home / name for name in LEGACY_OUTPUTS if (home / name).is_file()]
        figures = home / "figures"
        if figures.is_dir():
            files += sorted(p for p in figures.iterdir() if p.suffix in _FIGURE_SUFFIXES and p.is_file())
        if (home / "checkpoints").is_dir():
            checkpoints.append(home / "checkpoints")
    caches = [run_dir / "cache"] if (run_dir / "cache").is_dir() else []
    return {key: [p.relative_to(run_dir).as_posix() for p in paths]
            for key, paths in (("files", files), ("checkpoints", checkpoints), ("caches", caches))}  # fmt: skip


def _snapshot(folder: Path) -> dict[Path, Any]:
    """(inode, mtime, size) of the regular files in `folder` and `folder/figures` (a rewrite changes the inode)."""
    states: dict[Path, Any] = {}
    for where in (folder, folder / "figures"):
        try:
            entries = list(os.scandir(where))
        except OSError:
            continue
        for entry in entries:
            if entry.name in (MARKER, LOCK_FILE) or not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            states[where / entry.name] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return states


def _remove_empty(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to (not including) `root` while they are empty."""
    root = root.resolve()
    while folder.resolve() != root and root in folder.resolve().parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (a user's file), or already gone
            return
        folder = folder.parent


# --- preparing a run directory (`scenarios.runner`) ---------------------------------------------------------
def prepare_run_dir(
    run_dir: Path, study: Study, fresh: bool, allow_version_change: bool, cache_dir: Path | None
) -> RunRecord:
    """Create the run directory, or check that an existing one is crossbar-sim's (`scenarios.rundir`) and belongs
    to the same study and package version; its record of what crossbar-sim writes there. `fresh` first deletes
    what that record lists (and the run's own cache entries unless `cache_dir` is elsewhere), nothing else."""
    record = RunRecord.claim(run_dir)
    config_path = run_dir / ("sweep.json" if study.is_sweep else "config.json")
    resolved = study.resolved_dict()
    if fresh:
        record.remove_outputs(caches=cache_dir is None)
    other = run_dir / ("config.json" if study.is_sweep else "sweep.json")
    if other.is_file():
        raise ScenarioError(
            f"{run_dir}: holds a {'plain run' if study.is_sweep else 'sweep'}, not a "
            f"{'sweep' if study.is_sweep else 'plain run'}; use --fresh to start over or --out to choose another "
            "directory"
        )
    stamp = run_stamp()
    if config_path.is_file():
        try:
            previous = json.loads(config_path.read_text())
        except ValueError:
            previous = {}
        if previous.get("scenario") != json.loads(json.dumps(resolved)):
            raise ScenarioError(
                f"{run_dir}: holds a run of a different scenario configuration; use --fresh to start over or "
                "--out to choose another directory"
            )
        before = {k: previous.get(k) for k in stamp}
        if before != stamp and not allow_version_change:
            raise ScenarioError(
                f"{run_dir}: was started by crossbar-sim {before['crossbar_sim_version']} (git "
                f"{before['git_hash']}), this is {stamp['crossbar_sim_version']} (git {stamp['git_hash']}); "
                "use --allow-version-change to resume anyway, or --fresh to start over"
            )
    record.add_files(config_path, run_dir / "run.log")  # before they are written
    if cache_dir is None:
        record.add_cache(run_dir / "cache")
    try:
        atomic_write_text(config_path, json.dumps({"scenario": resolved, **stamp}, indent=1))
    except OSError as error:
        raise ScenarioError(f"{run_dir}: cannot write the run directory ({error.strerror or error})") from None
    return record


def write_point_config(point_dir: Path, scenario: Scenario, stamp: dict[str, str], record: RunRecord) -> None:
    record.add_files(point_dir / "config.json")
    point_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(point_dir / "config.json", json.dumps({"scenario": scenario.resolved_dict(), **stamp}, indent=1))


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    handler = _RunLogHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crossbar_sim")
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


class _RunLogHandler(logging.FileHandler):
    """`run.log`'s handler: a line that cannot be written (a full disk) is dropped, not reported with logging's
    traceback on stderr; the error that matters reaches the user through the write that failed."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass
