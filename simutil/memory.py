"""Process memory: hand large freed blocks back to the operating system at once.

glibc's malloc serves a request of at least its mmap threshold with a mapping of its own, unmapped on free; smaller
requests come from the heap, whose freed space stays resident unless it sits at the heap's top. The threshold starts
at 128 KiB and rises to the size of every mapped block freed, up to 32 MiB on 64-bit systems (glibc manual,
mallopt(3), M_MMAP_THRESHOLD; `DEFAULT_MMAP_THRESHOLD_MAX` in malloc/malloc.c). A long run of a large simulated
model frees many activations and MVM partial sums of 1-30 MiB: after the first such free they come from the heap,
and freed space pinned below live blocks stays resident. Measured (benchmarks/lorafusion_scale.py, FLAN-T5-large
shape, glibc 2.36): one fusion step left 4.8 GiB free but resident in the heap next to 10.3 GiB in use. Setting the
threshold explicitly switches the dynamic rise off, so blocks from `MMAP_THRESHOLD_BYTES` up are mapped and
returned on free.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "mallopt", "release_large_frees"]

MMAP_THRESHOLD_BYTES = 1 << 20
"""1 MiB: blocks from this size up are mapped on their own and unmapped on free. The state arrays and activations
of a large model are far above it (MiB to GiB each); below it, the heap keeps serving the many small objects."""

_M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for M_MMAP_THRESHOLD (glibc malloc.h)."""
_M_MMAP_MAX = -4
"""mallopt's parameter number for M_MMAP_MAX, the most blocks served by mmap at once (glibc malloc.h)."""
_DEFAULT_MMAP_MAX = 65536
"""glibc's default M_MMAP_MAX (malloc/malloc.c DEFAULT_MMAP_MAX): restored, since a process that kept freed memory
(`scenarios.allocator`, M_MMAP_MAX = 0) would otherwise never map a block, whatever the threshold."""


def mallopt(param: int, value: int) -> bool:
    """glibc's `mallopt(param, value)` in this process; False where it is not available (not Linux, not glibc).
    Takes the C library the process already runs on (`ctypes.CDLL(None)`): `find_library` would run ldconfig in a
    subprocess."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        function = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int
    return function(param, value) == 1


def release_large_frees(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes` for this process, so that freed blocks of that size and up
    leave the resident set at once; returns whether it was set (False where the C library is not glibc).

    It changes where memory comes from, never a result, and it costs time: every large block is mapped and zeroed
    anew (the LoRAFusion-scale benchmark's `--small` step: 4.6 s with it, 2.7 s without; its full step 112 s, peak
    12.0 GiB with it, ~17 GiB without). So only that benchmark calls it, where the memory bound is the binding one;
    the CLI does not. Call it early, before the first large block is freed. The run processes' opposite policy
    (keep freed memory for reuse) is `scenarios.allocator`."""
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) or threshold_bytes < 1:
        raise ValueError(f"threshold_bytes must be an int >= 1, got {threshold_bytes!r}")
    return mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) and mallopt(_M_MMAP_THRESHOLD, threshold_bytes)
