"""The analog array under a layer: one weight matrix on crossbar tiles, its state, and everything that writes it.

`AnalogArray` (an `nn.Module`, the base of `crossbar.AnalogLinear`) owns the array state as buffers (conductances,
write counters with fault marks, `out_scale`, the programming target: `.to(device)` moves them, `state_dict()` holds
them under the layer's own keys) and its extra state (seeds and counters of the read-noise, drift and programming
streams, the drift clock, the ADC calibration, the device config, `crossbar.extra_state`). It programs
(fabrication faults, write-verify, `program` / `reprogram`), drifts (`drift_to`), counts pulses (`pulse_tally`),
reseeds and hands out read-noise keys. It computes no MVM: the engines (`crossbar.engine`) do, from operands they
derive from the array and keep while its `generation` stays the same. Every change of what they derive from bumps
it: a write, drift, reseed, ADC calibration, a replaced buffer or config, a move (`.to`) or a load.

The write-verify, fault and drift kernels (numba) run on the CPU: arrays on another device are copied to the CPU
and back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from crossbar.device import DeviceConfig
from crossbar.extra_state import parse_extra_state
from crossbar.mapping import Targets, map_weights
from crossbar.noise import DriftOrigin, apply_drift, fabricate_faults
from crossbar.presets import device_preset
from crossbar.programming import ProgramReport, program_state
from crossbar.rng import derive_seed, mix_seed_int
from crossbar.state import ArrayState, stored_tile_rows
from energy import LedgerScope

__all__ = ["OPERAND_SOURCES", "OPTIONAL_BUFFERS", "STATE_BUFFERS", "AnalogArray", "check_weight", "copy_bias"]

STATE_BUFFERS = ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg")
"""The array state (`crossbar.state.ArrayState`) as buffers: conductances (uS) and per-cell write counters (uint16,
STUCK marks a fault), in tile layout."""

OPTIONAL_BUFFERS = ("out_scale", *STATE_BUFFERS, "target_weight", "drift_origin")
"""Buffers present or absent, and shaped, by the array's state (programmed or not, target held or not, drifting or
not) rather than its architecture: a load takes the saved array's presence and shape."""

OPERAND_SOURCES = frozenset({*STATE_BUFFERS, "out_scale", "bias", "array_config", "adc_ranges",
                             "adc_ranges_transposed", "mvm_backend"})  # fmt: skip
"""Attributes the engines derive operands from: assigning any of them bumps the array's generation."""


class AnalogArray(nn.Module):
    """One weight matrix (out_features x in_features) on differential-pair crossbar tiles: state, programming,
    drift, faults, counters and random streams. Loading a state_dict continues exactly where the saved array was:
    same later noise and drift draws (`crossbar.persist.save_programmed`)."""

    generation: int = 0
    """Bumped by every change the MVM engines' derived operands depend on (`crossbar.engine`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        array_config: DeviceConfig | None = None,
        *,
        seed: int = 0,
        name: str = "",
        weight_bound: float | None = None,
    ) -> None:
        super().__init__()
        for field, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an int >= 1, got {value!r}")
        array_config = device_preset() if array_config is None else array_config
        if not isinstance(array_config, DeviceConfig):
            raise ValueError(f"array_config must be a DeviceConfig, got {type(array_config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        if seed >= 2**63:
            raise ValueError(f"seed must be < 2**63, got {seed!r}")
        if weight_bound is not None and (
            isinstance(weight_bound, bool) or not isinstance(weight_bound, (int, float))
            or not 0 < weight_bound < math.inf
        ):  # fmt: skip
            raise ValueError(f"weight_bound must be None or a finite number > 0 (weight units), got {weight_bound!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.array_config = array_config
        """The simulated device and peripherals of the arrays (torch's `device` is where tensors live)."""
        self.seed = seed
        self.name = name
        self.weight_bound: float | None = None if weight_bound is None else float(weight_bound)
        """Fixed conductance scale (`crossbar.mapping`): |w| = weight_bound maps to g_max - g_min in every row and
        larger weights clip; None = per-row normalisation at every (re)programming."""
        self.clipped_weights = 0
        """Weights the latest programming clipped at `weight_bound` (transient, not saved)."""
        self.rewritten: torch.Tensor | None = None
        """(out, in) bool: the weights the latest `reprogram(..., previous_weight=...)` targeted (transient)."""
        self.pulse_tally: np.ndarray | None = None
        """When set (`start_pulse_tally`): exact SET + RESET pulses per cell since then, (2, n_tiles, tile_rows,
        d_out) uint32, G+ cells then G- cells (the uint16 counters may count in coarse steps; this never does)."""
        self.register_buffer("out_scale", None)
        for buffer in STATE_BUFFERS:
            self.register_buffer(buffer, None)
        self.register_buffer("target_weight", None)
        """(out, in) float32 programming target held until `program()`; None afterwards."""
        self.register_buffer("drift_origin", None)
        """(3, n_tiles, tile_rows, d_out) float32 where drift started after the latest programming
        (`crossbar.noise.DriftOrigin.cells`: latent G+, G-, signed reference; 12 bytes per weight); None until the
        first `drift_to` after a write."""
        self.adc_ranges: np.ndarray | None = None
        """(input tiles, out_features) float32 forward ADC range of every tile column (normalised units), set by
        `calibrate_adc`; None = not calibrated (fixed range: `array_config.adc_full_scale` everywhere)."""
        self.adc_ranges_transposed: np.ndarray | None = None
        """(column tiles, in_features) float32 ranges of the transposed direction; None = `adc_full_scale`."""
        self.noise_seed = derive_seed(seed, "read_noise")
        """Read-noise stream: the key of the n-th MVM is mix_seed(noise_seed, n) (counter-based: state = 2 ints)."""
        self.noise_calls = 0
        self.program_calls = 0
        self.drift_calls = 0
        self.drift_seed = seed
        self._t_s = 0.0

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name in OPERAND_SOURCES:
            self.bump_generation()

    def bump_generation(self) -> None:
        """Mark every operand derived from the array as stale (after a change the array cannot see, such as a
        write into a buffer's memory)."""
        self.__dict__["generation"] = self.__dict__.get("generation", 0) + 1

    # --- module state -------------------------------------------------------------------------------------
    @property
    def state(self) -> ArrayState | None:
        """The arrays as an `ArrayState` of NumPy views sharing memory with the buffers (CPU only); None before
        programming."""
        if self.g_diff_us is None:
            return None
        if self.g_diff_us.device.type != "cpu":
            raise RuntimeError(
                f"{type(self).__name__} {self.name!r}: its arrays are on {self.g_diff_us.device}; `.state` (NumPy "
                "views) needs them on the CPU (`.cpu()`)"
            )
        return self._as_array_state(self.g_diff_us, self.g_neg_us, self.writes_pos, self.writes_neg)

    def _as_array_state(self, *tensors: torch.Tensor) -> ArrayState:
        arrays = [t.detach().numpy() for t in tensors]
        return ArrayState(self.in_features, self.out_features, arrays[0].shape[1], *arrays)

    def _set_state(self, state: ArrayState) -> None:
        """Make `state`'s arrays the layer's buffers, on the device the layer lives on."""
        where = self._where()
        for buffer in STATE_BUFFERS:
            setattr(self, buffer, torch.from_numpy(getattr(state, buffer)).to(where))

    def _where(self) -> torch.device:
        """The torch device of the array's tensors (CPU until moved)."""
        for tensor in (self.g_diff_us, self.out_scale, self.target_weight, *self.parameters(recurse=False)):
            if tensor is not None:
                return tensor.device
        return getattr(self, "_device_hint", torch.device("cpu"))

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        # remember where an empty array was moved, so that the arrays it programs later land there too
        self._device_hint = fn(torch.empty(0)).device
        result = super()._apply(fn, recurse)
        self.bump_generation()
        return result

    @contextlib.contextmanager
    def _kernel_state(self) -> Iterator[ArrayState]:
        """The arrays for the CPU kernels: zero-copy views on the CPU; elsewhere a CPU copy, written back after."""
        state = self.cpu_state()
        yield state
        if self.g_diff_us.device.type != "cpu":
            self._set_state(state)
        self.bump_generation()

    def cpu_state(self) -> ArrayState:
        """The arrays as an ArrayState on the CPU, for the kernels: raise unless programmed; NumPy views on the CPU,
        CPU copies from another device."""
        self.check_ready()
        tensors = tuple(self._buffers[b] for b in STATE_BUFFERS)
        if tensors[0].device.type != "cpu":
            tensors = tuple(t.detach().cpu() for t in tensors)
        return self._as_array_state(*tensors)

    def __getstate__(self) -> dict[str, object]:
        # Copies and pickles derive their own operands from their own buffers: an engine's views of this array's
        # buffers are never a copy's.
        state = dict(super().__getstate__())
        state.pop("_engines", None)
        state.pop("_engine", None)
        state.pop("_tallies", None)  # MVMs this layer made and will record itself: a copy starts recording directly
        return state

    def get_extra_state(self) -> dict[str, object]:
        """Seeds, stream counters, drift clock, ADC calibration and the device config (plain numbers and strings:
        JSON-safe, exact)."""
        return {
            "seed": self.seed, "noise_seed": self.noise_seed, "drift_seed": self.drift_seed,
            "program_calls": self.program_calls, "drift_calls": self.drift_calls, "noise_calls": self.noise_calls,
            "time_s": self._t_s, "adc_ranges": _ranges_to_json(self.adc_ranges),
            "adc_ranges_transposed": _ranges_to_json(self.adc_ranges_transposed),
            "array_config": dataclasses.asdict(self.array_config), "weight_bound": self.weight_bound,
        }  # fmt: skip

    def set_extra_state(self, state: dict[str, object]) -> None:
        """Apply a saved extra state after checking every field (`crossbar.extra_state`): a bad one raises one
        ValueError naming it and leaves the layer's extra state unchanged."""
        parsed = parse_extra_state(state, self.name, self.in_features, self.out_features)
        for key in ("seed", "noise_seed", "drift_seed", "program_calls", "drift_calls", "noise_calls",
                    "array_config", "adc_ranges", "adc_ranges_transposed", "weight_bound"):  # fmt: skip
            setattr(self, key, parsed[key])
        self._t_s = parsed["time_s"]
        self.bump_generation()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: ANN001 - nn.Module's hook signature  # fmt: skip
        # Optional buffers (programmed or not, target held or not) take the saved layer's presence and shape.
        where = self._where()
        for buffer in OPTIONAL_BUFFERS:
            saved = state_dict.get(prefix + buffer)
            if saved is None:
                self._buffers[buffer] = None
            elif self._buffers.get(buffer) is None or self._buffers[buffer].shape != saved.shape:
                self._buffers[buffer] = torch.empty(saved.shape, dtype=saved.dtype, device=where)
        self.bump_generation()  # buffers replaced; the load below fills them in place
        saved = state_dict.get(prefix + "g_diff_us")
        extra = state_dict.get(prefix + "_extra_state")
        config = self.array_config
        if isinstance(extra, dict) and isinstance(extra.get("array_config"), dict):
            config = config.replace(**{k: v for k, v in extra["array_config"].items() if k == "tile_rows"})
        if saved is not None:
            rows = stored_tile_rows(self.in_features, config)
            expected = (-(-self.in_features // rows), rows, self.out_features)
            if tuple(saved.shape) != expected:
                error_msgs.append(
                    f"{prefix}g_diff_us: saved arrays have tile layout {tuple(saved.shape)}, this layer's config "
                    f"gives {expected} (a different tile_rows?)"
                )
                return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self.bump_generation()

    # --- programming ---------------------------------------------------------------------------------------
    @property
    def programmed(self) -> bool:
        return self.g_diff_us is not None

    def program(self, ledger: LedgerScope | None = None) -> ProgramReport:
        """First programming of the held target: fabricate the array (stuck-at faults from the seed), write-verify
        every cell, record the pulses in `ledger`, then drop the float32 target (state stays at 12 bytes/weight)."""
        if self.programmed:
            raise RuntimeError(
                f"{type(self).__name__} {self.name!r} is already programmed; use reprogram(weight) to rewrite it"
            )
        if self.target_weight is None:
            raise RuntimeError(f"{type(self).__name__} {self.name!r} holds no target weight; use reprogram(weight)")
        report = self._program_new_array(self.target_weight.detach().cpu(), ledger)
        self.target_weight = None
        return report

    def reprogram(
        self,
        weight: torch.Tensor,
        ledger: LedgerScope | None = None,
        *,
        previous_weight: torch.Tensor | None = None,
        keep_scale: bool = False,
    ) -> ProgramReport:
        """Write a new target `weight` (out, in). With `previous_weight` (what the controller last wrote, held
        digitally), only weights with a cell whose target moved by more than the verify tolerance are touched
        (other cells cost nothing, not even a verify read; `rewritten` marks the touched weights); otherwise every
        weight is verified first and written if out of tolerance. `keep_scale`: map with the array's present
        per-row scale (`out_scale`) as a fixed bound, clipping beyond it, instead of renormalising each row (a
        rewrite of the base then moves only the cells whose weight moved). On an unprogrammed layer this is the
        first programming.

        The drift clock restarts at 0 (t counts from the latest programming for the whole array: a simplification
        for partially rewritten arrays)."""
        weight = check_weight(weight, (self.out_features, self.in_features), "weight")
        if not self.programmed:
            report = self._program_new_array(weight, ledger)
            self.target_weight = None
            return report
        bound = self.weight_bound
        if keep_scale and bound is None:
            bound = self.out_scale.detach().cpu().numpy().astype(np.float64) * self.array_config.g_range_us
        with self._kernel_state() as state:
            targets = map_weights(weight.numpy(), self.array_config, state, weight_bound=bound)
            changed = None
            self.rewritten = None
            if previous_weight is not None:
                previous = check_weight(previous_weight, (self.out_features, self.in_features), "previous_weight")
                before = map_weights(previous.numpy(), self.array_config, state, weight_bound=bound)
                tolerance = self.array_config.verify_tolerance_frac * self.array_config.g_range_us
                changed = (np.abs(targets.pos_us - before.pos_us) > tolerance) | (
                    np.abs(targets.neg_us - before.neg_us) > tolerance
                )
                self.rewritten = torch.from_numpy(state.to_matrix(changed))
            report = self._write(state, targets, ledger, changed)
        self.out_scale = torch.from_numpy(targets.out_scale.copy()).to(self._where())
        self._after_write()
        return report

    def _program_new_array(self, weight: torch.Tensor, ledger: LedgerScope | None) -> ProgramReport:
        state = ArrayState.fresh(self.in_features, self.out_features, self.array_config)
        fabricate_faults(state, self.array_config, seed=self.seed)
        targets = map_weights(weight.numpy(), self.array_config, state, weight_bound=self.weight_bound)
        report = self._write(state, targets, ledger, None)
        where = self._where()
        self._set_state(state)
        self.out_scale = torch.from_numpy(targets.out_scale.copy()).to(where)
        self._after_write()
        return report

    def _write(
        self, state: ArrayState, targets: Targets, ledger: LedgerScope | None, changed: np.ndarray | None
    ) -> ProgramReport:
        """One programming call into `state`, adding its per-cell pulses to `pulse_tally` when one is running."""
        self.clipped_weights = targets.clipped
        tally = self.pulse_tally is not None
        result = program_state(
            state, targets, self.array_config, seed=self.seed, stream=self._next_program_stream(), ledger=ledger,
            layer=self.name, changed=changed, return_pulses=tally,
        )  # fmt: skip
        if not tally:
            return result
        report, pulses_pos, pulses_neg = result
        if self.pulse_tally.shape[1:] != pulses_pos.shape:
            self.pulse_tally = np.zeros((2, *pulses_pos.shape), dtype=np.uint32)
        self.pulse_tally[0] += pulses_pos
        self.pulse_tally[1] += pulses_neg
        return report

    def start_pulse_tally(self) -> None:
        """Count exact pulses per cell from now on (`pulse_tally`), e.g. over one adaptation. The tally's memory
        (4 bytes per cell) is taken at the first write, so arming every layer of a large model costs nothing for
        the arrays that are never written."""
        self.pulse_tally = np.zeros((2, 0, 0, 0), dtype=np.uint32)

    def cell_pulses(self) -> np.ndarray:
        """The running tally as one value per real cell (padding rows dropped): (2 * d_out * d_in,) uint32, all
        zero when nothing was written since `start_pulse_tally`."""
        if self.pulse_tally is None:
            raise RuntimeError(f"{type(self).__name__} {self.name!r}: no pulse tally running (start_pulse_tally())")
        if self.pulse_tally.size == 0:
            return np.zeros(2 * self.in_features * self.out_features, dtype=np.uint32)
        flat = self.pulse_tally.reshape(2, -1, self.out_features)[:, : self.in_features]
        return np.ascontiguousarray(flat).reshape(-1)

    def _next_program_stream(self) -> int:
        self.program_calls += 1
        return self.program_calls - 1

    def _after_write(self) -> None:
        self._t_s = 0.0
        self.drift_origin = None  # drift restarts from what was just written
        self.bump_generation()

    def programmed_weight(self) -> torch.Tensor:
        """(out, in) float32: what the cells hold, as weights ((G+ - G-) * out_scale), noise-free; on the layer's
        device."""
        self.check_ready()
        g = self.g_diff_us.reshape(-1, self.out_features)[: self.in_features]
        return g.T * self.out_scale.to(torch.float32)[:, None]

    def drift_to(self, t_s: float) -> None:
        """Let the conductances relax until `t_s` seconds after the latest programming (t_s >= the current time).
        The state at `t_s` does not depend on the steps that reached it (`crossbar.noise.DriftOrigin`)."""
        self.check_ready()
        if isinstance(t_s, bool) or not isinstance(t_s, (int, float)) or not math.isfinite(t_s) or t_s < self._t_s:
            raise ValueError(f"t_s must be a finite number >= the layer's current time {self._t_s} s, got {t_s!r}")
        self.drift_calls += 1
        origin = None if self.drift_origin is None else DriftOrigin(self.drift_origin.detach().cpu().numpy())
        with self._kernel_state() as state:
            origin = apply_drift(
                state, self.array_config, t_from_s=self._t_s, t_to_s=float(t_s), seed=self.drift_seed,
                stream=self.drift_calls - 1, origin=origin,
            )  # fmt: skip
        if self.drift_origin is None or self.drift_origin.device.type != "cpu":  # on the CPU it was updated in place
            self.drift_origin = torch.from_numpy(origin.cells).to(self._where())
        self._t_s = float(t_s)

    @property
    def time_s(self) -> float:
        """Seconds since the latest programming the conductances have drifted to."""
        return self._t_s

    @property
    def adc_full_scale(self) -> float | None:
        """The forward ADC range as one number: the device's fixed `adc_full_scale`, or with calibrated ranges
        their largest value (None until calibrated)."""
        if self.adc_ranges is not None:
            return float(self.adc_ranges.max())
        return self.array_config.adc_full_scale if self.array_config.adc_range == "fixed" else None

    @property
    def adc_calibrated(self) -> bool:
        return self.adc_ranges is not None

    def reseed_noise(self, seed: int) -> None:
        """Restart the read-noise and drift streams from `seed` (e.g. independent draws per evaluation repeat)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.noise_seed = derive_seed(seed, "read_noise")
        self.noise_calls = 0
        self.drift_seed = seed
        self.bump_generation()

    def next_key(self) -> int:
        """A fresh 64-bit read-noise key: counter-based, mix_seed(noise_seed, calls so far)."""
        calls = self.noise_calls
        self.__dict__["noise_calls"] = calls + 1  # a plain int: skips nn.Module.__setattr__'s lookups on every MVM
        return mix_seed_int(self.noise_seed, calls)

    def check_ready(self) -> None:
        """Raise unless the layer is programmed and its arrays hold values (not on the meta device)."""
        buffers = self._buffers  # directly: nn.Module's attribute lookup costs more than the checks (every MVM)
        g_diff = buffers["g_diff_us"]
        if g_diff is None or buffers["out_scale"] is None:
            raise RuntimeError(
                f"{type(self).__name__} {self.name or '(unnamed)'!r} is not programmed: call its program() "
                "(or crossbar.program(model)) before running it"
            )
        if g_diff.is_meta:
            raise RuntimeError(
                f"{type(self).__name__} {self.name!r}: its arrays are on the meta device (shapes only, no values); "
                "move the model to a real device (`.to_empty(...)` then `load_state_dict`) before running it"
            )


def check_weight(weight: torch.Tensor, shape: tuple[int, int] | None, name: str) -> torch.Tensor:
    """`weight` as a finite float32 (out, in) copy, or ValueError naming `name`."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"{name} must be a 2-D torch.Tensor (out, in), got {getattr(weight, 'shape', weight)!r}")
    if shape is not None and tuple(weight.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(weight.shape)}")
    weight = weight.detach().to(torch.float32).clone()
    if not torch.isfinite(weight).all():
        raise ValueError(f"{name} must be finite")
    return weight


def copy_bias(bias: torch.Tensor, into: torch.Tensor) -> None:
    """Copy a frozen bias `bias` (out,) into the parameter `into` as float32, or ValueError naming the shape."""
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != tuple(into.shape):
        raise ValueError(f"bias must be a tensor of shape ({into.shape[0]},), got {getattr(bias, 'shape', bias)}")
    into.data.copy_(bias.detach().to(torch.float32))


def _ranges_to_json(ranges: np.ndarray | None) -> list[list[float]] | None:
    """float32 ranges as nested lists of Python floats (exact: every float32 is a float64)."""
    return None if ranges is None else ranges.astype(np.float64).tolist()
