"""Seeds derived from a run seed and labels, so every layer, task and array gets its own reproducible stream."""

from __future__ import annotations

import zlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *labels: str) -> int:
    """A 31-bit seed determined by `seed` and the labels (CRC-32 of the labels, stable across runs and Pythons)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    mix = zlib.crc32("\x1f".join(labels).encode())
    return (seed * 1_000_003 + mix) % (2**31 - 1)
