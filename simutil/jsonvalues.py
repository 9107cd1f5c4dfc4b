"""JSON-safe values for result files: infinities as the strings "inf"/"-inf" (strict JSON has none), and NumPy
scalars as Python numbers with NaN as null."""

from __future__ import annotations

import math

__all__ = ["finite_json", "plain_json"]


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def finite_json(value: object) -> object:
    """Infinite floats as the strings "inf"/"-inf" (strict JSON has no infinity)."""
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def plain_json(value: object) -> object:
    """NumPy scalars as Python numbers, NaN as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
