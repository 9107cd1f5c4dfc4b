"""Importing a scenario's `plugins:` so that the methods and task families they register are known.

An entry is a path to a Python file (absolute, or relative to the scenario file: `scenarios.loading` resolves it)
or the name of an importable module. Each is imported once per process (by resolved path or module name), so
validating the same scenario twice, or two scenarios naming the same plugin, registers its contents once. A
process that receives an already validated scenario (e.g. a Dask worker) calls `load_plugins(scenario.plugins)`
before using it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from scenarios.errors import ScenarioError

__all__ = ["is_plugin_path", "load_plugins"]

_LOADED: dict[str, ModuleType] = {}


def is_plugin_path(entry: str) -> bool:
    """True for a file entry (ends in .py or contains a path separator), False for a module name."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def load_plugins(entries: Sequence[str]) -> list[ModuleType]:
    """Import each plugin (file path or module name) once; ScenarioError naming the entry if it cannot be."""
    modules = []
    for entry in entries:
        key = str(Path(entry).expanduser().resolve()) if is_plugin_path(entry) else entry
        if key not in _LOADED:
            _LOADED[key] = _import(entry, key)
        modules.append(_LOADED[key])
    return modules


def _import(entry: str, key: str) -> ModuleType:
    if not is_plugin_path(entry):
        try:
            return importlib.import_module(entry)
        except ImportError as error:
            raise ScenarioError(f"plugin {entry!r}: cannot be imported ({error})") from None
        except SystemExit as error:
            raise ScenarioError(_exit_message(entry, error)) from None
    path = Path(key)
    if not path.is_file():
        raise ScenarioError(f"plugin {entry!r}: no such file, expected a Python file")
    name = f"crossbar_sim_plugin_{path.stem}_{hashlib.blake2b(key.encode(), digest_size=4).hexdigest()}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ScenarioError(f"plugin {entry!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ScenarioError(f"plugin {entry!r}: importing it failed: {type(error).__name__}: {error}") from None
    except SystemExit as error:  # a plugin must not end the program, least of all with status 0
        del sys.modules[name]
        raise ScenarioError(_exit_message(entry, error)) from None
    return module


def _exit_message(entry: str, error: SystemExit) -> str:
    return f"plugin {entry!r}: called sys.exit({error.code!r}) while being imported; a plugin must only register"
