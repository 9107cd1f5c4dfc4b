"""Cell wear: the one definition metrics.csv, report.md, lifetime.csv and the figures share.

A unit's wear is measured from the exact per-cell pulse tally of every array written during its adaptation
(`crossbar.AnalogLinear.pulse_tally`; the uint16 counters of the array state count in coarse stochastic steps
beyond 65,534 pulses of endurance, so they are not used). Per array: the 50th and 99th percentiles and the maximum
of SET + RESET pulses over its real cells, and their mean. For a task switch:

- the **worst cell** is the most-pulsed cell of any written array (`max_pulses`), and its array is the switch's
  worst array (whose p50 / p99 are reported with it);
- the **average cell** is the mean over every cell of the written arrays (`mean_pulses`).

Task switches to wear-out = endurance (pulses per cell, from the device preset, e.g. 1e6 for 4-level HfOx, Huang et
al., `crossbar.presets`) / pulses per switch, for the worst and for the average cell. Over a rotation of target
tasks (`rotation_wear`), the per-switch wear is the mean over the tasks of each switch's value; for the worst cell
this takes each task's worst cell as the same cell (the most-pulsed cell of one switch need not be that of the
next), which bounds its wear rate from above and its lifetime from below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CellWear", "SwitchWear", "cell_wear", "model_wear", "rotation_switches", "rotation_wear", "switch_wear",
    "switches_to_wearout",
]  # fmt: skip


@dataclass(frozen=True)
class CellWear:
    """Pulses per cell of one array during one adaptation."""

    cells: int
    p50: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class SwitchWear:
    """Wear of one task switch (one adaptation): the worst array's percentiles, the worst and the average cell."""

    worst_array: str
    """The array holding the most-pulsed cell ("" when nothing was written)."""
    p50_pulses: float
    p99_pulses: float
    max_pulses: float
    """Pulses of the most-pulsed cell."""
    mean_pulses: float
    """Mean pulses over every cell of the written arrays."""

    def switches_to_wearout(self, endurance_pulses: float) -> tuple[float, float]:
        """(worst cell, average cell) task switches like this one until wear-out."""
        return (switches_to_wearout(self.max_pulses, endurance_pulses),
                switches_to_wearout(self.mean_pulses, endurance_pulses))  # fmt: skip


def cell_wear(pulses: np.ndarray) -> CellWear:
    """Percentiles (linear interpolation, NumPy's default), maximum and mean of per-cell pulse counts."""
    values = np.asarray(pulses, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("cell_wear needs at least one cell")
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError("pulse counts must be finite and >= 0")
    p50, p99 = np.percentile(values, [50.0, 99.0])
    return CellWear(int(values.size), float(p50), float(p99), float(values.max()), float(values.mean()))


def switch_wear(arrays: Mapping[str, CellWear | Mapping[str, float]]) -> SwitchWear:
    """One switch's wear from its written arrays' `CellWear` (or their `as_dict()`): the worst array is the one
    with the most-pulsed cell (ties: higher p99, then higher mean, then name); the average cell is the cell-weighted
    mean over all of them. No arrays (nothing written): zeros."""
    stats = {name: w if isinstance(w, CellWear) else CellWear(**w) for name, w in arrays.items()}  # type: ignore[arg-type]
    if not stats:
        return SwitchWear("", 0.0, 0.0, 0.0, 0.0)
    worst = max(stats, key=lambda name: (stats[name].max, stats[name].p99, stats[name].mean, name))
    cells = sum(w.cells for w in stats.values())
    mean = math.fsum(w.mean * w.cells for w in stats.values()) / cells
    chosen = stats[worst]
    return SwitchWear(worst, chosen.p50, chosen.p99, chosen.max, mean)


def switches_to_wearout(pulses_per_switch: float, endurance_pulses: float) -> float:
    """Endurance / pulses per switch; inf when a switch writes nothing or the device never wears out."""
    if pulses_per_switch <= 0 or math.isinf(endurance_pulses):
        return math.inf
    return endurance_pulses / pulses_per_switch


def rotation_wear(switches: Iterable[SwitchWear]) -> tuple[float, float]:
    """(worst-cell, average-cell) pulses per switch over a rotation of task switches: the mean of each switch's
    value (see the module docstring for what the worst-cell figure bounds)."""
    items = list(switches)
    if not items:
        return 0.0, 0.0
    return (math.fsum(s.max_pulses for s in items) / len(items),
            math.fsum(s.mean_pulses for s in items) / len(items))  # fmt: skip


def model_wear(model: object, ledger: object | None = None) -> dict[str, CellWear]:
    """Per-array wear of an adapted model: `cell_wear` of the pulse tally of every analog array written since its
    tally started (`fusion.adapt` starts one on every array), keyed by the array's ledger label. With `ledger`
    (an `energy.Ledger` of the adaptation), each array's tally must equal its ledger's SET + RESET pulses in phase
    `adapt`, and every array the ledger saw written must have a tally: wear and energy come from the same pulses."""
    from crossbar import AnalogLinear
    from energy import WRITE_EVENTS

    tallies: dict[str, np.ndarray] = {}
    for module in model.modules():  # type: ignore[attr-defined]
        if isinstance(module, AnalogLinear) and module.pulse_tally is not None and module.pulse_tally.size:
            pulses = module.cell_pulses()
            if pulses.any():
                tallies[module.name] = pulses
    if ledger is not None:
        counted = ledger.group_by("layer", field="count", phase="adapt", event=WRITE_EVENTS)  # type: ignore[attr-defined]
        for (layer,), count in counted.items():
            if count and layer not in tallies:
                raise RuntimeError(f"the ledger records adapt writes to {layer!r}, which has no pulse tally")
            if count and int(tallies[layer].sum(dtype=np.int64)) != int(round(count)):
                raise RuntimeError(
                    f"array {layer!r}: the pulse tally ({int(tallies[layer].sum())}) disagrees with the ledger "
                    f"({count:g} pulses)"
                )
    return {name: cell_wear(pulses) for name, pulses in sorted(tallies.items())}


def rotation_switches(rows: Iterable[Mapping[str, object]]) -> tuple[float, float]:
    """(worst-cell, average-cell) task switches to wear-out of a device cycling through the tasks of `rows` (one
    metrics.csv row per task switch: `wear_max_pulses`, `wear_mean_pulses`, `endurance_pulses`):
    endurance / `rotation_wear` of the switches. The report, the summary and the endurance figure all use this."""
    items = list(rows)
    if not items:
        return math.inf, math.inf
    endurance = {float(r["endurance_pulses"]) for r in items}  # type: ignore[arg-type]
    if len(endurance) != 1:
        raise ValueError(f"rows mix devices of different endurance {sorted(endurance)}")
    switches = [SwitchWear("", 0.0, 0.0, float(r["wear_max_pulses"]), float(r["wear_mean_pulses"]))  # type: ignore[arg-type]
                for r in items]  # fmt: skip
    worst, mean = rotation_wear(switches)
    (value,) = endurance
    return switches_to_wearout(worst, value), switches_to_wearout(mean, value)
