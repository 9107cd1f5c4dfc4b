"""Line charging: the energy of charging an array's row and column wires to the voltage driven on them.

A wire of capacitance C charged to V draws C V^2 from its driver (half stored, half lost in the driver; the stored
half is lost at discharge), as NeuroSim V2.1 prices every line it drives. The device field `wire_cap_ff_per_cell`
gives C per cell pitch of line, so a line crossing n cells costs n * C * V^2. Lines are as long as the cells the
layer occupies: a row line crosses the G+ and G- cell of every output (2 d_out cells, summed over column tiles), a
column line the real rows of its row tile (the simulator prices cells, converters and drivers the same way).

Writes (`write_line_charge`): every pulse step of a row (rows are written one after another, all cells of a row at
once, SET phase then RESET phase, `crossbar.programming`) charges the selected row line and every column line of
the row's tile to V_write: the columns being written and, to inhibit them, the others. Per pulse step that is
L_row + n_columns * L_column cells of wire. NeuroSim V2.1's 1T1R write (Training_pytorch/NeuroSIM/
ProcessingUnit.cpp 964-971) charges, per pulse step, the unselected SLs (capCol each), the selected BL once per
selected column (capRow1) and the selected WL (capRow2 at Vdd): on a square sub-array with wire-only capacitances
that is N lines of N cells at V_write, ours within the one row line (1/N) and its Vdd gate line.

Reads (`ReadLines`): in every input cycle every driven input line is charged to its input voltage (bit-serial: 1
bit at V_read; multi-bit: V_read |x|, the (V / V_read)^2 weights the cell-read energy uses, `crossbar.scheme`),
and once per conversion every output line read is charged to V_read (NeuroSim V2.1 SubArray.cpp 2551-2554:
capBL * V_read^2 per column read, every column once per read pulse). NeuroSim's 1T1R rows are access-transistor
gates (WL) at Vdd, re-driven for each of the numColMuxed column groups (SubArray.cpp 2553-2554); ours are the
read lines at the input voltage, once per cycle (`benchmarks/fidelity.py` shows both).

Not charged: verify reads (at V_read, <= (V_read / V_write)^2 = 1/16 of a pulse step's charge on the presets) and
the access transistors' gate and drain capacitance NeuroSim adds to capRow2 and capCol (SubArray.cpp 284-285):
`wire_cap_ff_per_cell` is the wire only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar.device import DeviceConfig

__all__ = [
    "NEUROSIM_CELL_PITCH_UM",
    "NEUROSIM_WIRE_CAP_FF_PER_CELL",
    "NEUROSIM_WIRE_CAP_FF_PER_UM",
    "ReadLines",
    "charge_pj",
    "write_line_charge",
]

NEUROSIM_WIRE_CAP_FF_PER_UM = 0.2
"""Wire capacitance per length, fF/um: NeuroSim V2.1 SubArray.cpp 138-140 (capRow1 = capRow2 = capCol = length *
0.2e-15 / 1e-6, F per m)."""
NEUROSIM_CELL_PITCH_UM = 4 * 32e-3
"""Cell pitch of a NeuroSim V2.1 1T1R array, um: 4 F wide and high (Param.cpp 154-155 heightInFeatureSize1T1R =
widthInFeatureSize1T1R = 4; relaxArrayCellWidth/Height 0, Param.cpp 134-135) with F = tech.featureSize = technode
32 nm (Param.cpp 122; Technology.cpp 56 featureSize = technode * 1e-9; SubArray.cpp 116 and 121: lengthRow =
numCol * cellWidth * tech.featureSize)."""
NEUROSIM_WIRE_CAP_FF_PER_CELL = NEUROSIM_WIRE_CAP_FF_PER_UM * NEUROSIM_CELL_PITCH_UM
"""0.0256 fF of wire per cell pitch: NeuroSim V2.1's default 1T1R array at 32 nm."""

_FF_V2_TO_PJ = 1e-3
"""fF * V^2 = 1e-15 J = 1e-3 pJ."""


def charge_pj(cap_ff_per_cell: float, cells: float, voltage_v: float) -> float:
    """C V^2 of `cells` cell pitches of wire charged to `voltage_v`, in pJ (fF per cell, V)."""
    return cap_ff_per_cell * cells * voltage_v * voltage_v * _FF_V2_TO_PJ


def write_line_charge(device: DeviceConfig, row_steps: np.ndarray, d_out: int) -> tuple[float, float]:
    """(cell pitches of wire charged, pJ) of a programming call whose real rows took `row_steps` pulse steps each
    (SET phase + RESET phase: the slowest cell's pulses of each, `crossbar.programming`), in row order of a d_in x
    d_out layer tiled by `device.tile_rows`. Per step: the row line (2 d_out cells) and all 2 d_out column lines of
    the row's tile (its real rows each) at `device.write_voltage_v`. (0, 0) without a wire capacitance."""
    if device.wire_cap_ff_per_cell == 0:
        return 0.0, 0.0
    steps = np.asarray(row_steps, dtype=np.float64)
    d_in = steps.shape[0]
    tile = np.arange(d_in) // device.tile_rows
    tile_height = np.minimum(device.tile_rows, d_in - tile * device.tile_rows)  # real rows of each row's tile
    cells = float(2 * d_out * (steps * (1.0 + tile_height)).sum())
    return cells, charge_pj(device.wire_cap_ff_per_cell, cells, device.write_voltage_v)


@dataclass(frozen=True)
class ReadLines:
    """Line charging of one array's MVMs in one direction: the input lines per unit of driven activity and the
    output lines per vector (`crossbar.pricing.MvmPricing` adds it as the `line_charge` event)."""

    input_cells: int
    """Cell pitches of one input's lines (2 * n_outputs: the G+ and G- cell of every output it crosses)."""
    input_pj: float
    """pJ per unit of (V / V_read)^2-weighted input activity: input_cells * C * V_read^2."""
    output_cells: int
    """Cell pitches of the output lines read per vector: every output line (2 per output), as long as its tile's
    share of the inputs (summed: n_inputs), once per conversion."""
    output_pj: float
    """pJ of the output lines per vector: output_cells * C * V_read^2."""

    @classmethod
    def of(cls, device: DeviceConfig, *, cells_per_line: int, n_inputs: int, conversions_per_column: int
           ) -> ReadLines | None:  # fmt: skip
        """The read line charging of MVMs with `n_inputs` input lines of `cells_per_line` cells each (2 * n_outputs);
        the output lines cross the same cells (cells_per_line * n_inputs). None without a wire capacitance."""
        cap = device.wire_cap_ff_per_cell
        if cap == 0:
            return None
        input_cells = cells_per_line
        output_cells = cells_per_line * n_inputs * conversions_per_column
        volts = device.read_voltage_v
        return cls(input_cells=input_cells, input_pj=charge_pj(cap, input_cells, volts), output_cells=output_cells,
                   output_pj=charge_pj(cap, output_cells, volts))  # fmt: skip

    def event(self, n_vectors: int, drives: float, energy_weight: float) -> tuple[str, float, float, float]:
        """The `line_charge` ledger event (count in cell pitches, pJ, no latency: charging is within the read
        cycle) of `n_vectors` MVMs whose input lines were driven `drives` line-cycles with `energy_weight` summed
        (V / V_read)^2."""
        cells = drives * self.input_cells + n_vectors * self.output_cells
        return "line_charge", cells, energy_weight * self.input_pj + n_vectors * self.output_pj, 0.0
