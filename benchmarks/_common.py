"""What every benchmark shares: interleaved paired timing, medians, and the JSON metric lines they end with."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

__all__ = ["emit", "median_ms", "paired_times", "time_ms"]


def median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def time_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` over `repeats` calls, in ms."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def paired_times(
    baseline: Callable[[], object], candidate: Callable[[], object], *, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Interleaved timings (s): one baseline call, one candidate call, repeated after a warm-up, so that drifts of
    the machine's speed hit both alike."""
    for _ in range(warmup):
        baseline()
        candidate()
    t_baseline, t_candidate = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        baseline()
        mid = time.perf_counter()
        candidate()
        end = time.perf_counter()
        t_baseline.append(mid - start)
        t_candidate.append(end - mid)
    return t_baseline, t_candidate


def emit(metric: str, value: float, unit: str, target: float | None = None, digits: int = 4) -> None:
    """Print one metric as a JSON line: {"metric", "value", ["target"], "unit"}."""
    line: dict[str, object] = {"metric": metric, "value": round(value, digits)}
    if target is not None:
        line["target"] = target
    line["unit"] = unit
    print(json.dumps(line))
