"""Ledger pricing of analog MVMs: what `n_vectors` MVMs (or transposed MVMs) of one array cost, event by event.

`record_mvm` is the definition (one call, every cost looked up); `MvmPricing` is the same price list computed once
per array, direction and cost table, so that a call only measures its input activity (`fast_input_activity`, one
numba pass, twin `crossbar.scheme.input_activity`) and adds its rows with one `Ledger.record_many`. `MvmTally` adds
MVMs up: a layer opens one per MVM (`open_tally`: with deferred recording, `crossbar.deferred_mvm_records`, the
kept one of its direction), the MVM adds its activity (the numba engine counts it inside the kernel pass that
already reads the inputs) and `close_tally` records it unless recording is deferred; `record_or_tally` does the
three for MVMs whose inputs are at hand. The MVM engines (`crossbar.engine`) keep each array's `MvmPricing` and
`ConductanceSums` behind the array's generation counter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crossbar.device import DeviceConfig
from crossbar.lines import ReadLines
from crossbar.mvm_kernels import input_activity_kernel
from crossbar.scheme import PRICED_BITS_IF_IDEAL, ConductanceSums, InputActivity, MvmScheme
from crossbar.state import ArrayState
from energy import CostTable, LedgerScope, pulse_energy_pj

__all__ = [
    "PRICED_BITS_IF_IDEAL",
    "MvmPricing",
    "MvmTally",
    "close_tally",
    "conductance_sums",
    "fast_input_activity",
    "open_tally",
    "record_mvm",
    "record_or_tally",
    "record_tallies",
]


def conductance_sums(state: ArrayState) -> ConductanceSums:
    """Per row and per column, the summed G+ + G- (uS) of an array's real cells (what driven lines conduct)."""
    return ConductanceSums.of(state.g_diff_us, state.g_neg_us, state.d_in)


def fast_input_activity(x: torch.Tensor, dac_bits: int | None, scheme: MvmScheme) -> InputActivity:
    """`crossbar.scheme.input_activity` (the definition and NumPy twin) in one numba pass: equal bit for bit."""
    return _kernel_activity(x, _activity_levels(dac_bits, scheme), scheme.bit_serial)


def _activity_levels(dac_bits: int | None, scheme: MvmScheme) -> int:
    """DAC steps per sign the input activity is counted at (0: an ideal multi-level DAC, the exact value)."""
    bits = dac_bits if dac_bits is not None else (PRICED_BITS_IF_IDEAL if scheme.bit_serial else None)
    return 0 if bits is None else (1 << (bits - 1)) - 1


def _kernel_activity(x: torch.Tensor, levels: int, bit_serial: bool, into: InputActivity | None = None
                     ) -> InputActivity:  # fmt: skip
    """The activity of x, or (`into`) x's activity added to `into`'s sums in place."""
    xs = x.detach()
    if xs.dtype != torch.float32 or xs.device.type != "cpu":
        xs = xs.to(device="cpu", dtype=torch.float32)
    xs = xs.numpy()
    if not xs.flags.c_contiguous:
        xs = np.ascontiguousarray(xs)
    if into is None:
        into = InputActivity(np.zeros(xs.shape[1], dtype=np.float64), np.zeros(xs.shape[1], dtype=np.float64))
    input_activity_kernel(xs, xs.view(np.int32), levels, bit_serial, into.drives, into.energy_weight)
    return into


def record_mvm(
    ledger: LedgerScope,
    *,
    layer: str,
    device: DeviceConfig,
    d_in: int,
    d_out: int,
    n_vectors: int,
    conductance: ConductanceSums,
    inputs: torch.Tensor | None = None,
    transposed: bool = False,
    bias: bool = False,
) -> None:
    """Record the hardware events of `n_vectors` MVMs (or transposed MVMs) of a d_out x d_in array under the
    device's MVM scheme (`crossbar.scheme`), the one the kernels compute.

    `inputs` (n_vectors, d_in), or (n_vectors, d_out) transposed, as the DAC sees them (transposed: d * out_scale):
    the cell-read energy counts the cells actually conducting. Without them every line is taken as driven at full
    scale in every cycle (an upper bound, for read-outs whose inputs are not at hand).
    - cell_read: count = cell-cycles conducting (the cells of every driven line, G+ and G-); energy =
      V_read^2 * t_read * sum over cycles and driven lines of (V / V_read)^2 * (G+ + G-) of the line's cells.
      Latency: cycles x `mvm_cycle_ns` per vector (all tiles in parallel).
    - dac_conversion: bit-serial, every line of every physical array in every cycle at `dac_row_cycle_pj` (the
      drivers are clocked whatever the bit); multi-bit, every line per vector at `dac_conversion_pj(bits)`. Its
      time overlaps the read cycles.
    - adc_conversion: every column of every input tile, per vector (one conversion per vector) or per cycle (ISAAC),
      at `adc_conversion_pj(bits)`. Latency: conversions per column x columns sharing an ADC x `adc_conversion_ns`
      per vector, not overlapped with the reads (an upper bound).
    - shift_add: one per conversion (digital tile sum, and the shift-add of bit-cycles), pipelined (no latency).
    - digital_mult: one per input (abs-max normalisation) and two per output (input and weight scale) per vector;
      digital_add: the bias, one per output. Priced at the cost table's datapath precision.
    Converters with bits None are priced at `PRICED_BITS_IF_IDEAL`.

    An MVM engine keeps the `MvmPricing` of each direction (`crossbar.engine.MvmEngine.pricing`) and calls its
    `record` instead.
    """
    pricing = MvmPricing.of(device, ledger.costs, d_in=d_in, d_out=d_out, transposed=transposed, bias=bias)
    pricing.record(ledger, layer=layer, n_vectors=n_vectors, conductance=conductance, inputs=inputs)


@dataclass(frozen=True)
class MvmPricing:
    """The per-vector part of `record_mvm` for one array, direction and cost table: everything but the input
    activity, computed once (an MVM engine keeps one per direction and cost table until the array's generation
    changes)."""

    device: DeviceConfig
    costs: CostTable
    """The cost table the unit costs below were taken from (compared by identity before reuse)."""
    transposed: bool
    bias: bool
    n_inputs: int
    n_outputs: int
    cells_per_line: int
    cycles: int
    dac_per_vector: int
    dac_unit_pj: float
    adc_per_vector: int
    adc_unit_pj: float
    adc_latency_factor: int
    """Conversions per column x columns sharing an ADC: latency per vector in units of `adc_conversion_ns`."""
    dac_bits: int | None
    bit_serial: bool
    levels: int
    """DAC steps per sign the activity is counted at (0: the exact value, an ideal multi-level DAC)."""
    # The cost table's unit costs, as `energy.Ledger` prices events recorded without an energy or latency:
    cell_read_ns: float
    """`mvm_cycle_ns`: one read cycle of a tile (a vector takes `cycles` of them)."""
    adc_ns: float
    """`adc_conversion_ns`."""
    shift_add_pj: float
    mult_pj: float
    mult_ns: float
    add_pj: float
    add_ns: float
    lines: ReadLines | None = None
    """Line charging of the driven input lines and the read output lines (`crossbar.lines`); None without a wire
    capacitance."""

    @classmethod
    def of(cls, device: DeviceConfig, costs: CostTable, *, d_in: int, d_out: int, transposed: bool, bias: bool
           ) -> MvmPricing:  # fmt: skip
        scheme = device.scheme
        dac_bits = device.dac_bits or PRICED_BITS_IF_IDEAL
        adc_bits = device.adc_bits or PRICED_BITS_IF_IDEAL
        if transposed:
            n_inputs, n_outputs, in_tile, out_tile = d_out, d_in, device.tile_cols, device.tile_rows
        else:
            n_inputs, n_outputs, in_tile, out_tile = d_in, d_out, device.tile_rows, device.tile_cols
        cells_per_line = 2 * n_outputs  # the G+ and G- cell of every weight on a driven line
        in_tiles = -(-n_inputs // in_tile)
        out_tiles = -(-n_outputs // out_tile)
        cycles = scheme.cycles(device.dac_bits)
        if scheme.bit_serial:
            dac_per_vector, dac_unit_pj = n_inputs * out_tiles * cycles, costs.dac_row_cycle_pj
        else:
            dac_per_vector, dac_unit_pj = n_inputs * out_tiles, costs.dac_conversion_pj(dac_bits)
        per_column = scheme.conversions_per_column(device.dac_bits)
        return cls(
            device=device, costs=costs, transposed=transposed, bias=bias, n_inputs=n_inputs, n_outputs=n_outputs,
            cells_per_line=cells_per_line, cycles=cycles, dac_per_vector=dac_per_vector, dac_unit_pj=dac_unit_pj,
            adc_per_vector=n_outputs * in_tiles * per_column, adc_unit_pj=costs.adc_conversion_pj(adc_bits),
            adc_latency_factor=per_column * scheme.shared_columns(min(out_tile, n_outputs)), dac_bits=device.dac_bits,
            bit_serial=scheme.bit_serial, levels=_activity_levels(device.dac_bits, scheme),
            cell_read_ns=costs.mvm_cycle_ns, adc_ns=costs.adc_conversion_ns, shift_add_pj=float(costs.shift_add_pj),
            mult_pj=float(costs.mult_pj), mult_ns=float(costs.digital_op_ns), add_pj=float(costs.add_pj),
            add_ns=float(costs.digital_op_ns),
            lines=ReadLines.of(device, cells_per_line=cells_per_line, n_inputs=n_inputs,
                               conversions_per_column=per_column),
        )  # fmt: skip

    def activity(self, inputs: torch.Tensor) -> InputActivity:
        """`fast_input_activity` with this pricing's DAC levels."""
        return _kernel_activity(inputs, self.levels, self.bit_serial)

    def record(
        self,
        ledger: LedgerScope,
        *,
        layer: str,
        n_vectors: int,
        conductance: ConductanceSums,
        inputs: torch.Tensor | None = None,
    ) -> None:
        """Record `n_vectors` MVMs with `inputs` as the DAC sees them (None: every line at full scale). The unit
        costs are those of the cost table this pricing was made for (`costs`)."""
        if n_vectors == 0:
            return
        self.record_activity(ledger, layer=layer, n_vectors=n_vectors, conductance=conductance,
                             activity=self._activity_of(n_vectors, inputs))  # fmt: skip

    def _activity_of(self, n_vectors: int, inputs: torch.Tensor | None, into: InputActivity | None = None
                     ) -> InputActivity:  # fmt: skip
        """The input activity of `n_vectors` MVMs with `inputs` (None: every line at full scale in every cycle),
        or added to `into` in place."""
        if inputs is not None:
            if tuple(inputs.shape) != (n_vectors, self.n_inputs):
                raise ValueError(f"inputs must have shape ({n_vectors}, {self.n_inputs}), got {tuple(inputs.shape)}")
            return _kernel_activity(inputs, self.levels, self.bit_serial, into)
        full = np.full(self.n_inputs, float(n_vectors * self.cycles))
        if into is None:
            return InputActivity(full, full.copy())
        into.drives += full
        into.energy_weight += full
        return into

    def record_activity(
        self, ledger: LedgerScope, *, layer: str, n_vectors: int, conductance: ConductanceSums, activity: InputActivity
    ) -> None:
        """Record `n_vectors` MVMs whose inputs drove the lines with `activity` (summed over the vectors). Every
        event is linear in the vectors and the activity, so MVMs added up first (`MvmTally`) and recorded once
        cost what recording each would (up to float rounding)."""
        if n_vectors == 0:
            return
        line_g_us = conductance.col_us if self.transposed else conductance.row_us
        device = self.device
        dacs = self.dac_per_vector * n_vectors
        adcs = self.adc_per_vector * n_vectors
        mults = float((self.n_inputs + 2 * self.n_outputs) * n_vectors)
        events = [
            ("cell_read", float(activity.drives.sum()) * self.cells_per_line,
             pulse_energy_pj(device.read_voltage_v, float(activity.energy_weight @ line_g_us), device.read_pulse_ns),
             n_vectors * self.cycles * self.cell_read_ns),
            ("dac_conversion", dacs, dacs * self.dac_unit_pj, 0),
            ("adc_conversion", adcs, adcs * self.adc_unit_pj, n_vectors * self.adc_latency_factor * self.adc_ns),
            ("shift_add", adcs, float(adcs) * self.shift_add_pj, 0.0),
            ("digital_mult", mults, mults * self.mult_pj, mults * self.mult_ns),
        ]  # fmt: skip
        if self.bias:
            adds = float(self.n_outputs * n_vectors)
            events.append(("digital_add", adds, adds * self.add_pj, adds * self.add_ns))
        if self.lines is not None:
            drives, weight = float(activity.drives.sum()), float(activity.energy_weight.sum())
            events.append(self.lines.event(n_vectors, drives, weight))
        ledger.record_many(events, layer=layer)


@dataclass
class MvmTally:
    """MVMs of one array and direction added up instead of recorded one by one (`AnalogLinear`'s deferred
    recording, `crossbar.deferred_mvm_records`): their count and summed input activity, under one pricing, ledger
    scope and conductance summary. `record` prices them as `MvmPricing.record` would have priced each, in one
    ledger call; a layer records its tally before adding an MVM under another scope, pricing or conductance."""

    pricing: MvmPricing
    scope: LedgerScope
    conductance: ConductanceSums
    n_vectors: int = 0
    activity: InputActivity | None = None

    def holds(self, pricing: MvmPricing, scope: LedgerScope, conductance: ConductanceSums) -> bool:
        """Whether MVMs under these may be added to this tally (the same objects: same prices, same cells)."""
        return self.pricing is pricing and self.scope is scope and self.conductance is conductance

    def add(self, n_vectors: int, inputs: torch.Tensor | None) -> None:
        """Add `n_vectors` MVMs with `inputs` as the DAC sees them (None: every line at full scale)."""
        if n_vectors:
            self.activity = self.pricing._activity_of(n_vectors, inputs, self.activity)
            self.n_vectors += n_vectors

    def kernel_sums(self) -> tuple[int, bool, np.ndarray, np.ndarray]:
        """(DAC levels, bit-serial, drives, energy weight) for a kernel that adds a batch's activity to the running
        sums itself (`crossbar.mvm_kernels.dac_tiles_kernel`, `scaled_activity_kernel`; the caller then raises
        `n_vectors`); the sums are (width,) float64 zeros before the first MVM."""
        activity = self.activity
        if activity is None:
            width = self.pricing.n_inputs
            activity = self.activity = InputActivity(np.zeros(width), np.zeros(width))
        return self.pricing.levels, self.pricing.bit_serial, activity.drives, activity.energy_weight

    def record(self, layer: str) -> None:
        if self.n_vectors:
            self.pricing.record_activity(self.scope, layer=layer, n_vectors=self.n_vectors,
                                         conductance=self.conductance, activity=self.activity)  # fmt: skip
        self.n_vectors, self.activity = 0, None


Tallies = dict[object, MvmTally]
"""Deferred MVMs of one array, one `MvmTally` per direction key (e.g. (transposed, bias))."""


def record_or_tally(
    tallies: Tallies | None,
    direction: object,
    ledger: LedgerScope,
    pricing: MvmPricing,
    conductance: ConductanceSums,
    *,
    layer: str,
    n_vectors: int,
    inputs: torch.Tensor | None,
) -> None:
    """Record `n_vectors` MVMs in `ledger` now (`tallies` None), or add them to the tally of `direction` (recorded
    first if it holds MVMs under another scope, pricing or conductance summary)."""
    tally = open_tally(tallies, direction, ledger, pricing, conductance, layer)
    tally.add(n_vectors, inputs)
    close_tally(tallies, tally, layer)


def open_tally(
    tallies: Tallies | None, direction: object, ledger: LedgerScope, pricing: MvmPricing, conductance: ConductanceSums,
    layer: str,
) -> MvmTally:  # fmt: skip
    """The tally the next MVMs of `direction` add to: with deferred recording (`tallies` a dict) the kept one,
    recorded first and replaced when it holds MVMs under another scope, pricing or conductance summary; without
    (`tallies` None) a fresh one, which the caller records right after the MVM (`close_tally`). Adding to a tally
    and recording it gives the rows `record_or_tally` gives."""
    if tallies is None:
        return MvmTally(pricing, ledger, conductance)
    tally = tallies.get(direction)
    if tally is None or not tally.holds(pricing, ledger, conductance):
        if tally is not None:
            tally.record(layer)
        tally = tallies[direction] = MvmTally(pricing, ledger, conductance)
    return tally


def close_tally(tallies: Tallies | None, tally: MvmTally | None, layer: str) -> None:
    """After an MVM added to `tally` (`open_tally`): record it now unless recording is deferred."""
    if tally is not None and tallies is None:
        tally.record(layer)


def record_tallies(tallies: Tallies | None, layer: str) -> None:
    """Record every tally's MVMs (the end of a deferred block)."""
    for tally in (tallies or {}).values():
        tally.record(layer)
