"""The numba options of every kernel in the package, set in one place (as stumpy's `config.py`).

- `cache=True`: compiled kernels are stored in `__pycache__`, so a new process (a Dask worker, a CLI run) loads
  them instead of compiling again.
- No `fastmath`: every kernel agrees bit for bit with its NumPy twin (`tests/naive_*.py`); fastmath would let LLVM
  reassociate and contract float operations.
- `parallel=True` only on kernels whose outer loop is a `prange`; helpers are inlined into their callers at numba's
  IR level (`inline="always"`), so a shared helper costs nothing in the loops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

__all__ = ["NUMBA_OPTIONS", "inline", "kernel", "serial_kernel"]

NUMBA_OPTIONS: dict[str, object] = {"cache": True}
"""Options every compiled function of the package gets (module docstring)."""

Function = TypeVar("Function", bound=Callable)


def kernel(function: Function) -> Function:
    """A parallel kernel: its outer `prange` loop runs on numba's threads."""
    return numba.njit(parallel=True, **NUMBA_OPTIONS)(function)


def serial_kernel(function: Function) -> Function:
    """A single-threaded kernel (small per-call work, where a parallel launch costs more than it saves)."""
    return numba.njit(**NUMBA_OPTIONS)(function)


def inline(function: Function) -> Function:
    """A helper inlined into the kernels that call it."""
    return numba.njit(inline="always", **NUMBA_OPTIONS)(function)
