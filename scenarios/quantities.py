"""How energies, counts and durations are shown to people: report.md, the README tables and every figure use these,
so a number reads the same (3.81 µJ, 30 days) wherever it appears.

Energies are stored in pJ (the ledger's unit); the unit shown is the SI prefix of J that `scenarios.stats.si_prefix`
picks for the largest magnitude, the same rule `scenarios.stats.format_si` applies to a single value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from scenarios.stats import si_prefix

__all__ = ["energy_unit", "format_count", "format_duration", "format_energy"]

_PJ_PER_J = 1e12
_DURATIONS_S = ((31_536_000.0, "year", "years"), (86_400.0, "day", "days"), (3_600.0, "h", "h"), (60.0, "min", "min"))
"""(seconds per unit, singular, plural), largest first; below a minute: seconds."""


def energy_unit(values_pj: Iterable[float]) -> tuple[float, str]:
    """(pJ per shown unit, unit name) for energies given in pJ, chosen from their largest finite magnitude: pJ, nJ,
    µJ, mJ or J (pJ when every value is 0). Divide values in pJ by the first element to draw them in the unit."""
    magnitudes = [abs(float(v)) for v in values_pj if math.isfinite(float(v)) and v != 0]
    if not magnitudes:
        return 1.0, "pJ"
    factor, prefix = si_prefix(min(max(magnitudes) / _PJ_PER_J, 1.0))  # J at most: no kJ for a chip
    return 10.0 ** round(math.log10(factor * _PJ_PER_J)), f"{prefix}J"  # exact powers of ten


def format_energy(energy_pj: float) -> str:
    """One energy in pJ as three significant digits in its own unit (`3.81 µJ`, 999.9 pJ as `1 nJ`); exactly 0
    prints `0`."""
    if energy_pj == 0:
        return "0"
    rounded = float(f"{energy_pj:.3g}")
    scale, unit = energy_unit([rounded])
    return f"{rounded / scale:.3g} {unit}"


def format_count(value: float) -> str:
    """A count in two significant digits with a k / M suffix (`4.5k`, `24k`, `1.2M`), for crowded labels."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{float(f'{value / size:.2g}'):g}{suffix}"
    return f"{float(f'{value:.2g}'):g}"


def format_duration(seconds: float) -> str:
    """A drift time in the largest human unit it fills: `0 s`, `45 s`, `5 min`, `1 h`, `1 day`, `30 days`,
    `3.17 years` (three significant digits)."""
    for size, singular, plural in _DURATIONS_S:
        if seconds >= size:
            value = float(f"{seconds / size:.3g}")
            return f"{value:g} {singular if value == 1 else plural}"
    return f"{float(f'{seconds:.3g}'):g} s"
