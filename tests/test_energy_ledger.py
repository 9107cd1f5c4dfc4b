from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy import EVENTS, CostTable, Ledger

LABELS = st.sampled_from(["", "a", "b", "layer.0"])
EVENT_NAMES = st.sampled_from(sorted(EVENTS))
RECORD = st.tuples(
    EVENT_NAMES,
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(["deploy_base", "adapt", "inference"]),
    LABELS,
    LABELS,
    LABELS,
)


def _ledger(records) -> Ledger:
    ledger = Ledger()
    for event, count, phase, task, method, layer in records:
        ledger.record(event, count, phase=phase, task=task, method=method, layer=layer)
    return ledger


def test_default_pricing_is_count_times_unit_cost() -> None:
    costs = CostTable()
    ledger = Ledger(costs)
    ledger.record("set_pulse", 10, phase="deploy_base", layer="fc1")
    ledger.record("adc_conversion", 4, phase="inference")
    assert ledger.total() == pytest.approx(10 * costs.write_pulse_pj + 4 * costs.adc_conversion_pj(8))
    assert ledger.total("latency_ns", phase="deploy_base") == pytest.approx(10 * costs.write_pulse_ns)
    assert ledger.cell_write_pulses() == 10


def test_explicit_physics_overrides_table() -> None:
    ledger = Ledger()
    ledger.record("set_pulse", 3, phase="adapt", energy_pj=7.5, latency_ns=1.0)
    assert ledger.total() == 7.5
    assert ledger.total("latency_ns") == 1.0


def test_repeated_records_aggregate_into_one_row() -> None:
    ledger = Ledger()
    for _ in range(1000):
        ledger.record("cell_read", 256, phase="inference", layer="fc")
    assert len(ledger) == 1
    assert ledger.total("count") == 256_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"event": "teleport", "count": 1}, "unknown ledger event"),
        ({"event": "set_pulse", "count": -1}, "must be finite and >= 0"),
        ({"event": "set_pulse", "count": float("nan")}, "must be finite"),
        ({"event": "set_pulse", "count": 1, "energy_pj": -2.0}, "energy_pj"),
    ],
)
def test_bad_records_are_rejected(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Ledger().record(phase="adapt", **kwargs)


def test_unknown_query_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown ledger key"):
        Ledger().total(colour="red")
    with pytest.raises(ValueError, match="unknown ledger field"):
        Ledger().total("joules")


def test_scope_fills_labels() -> None:
    ledger = Ledger()
    scope = ledger.scope(phase="adapt", task="t1", method="fusion")
    scope.record("digital_mult", 5, layer="q")
    (row,) = ledger.rows()
    assert (row.phase, row.task, row.method, row.layer) == ("adapt", "t1", "fusion", "q")


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORD, max_size=30), st.lists(RECORD, max_size=30))
def test_totals_are_additive_under_merge(first, second) -> None:
    a, b = _ledger(first), _ledger(second)
    merged = a.merge(b)
    for field in ("count", "energy_pj", "latency_ns"):
        assert merged.total(field) == pytest.approx(a.total(field) + b.total(field))
    assert merged.total(phase="adapt") == pytest.approx(a.total(phase="adapt") + b.total(phase="adapt"))


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORD, max_size=40), st.sampled_from(["event", "phase", "task", "method", "layer"]))
def test_grouping_then_summing_equals_total(records, key) -> None:
    ledger = _ledger(records)
    groups = ledger.group_by(key)
    assert sum(groups.values()) == pytest.approx(ledger.total())
    two_keys = ledger.group_by(key, "phase", field="count")
    assert sum(two_keys.values()) == pytest.approx(ledger.total("count"))


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORD, max_size=40))
def test_energies_are_non_negative(records) -> None:
    ledger = _ledger(records)
    assert all(row.energy_pj >= 0 and row.latency_ns >= 0 and row.count >= 0 for row in ledger.rows())


@settings(max_examples=30, deadline=None)
@given(st.lists(RECORD, max_size=30))
def test_export_import_round_trips(tmp_path_factory, records) -> None:
    ledger = _ledger(records)
    folder = tmp_path_factory.mktemp("ledger")
    ledger.to_csv(folder / "l.csv")
    ledger.to_json(folder / "l.json")
    for loaded in (Ledger.from_csv(folder / "l.csv"), Ledger.from_json(folder / "l.json")):
        assert loaded.to_records() == ledger.to_records()


def test_pandas_reads_exports(tmp_path) -> None:
    ledger = _ledger([("set_pulse", 5, "adapt", "t", "m", "l"), ("cell_read", 9, "inference", "", "", "")])
    ledger.to_csv(tmp_path / "l.csv")
    ledger.to_json(tmp_path / "l.json")
    frame = pd.read_csv(tmp_path / "l.csv")
    assert list(frame.columns) == ["event", "phase", "task", "method", "layer", "count", "energy_pj", "latency_ns"]
    assert frame["energy_pj"].sum() == pytest.approx(ledger.total())
    assert pd.read_json(tmp_path / "l.json")["count"].sum() == 14
    # pandas' NaN for empty labels reads back as empty strings
    assert Ledger.from_records(frame.to_dict("records")).to_records() == ledger.to_records()
    assert json.loads((tmp_path / "l.json").read_text())[0]["event"] in EVENTS
