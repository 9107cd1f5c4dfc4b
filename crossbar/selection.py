"""Choosing layers by name: the one include/exclude matcher and the one block-of-a-layer rule of the project."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

__all__ = ["block_of", "literal_pattern", "name_matcher"]


def name_matcher(include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> Callable[[str], bool]:
    """A predicate on qualified module names: true when the name matches one of `include` (fnmatch patterns,
    case-sensitive; None = every name) and none of `exclude`. Bad pattern lists raise ValueError naming the
    argument."""
    for arg, patterns in (("include", include), ("exclude", exclude)):
        if patterns is not None and (isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns)):
            raise ValueError(f"{arg} must be a list of fnmatch patterns (strings), got {patterns!r}")
    included = None if include is None else tuple(include)
    excluded = () if exclude is None else tuple(exclude)

    def selected(name: str) -> bool:
        if included is not None and not any(fnmatch.fnmatchcase(name, p) for p in included):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in excluded)

    return selected


def literal_pattern(name: str) -> str:
    """An fnmatch pattern matching exactly `name`."""
    return "".join(f"[{ch}]" if ch in "*?[]" else ch for ch in name)


def block_of(name: str) -> str:
    """The block a module belongs to: its name up to and including the first all-digit component.

    `encoder.block.3.layer.0.SelfAttention.q` -> `encoder.block.3` (so a T5 decoder block's self- and
    cross-attention share one group, as in LoRAFusion), `blocks.2.q` -> `blocks.2`. A name without a numeric
    component (`lm_head`) is its own block.
    """
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: index + 1])
    return name
