"""A registry of one kind of device non-ideality: its models by the name a `DeviceConfig` field holds.

The pattern of `crossbar.scheme.MVM_SCHEMES`, open to entries from outside the package: a scenario's `plugins:`
file (or user code before a `DeviceConfig` is built) calls `register`, and the name is then valid in
`device.overrides`. `DeviceConfig` validates its model fields against these registries, so each name is listed
once, in its entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["DeviceFields", "Registry"]


class DeviceFields(Protocol):
    """The `crossbar.device.DeviceConfig` fields the built-in models read (the models receive the whole config;
    this protocol only names the type without importing `crossbar.device`, which imports the registries)."""

    g_min_us: float
    g_max_us: float
    g_range_us: float
    read_noise_frac: float
    out_noise_frac: float
    programming_noise: str


class _Entry(Protocol):
    name: str
    source: str


Entry = TypeVar("Entry", bound=_Entry)


class Registry(Generic[Entry]):
    """The models of one kind by name; `DeviceConfig.<field>` must name one of them."""

    def __init__(self, field: str, kind: str, entries: tuple[Entry, ...] = ()) -> None:
        self.field = field
        """The `DeviceConfig` field that names a model of this kind."""
        self.kind = kind
        """What an entry is, in words (error messages)."""
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            self.register(entry)

    def register(self, entry: Entry) -> Entry:
        """Add `entry` under `entry.name` and return it. A different entry under a registered name is an error;
        the same definition again (a plugin file imported a second time) is not."""
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty name without surrounding spaces, got {name!r}")
        source = getattr(entry, "source", None)
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{self.kind} {name!r}: source must say where its model and constants come from")
        existing = self._entries.get(name)
        if existing is not None and _definition(existing) != _definition(entry):
            raise ValueError(f"{self.kind} {name!r} is already registered (source: {existing.source})")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"DeviceConfig.{self.field}: unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)


def _definition(entry: object) -> tuple:
    """What makes two entries the same model: their fields, functions compared by module and qualified name."""
    if not dataclasses.is_dataclass(entry):
        return (id(entry),)
    values = []
    for field in dataclasses.fields(entry):
        value = getattr(entry, field.name)
        if callable(value):
            value = (getattr(value, "__module__", None), getattr(value, "__qualname__", repr(value)))
        values.append((field.name, value))
    return (type(entry).__qualname__, *values)
