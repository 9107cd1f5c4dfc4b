"""What a running study shows: a bar of the shared phases as they run (base model, bank parts, bank, programmed
arrays), a bar of units, and at the end one summary line (`summary_line`).

The units bar gives no remaining time until `ETA_AFTER_UNITS` units (and at least `ETA_AFTER_FRACTION` of them)
are done after the last shared phase: before that, tqdm's rate mixes the shared phases' minutes into the units'
and predicted hours for runs that end in minutes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = ["ETA_AFTER_FRACTION", "ETA_AFTER_UNITS", "RunProgress", "summary_line"]

ETA_AFTER_UNITS = 3
"""Units finished after the shared phases before the units bar shows a remaining time."""
ETA_AFTER_FRACTION = 0.1
"""... and at least this fraction of the run's units (rates over the first few units are noise)."""

_NO_ETA = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
_WITH_ETA = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, about {remaining} left{postfix}]"
_PHASES = "{desc}: {n_fmt} of {total_fmt} done [{elapsed}{postfix}]"
"""The shared phases are found as they are planned (a cached phase is not shown): a count, not a percentage."""
_PHASE_NAMES = {"base_model": "base model", "bank_part": "bank part", "bank": "bank", "programmed": "programming"}


class RunProgress:
    """The two bars of a run (shown on stderr when `enabled`). The units bar's rate counts only the units finished
    since the last shared phase (tqdm's `initial` and start time are moved there), averaged (no smoothing)."""

    def __init__(self, enabled: bool, units: int) -> None:
        self.running: dict[str, int] = {}
        self.phases = tqdm(total=0, desc="shared phases", unit="phase", disable=not enabled, position=0,
                           bar_format=_PHASES, file=sys.stderr)  # fmt: skip
        self.units = tqdm(total=units, desc="units", unit="unit", disable=not enabled, position=1,
                          bar_format=_NO_ETA, smoothing=0, file=sys.stderr)  # fmt: skip
        self._since_phases = 0
        self._eta_after = max(ETA_AFTER_UNITS, math.ceil(ETA_AFTER_FRACTION * units))

    def phase_started(self, kind: str) -> None:
        """A shared phase was submitted (it runs now, or when a worker is free)."""
        self.running[kind] = self.running.get(kind, 0) + 1
        self.phases.total += 1
        self._show_running()
        self.units.bar_format = _NO_ETA

    def phase_done(self, kind: str) -> None:
        self.running[kind] = max(0, self.running.get(kind, 0) - 1)
        self._show_running()
        self.phases.update(1)
        if not any(self.running.values()) and not self.units.disable:  # the units' rate starts now
            self.units.initial, self.units.start_t = self.units.n, self.units._time()
            self._since_phases = 0

    def unit_done(self) -> None:
        self._since_phases += 1
        if self._since_phases >= self._eta_after and not any(self.running.values()):
            self.units.bar_format = _WITH_ETA
        self.units.update(1)

    def close(self) -> None:
        self.units.close()
        self.phases.close()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _show_running(self) -> None:
        names = [f"{_PHASE_NAMES.get(kind, kind)}{f' x{n}' if n > 1 else ''}" for kind, n in self.running.items() if n]
        self.phases.set_postfix_str(f"running: {', '.join(names)}" if names else "")


def summary_line(run_dir: Path, units: list[Any], is_sweep: bool) -> str:
    """One line for a finished run: where its report is, and the headline figures (mean accuracy before drift per
    method over tasks and seeds: the best method's and fusion's)."""
    if is_sweep:
        return f"results in {run_dir}: sweep.csv and each point's report.md under points/"
    totals: dict[str, list[float]] = {}
    for unit in units:
        fresh = unit.accuracies[min(unit.accuracies)]
        totals.setdefault(unit.method, []).extend(fresh)
    means = {method: math.fsum(values) / len(values) for method, values in totals.items() if values}
    if not means:
        return f"results in {run_dir}: report.md"
    best = max(means, key=means.__getitem__)
    parts = [f"best {best} {means[best]:.1%}"]
    if "fusion" in means and best != "fusion":
        parts.append(f"fusion {means['fusion']:.1%}")
    return f"results in {run_dir}: {run_dir / 'report.md'}; accuracy before drift (mean): {', '.join(parts)}"
