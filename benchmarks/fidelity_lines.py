"""Fidelity rows of line charging and of the ADC energy, against DNN_NeuroSim V2.1 (`benchmarks/fidelity.py` lists
them with the others; kept apart to keep both files short).

Sources re-implemented here (neurosim/DNN_NeuroSim_V2.1, Training_pytorch/NeuroSIM/):
- write lines: ProcessingUnit.cpp 876-949 (selected rows and columns, pulses per row) and 964-971 (1T1R RRAM:
  selected WL at Vdd, SET: unselected SLs and the selected BL per selected column, RESET: selected SLs and the
  unselected BL per unselected column, all at the write voltage), with the wire capacitances of SubArray.cpp
  138-140 (0.2 fF/um of line; the access transistors' gate/drain capacitance of 284-285 left out on both sides);
- read lines: SubArray.cpp 2551-2554 (capBL V_read^2 per column read and capRow2 Vdd^2 per active row, per read
  pulse, the rows once per column-mux step);
- SAR ADC: SarADC.cpp 161-233 (power (a log2 L + b) uW plus the column term c exp(d log10 R_column), for
  (log2 L + 1) ns; an open column draws 1 uW), at V2.1's node: technode 32, deviceroadmap 2 = LP (Param.cpp 71,
  122). Vdd = 0.9 V at 32 nm (Technology.cpp 566).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from fidelity import PULSE_TOL, WRITE_ENERGY_TOL, Row

from crossbar.lines import charge_pj
from crossbar.mapping import Targets
from crossbar.presets import device_preset
from crossbar.pricing import MvmPricing, conductance_sums
from crossbar.programming import program_state
from crossbar.state import ArrayState
from energy import COST_PRESETS, WRITE_EVENTS, CostTable, Ledger

NEUROSIM_VDD_V = 0.9
"""Vdd at 32 nm (HP and LP alike), NeuroSim V2.1 Technology.cpp 511 / 566: the 1T1R WL (gate) swing."""
NEUROSIM_COL_MUX = 8
"""numColMuxed, Param.cpp 137: columns sharing one ADC, read one after the other."""
SAR_COEFFS = {"32 nm LP": (1.1294, 8.8998, 0.079449, -2.297), "22 nm HP": (0.7213, 3.3041, 0.084273, -2.311)}
"""SarADC.cpp 213-215 (32 nm LP) and 188-190 (22 nm HP): (a, b) of the power a log2 L + b in uW, (c, d) of the
column term c exp(d log10 R) in W."""


def neurosim_write_lines(g_old: np.ndarray, g_new: np.ndarray, device, v_write: float, cap_ff: float
                         ) -> tuple[float, float]:  # fmt: skip
    """(pJ, row pulse steps) of NeuroSim's 1T1R RRAM write line energies for a (rows, cells) sub-array written from
    g_old to g_new."""
    rows, cols = g_old.shape
    delta = device.g_range_us / device.pulse_levels  # ProcessingUnit.cpp 865
    dg = g_new - g_old
    moved = np.abs(dg) >= delta  # 888
    pulses = np.where(moved, np.ceil(np.abs(dg) / delta - 1e-9), 0.0)  # 892
    is_set, is_reset = moved & (dg > 0), moved & (dg < 0)
    n_set, n_reset = is_set.sum(1), is_reset.sum(1)
    p_set = np.where(is_set, pulses, 0).max(1).sum()  # 893, 941: the row's slowest cell
    p_reset = np.where(is_reset, pulses, 0).max(1).sum()
    rows_set = int((n_set > 0).sum())  # 926-933: a row with SET and RESET counts as a SET row
    rows_reset = int(((n_set == 0) & (n_reset > 0)).sum())
    c_set = int(n_set.sum()) // rows_set if rows_set else 0  # 945-946: integer division, then ceil
    c_reset = int(n_reset.sum()) // rows_reset if rows_reset else 0
    cap_row, cap_col = cap_ff * cols, cap_ff * rows  # SubArray.cpp 138-140 (lengthRow: numCol cells)
    v2, vdd2 = v_write**2, NEUROSIM_VDD_V**2
    rest_set = cols - c_set if cols >= c_set else cols
    rest_reset = cols - c_reset if cols >= c_reset else cols
    set_fj = cap_row * vdd2 * p_set + cap_col * v2 * rest_set * p_set + cap_row * v2 * c_set * p_set  # 965-967
    reset_fj = (
        cap_row * vdd2 * p_reset + cap_col * v2 * c_reset * p_reset + cap_row * v2 * rest_reset * p_reset
    )  # 969-971
    return (set_fj + reset_fj) * 1e-3, float(p_set + p_reset)


def neurosim_sar_adc_pj(bits: int, column_ohm: float, node: str = "32 nm LP", column_term: bool = True) -> float:
    """One SAR conversion of a column of resistance `column_ohm` (inf: an open column), SarADC.cpp 161-233 at
    V_read 0.5 V and 300 K (no scaling)."""
    a, b, c, d = SAR_COEFFS[node]
    if math.isinf(column_ohm):
        power_w = 1e-6  # SarADC.cpp 167-168
    else:
        power_w = (a * bits + b) * 1e-6 + (c * math.exp(d * math.log10(column_ohm)) if column_term else 0.0)
    return power_w * (bits + 1) * 1e-9 * 1e12


def _write(device, start_pos: np.ndarray, target_pos: np.ndarray, seed: int):
    """Program G+ from start_pos to target_pos (G- idle), write-verify: our line_charge pJ, our row pulse steps
    (per row the slowest cell's SET plus RESET pulses: the write latency over t_write), and the cells before and
    after as a (rows, 2 * d_out) matrix [G+ | G-]."""
    d_in, d_out = start_pos.shape
    state = ArrayState.fresh(d_in, d_out, device)
    shape = state.g_diff_us.shape
    state.g_diff_us[...] = (start_pos - device.g_min_us).reshape(shape).astype(np.float32)
    before = np.concatenate([state.g_pos_us().reshape(-1, d_out), state.g_neg_us.reshape(-1, d_out)], 1)[:d_in]
    targets = Targets(target_pos.reshape(shape).astype(np.float32), np.full(shape, device.g_min_us, np.float32),
                      np.ones(d_out, np.float32))  # fmt: skip
    changed = np.abs(targets.pos_us - state.g_pos_us()) > 1e-6
    ledger = Ledger()
    program_state(state, targets, device, seed=seed, stream=0, changed=changed, ledger=ledger.scope(phase="adapt"))
    steps = ledger.total("latency_ns", event=WRITE_EVENTS) / device.write_pulse_ns  # row-parallel pulse steps
    after = np.concatenate([state.g_pos_us().reshape(-1, d_out), state.g_neg_us.reshape(-1, d_out)], 1)[:d_in]
    lines = ledger.total("energy_pj", event="line_charge")
    return lines, float(steps), before.astype(np.float64), after.astype(np.float64)


def line_write_rows(seed: int = 0) -> list[Row]:
    """Write line charging on neurosim_rram, one full 128 x 128-cell sub-array (64 weight pairs x 128 rows), vs
    NeuroSim's formula on the same start and end states at the preset's 4 V: per row pulse step (the line model,
    asserted within 5 %) and per cell (with each side's own pulse count, asserted within the pulse-count tolerance,
    20 %); and as NeuroSim codes it, cell.writeVoltage = sqrt(2) x 4 V (ProcessingUnit.cpp 128-130; stated)."""
    device = device_preset("neurosim_rram", tile_rows=128)
    rng = np.random.default_rng(seed)
    lo, hi, n = device.g_min_us, device.g_max_us, 128
    step = device.g_range_us / (device.levels - 1)
    level = rng.integers(3, device.levels - 3, (n, n // 2))
    sparse = np.where(rng.random((n, 1)) < 0.1, level + rng.choice([-1, 1], (n, n // 2)), level)
    moved = level + rng.choice([-3, -2, -1, 1, 2, 3], level.shape)
    cases = {
        "full swing": (np.full((n, n // 2), lo), np.full((n, n // 2), hi)),
        "LoRA update +-1..3 levels": (lo + level * step, lo + moved * step),
        "10 % of rows +-1 level": (lo + level * step, lo + sparse * step),
    }
    rows = []
    for k, (name, (start, target)) in enumerate(cases.items()):
        ours, steps, before, after = _write(device, start, target, seed + k)
        cells = n * n
        source, source_steps = neurosim_write_lines(before, after, device, device.write_voltage_v,
                                                    device.wire_cap_ff_per_cell)  # fmt: skip
        where = "NeuroSim V2.1 ProcessingUnit.cpp 964-971, SubArray.cpp 138-140, at 4 V"
        rows.append(Row("line charge write neurosim_rram", f"{name}, per row pulse step", ours / steps,
                        source / source_steps, "pJ/step", WRITE_ENERGY_TOL, where))  # fmt: skip
        rows.append(Row("line charge write neurosim_rram", name, ours / cells, source / cells, "pJ/cell", PULSE_TOL,
                        where + "; each side's own pulse count"))  # fmt: skip
        coded, _ = neurosim_write_lines(before, after, device, math.sqrt(2) * device.write_voltage_v,
                                        device.wire_cap_ff_per_cell)  # fmt: skip
        note = "NeuroSim squares sqrt(2) x 4 V (ProcessingUnit.cpp 130): 2x; ours 4 V"
        rows.append(Row("line charge write neurosim_rram", f"{name}, NeuroSim as coded", ours / cells, coded / cells,
                        "pJ/cell", None, note))  # fmt: skip
    return rows


def line_read_rows(n_vectors: int = 64, seed: int = 0) -> list[Row]:
    """MVM line charging of one 128 x 128-cell sub-array on neurosim_rram (bit-serial inputs, ADC per cycle) vs
    SubArray.cpp 2551-2554 with the same input bits: the column lines (asserted) and the row lines (stated:
    NeuroSim's rows are 1T1R gates at Vdd, re-driven per column-mux step; ours the read lines at V_read)."""
    device = device_preset("neurosim_rram", tile_rows=128)
    state = ArrayState.fresh(128, 64, device)
    pricing = MvmPricing.of(device, CostTable(), d_in=128, d_out=64, transposed=False, bias=False)
    relu = np.maximum(np.random.default_rng(seed).standard_normal((n_vectors, 128)), 0)
    x = torch.from_numpy(relu.astype(np.float32))
    ledger = Ledger()
    pricing.record(ledger.scope(phase="inference"), layer="l", n_vectors=n_vectors, conductance=conductance_sums(state),
                   inputs=x)  # fmt: skip
    total = ledger.total("energy_pj", event="line_charge")
    columns = n_vectors * pricing.lines.output_pj
    cap, vr = device.wire_cap_ff_per_cell, device.read_voltage_v
    source_cols = charge_pj(cap, 128, vr) * 128 * pricing.cycles * n_vectors  # capBL Vr^2 numReadCells x numColMuxed
    drives = float(pricing.activity(x).drives.sum())
    source_rows = charge_pj(cap, 128, NEUROSIM_VDD_V) * drives * NEUROSIM_COL_MUX  # capRow2 Vdd^2, per mux step
    note = "NeuroSim V2.1 SubArray.cpp 2551-2554"
    return [
        Row("line charge read neurosim_rram", "column lines, ReLU inputs", columns / n_vectors, source_cols / n_vectors,
            "pJ/vector", WRITE_ENERGY_TOL, note),
        Row("line charge read neurosim_rram", "row lines, ReLU inputs", (total - columns) / n_vectors,
            source_rows / n_vectors, "pJ/vector", None, note + ": 1T1R gates at Vdd x 8 mux steps; ours V_read"),
    ]  # fmt: skip


def adc_rows() -> list[Row]:
    """neurosim_v21's 5-bit ADC energy: the source it follows (SarADC.cpp 22 nm HP, no column term; asserted) and
    NeuroSim V2.1 as configured (32 nm LP with the column term) beside it for four columns of 128 cells (stated)."""
    ours = COST_PRESETS["neurosim_v21"].adc_conversion_pj(5)
    rows = [Row("ADC 5-bit neurosim_v21", "vs SarADC.cpp 22 nm HP, no column term", ours,
                neurosim_sar_adc_pj(5, 1e6, "22 nm HP", column_term=False), "pJ/conv", WRITE_ENERGY_TOL,
                "the source the default follows (SarADC.cpp 188-189)")]  # fmt: skip
    ron, roff = 240e3, 24e6  # Param.cpp 159-160
    for name, ohm in (("open column", math.inf), ("128 cells at Roff", roff / 128), ("64 cells at Ron", ron / 64),
                      ("128 cells at Ron", ron / 128)):  # fmt: skip
        rows.append(Row("ADC 5-bit neurosim_v21", f"vs V2.1 32 nm LP, {name}", ours, neurosim_sar_adc_pj(5, ohm),
                        "pJ/conv", None, "V2.1 as configured (Param.cpp 71, 122; SarADC.cpp 213-215; V2.1's "
                        "default is the MLSA, Param.cpp 96): not the default's source"))  # fmt: skip
    return rows


def energy_rows(quick: bool = False) -> list[Row]:
    """Every row of this module."""
    return line_write_rows() + line_read_rows(16 if quick else 64) + adc_rows()
