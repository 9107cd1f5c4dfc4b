"""PyTorch layers on simulated crossbars: `AnalogLinear` and the model-level helpers around it.

`AnalogLinear` is thin: it holds its array state, per-output scale and digital bias, and hands every MVM to
`crossbar.mvm`. Programming is explicit (`program`, `reprogram`) so its pulses land in the ledger scope the caller
names. The analog weights never get gradients; the input does, through a straight-through backward whose
transposed MVM uses the programmed weights (see `AnalogLinear.backward_mode`).

Model level: `convert_to_analog` swaps `nn.Linear` modules by qualified name (fnmatch patterns), `program` and
`drift` act on every analog layer, `record_all_to` points every recording module of a model (analog arrays, and the
digital modules of `fusion` and `scenarios` that hold a `ledger`) at one ledger scope.

The layer's device config is `array_config`; `device`, as everywhere in torch, is where its tensors live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from crossbar.device import DeviceConfig
from crossbar.extra_state import parse_extra_state
from crossbar.mapping import Targets, map_weights
from crossbar.mvm import (
    ArrayOperands,
    MvmPricing,
    MvmSettings,
    MvmTally,
    adc_inputs,
    analog_mvm,
    analog_mvm_transposed,
    conductance_sums,
    prepared_forward_mvm,
)
from crossbar.mvm_torch import analog_mvm_torch
from crossbar.noise import apply_drift, fabricate_faults
from crossbar.periphery import check_adc_calibration, pooled_ranges
from crossbar.presets import device_preset
from crossbar.programming import ProgramReport, program_state
from crossbar.protocols import Recording
from crossbar.rng import derive_seed, mix_seed_int
from crossbar.scheme import ConductanceSums
from crossbar.state import ArrayState, stored_tile_rows
from energy import LedgerScope

__all__ = [
    "STATE_BUFFERS",
    "AnalogLinear",
    "analog_layers",
    "deferred_mvm_records",
    "drift",
    "layer_seed",
    "program",
    "record_all_to",
]

BackwardMode = Literal["exact", "analog"]
MvmBackend = Literal["auto", "numba", "torch"]

STATE_BUFFERS = ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg")
"""The array state (`crossbar.state.ArrayState`) as buffers: conductances (uS) and per-cell write counters (uint16,
STUCK marks a fault), in tile layout."""


class AnalogLinear(nn.Module):
    """A linear layer whose weight lives on a simulated ReRAM crossbar (differential pairs, tiles, DAC/ADC).

    Construct with `from_linear` / `from_weight` (which hold the float32 target until `program()`), program
    explicitly, then use like `nn.Linear`. Works in train and eval mode (the same analog physics in both) and under
    `torch.no_grad` (a fast path without autograd). Read noise is drawn fresh for every input vector of every
    forward from a generator seeded with `seed`, so a layer's outputs are reproducible from its seed.

    ADC ranges: with `adc_range="fixed"` every tile column converts over [-adc_full_scale, adc_full_scale]. With
    "calibrated", `calibrate_adc(x)` (or the model-level `crossbar.adc_calibration` phase) sets one range per tile
    column (per tile, or per layer) from a calibration set; a forward MVM before that raises (there is no implicit
    calibration on whatever batch comes first). The transposed direction keeps `adc_full_scale` unless calibrated
    explicitly (`calibrate_adc(d, transposed=True)`).

    Module state: the conductances and write counters (fault masks: counters at STUCK) are buffers next to
    `out_scale`, the bias and the programming target, so `.to(device)` moves them and `state_dict()` holds them;
    the random streams (seeds and call counters of read noise, drift and programming), the drift clock and the ADC
    calibration are its extra state. Loading a state_dict therefore continues exactly where the saved layer was:
    same outputs, same later noise and drift draws (`crossbar.persist.save_programmed`). The write-verify,
    fault and drift kernels (numba) run on the CPU: on another device the layer copies its arrays there and back.
    """

    mvm_backend: MvmBackend = "auto"
    """Which implementation computes the MVMs: "auto" runs the numba kernels when the arrays are on the CPU and
    the pure-torch path (`crossbar.mvm_torch`, same numerics) on the arrays' own device otherwise; "torch" forces
    the torch path (also on the CPU); "numba" forces the kernels (arrays off the CPU are copied there per call).
    Programming, drift and faults always run as numba kernels on the CPU."""

    weight: None = None
    """No float weight tensor: the weights live in the array (`programmed_weight()`). None rather than absent so that
    code probing `module.weight` (Hugging Face T5's feed-forward checks its dtype) skips its probe."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        array_config: DeviceConfig | None = None,
        *,
        bias: bool = True,
        seed: int = 0,
        name: str = "",
        backward_mode: BackwardMode = "exact",
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
        if backward_mode not in ("exact", "analog"):
            raise ValueError(f"backward_mode must be 'exact' or 'analog', got {backward_mode!r}")
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
        self.backward_mode: BackwardMode = backward_mode
        """"exact" (default): the input gradient is the noise-free, unquantised transposed MVM of the programmed
        weights, grad_x = grad_y @ W_programmed (straight-through through DAC, ADC and read noise). "analog": the
        transposed MVM runs on the array with the device's DAC, ADC and read noise (`mvm_transposed`). Either way
        the ledger, when set, records it as an analog transposed MVM."""
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
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_buffer("out_scale", None)
        for buffer in STATE_BUFFERS:
            self.register_buffer(buffer, None)
        self.register_buffer("target_weight", None)
        """(out, in) float32 programming target held until `program()`; None afterwards."""
        self.ledger: LedgerScope | None = None
        self.adc_ranges: np.ndarray | None = None
        """(input tiles, out_features) float32 forward ADC range of every tile column (normalised units), set by
        `calibrate_adc`; None = not calibrated (fixed range: `array_config.adc_full_scale` everywhere)."""
        self.adc_ranges_transposed: np.ndarray | None = None
        """(column tiles, in_features) float32 ranges of the transposed direction; None = `adc_full_scale`."""
        self._before_mvm = None
        """Set by `crossbar.adc_calibration` while a calibration pass runs: called with (layer, x) before the MVM."""
        self.noise_seed = derive_seed(seed, "read_noise")
        """Read-noise stream: the key of the n-th MVM is mix_seed(noise_seed, n) (counter-based: state = 2 ints)."""
        self.noise_calls = 0
        self.program_calls = 0
        self.drift_calls = 0
        self.drift_seed = seed
        self._t_s = 0.0
        self._g_sums: ConductanceSums | None = None
        self._settings_cache: dict[bool, tuple[DeviceConfig, np.ndarray | None, MvmSettings]] = {}

    # --- module state -------------------------------------------------------------------------------------
    @property
    def state(self) -> ArrayState | None:
        """The arrays as an `ArrayState` of NumPy views sharing memory with the buffers (CPU only); None before
        programming."""
        if self.g_diff_us is None:
            return None
        if self.g_diff_us.device.type != "cpu":
            raise RuntimeError(
                f"AnalogLinear {self.name!r}: its arrays are on {self.g_diff_us.device}; `.state` (NumPy views) "
                "needs them on the CPU (`.cpu()`)"
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
        self._g_sums = None

    def _where(self) -> torch.device:
        """The torch device of the layer's tensors (CPU until moved)."""
        for tensor in (self.g_diff_us, self.out_scale, self.target_weight, self.bias):
            if tensor is not None:
                return tensor.device
        return getattr(self, "_device_hint", torch.device("cpu"))

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        # remember where an empty layer was moved, so that the arrays it programs later land there too
        self._device_hint = fn(torch.empty(0)).device
        self._g_sums = None
        return super()._apply(fn, recurse)

    @contextlib.contextmanager
    def _kernel_state(self) -> Iterator[ArrayState]:
        """The arrays for the CPU kernels: zero-copy views on the CPU; elsewhere a CPU copy, written back after."""
        state = self._require_state()
        yield state
        if self.g_diff_us.device.type != "cpu":
            self._set_state(state)
        self._g_sums = None

    def _require_state_any(self) -> ArrayState:
        """The arrays as an ArrayState on the CPU (views there, copies from another device).

        On the CPU the views are built once and reused while the buffers are the same tensors on the same memory
        (the MVMs ask for them on every call); replacing or moving a buffer makes new views."""
        tensors = tuple(self._buffers[b] for b in STATE_BUFFERS)
        if tensors[0].device.type != "cpu":
            return self._as_array_state(*(t.detach().cpu() for t in tensors))
        pointers = tuple(t.data_ptr() for t in tensors)
        cached = self.__dict__.get("_views")
        if cached is not None and cached[2] == pointers and all(a is b for a, b in zip(cached[0], tensors)):
            return cached[1]
        state = self._as_array_state(*tensors)
        self.__dict__["_views"] = (tensors, state, pointers)
        return state

    def __getstate__(self) -> dict[str, object]:
        # Copies and pickles rebuild the NumPy views of their own buffers (`_require_state_any`): the views of this
        # layer's buffers are never a copy's.
        state = dict(super().__getstate__())
        for derived in ("_views", "_prepared", "_pricings", "_forward_plan"):
            state.pop(derived, None)
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
        self._g_sums = None
        self._settings_cache = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: ANN001 - nn.Module's hook signature  # fmt: skip
        # Optional buffers (programmed or not, target held or not) take the saved layer's presence and shape.
        where = self._where()
        for buffer in ("out_scale", *STATE_BUFFERS, "target_weight"):
            saved = state_dict.get(prefix + buffer)
            if saved is None:
                self._buffers[buffer] = None
            elif self._buffers.get(buffer) is None or self._buffers[buffer].shape != saved.shape:
                self._buffers[buffer] = torch.empty(saved.shape, dtype=saved.dtype, device=where)
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
        self._g_sums = None
        self._settings_cache = {}

    # --- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        array_config: DeviceConfig | None = None,
        *,
        seed: int = 0,
        name: str = "",
        backward_mode: BackwardMode = "exact",
        weight_bound: float | None = None,
    ) -> AnalogLinear:
        """An unprogrammed layer holding `weight` (out, in) as its programming target and `bias` (frozen);
        `weight_bound`: fixed conductance scale (see the attribute), None = per-row normalisation."""
        weight = _check_weight(weight, None, "weight")
        layer = cls(
            weight.shape[1], weight.shape[0], array_config, bias=bias is not None, seed=seed, name=name,
            backward_mode=backward_mode, weight_bound=weight_bound,
        )  # fmt: skip
        layer.target_weight = weight
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
                got = getattr(bias, "shape", bias)
                raise ValueError(f"bias must be a tensor of shape ({weight.shape[0]},), got {got}")
            layer.bias.data.copy_(bias.detach().to(torch.float32))
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        array_config: DeviceConfig | None = None,
        *,
        seed: int = 0,
        name: str = "",
        backward_mode: BackwardMode = "exact",
    ) -> AnalogLinear:
        """An unprogrammed copy of `linear` (its weight as the target, its bias frozen)."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls.from_weight(
            linear.weight, linear.bias, array_config, seed=seed, name=name, backward_mode=backward_mode
        )

    # --- programming ---------------------------------------------------------------------------------------
    @property
    def programmed(self) -> bool:
        return self.g_diff_us is not None

    def program(self, ledger: LedgerScope | None = None) -> ProgramReport:
        """First programming of the held target: fabricate the array (stuck-at faults from the seed), write-verify
        every cell, record the pulses in `ledger`, then drop the float32 target (state stays at 12 bytes/weight)."""
        if self.programmed:
            raise RuntimeError(f"AnalogLinear {self.name!r} is already programmed; use reprogram(weight) to rewrite it")
        if self.target_weight is None:
            raise RuntimeError(f"AnalogLinear {self.name!r} holds no target weight; use reprogram(weight)")
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
        weight = _check_weight(weight, (self.out_features, self.in_features), "weight")
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
                previous = _check_weight(previous_weight, (self.out_features, self.in_features), "previous_weight")
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
            raise RuntimeError(f"AnalogLinear {self.name!r}: no pulse tally running (start_pulse_tally())")
        if self.pulse_tally.size == 0:
            return np.zeros(2 * self.in_features * self.out_features, dtype=np.uint32)
        flat = self.pulse_tally.reshape(2, -1, self.out_features)[:, : self.in_features]
        return np.ascontiguousarray(flat).reshape(-1)

    def _next_program_stream(self) -> int:
        self.program_calls += 1
        return self.program_calls - 1

    def _after_write(self) -> None:
        self._t_s = 0.0
        self._g_sums = None

    def programmed_weight(self) -> torch.Tensor:
        """(out, in) float32: what the cells hold, as weights ((G+ - G-) * out_scale), noise-free; on the layer's
        device."""
        self._require_state()
        g = self.g_diff_us.reshape(-1, self.out_features)[: self.in_features]
        return g.T * self.out_scale.to(torch.float32)[:, None]

    def drift_to(self, t_s: float) -> None:
        """Let the conductances relax until `t_s` seconds after the latest programming (t_s >= the current time)."""
        self._require_state()
        if isinstance(t_s, bool) or not isinstance(t_s, (int, float)) or not math.isfinite(t_s) or t_s < self._t_s:
            raise ValueError(f"t_s must be a finite number >= the layer's current time {self._t_s} s, got {t_s!r}")
        self.drift_calls += 1
        with self._kernel_state() as state:
            apply_drift(
                state, self.array_config, t_from_s=self._t_s, t_to_s=float(t_s), seed=self.drift_seed,
                stream=self.drift_calls - 1,
            )  # fmt: skip
        self._t_s = float(t_s)
        self._g_sums = None

    @property
    def time_s(self) -> float:
        """Seconds since the latest programming the conductances have drifted to."""
        return self._t_s

    # --- MVMs ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Analog MVM plus digital bias, over any leading batch dims."""
        return self._run(x, with_bias=True)

    def mvm(self, x: torch.Tensor) -> torch.Tensor:
        """Analog MVM without bias, over any leading batch dims."""
        return self._run(x, with_bias=False)

    def mvm_transposed(self, d: torch.Tensor) -> torch.Tensor:
        """d @ W on the array, (..., out) -> (..., in), with the device's DAC, ADC and read noise (see
        `crossbar.mvm`); no gradient. Recorded in the ledger when set."""
        self._check_ready()
        d2 = _flatten(d, self.out_features, "d")
        y = self._transposed_analog(d2.detach(), None)
        return y.reshape(*d.shape[:-1], self.in_features).to(device=d.device, dtype=d.dtype)

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

    def calibrate_adc(
        self,
        x: torch.Tensor,
        *,
        percentile: float = 99.99,
        granularity: str = "column",
        scope: LedgerScope | None = None,
        transposed: bool = False,
    ) -> int:
        """Set the ADC ranges (forward, or with `transposed` the transposed direction) from calibration inputs
        `x` (..., in_features) (transposed: (..., out_features)): the `percentile` of |partial sums| each tile
        column's ADC sees, per column, per tile or per layer (`granularity`, `crossbar.calibration`). Records the
        calibration MVMs in `scope` (one per vector; no cell is written) and returns the ADC conversions observed
        (the count `scope` gets as adc_conversion). Needs device.adc_range="calibrated"."""
        if self.array_config.adc_range != "calibrated":
            raise ValueError(f"calibrate_adc needs device.adc_range='calibrated', got {self.array_config.adc_range!r}")
        check_adc_calibration(percentile, granularity)
        state = self._require_state()
        width = self.out_features if transposed else self.in_features
        x2 = _flatten(x.detach(), width, "d" if transposed else "x").to(device="cpu", dtype=torch.float32)
        if x2.shape[0] == 0:
            raise ValueError(f"AnalogLinear {self.name!r}: the calibration set is empty")
        config = self.array_config
        settings = MvmSettings.from_device(config)
        if transposed:
            scaled = x2 * self.out_scale.cpu().to(torch.float32)[None, :]
            values = adc_inputs(x2, state, self.out_scale.cpu(), settings, transposed=True, tile_cols=config.tile_cols)
            self.adc_ranges_transposed = pooled_ranges(
                values, percentile, granularity, config.tile_rows, config.adc_full_scale
            )
            if scope is not None:
                self.record_reads(x2.shape[0], scope, transposed=True, inputs=scaled)
        else:
            values = adc_inputs(x2, state, self.out_scale.cpu(), settings)
            self.adc_ranges = pooled_ranges(values, percentile, granularity, config.tile_cols, config.adc_full_scale)
            if scope is not None:
                self.record_reads(x2.shape[0], scope, inputs=x2)
        return int(values.size)

    @torch.no_grad()
    def read_out(
        self,
        x: torch.Tensor,
        scope: LedgerScope | None = None,
        *,
        transposed: bool = False,
        full_scale: float | None = None,
    ) -> torch.Tensor:
        """An MVM (transposed: d @ W) for a calibration read-out, no bias, through the device's read noise, DAC and
        ADC; recorded in `scope` (not in the layer's own ledger). `full_scale` sets every column's ADC range for
        this read (e.g. 1.0 for one-hot probe inputs, whose partial sums are single weights, |w| <= 1 normalised);
        None uses the layer's ranges (calibrated or fixed)."""
        state = self._require_state()
        width = self.out_features if transposed else self.in_features
        x2 = _flatten(x.detach(), width, "d" if transposed else "x").to(device="cpu", dtype=torch.float32)
        if full_scale is None:
            settings = self._settings(transposed=transposed)
        else:
            settings = MvmSettings.from_device(self.array_config, adc_full_scale=full_scale)
        out_scale = self.out_scale.cpu()
        if transposed:
            y = analog_mvm_transposed(
                x2, state, out_scale, settings, key=self._next_key(), tile_cols=self.array_config.tile_cols
            )
            if scope is not None:
                self.record_reads(x2.shape[0], scope, transposed=True, inputs=x2 * out_scale[None, :])
        else:
            y = analog_mvm(x2, state, out_scale, settings, key=self._next_key())
            if scope is not None:
                self.record_reads(x2.shape[0], scope, inputs=x2)
        return y

    def _run(self, x: torch.Tensor, *, with_bias: bool) -> torch.Tensor:
        self._check_ready()
        x2 = _flatten(x, self.in_features, "x")
        if self._before_mvm is not None:
            self._before_mvm(self, x2)
        bias = self.bias if with_bias else None
        if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
            y = _AnalogMvmFunction.apply(x2, self)
            if bias is not None:
                y = y + bias
        else:
            y = self._forward_analog(x2.detach(), bias)
        if self.ledger is not None:
            self._record_mvms(self.ledger, x2.shape[0], x2.detach(), transposed=False, bias=bias is not None)
        return y.reshape(*x.shape[:-1], self.out_features).to(device=x.device, dtype=x.dtype)

    def _on_torch_path(self) -> bool:
        backend = self.mvm_backend
        return backend == "torch" or (backend == "auto" and self.g_diff_us.device.type != "cpu")

    def _forward_analog(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The analog MVM of x2 (B, in): numba kernels on CPU arrays, the torch path on the arrays' device."""
        plan = self.__dict__.get("_forward_plan")
        if plan is not None and plan.fits(self, x2, bias):
            return prepared_forward_mvm(x2, plan.prepared, plan.settings, plan.bias, self._next_key())
        settings = self._settings(transposed=False)
        if self._on_torch_path():
            return analog_mvm_torch(
                x2, self.g_diff_us, self.in_features, self.out_scale, settings, key=self._next_key(), bias=bias,
                g_neg_us=self.g_neg_us,
            )  # fmt: skip
        state = self._require_state_any()  # callers checked `_check_ready`
        prepared = self._operands(state)
        self.__dict__["_forward_plan"] = _ForwardPlan.of(self, prepared, settings, bias)
        bias = bias.detach().cpu() if bias is not None else None
        return analog_mvm(x2, state, self.out_scale.cpu(), settings, key=self._next_key(), bias=bias,
                          prepared=prepared)  # fmt: skip

    def _transposed_analog(self, d2: torch.Tensor, state: ArrayState | None, record: bool = True) -> torch.Tensor:
        settings = self._settings(transposed=True)
        tile_cols = self.array_config.tile_cols
        if self._on_torch_path():
            y = analog_mvm_torch(
                d2, self.g_diff_us, self.in_features, self.out_scale, settings, key=self._next_key(),
                transposed=True, tile_cols=tile_cols,
            )  # fmt: skip
        else:
            state = state if state is not None else self._require_state()
            y = analog_mvm_transposed(d2, state, self.out_scale.cpu(), settings, key=self._next_key(),
                                      tile_cols=tile_cols, prepared=self._operands(state))  # fmt: skip
        if record:
            self._record_transposed(d2)
        return y

    def _transposed_exact(self, d2: torch.Tensor) -> torch.Tensor:
        """grad_y @ W_programmed without forming W: (d * out_scale) @ (G+ - G-)^T on the buffer (any device)."""
        g = self.g_diff_us.reshape(-1, self.out_features)[: self.in_features]
        scaled = d2.to(device=g.device, dtype=torch.float32) * self.out_scale.to(torch.float32)[None, :]
        y = scaled @ g.T
        self._record_transposed(d2, scaled)
        return y

    def _record_transposed(self, d2: torch.Tensor, scaled: torch.Tensor | None = None) -> None:
        """Record a transposed MVM of d2; `scaled` = d2 * out_scale (what the DAC sees) when already at hand."""
        if self.ledger is not None:
            if scaled is None or scaled.device != d2.device:
                scaled = d2.to(torch.float32) * self.out_scale.to(device=d2.device, dtype=torch.float32)[None, :]
            self.record_reads(d2.shape[0], self.ledger, transposed=True, inputs=scaled.detach())

    def record_reads(
        self, n_vectors: int, ledger: LedgerScope, *, transposed: bool = False, inputs: torch.Tensor | None = None
    ) -> None:
        """Record what `n_vectors` MVMs (or transposed MVMs) on this array cost, without running them: for
        read-outs whose values are taken noise-free (calibration), so that recording never changes the layer's
        random streams or its ADC calibration. `inputs` as the DAC sees them prices the cells actually conducting;
        without them every line counts as driven at full scale (`crossbar.mvm.record_mvm`)."""
        self._record_mvms(ledger, n_vectors, inputs, transposed=transposed, bias=False)

    def _record_mvms(
        self, ledger: LedgerScope, n_vectors: int, inputs: torch.Tensor | None, *, transposed: bool, bias: bool
    ) -> None:
        """Record `n_vectors` MVMs in `ledger` now, or while deferred recording is on (`deferred_mvm_records`) add
        them to this direction's `crossbar.mvm.MvmTally` (recorded first if it holds MVMs under another scope,
        cost table or conductance)."""
        pricing = self._pricing(ledger, transposed=transposed, bias=bias)
        conductance = self._conductance_sums()
        tallies = self.__dict__.get("_tallies")
        if tallies is None:
            pricing.record(ledger, layer=self.name, n_vectors=n_vectors, conductance=conductance, inputs=inputs)
            return
        tally = tallies.get((transposed, bias))
        if tally is None or not tally.holds(pricing, ledger, conductance):
            if tally is not None:
                tally.record(self.name)
            tally = tallies[(transposed, bias)] = MvmTally(pricing, ledger, conductance)
        tally.add(n_vectors, inputs)

    def defer_mvm_records(self, defer: bool) -> None:
        """Start (True) adding MVMs up per direction instead of recording each, or stop (False) and record what was
        added up. Use `crossbar.deferred_mvm_records(model)`, which stops even when its block raises."""
        tallies = self.__dict__.get("_tallies")
        if tallies is not None:
            for tally in tallies.values():
                tally.record(self.name)
        self.__dict__["_tallies"] = {} if defer else None

    def _pricing(self, ledger: LedgerScope, *, transposed: bool, bias: bool) -> MvmPricing:
        """The `crossbar.mvm.MvmPricing` of one direction under the ledger's cost table (kept while the config and
        the cost table stay the same)."""
        cache = self.__dict__.setdefault("_pricings", {})
        pricing = cache.get((transposed, bias))
        if pricing is None or not pricing.matches(self.array_config, ledger.costs):
            pricing = MvmPricing.of(self.array_config, ledger.costs, d_in=self.in_features, d_out=self.out_features,
                                    transposed=transposed, bias=bias)  # fmt: skip
            cache[(transposed, bias)] = pricing
        return pricing

    def _operands(self, state: ArrayState) -> ArrayOperands | None:
        """The array's `crossbar.mvm.ArrayOperands` for the CPU kernels, rebuilt when a buffer or `out_scale` was
        replaced (None off the CPU, where `state` is a fresh copy per call)."""
        out_scale = self.out_scale
        if self.g_diff_us.device.type != "cpu" or out_scale.dtype != torch.float32 or not out_scale.is_contiguous():
            return None
        tile_cols = self.array_config.tile_cols
        cached = self.__dict__.get("_prepared")
        if cached is None or not cached.valid_for(state, out_scale) or cached.tile_cols != tile_cols:
            cached = ArrayOperands.of(state, out_scale, tile_cols)
            self.__dict__["_prepared"] = cached
        return cached

    def _settings(self, *, transposed: bool) -> MvmSettings:
        """The MVM settings of one direction with its ADC ranges (cached until the config or the ranges change)."""
        ranges = self.adc_ranges_transposed if transposed else self.adc_ranges
        if ranges is None and not transposed and self.array_config.adc_range == "calibrated":
            raise RuntimeError(
                f"AnalogLinear {self.name or '(unnamed)'!r}: device.adc_range is 'calibrated' but its ADC ranges were "
                "never calibrated: run the calibration phase (crossbar.adc_calibration, or layer.calibrate_adc(x) on "
                "calibration data) after programming"
            )
        cached = self._settings_cache.get(transposed)
        if cached is None or cached[0] != self.array_config or cached[1] is not ranges:
            cached = (self.array_config, ranges, MvmSettings.from_device(self.array_config, adc_ranges=ranges))
            self._settings_cache[transposed] = cached
        return cached[2]

    def reseed_noise(self, seed: int) -> None:
        """Restart the read-noise and drift streams from `seed` (e.g. independent draws per evaluation repeat)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.noise_seed = derive_seed(seed, "read_noise")
        self.noise_calls = 0
        self.drift_seed = seed

    def _next_key(self) -> int:
        """A fresh 64-bit read-noise key: counter-based, mix_seed(noise_seed, calls so far)."""
        calls = self.noise_calls
        self.__dict__["noise_calls"] = calls + 1  # a plain int: skips nn.Module.__setattr__'s lookups on every MVM
        return mix_seed_int(self.noise_seed, calls)

    def _conductance_sums(self) -> ConductanceSums:
        """Per-line summed G+ + G- for the ledger, computed once per programming or drift (CPU copy off-CPU)."""
        if self._g_sums is None:
            self._g_sums = conductance_sums(self._require_state())
        return self._g_sums

    def _require_state(self) -> ArrayState:
        """The arrays for the CPU kernels: raise unless programmed; NumPy views on the CPU, CPU copies from another
        device (off the CPU the MVMs use the torch path instead, `mvm_backend`)."""
        self._check_ready()
        return self._require_state_any()

    def _check_ready(self) -> None:
        """Raise unless the layer is programmed and its arrays hold values (not on the meta device)."""
        if self.g_diff_us is None or self.out_scale is None:
            raise RuntimeError(
                f"AnalogLinear {self.name or '(unnamed)'!r} is not programmed: call its program() "
                "(or crossbar.program(model)) before running it"
            )
        if self.g_diff_us.device.type == "meta":
            raise RuntimeError(
                f"AnalogLinear {self.name!r}: its arrays are on the meta device (shapes only, no values); move the "
                "model to a real device (`.to_empty(...)` then `load_state_dict`) before running it"
            )

    def extra_repr(self) -> str:
        n_row_tiles = -(-self.in_features // self.array_config.tile_rows)
        n_col_tiles = -(-self.out_features // self.array_config.tile_cols)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"array_config={self.array_config.name}, tiles={n_row_tiles}x{n_col_tiles} of "
            f"{self.array_config.tile_rows}x{self.array_config.tile_cols}, programmed={self.programmed}"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class _ForwardPlan:
    """A layer's CPU forward MVM with every per-call lookup and conversion done once (`crossbar.mvm`'s
    `prepared_forward_mvm`): valid while the conductance buffer, `out_scale`, the device config, the forward ADC
    ranges, the backend and the bias are the objects it was made for (replacing any of them, e.g. reprogramming or
    `.to(device)`, makes a new plan; in-place changes such as drift are seen through the views)."""

    g_diff_us: torch.Tensor
    g_pointer: int
    out_scale: torch.Tensor
    array_config: DeviceConfig
    adc_ranges: np.ndarray | None
    mvm_backend: str
    bias_tensor: torch.Tensor | None
    prepared: ArrayOperands
    settings: MvmSettings
    bias: np.ndarray

    @classmethod
    def of(
        cls, layer: AnalogLinear, prepared: ArrayOperands | None, settings: MvmSettings, bias: torch.Tensor | None
    ) -> _ForwardPlan | None:
        """The plan of the forward MVM the layer is about to run, or None where the fast path does not apply (IR
        drop, per-cycle conversion, arrays off the CPU, a bias that is not a float32 CPU tensor to share)."""
        if prepared is None or settings.wire_resistance_ohm > 0 or settings.per_cycle:
            return None
        shareable = bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu" and bias.is_contiguous())
        if not shareable:
            return None
        g = layer.g_diff_us
        bias_np = prepared.zeros_out if bias is None else bias.detach().numpy()  # shares the bias's memory
        return cls(g, g.data_ptr(), layer.out_scale, layer.array_config, layer.adc_ranges, layer.mvm_backend, bias,
                   prepared, settings, bias_np)  # fmt: skip

    def fits(self, layer: AnalogLinear, x2: torch.Tensor, bias: torch.Tensor | None) -> bool:
        buffers = layer._buffers
        g = buffers["g_diff_us"]
        return (
            g is self.g_diff_us
            and buffers["out_scale"] is self.out_scale
            and bias is self.bias_tensor
            and layer.array_config is self.array_config
            and layer.adc_ranges is self.adc_ranges
            and layer.mvm_backend == self.mvm_backend
            and g.data_ptr() == self.g_pointer
            and x2.dtype == torch.float32
            and x2.device.type == "cpu"
            and x2.is_contiguous()
        )


class _AnalogMvmFunction(torch.autograd.Function):
    """Analog forward; backward = transposed MVM of the programmed weights (straight-through through the DAC,
    ADC and read noise). The layer's weights are not tensors of the graph, so they never get gradients."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, layer: AnalogLinear) -> torch.Tensor:  # noqa: ANN001
        ctx.layer = layer
        ctx.input_dtype = x2.dtype
        ctx.input_device = x2.device
        return layer._forward_analog(x2.detach(), None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        layer: AnalogLinear = ctx.layer
        layer._check_ready()
        grad2 = grad.detach().to(dtype=torch.float32).contiguous()
        if layer.backward_mode == "analog":
            grad_x = layer._transposed_analog(grad2, None)
        else:
            grad_x = layer._transposed_exact(grad2)
        return grad_x.to(device=ctx.input_device, dtype=ctx.input_dtype), None


def _flatten(x: torch.Tensor, width: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != width:
        raise ValueError(f"{name} must have last dimension {width}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.reshape(-1, width)


def _check_weight(weight: torch.Tensor, shape: tuple[int, int] | None, name: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"{name} must be a 2-D torch.Tensor (out, in), got {getattr(weight, 'shape', weight)!r}")
    if shape is not None and tuple(weight.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(weight.shape)}")
    weight = weight.detach().to(torch.float32).clone()
    if not torch.isfinite(weight).all():
        raise ValueError(f"{name} must be finite")
    return weight


# --- model level -----------------------------------------------------------------------------------------------


def layer_seed(seed: int, name: str) -> int:
    """Deterministic per-layer seed from a model seed and the layer's qualified name (`derive_seed`)."""
    return derive_seed(seed, "layer", name)


def analog_layers(model: nn.Module) -> list[tuple[str, AnalogLinear]]:
    """Every `AnalogLinear` in `model` with its qualified name, in module order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AnalogLinear)]


def program(model: nn.Module, ledger: LedgerScope | None = None) -> ProgramReport:
    """First programming of every not yet programmed `AnalogLinear` in `model`; returns the summed report."""
    total = ProgramReport.empty()
    for _, layer in analog_layers(model):
        if not layer.programmed:
            total = total + layer.program(ledger)
    return total


def drift(model: nn.Module, t_s: float) -> None:
    """Drift every programmed `AnalogLinear` in `model` to `t_s` seconds after its latest programming."""
    for _, layer in analog_layers(model):
        if layer.programmed:
            layer.drift_to(t_s)


@contextlib.contextmanager
def deferred_mvm_records(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every `AnalogLinear` of `model` adds its MVMs up per direction and records them at the end
    (or when its ledger scope, cost table or conductances change) instead of on every call: one ledger record per
    array and direction for a whole training loop instead of one per step. The ledger gets the same events (every
    event is linear in the vectors and their input activity; sums may differ in the last float digits), but only
    when the block ends: do not read the ledger inside it."""
    layers = [layer for _, layer in analog_layers(model)]
    for layer in layers:
        layer.defer_mvm_records(True)
    try:
        yield model
    finally:
        for layer in layers:
            layer.defer_mvm_records(False)


@contextlib.contextmanager
def record_all_to(model: nn.Module, ledger: LedgerScope | None) -> Iterator[nn.Module]:
    """Within the block, every module of `model` that records (`crossbar.protocols.Recording`: it has a `ledger`
    attribute) records into `ledger`: the analog arrays' MVMs, and the digital work of fusion's modules and of
    model blocks that count their own arithmetic. The previous values are restored afterwards."""
    if ledger is not None and not isinstance(ledger, LedgerScope):
        raise ValueError(f"ledger must be a LedgerScope or None, got {type(ledger).__name__}")
    modules = [module for module in model.modules() if isinstance(module, Recording)]
    previous = [module.ledger for module in modules]
    for module in modules:
        module.ledger = ledger
    try:
        yield model
    finally:
        for module, before in zip(modules, previous):
            module.ledger = before


def _ranges_to_json(ranges: np.ndarray | None) -> list[list[float]] | None:
    """float32 ranges as nested lists of Python floats (exact: every float32 is a float64)."""
    return None if ranges is None else ranges.astype(np.float64).tolist()
