"""Keep freed memory in the process instead of handing it back to the kernel (glibc only; elsewhere a no-op).

Why: the simulator's MVMs allocate large short-lived buffers (the tile partial sums of a 400-text evaluation batch
of the real study are tens of MB). glibc serves every allocation above its mmap threshold (at most 32 MB) with a
fresh `mmap` and returns it with `munmap` on free, so every call faults its pages in again and the kernel zeroes
them: measured here, 20 forwards of a 384 -> 1536 -> 384 analog MLP on 4,096 vectors spent 1.5 s of system time
and 510 k page faults (4.96 s wall); with the policy below 0.14 s and 65 k faults (3.16 s wall). The policy:
`M_MMAP_MAX = 0` (no allocation is served by mmap; all come from the heap) and `M_TRIM_THRESHOLD` = 1 GiB (freed
heap memory stays mapped for the next call). The cost is that the process keeps its peak heap until it exits,
which is what a run's worker does anyway. Results do not change: only where memory comes from.

`mallopt` is process-wide and idempotent; the runner calls `keep_freed_memory()` in every process that runs work
(the driver and each Dask worker, at the start of each task).
"""

from __future__ import annotations

from simutil.memory import mallopt

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4  # glibc malloc.h
_TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Apply the policy of the module docstring; True where glibc accepted it (False on other C libraries)."""
    return mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
