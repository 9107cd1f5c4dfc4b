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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from energy import atomic_write_bytes, atomic_write_text

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
        return self.root / f"{kind}-{key[:16]}"

    def get(self, kind: str, key: str) -> Blob | None:
        """The entry's files, or None when it is absent, incomplete or corrupted (a corrupted one is removed)."""
        folder = self.entry_dir(kind, key)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key") != key:
                raise ValueError("the manifest belongs to another key")
            blob = {name: (folder / name).read_bytes() for name in manifest["files"]}
            bad = [name for name, digest in manifest["files"].items() if sha256(blob[name]) != digest]
            if bad:
                raise ValueError(f"checksum mismatch in {', '.join(bad)}")
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
            atomic_write_bytes(staging / name, data)
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
        atomic_write_bytes(self.folder / relative, data)
        self.entries[relative] = sha256(data)
        atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))

    def read(self, relative: str) -> bytes | None:
        """The checkpoint's bytes if present and matching its checksum, else None (logged when corrupted)."""
        path = self.folder / relative
        expected = self.entries.get(relative)
        if expected is None or not path.is_file():
            return None
        data = path.read_bytes()
        if sha256(data) != expected:
            log.warning("checkpoint %s does not match its checksum (truncated or changed): recomputing it", path)
            return None
        return data
