"""Content-addressed store of the shared phases (base model, bank, programmed arrays) and checksummed checkpoints.

A shared phase is a pure function of the parts of the resolved scenario that determine it (e.g. the base model of
seed, model and task settings; not of the device or the methods). Its key is the SHA-256 of those parts as
canonical JSON, plus the package version and git hash, so a read-noise sweep shares one base model and one bank
while a seed sweep trains one per seed. An entry is a folder `<kind>-<key[:16]>/` of files and a `manifest.json`
with each file's SHA-256, written last: an entry without a valid manifest, or whose files do not match it, is
treated as missing (and recomputed), never as a traceback.

`Blob` (file name -> bytes) is how a phase travels between the Dask workers and the driver, so workers need no
shared file system; only the driver reads and writes the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scenarios.errors import ScenarioError
from scenarios.names import inside
from simutil import atomic_write_bytes, atomic_write_text

__all__ = ["Blob", "ChecksumManifest", "CacheStore", "content_key", "sha256"]

log = logging.getLogger("crossbar_sim.cache")

Blob = dict[str, bytes]
"""The files of one shared phase, by name."""

MANIFEST = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 of `parts` as canonical JSON (sorted keys, no whitespace)."""
    return sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode())


class CacheStore:
    """Folder of shared-phase entries (`<run>/cache` by default, or a `--cache DIR` shared between runs)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry_dir(self, kind: str, key: str) -> Path:
        return inside(self.root, f"{kind}-{key[:16]}")

    def remove_entries(self) -> list[Path]:
        """Delete the files of every entry (a folder `<kind>-<key[:16]>` whose manifest names that kind and key)
        and the folders this empties; return the files removed. Files the manifests do not list stay."""
        removed: list[Path] = []
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
                kind, key, files = manifest["kind"], manifest["key"], [str(name) for name in manifest["files"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not an entry this store wrote
            if folder.is_symlink() or not isinstance(kind, str) or folder.name != f"{kind}-{str(key)[:16]}":
                continue
            removed += _remove_listed(folder, [*files, MANIFEST], folder / MANIFEST)
            for sub in sorted({p.parent for p in removed if folder in p.parents}, key=lambda p: -len(p.parts)):
                while sub != self.root and sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
                    sub = sub.parent
        return removed

    def get(self, kind: str, key: str, check: Callable[[Blob], str | None] | None = None) -> Blob | None:
        """The entry's files, or None when it is absent, incomplete or corrupted (a corrupted one is removed).
        `check(blob)` says why matching files are still not an entry of `kind` this version reads (another layout:
        treated as corrupted), None when they are."""
        folder = self.entry_dir(kind, key)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key") != key:
                raise ValueError("the manifest belongs to another key")
            blob = {name: inside(folder, name).read_bytes() for name in manifest["files"]}
            bad = [name for name, digest in manifest["files"].items() if sha256(blob[name]) != digest]
            if bad:
                raise ValueError(f"checksum mismatch in {', '.join(bad)}")
            problem = check(blob) if check is not None else None
            if problem is not None:
                raise ValueError(f"not a {kind} entry of this version: {problem}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("cache entry %s is unreadable or corrupted (%s): recomputing it", folder, error)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return blob

    def put(self, kind: str, key: str, blob: Blob, parts: Mapping[str, Any]) -> Path:
        """Write an entry: files into a staging folder, manifest last, then one rename (complete or absent)."""
        folder = self.entry_dir(kind, key)
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        for name, data in blob.items():
            atomic_write_bytes(inside(staging, name), data)
        manifest = {"kind": kind, "key": key, "parts": parts, "files": {n: sha256(d) for n, d in blob.items()}}
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another run sharing this cache wrote the same entry first: identical content
            shutil.rmtree(staging, ignore_errors=True)
        return folder


class ChecksumManifest:
    """`checkpoints/manifest.json` of a run: relative path -> SHA-256 of each checkpoint the driver wrote. A
    checkpoint that is missing from it, or does not match it (truncated, edited), counts as not written."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        try:
            self.entries: dict[str, str] = dict(json.loads(self.path.read_text())) if self.path.is_file() else {}
        except (OSError, ValueError, TypeError):
            log.warning("%s is unreadable: every checkpoint it listed will be recomputed", self.path)
            self.entries = {}

    def write(self, relative: str, data: bytes) -> None:
        atomic_write_bytes(inside(self.folder, relative), data)
        self.entries[relative] = sha256(data)
        atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))

    def read(self, relative: str) -> bytes | None:
        """The checkpoint's bytes if present and matching its checksum, else None (logged when corrupted)."""
        path = inside(self.folder, relative)
        expected = self.entries.get(relative)
        if expected is None or not path.is_file():
            return None
        data = path.read_bytes()
        if sha256(data) != expected:
            log.warning("checkpoint %s does not match its checksum (truncated or changed): recomputing it", path)
            return None
        return data

    def remove_all(self) -> list[Path]:
        """Delete every checkpoint the manifest lists (never a path outside its folder) and the manifest itself;
        return the files removed. Files it does not list stay."""
        removed = _remove_listed(self.folder, [*self.entries, MANIFEST], self.path)
        self.entries = {}
        return removed


def _remove_listed(folder: Path, names: list[str], listing: Path) -> list[Path]:
    """Delete the regular files `names` (relative to `folder`) that a manifest at `listing` lists; a name that
    would lead outside `folder` (an edited manifest) is left alone with a warning. Returns the files removed."""
    removed: list[Path] = []
    for name in names:
        try:
            path = inside(folder, name)
        except ScenarioError:
            log.warning("%s lists %r, outside its folder: left alone", listing, name)
            continue
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed
