"""Device non-idealities of the stored conductances: programming error sigma(G), stuck-at faults, drift.

- `programming_sigma_us`: the fitted spread of the programmed conductance around its target (1 s after
  programming), which both programming modes give every programmed cell (`crossbar.programming`).
- `fabricate_faults`: stuck-at-0 (g_min) and stuck-at-1 (g_max) cells sampled once per array from a seed.
- `apply_drift`: conductance relaxation after programming, by the device's drift model (`drift_model`, an entry
  of `crossbar.nonideal.DRIFT_MODELS`: the Wan et al. 2022 fits for `wan2022`, the CMO/HfOx fit for `cmo_hfox`,
  or a plug-in's), as a function of the time since programming (`DriftOrigin`), not of the steps taken.

The models themselves (constants, sources, parameter records) live in `crossbar.nonideal`; read noise is per MVM
and lives with the MVM path (`crossbar.mvm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from crossbar.device import DeviceConfig
from crossbar.kernels import ORIGIN_REF, drift_kernel, drift_origin_kernel, fault_kernel
from crossbar.nonideal import DRIFT_MODELS, KERNEL_PER_CELL, PROGRAMMING_NOISE_MODELS, DriftModel
from crossbar.rng import DOMAIN_DRIFT, DOMAIN_DRIFT_ORIGIN, DOMAIN_FAULT, NORMAL_TABLE, check_seed, domain_key
from crossbar.state import ArrayState, kernel_views

__all__ = [
    "DriftCall",
    "DriftOrigin",
    "apply_drift",
    "drift_sigma_total_us",
    "drift_step",
    "fabricate_faults",
    "programming_sigma_us",
]


def programming_sigma_us(g_us: np.ndarray, device: DeviceConfig) -> np.ndarray:
    """Spread (uS, float64, same shape) of the programmed conductance around a target `g_us` (uS) for the
    device's `programming_noise` model (`crossbar.nonideal.PROGRAMMING_NOISE_MODELS`: constants and sources)."""
    return PROGRAMMING_NOISE_MODELS[device.programming_noise].sigma_us(g_us, device)


def fabricate_faults(state: ArrayState, device: DeviceConfig, *, seed: int) -> int:
    """Sample stuck-at faults of a freshly fabricated array, in place; returns the number of new stuck cells.

    Each working real cell independently becomes stuck at g_min (SA0) with probability `stuck_at_min_rate` or at
    g_max (SA1) with probability `stuck_at_max_rate`; its counter is set to STUCK and it never moves again. The
    draws are a pure function of (seed, cell), so calling twice with the same seed adds no new faults.
    """
    views = kernel_views(state, device)
    check_seed("seed", seed)
    new_faults = np.zeros(state.d_in, dtype=np.int64)
    if device.stuck_at_min_rate == 0 and device.stuck_at_max_rate == 0:
        return 0
    fault_kernel(
        views, state.d_in, float(device.g_min_us), float(device.g_max_us), float(device.stuck_at_min_rate),
        float(device.stuck_at_max_rate), domain_key(seed, 0, DOMAIN_FAULT), new_faults,
    )  # fmt: skip
    return int(new_faults.sum())


def drift_sigma_total_us(g_us: np.ndarray, device: DeviceConfig, t_s: float) -> np.ndarray:
    """Total spread (uS, float64) of the conductance around its target at `t_s` seconds after programming, as the
    device's drift model fits it (the programming spread at 1 s included; `DriftModel.total_sigma_us`)."""
    model = DRIFT_MODELS[device.drift_model]
    if model.total_sigma_us is None:
        raise ValueError(f"drift model {model.name!r} does not give its total spread (DriftModel.total_sigma_us)")
    return model.total_sigma_us(np.asarray(g_us, dtype=np.float64), device, float(t_s))


class DriftCall(NamedTuple):
    """One drift step of a device: its model and the model's named parameter record for the step."""

    model: DriftModel
    step: NamedTuple


def drift_step(device: DeviceConfig, t_from_s: float, t_to_s: float) -> DriftCall | None:
    """The device's drift model and its parameters for one step t_from_s -> t_to_s (s after programming); None
    when nothing moves (model `none`, t_to_s == t_from_s, or t_to_s == 0).

    The kernel moves each working cell's latent conductance by mean + sqrt(max(V(t_to, G_ref) - V(t_from, G_ref),
    0)) z, where V(t, G) is the model's drift variance at t and G_ref the cell's fixed reference (`DriftOrigin`),
    so steps add up: V(0) = 0 (just programmed: the programming spread is already in the state). The built-in
    models: `crossbar.nonideal.drift`.
    """
    for name, value in (("t_from_s", t_from_s), ("t_to_s", t_to_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if t_to_s < t_from_s:
        raise ValueError(f"t_to_s ({t_to_s}) must be >= t_from_s ({t_from_s}): drift only runs forward in time")
    model = DRIFT_MODELS[device.drift_model]
    if model.step is None or t_to_s == t_from_s or t_to_s == 0:
        return None
    step = model.step(device, float(t_from_s), float(t_to_s))
    fields = getattr(step, "_fields", None)
    if fields is None or not all(isinstance(value, (int, float)) for value in step):
        raise ValueError(f"drift model {model.name!r}: step must return a NamedTuple of numbers, got {step!r}")
    if model.kernel_id != KERNEL_PER_CELL and "mean_us" not in fields:
        raise ValueError(f"drift model {model.name!r}: its step record needs a mean_us field, got {fields}")
    return DriftCall(model, step)


@dataclass
class DriftOrigin:
    """Where an array's drift starts: set once after programming, carried from one drift step to the next.

    `cells` (3, n_tiles, tile_rows, d_out) float32, uS, the state's tile layout (`crossbar.kernels.ORIGIN_*`):
    each cell's latent conductance (G+, G-: unclamped; the array reads it clamped at 0 uS) and the pair's signed
    reference (the active cell's programmed conductance above g_min; the idle cell's reference is g_min, its
    target). A step moves the latent by the model's variance increment at the reference, so the state at time t
    has the model's distribution at t however many steps reached it, and the clamp at 0 acts on what is read, as
    in aihwkit's Wan model (reram.py 109, 163-165). Cells programmed to exactly 0 uS (clamped by programming)
    start below 0: their latent is the clamped half of N(g_min, sigma_prog(g_min)^2), drawn from (seed, stream).
    12 bytes per weight, held only by arrays that drift.
    """

    cells: np.ndarray

    @classmethod
    def of(cls, state: ArrayState, device: DeviceConfig, *, seed: int, stream: int) -> DriftOrigin:
        """The origin of a just-programmed `state` (its conductances and faults as they are now)."""
        check_seed("seed", seed)
        check_seed("stream", stream)
        cells = np.zeros((3, *state.g_diff_us.shape), dtype=np.float32)
        rows = state.n_tiles * state.tile_rows
        sigma_idle = float(programming_sigma_us(np.array([device.g_min_us], dtype=np.float64), device)[0])
        drift_origin_kernel(
            kernel_views(state, device), state.d_in, float(device.g_min_us), sigma_idle,
            domain_key(seed, stream, DOMAIN_DRIFT_ORIGIN), NORMAL_TABLE, cells.reshape(3, rows, state.d_out),
        )  # fmt: skip
        return cls(cells)

    def fits(self, state: ArrayState) -> bool:
        """Whether this origin has `state`'s layout."""
        return self.cells.shape == (3, *state.g_diff_us.shape) and self.cells.dtype == np.float32

    def references_us(self, device: DeviceConfig, d_in: int) -> tuple[np.ndarray, np.ndarray]:
        """(G+ reference, G- reference) of every real weight, (d_in, d_out) float64 uS, in kernel row order."""
        ref = self.cells[ORIGIN_REF].reshape(-1, self.cells.shape[-1])[:d_in].astype(np.float64)
        return device.g_min_us + np.maximum(ref, 0.0), device.g_min_us + np.maximum(-ref, 0.0)


def apply_drift(
    state: ArrayState,
    device: DeviceConfig,
    *,
    t_from_s: float,
    t_to_s: float,
    seed: int,
    stream: int,
    origin: DriftOrigin | None = None,
) -> DriftOrigin:
    """Relax every working real cell from t_from_s to t_to_s seconds after programming, in place; returns the
    origin to pass to the next step.

    Each cell's latent moves by an independent Gaussian increment (see `drift_step`) and the array holds it
    clamped at 0 uS only (the physical bound, as aihwkit's Wan model and CrossSim do; the CMO window clamp of
    aihwkit belongs to its single-device mapping and would make the idle cell of a pair unable to follow the
    common relaxation). Without `origin` the state is taken as just programmed (`DriftOrigin.of`, same seed and
    stream). Stuck cells and padding rows never move. Draws are a pure function of (seed, stream, cell).
    """
    views = kernel_views(state, device)
    check_seed("seed", seed)
    check_seed("stream", stream)
    if origin is None:
        origin = DriftOrigin.of(state, device, seed=seed, stream=stream)
    elif not origin.fits(state):
        raise ValueError(f"drift origin of shape {origin.cells.shape} does not fit an array of {state.g_diff_us.shape}")
    call = drift_step(device, t_from_s, t_to_s)
    if call is None:
        return origin
    model, step = call
    if model.kernel_id == KERNEL_PER_CELL:
        mean_us, moments = 0.0, _cell_moments(model, step, device, *origin.references_us(device, state.d_in))
    else:
        mean_us, moments = float(step.mean_us), np.zeros((4, 1, 1))
    rows = state.n_tiles * state.tile_rows
    drift_kernel(
        views, origin.cells.reshape(3, rows, state.d_out), state.d_in, float(device.g_min_us),
        float(device.g_range_us), mean_us, model.kernel_id, np.array(step, dtype=np.float64), model.kernel_fits(),
        moments, domain_key(seed, stream, DOMAIN_DRIFT), NORMAL_TABLE,
    )  # fmt: skip
    return origin


def _cell_moments(
    model: DriftModel, step: NamedTuple, device: DeviceConfig, ref_pos: np.ndarray, ref_neg: np.ndarray
) -> np.ndarray:
    """(4, d_in, d_out) float64: mean and sigma (uS) of G+ then G- of every real weight, from a plug-in model's
    NumPy `cell_moments` at the cells' references (`DriftOrigin.references_us`)."""
    moments = np.empty((4, *ref_pos.shape))
    for k, g in enumerate((ref_pos, ref_neg)):
        mean, sigma = model.cell_moments(g, step, device)
        try:
            moments[2 * k] = mean
            moments[2 * k + 1] = sigma
        except (TypeError, ValueError) as error:
            raise ValueError(f"drift model {model.name!r}: cell_moments must give arrays broadcastable to "
                             f"{g.shape} ({error})") from None  # fmt: skip
    if not np.isfinite(moments).all() or (moments[1::2] < 0).any():
        raise ValueError(f"drift model {model.name!r}: cell_moments gave a non-finite mean or a negative sigma")
    return moments
