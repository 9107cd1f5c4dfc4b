"""Line charging (`crossbar.lines`): writes and MVM reads charge C V^2 per cell pitch of every line they drive,
recorded as `line_charge`; equal to the formula on NeuroSim V2.1's constants; nothing for presets without a wire
capacitance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossbar.lines import NEUROSIM_WIRE_CAP_FF_PER_CELL, ReadLines, charge_pj, write_line_charge
from crossbar.mapping import Targets
from crossbar.presets import DEVICE_PRESETS, device_preset
from crossbar.pricing import MvmPricing, conductance_sums
from crossbar.programming import program_state
from crossbar.state import ArrayState
from energy import EVENTS, WRITE_EVENTS, CostTable, Ledger


def _program(device, d_in: int, d_out: int, seed: int = 0) -> tuple[Ledger, object]:
    rng = np.random.default_rng(seed)
    state = ArrayState.fresh(d_in, d_out, device)
    shape = state.g_diff_us.shape
    pos = rng.uniform(device.g_min_us, device.g_max_us, shape).astype(np.float32)
    targets = Targets(pos, np.full(shape, device.g_min_us, np.float32), np.ones(d_out, np.float32))
    ledger = Ledger()
    report = program_state(state, targets, device, seed=seed, stream=0, ledger=ledger.scope(phase="deploy_base"))
    return ledger, report


def test_neurosim_constants() -> None:
    """0.2 fF/um (SubArray.cpp 138-140) x 4 F (Param.cpp 154-155) x 32 nm (Param.cpp 122, Technology.cpp 56)."""
    assert NEUROSIM_WIRE_CAP_FF_PER_CELL == pytest.approx(0.2 * 4 * 0.032)
    assert device_preset("neurosim_rram").wire_cap_ff_per_cell == NEUROSIM_WIRE_CAP_FF_PER_CELL
    assert {n for n, d in DEVICE_PRESETS.items() if d.wire_cap_ff_per_cell > 0} == {"neurosim_rram"}
    assert charge_pj(1.0, 1000, 2.0) == pytest.approx(4.0)  # 1 pF at 2 V: 4 pJ
    assert "line_charge" in EVENTS and Ledger().unit_energy_pj("line_charge") == 0.0
    with pytest.raises(ValueError, match="wire_cap_ff_per_cell"):
        device_preset("neurosim_rram", wire_cap_ff_per_cell=-1.0)


def test_write_line_charge_is_neurosim_formula_on_its_sub_array() -> None:
    """A full 128 x 128-cell NeuroSim sub-array (64 pairs), every row 60 SET steps: NeuroSim's 1T1R SET charges
    N lines of N cells at V_write per step (ProcessingUnit.cpp 966-967, capCol = capRow1 = N C) plus the WL at
    Vdd (965); ours N column lines and the row line. Equal within the row line and the WL (< 1 %)."""
    device = device_preset("neurosim_rram", tile_rows=128)
    cells, pj = write_line_charge(device, np.full(128, 60), d_out=64)
    c, v, n = NEUROSIM_WIRE_CAP_FF_PER_CELL, device.write_voltage_v, 128
    assert cells == 128 * 60 * 128 * (1 + 128)
    assert pj == pytest.approx(c * n * v**2 * (1 + n) * 60 * n * 1e-3)
    neurosim = (c * n * 0.9**2 + c * n * v**2 * n) * 60 * n * 1e-3
    assert pj == pytest.approx(neurosim, rel=0.01)
    assert pj / (n * n) == pytest.approx(3.15, rel=0.01)  # pJ per cell at 4 V (6.3 at NeuroSim's sqrt(2) x 4 V)


def test_write_line_charge_in_ledger_and_report() -> None:
    """The ledger's line_charge of a programming call is the formula on the call's own pulse steps (the write
    latency over t_write), over tiles of unequal height; the report's energy includes it."""
    device = device_preset("neurosim_rram", tile_rows=4, programming_mode="write_verify")
    ledger, report = _program(device, 10, 3)
    steps_ns = ledger.total("latency_ns", event=WRITE_EVENTS)
    assert steps_ns > 0
    line = ledger.total("energy_pj", event="line_charge")
    # rows 0-7 in tiles of 4 rows, rows 8-9 in a tile of 2: per step 2 d_out (1 + tile rows) cells
    per_row = np.array([5, 5, 5, 5, 5, 5, 5, 5, 3, 3]) * 2 * 3
    assert line <= charge_pj(device.wire_cap_ff_per_cell, per_row.max(), 4.0) * steps_ns / device.write_pulse_ns
    assert line >= charge_pj(device.wire_cap_ff_per_cell, per_row.min(), 4.0) * steps_ns / device.write_pulse_ns
    row_steps = np.zeros(10)
    row_steps[8] = 2.0
    assert write_line_charge(device, row_steps, 3)[0] == 2 * 2 * 3 * (1 + 2)
    assert ledger.total("energy_pj") == pytest.approx(report.energy_pj)
    assert line == pytest.approx(ledger.total("count", event="line_charge") * device.wire_cap_ff_per_cell * 16e-3)


def test_no_line_charge_without_wire_capacitance() -> None:
    device = device_preset("reram_wan2022", tile_rows=4)
    ledger, _ = _program(device, 10, 3)
    assert ledger.total("count", event="set_pulse") > 0
    assert not list(ledger.rows(event="line_charge"))
    assert MvmPricing.of(device, CostTable(), d_in=10, d_out=3, transposed=False, bias=False).lines is None


@pytest.mark.parametrize("transposed", [False, True])
def test_read_line_charge_equals_formula(transposed) -> None:
    """Input lines at (V / V_read)^2 of every driven cycle, output lines at V_read once per conversion, on the
    neurosim scheme (bit-serial, ADC per cycle) and its constants."""
    device = device_preset("neurosim_rram", tile_rows=16)
    d_in, d_out, n_vectors = 40, 12, 5
    state = ArrayState.fresh(d_in, d_out, device)
    pricing = MvmPricing.of(device, CostTable(), d_in=d_in, d_out=d_out, transposed=transposed, bias=False)
    n_in, n_out = (d_out, d_in) if transposed else (d_in, d_out)
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (n_vectors, n_in)).astype(np.float32))
    ledger = Ledger()
    pricing.record(ledger.scope(phase="inference"), layer="l", n_vectors=n_vectors, conductance=conductance_sums(state),
                   inputs=x)  # fmt: skip
    activity = pricing.activity(x)
    c, vr = NEUROSIM_WIRE_CAP_FF_PER_CELL, device.read_voltage_v
    conversions = device.scheme.conversions_per_column(device.dac_bits)
    assert conversions == pricing.cycles > 1
    expected = (c * vr**2 * 1e-3 * 2 * n_out * float(activity.energy_weight.sum())
                + n_vectors * c * vr**2 * 1e-3 * 2 * n_out * n_in * conversions)  # fmt: skip
    assert ledger.total("energy_pj", event="line_charge") == pytest.approx(expected)
    cells = 2 * n_out * float(activity.drives.sum()) + n_vectors * 2 * n_out * n_in * conversions
    assert ledger.total("count", event="line_charge") == pytest.approx(cells)
    assert ledger.total("latency_ns", event="line_charge") == 0.0


def test_read_lines_once_per_vector_without_per_cycle_conversion() -> None:
    device = device_preset("reram_wan2022", wire_cap_ff_per_cell=0.1, mvm_scheme="multi_bit")
    lines = ReadLines.of(device, cells_per_line=8, n_inputs=5, conversions_per_column=1)
    assert lines.output_cells == 40 and lines.output_pj == pytest.approx(charge_pj(0.1, 40, 0.5))
    assert lines.event(2, 3.0, 1.5) == ("line_charge", 3.0 * 8 + 2 * 40, 1.5 * lines.input_pj + 2 * lines.output_pj,
                                        0.0)  # fmt: skip
