"""Programming conductance targets into an array: write-verify pulse model or statistical mode, with wear.

`program_state` writes `Targets` into an `ArrayState` in place and returns a `ProgramReport`; with a ledger it
records set_pulse / reset_pulse / verify_read rows.

Two modes (`device.programming_mode`), both with the same verify-first rule (a cell already within
`verify_tolerance_frac * (g_max - g_min)` of its target costs one verify read and no pulse):

- `write_verify`: every pulse of every cell is simulated (`crossbar.kernels.write_verify_kernel`). With
  `pulse_scheme="incremental"` (default) a pulse is an identical unit pulse of (g_max - g_min) / pulse_levels
  (NeuroSim V2.1 counts pulses this way, ProcessingUnit.cpp 865 / 892), optionally nonlinear in G (MLP NeuroSim
  Cell.cpp 382-387, `pulse_nl_a`), scaled per cell by a fixed device-to-device factor 1 + d2d_step_sigma_frac * z
  (z hashed from the layer seed and the cell index: nothing stored), plus cycle-to-cycle noise
  N(0, c2c_sigma_frac * range) per unit pulse (MLP NeuroSim V3.0 Cell.cpp 318 / 394); a verify read follows every
  pulse; the loop stops within tolerance or after `max_pulses`. `pulse_scheme="ideal_jump"` keeps the former
  controller (a pulse aims straight at the target, at most `max_step_frac` of the range).
- `statistical`: no pulse is simulated; the pulse count is the write-verify model's expectation for that
  (G_start, G_target) (see `expected_pulse_table`), stochastically rounded. Pulse and energy totals match
  write-verify on average; the latency does not fully: the row's slowest cell is taken from expected counts, which
  lack the spread of simulated ones (on the default study's arrays 3.7 ms against 5.9 ms for write-verify).

Programming error (both modes): every programmed, working cell -- also one already within tolerance at its first
verify read -- ends at max(G_target + sigma(G_target) z, 0) with the preset's fitted sigma(G)
(`programming_noise`, `crossbar.noise`). Why after the verify loop and not from tuning the loop's tolerance and
noise: the cited fits are measured 1 s after the chip's own write-verify (Wan et al. 2022 Ext. Data Fig. 3 via
aihwkit, Milo et al. 2021 Fig. 4 via CrossSim), so they already are the residual of a verify loop plus the
relaxation right after it, which a verify read cannot see; applying the fit reproduces the source's sigma(G) at
every level and keeps the pulse loop for what it measures (pulses, energy, time). Like aihwkit
(inference/noise/reram.py 108-109) and CrossSim (devices/device.py 100-106, clip_conductance off) the result is
clamped at 0 uS only. A cell that gave up (max_pulses) keeps where its pulses left it; stuck cells never move.
With `programming_noise="none"` the state the pulses leave is final.

Energy: each SET/RESET pulse costs V_write^2 * t_write / mean(R_old, R_new), NeuroSim V2.1's formula
(ProcessingUnit.cpp 895) applied per pulse, R_old and R_new the cell's resistance before and after that pulse
(NeuroSim applies it once per write with the write's end states, which for a multi-pulse swing is dominated by the
high-resistance end; per pulse it follows the conductance the pulse sees). A ledger whose cost table sets
`write_energy="neurosim"` gets NeuroSim's per-write pricing instead (`_price_per_write`); verify reads
V_read^2 * G * t_read at the G each read sees. With a wire capacitance (`wire_cap_ff_per_cell`), every pulse step
of a row also charges the row line and all column lines of its tile to V_write (`line_charge`, `crossbar.lines`).
Latency: rows are written one after another, all cells of a row in parallel (NeuroSim
V2.1 ProcessingUnit.cpp 893 / 940, SubArray.cpp 1406): per row one verify read, then a SET phase and a RESET
phase, each as long as the row's slowest cell, every pulse followed by a verify read: sum over rows of
t_read + (max SET + max RESET pulses) * (t_write + t_read).

Counters: pulses are added per cell (`pulses_per_count` pulses per counter step, stochastic unbiased rounding when
> 1); a cell whose count * pulses_per_count reaches `endurance_pulses` becomes STUCK at the conductance it has at
the end of that programming call (wear is checked once per call, i.e. at most `max_pulses` late).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import numpy as np

from crossbar.device import DeviceConfig
from crossbar.kernels import (
    PM_C0,
    PM_C1,
    PM_D2D,
    PM_INCREMENTAL,
    PM_MAX_STEP,
    PM_SIGMA,
    PM_SIZE,
    ProgramSettings,
    pulse_table_kernel,
    statistical_kernel,
    write_verify_kernel,
)
from crossbar.lines import write_line_charge
from crossbar.mapping import Targets
from crossbar.nonideal import PROGRAMMING_NOISE_MODELS, SigmaPolynomial
from crossbar.rng import DOMAIN_D2D, DOMAIN_PROGRAM, DOMAIN_TABLE, NORMAL_TABLE, check_seed, domain_key
from crossbar.state import ArrayState, kernel_views, pulses_per_count
from energy.costs import pulse_energy_pj
from energy.ledger import LedgerScope

__all__ = [
    "PULSE_TABLE_GRID",
    "PULSE_TABLE_SAMPLES",
    "ProgramReport",
    "expected_pulse_table",
    "fitted_error_polynomial",
    "program_state",
    "pulse_model_params",
]

PULSE_TABLE_GRID = 41
"""Grid points per axis of the expected-pulse table over (G_start, G_target): 2.5 % of the range apart."""
PULSE_TABLE_SAMPLES = 2048
"""Monte Carlo runs per grid point; the standard error of a table entry is about 1.5/sqrt(2048) = 0.03 pulses."""


@dataclass
class ProgramReport:
    """What one programming call cost. Reports of many layers add up with `+`."""

    cells_targeted: int = 0
    """Real cells the call was asked to write (both cells of each changed weight; padding excluded)."""
    set_pulses: int = 0
    """Pulses that raised G (SET)."""
    reset_pulses: int = 0
    """Pulses that lowered G (RESET)."""
    verify_reads: int = 0
    """One first verify read per targeted cell plus one after every pulse."""
    energy_pj: float = 0.0
    """Write pulses (V^2 t / mean(R_old, R_new) each, NeuroSim) plus verify reads (V^2 G t each) plus line charging
    (C V^2 of the lines each pulse step drives, `crossbar.lines`; 0 without a wire capacitance) (pJ)."""
    latency_ns: float = 0.0
    """Sum over written rows of t_read + (slowest cell's SET + slowest cell's RESET pulses) * (t_write + t_read)."""

    @classmethod
    def empty(cls) -> ProgramReport:
        return cls()

    @property
    def pulses(self) -> int:
        return self.set_pulses + self.reset_pulses

    @property
    def pulses_per_cell(self) -> float:
        """Mean pulses per targeted cell (0 when nothing was targeted)."""
        return self.pulses / self.cells_targeted if self.cells_targeted else 0.0

    def __add__(self, other: ProgramReport) -> ProgramReport:
        if not isinstance(other, ProgramReport):
            return NotImplemented
        return ProgramReport(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


def program_state(
    state: ArrayState,
    targets: Targets,
    device: DeviceConfig,
    *,
    seed: int,
    stream: int,
    ledger: LedgerScope | None = None,
    layer: str = "",
    changed: np.ndarray | None = None,
    return_pulses: bool = False,
) -> ProgramReport | tuple[ProgramReport, np.ndarray, np.ndarray]:
    """Program `targets` into `state` in place with `device.programming_mode`; see the module docstring.

    `changed` (bool, tile layout (n_tiles, tile_rows, d_out), optional) restricts the call to those weights (both
    cells of each); None means every real weight. Random draws are a pure function of (seed, stream, cell, pulse),
    so results do not depend on the number of threads. With `return_pulses`, also returns the per-cell pulse
    counts (uint8, tile layout) of the G+ and G- cells (zero where not targeted).
    """
    views = kernel_views(state, device)
    check_seed("seed", seed)
    check_seed("stream", stream)
    if ledger is not None and not isinstance(ledger, LedgerScope):
        raise ValueError(f"ledger must be a LedgerScope or None, got {type(ledger).__name__}")
    if not isinstance(layer, str):
        raise ValueError(f"layer must be a string, got {layer!r}")
    shape = state.g_diff_us.shape
    target_pos = _target_view(targets, "pos_us", shape, state, device)
    target_neg = _target_view(targets, "neg_us", shape, state, device)
    if changed is None:
        changed_view, use_changed = np.zeros((1, 1), dtype=np.bool_), False
    else:
        if not isinstance(changed, np.ndarray) or changed.dtype != np.bool_ or changed.shape != shape:
            raise ValueError(
                f"changed must be a bool array of the tile shape {shape}, got "
                f"{getattr(changed, 'dtype', type(changed).__name__)} {getattr(changed, 'shape', '')}"
            )
        changed_view, use_changed = np.ascontiguousarray(changed).reshape(views[0].shape), True
    per_write = ledger is not None and ledger.costs.write_energy == "neurosim"
    g_before = _cell_conductances(state) if per_write else None
    return_pulses, caller_wants_pulses = return_pulses or per_write, return_pulses
    pulses_shape = views[0].shape if return_pulses else (1, 1)
    pulses_pos = np.zeros(pulses_shape, dtype=np.uint8)
    pulses_neg = np.zeros(pulses_shape, dtype=np.uint8)
    counts = np.zeros((state.d_in, 5), dtype=np.int64)
    energies = np.zeros((state.d_in, 3), dtype=np.float64)

    # NeuroSim's E = V^2 t / mean(R_old, R_new) is linear in the harmonic-mean conductance: the kernels sum those
    # and multiply by these per-uS energies (energy.pulse_energy_pj, E = V^2 G t).
    settings = ProgramSettings(
        d_in=state.d_in, use_changed=use_changed, g_min=float(device.g_min_us), g_max=float(device.g_max_us),
        tol=device.verify_tolerance_frac * device.g_range_us, max_pulses=device.max_pulses,
        endurance=float(device.endurance_pulses), ppc=pulses_per_count(device),
        key=domain_key(seed, stream, DOMAIN_PROGRAM),
        write_coef_pj_per_us=pulse_energy_pj(device.write_voltage_v, 1.0, device.write_pulse_ns),
        read_coef_pj_per_us=pulse_energy_pj(device.read_voltage_v, 1.0, device.read_pulse_ns),
        record_pulses=return_pulses,
    )  # fmt: skip
    target_views, error = (target_pos, target_neg), fitted_error_polynomial(device)
    pulses, totals = (pulses_pos, pulses_neg), (counts, energies)
    if device.programming_mode == "write_verify":
        d2d_key = domain_key(seed, 0, DOMAIN_D2D)
        write_verify_kernel(views, target_views, changed_view, settings, pulse_model_params(device), d2d_key, error,
                            NORMAL_TABLE, pulses, totals)  # fmt: skip
    else:
        statistical_kernel(views, target_views, changed_view, settings, expected_pulse_table(device), error,
                           NORMAL_TABLE, pulses, totals)  # fmt: skip

    if per_write:
        _price_per_write(energies, g_before, _cell_conductances(state), (pulses_pos, pulses_neg), state.d_in,
                         settings.write_coef_pj_per_us)  # fmt: skip
    report = _report(counts, energies, device, ledger, layer, d_out=state.d_out)
    if caller_wants_pulses:
        return report, pulses_pos.reshape(shape), pulses_neg.reshape(shape)
    return report


def _cell_conductances(state: ArrayState) -> tuple[np.ndarray, np.ndarray]:
    """(G+, G-) of every stored row, float64 uS, in kernel row order (rows, d_out)."""
    rows = state.n_tiles * state.tile_rows
    g_neg = state.g_neg_us.reshape(rows, state.d_out)
    return (state.g_diff_us.reshape(rows, state.d_out) + g_neg).astype(np.float64), g_neg.astype(np.float64)


def _price_per_write(
    energies: np.ndarray,
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    pulses: tuple[np.ndarray, np.ndarray],
    d_in: int,
    write_coef_pj_per_us: float,
) -> None:
    """Re-price the write pulses of `energies` (per row: SET pJ, RESET pJ, read pJ) in NeuroSim's per-write
    convention (`energy.CostTable.write_energy`): each cell's pulses at V^2 t / mean(R_start, R_end) of its write,
    i.e. the harmonic mean of its start and end conductances (0 when either is 0 uS). A row's total is split
    between SET and RESET in the proportion the per-pulse pricing gave (by pulse energy; evenly if that was 0)."""
    total = np.zeros(d_in)
    for g0, g1, n in zip(before, after, pulses, strict=True):
        g0, g1 = g0[:d_in], g1[:d_in]
        with np.errstate(divide="ignore", invalid="ignore"):
            harmonic = np.where((g0 > 0) & (g1 > 0), 2.0 * g0 * g1 / (g0 + g1), 0.0)
        total += (n[:d_in].astype(np.float64) * harmonic).sum(axis=1) * write_coef_pj_per_us
    per_pulse = energies[:, 0] + energies[:, 1]
    share_set = np.divide(energies[:, 0], per_pulse, out=np.full(d_in, 0.5), where=per_pulse > 0)
    energies[:, 0] = total * share_set
    energies[:, 1] = total - energies[:, 0]


def _report(
    counts: np.ndarray,
    energies: np.ndarray,
    device: DeviceConfig,
    ledger: LedgerScope | None,
    layer: str,
    *,
    d_out: int,
) -> ProgramReport:
    """The call's report from the kernels' per-row counts and energies, recorded in `ledger` when given; with a
    wire capacitance, the lines every pulse step drives as `line_charge` (`crossbar.lines.write_line_charge`)."""
    cells, set_pulses, reset_pulses = (int(v) for v in counts[:, :3].sum(axis=0))
    rows_written = int((counts[:, 0] > 0).sum())
    row_set, row_reset = (int(v) for v in counts[:, 3:].sum(axis=0))
    e_set, e_reset, e_read = (float(v) for v in energies.sum(axis=0))
    verify_reads = cells + set_pulses + reset_pulses
    t_w, t_r = device.write_pulse_ns, device.read_pulse_ns
    # Row-parallel writes (NeuroSim V2.1 ProcessingUnit.cpp 893, 940 and SubArray.cpp 1406): every cell of a row
    # is pulsed at once, SET phase then RESET phase, each as long as the row's slowest cell; a verify read (all
    # cells of the row in parallel) precedes the pulses and follows each one. Rows are written one after another.
    lat_set = row_set * t_w
    lat_reset = row_reset * t_w
    lat_read = (rows_written + row_set + row_reset) * t_r
    line_cells, e_lines = write_line_charge(device, counts[:, 3] + counts[:, 4], d_out)
    if ledger is not None:
        ledger.record("set_pulse", set_pulses, layer=layer, energy_pj=e_set, latency_ns=lat_set)
        ledger.record("reset_pulse", reset_pulses, layer=layer, energy_pj=e_reset, latency_ns=lat_reset)
        ledger.record("verify_read", verify_reads, layer=layer, energy_pj=e_read, latency_ns=lat_read)
        if line_cells:
            ledger.record("line_charge", line_cells, layer=layer, energy_pj=e_lines, latency_ns=0.0)
    return ProgramReport(
        cells_targeted=cells,
        set_pulses=set_pulses,
        reset_pulses=reset_pulses,
        verify_reads=verify_reads,
        energy_pj=e_set + e_reset + e_read + e_lines,
        latency_ns=lat_set + lat_reset + lat_read,
    )


def fitted_error_polynomial(device: DeviceConfig) -> SigmaPolynomial:
    """The fitted programming error both kernels give every programmed cell: the record of the device's
    `programming_noise` model (`crossbar.nonideal.PROGRAMMING_NOISE_MODELS`); empty coeffs for `none` (the state
    the pulses leave is final)."""
    return PROGRAMMING_NOISE_MODELS[device.programming_noise].polynomial(device)


def pulse_model_params(device: DeviceConfig) -> np.ndarray:
    """The pulse model of `device` as the kernels' float64 parameter array (indices `crossbar.kernels.PM_*`).

    incremental: unit step (g_max - g_min) / pulse_levels (NeuroSim V2.1 ProcessingUnit.cpp 865), or with
    `pulse_nl_a` = A / pulse_levels the MLP NeuroSim nonlinearity G(p) = B (1 - exp(-p / A)) + g_min,
    B = range / (1 - exp(-pulse_levels / A)) (Cell.cpp 382-387): one pulse from G moves it by
    (B - (G - g_min)) (1 - exp(-1 / A)), i.e. c0 = B (1 - e^(-1/A)), c1 = 1 - e^(-1/A) (RESET mirrored from g_max).
    """
    span = device.g_range_us
    pm = np.zeros(PM_SIZE, dtype=np.float64)
    pm[PM_INCREMENTAL] = 1.0 if device.pulse_scheme == "incremental" else 0.0
    if device.pulse_nl_a is None:
        pm[PM_C0] = span / device.pulse_levels
        pm[PM_C1] = 0.0
    else:
        a = device.pulse_nl_a * device.pulse_levels
        decay = -math.expm1(-1.0 / a)
        b = span / -math.expm1(-device.pulse_levels / a)
        pm[PM_C0] = b * decay
        pm[PM_C1] = decay
    pm[PM_MAX_STEP] = device.max_step_frac * span
    pm[PM_SIGMA] = device.c2c_sigma_frac * span
    pm[PM_D2D] = device.d2d_step_sigma_frac
    pm.setflags(write=False)
    return pm


def expected_pulse_table(device: DeviceConfig) -> np.ndarray:
    """The write-verify model's expectations for a cell that needs writing, on a (G_start, G_target) grid, for
    the statistical mode: float64 (3, PULSE_TABLE_GRID, PULSE_TABLE_GRID) over [g_min, g_max] on both axes, planes
    (mean pulses, mean harmonic-mean G of a pulse, mean G at a verify read after a pulse); see
    `crossbar.kernels.pulse_table_kernel`. The statistical kernel interpolates it bilinearly.

    Why a Monte Carlo of the write-verify kernel itself: the statistical mode then counts the same pulses, on
    average, as simulating them (tests check this), with no separate model to keep in step. Why two axes and not
    only the distance |G_target - G_start|: clipping at g_min/g_max and a nonlinear step make the count depend on
    where the write starts. Each entry is the mean over PULSE_TABLE_SAMPLES runs (cells with their own
    device-to-device step) with a fixed seed and the first verify read skipped. Computed once per pulse-model
    configuration (functools.lru_cache).
    """
    return _pulse_table(
        float(device.g_min_us), float(device.g_max_us), device.verify_tolerance_frac,
        tuple(float(v) for v in pulse_model_params(device)), device.max_pulses,
    )  # fmt: skip


@functools.lru_cache(maxsize=32)
def _pulse_table(g_min: float, g_max: float, tol_frac: float, pm: tuple[float, ...], max_pulses: int) -> np.ndarray:
    span = g_max - g_min
    table = pulse_table_kernel(
        PULSE_TABLE_GRID, PULSE_TABLE_SAMPLES, g_min, g_max, tol_frac * span, np.array(pm), max_pulses,
        domain_key(0, 0, DOMAIN_TABLE), NORMAL_TABLE,
    )  # fmt: skip
    table.setflags(write=False)
    return table


def _target_view(targets: Targets, name: str, shape: tuple[int, ...], state: ArrayState, device: DeviceConfig):
    """A float32 C-contiguous 2-D view of one target array, checked for shape and range on the real rows."""
    array = getattr(targets, name, None)
    if not isinstance(array, np.ndarray) or array.shape != shape or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"targets.{name} must be a float array of the state's tile shape {shape}, got "
            f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
        )
    view = np.ascontiguousarray(array, dtype=np.float32).reshape(shape[0] * shape[1], shape[2])
    real = view[: state.d_in]
    slack = 1e-5 * device.g_range_us  # float32 rounding of targets computed near the bounds
    low, high = float(real.min()), float(real.max())
    if not (low >= device.g_min_us - slack and high <= device.g_max_us + slack):
        raise ValueError(
            f"targets.{name} must be finite and within [g_min_us, g_max_us] = [{device.g_min_us}, "
            f"{device.g_max_us}] on the real rows, got values in [{low}, {high}]"
        )
    return view
