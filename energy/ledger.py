"""The energy ledger: the one place every energy, latency, write and wear figure comes from.

A `Ledger` records aggregated events `(event, count, phase, task, method, layer)`. Each call adds to one row keyed
by the five labels, so recording from a hot loop costs one dict update, never one object per cell. Energy and
latency are either supplied by the recorder (when they follow from device physics it knows, e.g. V^2*G*t of the
pulses it applied) or priced from the `CostTable` as count x unit cost.

Latency is summed serially per row. Recorders that know their parallelism (all columns of a tile read at once,
a row of cells written together) pass the latency of the parallel operation themselves.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from energy.costs import CostTable
from simutil import atomic_write

__all__ = ["EVENTS", "KEYS", "PHASES", "Ledger", "LedgerRow", "LedgerScope"]

KEYS: tuple[str, ...] = ("event", "phase", "task", "method", "layer")
"""Labels a row is keyed by, in export order."""

PHASES: tuple[str, ...] = ("deploy_base", "deploy_bank", "adapt", "inference", "calibration")
"""Phases of DESIGN section 4, plus `calibration` for one-time read-outs after programming. Other phase names
are allowed (a scenario may add its own), these are the ones the tool itself uses."""

# event -> (CostTable energy field or callable name, or "recorder" for no table cost; CostTable latency field or
# None for "recorder supplies").
EVENTS: dict[str, tuple[str, str | None]] = {
    "set_pulse": ("write_pulse_pj", "write_pulse_ns"),
    "reset_pulse": ("write_pulse_pj", "write_pulse_ns"),
    "verify_read": ("verify_read_pj", "verify_read_ns"),
    "cell_read": ("cell_read_pj", None),
    "adc_conversion": ("adc8", "adc_conversion_ns"),
    "dac_conversion": ("dac8", None),
    "shift_add": ("shift_add_pj", None),
    "digital_mult": ("mult_pj", "digital_op_ns"),
    "digital_add": ("add_pj", "digital_op_ns"),
    "sram_read": ("sram_word_pj", "sram_access_ns"),
    "sram_write": ("sram_word_pj", "sram_access_ns"),
    "dram_access": ("dram_word_pj", "dram_access_ns"),
    "line_charge": ("recorder", None),
}
"""Known event kinds. Pulses and reads are per cell; ADC/DAC per conversion; digital ops per operation at the cost
table's `datapath` precision; memory traffic per datapath word (`CostTable.word_bits`). Default pricing of
ADC/DAC assumes 8 bits; recorders pass the energy for other resolutions (`CostTable.adc_conversion_pj(bits)`).
`line_charge` is the C V^2 of the array's row and column wires charged by write pulses and MVM reads, counted in
cell pitches of wire (`crossbar.lines`, NeuroSim V2.1's line energies); it has no table cost: its recorder always
supplies the energy (recorded only for devices with a wire capacitance)."""

WRITE_EVENTS: frozenset[str] = frozenset({"set_pulse", "reset_pulse"})

_FIELDS = ("count", "energy_pj", "latency_ns")


@dataclass(frozen=True)
class LedgerRow:
    event: str
    phase: str
    task: str
    method: str
    layer: str
    count: float
    energy_pj: float
    latency_ns: float

    def as_dict(self) -> dict[str, str | float]:
        return {k: getattr(self, k) for k in (*KEYS, *_FIELDS)}


class Ledger:
    """Aggregated record of events with their energy (pJ) and latency (ns)."""

    def __init__(self, costs: CostTable | None = None) -> None:
        self.costs = costs if costs is not None else CostTable()
        self._rows: dict[tuple[str, str, str, str, str], list[float]] = {}
        self._units: dict[str, tuple[float, float]] = {}
        """(unit energy, unit latency) per event of `_units_of`, the cost table they were read from: a hot loop
        records thousands of events, and the cost table's properties would be evaluated for each."""
        self._units_of: CostTable | None = None

    # --- recording ---------------------------------------------------------------------------------------
    def record(
        self,
        event: str,
        count: float,
        *,
        phase: str,
        task: str = "",
        method: str = "",
        layer: str = "",
        energy_pj: float | None = None,
        latency_ns: float | None = None,
    ) -> None:
        """Add `count` events. Energy/latency default to count x the cost table's unit cost."""
        if not phase:
            raise ValueError("ledger phase must be a non-empty string")
        self._record(event, count, energy_pj, latency_ns, (phase, task, method, layer))

    def record_many(
        self,
        events: Iterable[tuple[str, float, float | None, float | None]],
        *,
        phase: str,
        task: str = "",
        method: str = "",
        layer: str = "",
    ) -> None:
        """`record` for several (event, count, energy_pj, latency_ns) under the same labels (an MVM's events)."""
        if not phase:
            raise ValueError("ledger phase must be a non-empty string")
        labels = (phase, task, method, layer)
        rows = self._rows
        isfinite = math.isfinite
        for event, count, energy_pj, latency_ns in events:
            if energy_pj is None or latency_ns is None or event not in EVENTS:
                self._record(event, count, energy_pj, latency_ns, labels)
                continue
            count = float(count)  # the checks of `_record`, inline: an MVM records six events per call
            if not (isfinite(count) and count >= 0 and isfinite(energy_pj) and energy_pj >= 0
                    and isfinite(latency_ns) and latency_ns >= 0):  # fmt: skip
                self._record(event, count, energy_pj, latency_ns, labels)  # raises with the reason
            if count == 0 and energy_pj == 0 and latency_ns == 0:
                continue
            key = (event, *labels)
            row = rows.get(key)
            if row is None:
                rows[key] = [count, float(energy_pj), float(latency_ns)]
            else:
                row[0] += count
                row[1] += energy_pj
                row[2] += latency_ns

    def _record(
        self, event: str, count: float, energy_pj: float | None, latency_ns: float | None,
        labels: tuple[str, str, str, str],
    ) -> None:  # fmt: skip
        if event not in EVENTS:
            raise ValueError(f"unknown ledger event {event!r}; known: {sorted(EVENTS)}")
        count = float(count)
        if not math.isfinite(count) or count < 0:
            raise ValueError(f"ledger count for {event!r} must be finite and >= 0, got {count!r}")
        if energy_pj is None or latency_ns is None:
            unit_energy, unit_latency = self._unit_costs(event)
            if energy_pj is None:
                energy_pj = count * unit_energy
            if latency_ns is None:
                latency_ns = count * unit_latency
        if not (math.isfinite(energy_pj) and energy_pj >= 0):
            raise ValueError(f"ledger energy_pj for {event!r} must be finite and >= 0, got {energy_pj!r}")
        if not (math.isfinite(latency_ns) and latency_ns >= 0):
            raise ValueError(f"ledger latency_ns for {event!r} must be finite and >= 0, got {latency_ns!r}")
        if count == 0 and energy_pj == 0 and latency_ns == 0:
            return
        key = (event, *labels)
        row = self._rows.get(key)
        if row is None:
            self._rows[key] = [count, float(energy_pj), float(latency_ns)]
        else:
            row[0] += count
            row[1] += energy_pj
            row[2] += latency_ns

    def _unit_costs(self, event: str) -> tuple[float, float]:
        """(`unit_energy_pj`, `unit_latency_ns`) of a known event, kept while `costs` is the same (frozen) table."""
        if self._units_of is not self.costs:
            self._units, self._units_of = {}, self.costs
        units = self._units.get(event)
        if units is None:
            units = self._units[event] = (self.unit_energy_pj(event), self.unit_latency_ns(event))
        return units

    def scope(self, *, phase: str, task: str = "", method: str = "") -> LedgerScope:
        """A recorder with phase/task/method filled in, to hand to lower layers."""
        return LedgerScope(self, phase=phase, task=task, method=method)

    def unit_energy_pj(self, event: str) -> float:
        source = EVENTS[event][0]
        if source == "adc8":
            return self.costs.adc_conversion_pj(8)
        if source == "dac8":
            return self.costs.dac_conversion_pj(8)
        if source == "recorder":  # priced by its recorder only (line_charge): no unit cost to default to
            return 0.0
        return float(getattr(self.costs, source))

    def unit_latency_ns(self, event: str) -> float:
        source = EVENTS[event][1]
        return 0.0 if source is None else float(getattr(self.costs, source))

    # --- queries -----------------------------------------------------------------------------------------
    def rows(self, **filters: str | Iterable[str]) -> Iterator[LedgerRow]:
        """Rows matching every filter (a label value, or a collection of accepted values)."""
        _check_keys(filters)
        accepted = [(KEYS.index(k), {v} if isinstance(v, str) else set(v)) for k, v in filters.items()]
        for key, (count, energy, latency) in self._rows.items():
            if all(key[position] in values for position, values in accepted):
                yield LedgerRow(*key, count, energy, latency)

    def total(self, field: str = "energy_pj", **filters: str | Iterable[str]) -> float:
        """Sum of `field` (count, energy_pj or latency_ns) over matching rows."""
        _check_field(field)
        return math.fsum(getattr(row, field) for row in self.rows(**filters))

    def group_by(
        self, *keys: str, field: str = "energy_pj", **filters: str | Iterable[str]
    ) -> dict[tuple[str, ...], float]:
        """Sums of `field` grouped by the given label keys, e.g. group_by("phase", "event")."""
        _check_keys(dict.fromkeys(keys))
        _check_field(field)
        parts: dict[tuple[str, ...], list[float]] = {}
        for row in self.rows(**filters):
            parts.setdefault(tuple(getattr(row, k) for k in keys), []).append(getattr(row, field))
        return {group: math.fsum(values) for group, values in parts.items()}

    def cell_write_pulses(self, **filters: str | Iterable[str]) -> float:
        """Total SET + RESET pulses among matching rows."""
        return self.total("count", event=WRITE_EVENTS, **filters)

    def __len__(self) -> int:
        return len(self._rows)

    # --- combining ---------------------------------------------------------------------------------------
    def merge(self, other: Ledger) -> Ledger:
        """A new ledger holding the rows of both (same keys are summed). Costs are taken from `self`."""
        merged = Ledger(self.costs)
        merged._rows = {key: list(values) for key, values in self._rows.items()}
        for key, (count, energy, latency) in other._rows.items():
            merged._add(key, count, energy, latency)
        return merged

    def __add__(self, other: Ledger) -> Ledger:
        return self.merge(other)

    def _add_row(self, row: LedgerRow) -> None:
        self._add((row.event, row.phase, row.task, row.method, row.layer), row.count, row.energy_pj, row.latency_ns)

    def _add(self, key: tuple[str, str, str, str, str], count: float, energy_pj: float, latency_ns: float) -> None:
        existing = self._rows.setdefault(key, [0.0, 0.0, 0.0])
        existing[0] += count
        existing[1] += energy_pj
        existing[2] += latency_ns

    # --- export / import ---------------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, str | float]]:
        return [
            row.as_dict() for row in sorted(self.rows(), key=lambda r: (r.phase, r.task, r.method, r.layer, r.event))
        ]

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write all rows as CSV (atomically). pandas.read_csv reads it; empty labels read back as NaN there."""

        def write(handle) -> None:
            writer = csv.DictWriter(handle, fieldnames=[*KEYS, *_FIELDS])
            writer.writeheader()
            for record in self.to_records():
                writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in record.items()})

        atomic_write(path, write)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write all rows as a JSON list of records (atomically); pandas.read_json(path) reads it."""
        atomic_write(path, lambda handle: json.dump(self.to_records(), handle, indent=1))

    @classmethod
    def from_records(cls, records: Iterable[dict[str, object]], costs: CostTable | None = None) -> Ledger:
        ledger = cls(costs)
        for record in records:
            missing = [k for k in (*KEYS, *_FIELDS) if k not in record]
            if missing:
                raise ValueError(f"ledger record is missing {missing}: {record!r}")
            labels = ["" if _is_blank(record[k]) else str(record[k]) for k in KEYS]
            if labels[0] not in EVENTS:
                raise ValueError(f"unknown ledger event {labels[0]!r} in record")
            values = [float(record[k]) for k in _FIELDS]  # type: ignore[arg-type]
            if any(not math.isfinite(v) or v < 0 for v in values):
                raise ValueError(f"ledger record has a negative or non-finite value: {record!r}")
            ledger._add_row(LedgerRow(*labels, *values))
        return ledger

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], costs: CostTable | None = None) -> Ledger:
        with open(path, newline="") as handle:
            return cls.from_records(csv.DictReader(handle), costs)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], costs: CostTable | None = None) -> Ledger:
        with open(path) as handle:
            return cls.from_records(json.load(handle), costs)


class LedgerScope:
    """A ledger with phase, task and method fixed; lower layers only name the event and layer."""

    def __init__(self, ledger: Ledger, *, phase: str, task: str = "", method: str = "") -> None:
        self.ledger = ledger
        self.phase = phase
        self.task = task
        self.method = method

    @property
    def costs(self) -> CostTable:
        return self.ledger.costs

    def record(
        self,
        event: str,
        count: float,
        *,
        layer: str = "",
        energy_pj: float | None = None,
        latency_ns: float | None = None,
    ) -> None:
        if not self.phase:
            raise ValueError("ledger phase must be a non-empty string")
        self.ledger._record(event, count, energy_pj, latency_ns, (self.phase, self.task, self.method, layer))

    def record_many(self, events: Iterable[tuple[str, float, float | None, float | None]], *, layer: str = "") -> None:
        """Several (event, count, energy_pj, latency_ns) of one layer (`Ledger.record_many`)."""
        self.ledger.record_many(events, phase=self.phase, task=self.task, method=self.method, layer=layer)


def _check_keys(keys: Iterable[str]) -> None:
    unknown = sorted(set(keys) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown ledger key(s) {unknown}; known: {list(KEYS)}")


def _check_field(field: str) -> None:
    if field not in _FIELDS:
        raise ValueError(f"unknown ledger field {field!r}; known: {list(_FIELDS)}")


def _is_blank(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))
