"""One helper shared by the project's frozen config dataclasses (cost table, device, adaptation settings)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

__all__ = ["replace_fields"]

Config = TypeVar("Config")


def replace_fields(config: Config, overrides: dict[str, object]) -> Config:
    """A copy of a frozen dataclass with some fields changed, validated by its own __post_init__; unknown field
    names raise ValueError naming them and listing the known ones."""
    known = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {type(config).__name__} field(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]
