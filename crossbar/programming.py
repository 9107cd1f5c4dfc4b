"""Programming conductance targets into an array: write-verify pulse model or statistical residual, with wear.

`program_state` writes `Targets` into an `ArrayState` in place and returns a `ProgramReport`; with a ledger it
records set_pulse / reset_pulse / verify_read rows whose energies come from the physics (V^2 * G * t of every
pulse and read, `energy.pulse_energy_pj`) and whose latency assumes `write_parallel_cells` cells are written at
once: (pulses * (t_write + t_read) + first verify reads * t_read) / write_parallel_cells.

Two modes (`device.programming_mode`), both with the same verify-first rule (a cell already within
`verify_tolerance_frac * (g_max - g_min)` of its target costs one verify read and no pulse):

- `write_verify`: every pulse of every cell is simulated (`crossbar.kernels.write_verify_kernel`): a pulse moves G
  by the nominal step clip(G_target - G, +-max_step_frac * range) plus cycle-to-cycle noise
  N(0, c2c_sigma_frac * range) (MLP NeuroSim V3.0 Cell.cpp sigmaCtoC, src), clipped to [g_min, g_max]; SET when
  the cell is below its target, RESET when above; a verify read follows every pulse; the loop stops within
  tolerance or after `max_pulses`. Stuck cells take all `max_pulses` and never move (unless their first verify
  read is already within tolerance: the controller cannot tell a stuck cell from a working one).
- `statistical`: G = clip(G_target + sigma(G_target) z) with sigma the fitted `programming_noise` model
  (`crossbar.noise`), and the pulse count drawn as the write-verify model's expected pulses for that
  (G_start, G_target) (see `expected_pulse_table`), stochastically rounded to an integer; SET if the target is
  above the start, RESET if below. Energy prices those pulses at the write-verify model's mean G per pulse/read.

Counters: pulses are added per cell (`pulses_per_count` pulses per counter step, stochastic unbiased rounding when
> 1); a cell whose count * pulses_per_count reaches `endurance_pulses` becomes STUCK at the conductance it has at
the end of that programming call (wear is checked once per call, i.e. at most `max_pulses` late).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

from crossbar.device import DeviceConfig
from crossbar.kernels import pulse_table_kernel, statistical_kernel, write_verify_kernel
from crossbar.mapping import Targets
from crossbar.noise import DOMAIN_PROGRAM, DOMAIN_TABLE, _check_int, domain_key, sigma_polynomial, state_views
from crossbar.rng import NORMAL_TABLE
from crossbar.state import ArrayState, pulses_per_count
from energy.costs import pulse_energy_pj
from energy.ledger import LedgerScope

__all__ = ["PULSE_TABLE_GRID", "PULSE_TABLE_SAMPLES", "ProgramReport", "expected_pulse_table", "program_state"]

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
    """Sum of V_write^2 * G_mean * t_write over pulses and V_read^2 * G * t_read over verify reads (pJ)."""
    latency_ns: float = 0.0
    """(pulses * (t_write + t_read) + first verify reads * t_read) / write_parallel_cells (ns)."""

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
    g_diff, g_neg, writes_pos, writes_neg = state_views(state, device)
    _check_int("seed", seed)
    _check_int("stream", stream)
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
        changed_view, use_changed = np.ascontiguousarray(changed).reshape(g_diff.shape), True
    pulses_shape = g_diff.shape if return_pulses else (1, 1)
    pulses_pos = np.zeros(pulses_shape, dtype=np.uint8)
    pulses_neg = np.zeros(pulses_shape, dtype=np.uint8)
    counts = np.zeros((state.d_in, 3), dtype=np.int64)
    energies = np.zeros((state.d_in, 3), dtype=np.float64)

    span = device.g_range_us
    common = (
        g_diff, g_neg, writes_pos, writes_neg, target_pos, target_neg, changed_view, use_changed, state.d_in,
        float(device.g_min_us), float(device.g_max_us), device.verify_tolerance_frac * span,
    )  # fmt: skip
    wear = (float(device.endurance_pulses), pulses_per_count(device), domain_key(seed, stream, DOMAIN_PROGRAM))
    # E = V^2 * G * t is linear in G: the kernels sum conductances and multiply by these per-uS energies.
    write_coef = pulse_energy_pj(device.write_voltage_v, 1.0, device.write_pulse_ns)
    read_coef = pulse_energy_pj(device.read_voltage_v, 1.0, device.read_pulse_ns)
    outputs = (write_coef, read_coef, pulses_pos, pulses_neg, return_pulses, counts, energies)
    if device.programming_mode == "write_verify":
        write_verify_kernel(
            *common, device.max_step_frac * span, device.c2c_sigma_frac * span, device.max_pulses, *wear,
            NORMAL_TABLE, *outputs,
        )  # fmt: skip
    else:
        poly_scale, poly_offset, coeffs = sigma_polynomial(device)
        statistical_kernel(
            *common, device.max_pulses, *wear, NORMAL_TABLE, poly_scale, poly_offset, coeffs,
            expected_pulse_table(device), *outputs,
        )  # fmt: skip

    cells, set_pulses, reset_pulses = (int(v) for v in counts.sum(axis=0))
    e_set, e_reset, e_read = (float(v) for v in energies.sum(axis=0))
    pulses = set_pulses + reset_pulses
    verify_reads = cells + pulses
    per_row = device.write_parallel_cells
    report = ProgramReport(
        cells_targeted=cells,
        set_pulses=set_pulses,
        reset_pulses=reset_pulses,
        verify_reads=verify_reads,
        energy_pj=e_set + e_reset + e_read,
        latency_ns=(pulses * (device.write_pulse_ns + device.read_pulse_ns) + cells * device.read_pulse_ns) / per_row,
    )
    if ledger is not None:
        ledger.record(
            "set_pulse", set_pulses, layer=layer, energy_pj=e_set,
            latency_ns=set_pulses * device.write_pulse_ns / per_row,
        )  # fmt: skip
        ledger.record(
            "reset_pulse", reset_pulses, layer=layer, energy_pj=e_reset,
            latency_ns=reset_pulses * device.write_pulse_ns / per_row,
        )  # fmt: skip
        ledger.record(
            "verify_read", verify_reads, layer=layer, energy_pj=e_read,
            latency_ns=verify_reads * device.read_pulse_ns / per_row,
        )  # fmt: skip
    if return_pulses:
        return report, pulses_pos.reshape(shape), pulses_neg.reshape(shape)
    return report


def expected_pulse_table(device: DeviceConfig) -> np.ndarray:
    """The write-verify model's expectations for a cell that needs writing, on a (G_start, G_target) grid, for
    the statistical mode: float64 (3, PULSE_TABLE_GRID, PULSE_TABLE_GRID) over [g_min, g_max] on both axes, planes
    (mean pulses, mean G during a pulse, mean G at a verify read after a pulse); see
    `crossbar.kernels.pulse_table_kernel`. The statistical kernel interpolates it bilinearly.

    Why a Monte Carlo of the write-verify kernel itself: the statistical mode then counts the same pulses, on
    average, as simulating them (tests check this), with no separate model to keep in step. Why two axes and not
    only the distance |G_target - G_start|: clipping at g_min/g_max makes targets at the range ends converge
    faster (half the noise of a pulse lands on the bound), and those targets are common (the idle cell of each
    differential pair sits at g_min). Each entry is the mean over PULSE_TABLE_SAMPLES runs with a fixed seed and
    the first verify read skipped, so entries are >= 1 and continuous towards the diagonal (within `max_step` of
    the target the first pulse lands at target + noise whatever the distance). Computed once per pulse-model
    configuration (functools.lru_cache), about 0.1 s.
    """
    return _pulse_table(
        float(device.g_min_us), float(device.g_max_us), device.verify_tolerance_frac, device.max_step_frac,
        device.c2c_sigma_frac, device.max_pulses,
    )  # fmt: skip


@functools.lru_cache(maxsize=32)
def _pulse_table(
    g_min: float, g_max: float, tol_frac: float, step_frac: float, c2c_frac: float, max_pulses: int
) -> np.ndarray:
    span = g_max - g_min
    table = pulse_table_kernel(
        PULSE_TABLE_GRID, PULSE_TABLE_SAMPLES, g_min, g_max, tol_frac * span, step_frac * span, c2c_frac * span,
        max_pulses, domain_key(0, 0, DOMAIN_TABLE), NORMAL_TABLE,
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
