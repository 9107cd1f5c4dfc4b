"""Bit-sliced weights: one weight matrix over several arrays, one per base-2^bits_per_cell digit of |w|.

How most published accelerators reach 8- or 16-bit weights with few-level cells (ISAAC: 16-bit weights over eight
2-bit cells whose column outputs shift-and-add units combine, Shafiee et al. ISCA 2016; PUMA; NeuroSim's multi-cell
weights; CrossSim's weight slicing). With B = `weight_bits` and b = `bits_per_cell` (`crossbar.device`):

- a weight w of output row o is quantised sign-magnitude, q = rint(|w| / w_max_o * (2^B - 1)) with w_max_o the
  row's largest |w| (or a fixed `weight_bound`), so that w ~ sign(w) * q * step_o, step_o = w_max_o / (2^B - 1);
- q is split into S = ceil(B / b) base-2^b digits d_s; slice s is an ordinary `AnalogLinear` whose weight matrix
  is sign(w) * d_s, on differential pairs as every array here, with the fixed scale weight_bound = 2^b - 1 and
  2^b device levels, so each digit is exactly one programmable level of one cell of the pair;
- the layer output is y = step * sum_s 2^(b s) y_s (+ bias), combined digitally (shift-add).

Each slice is a full array (its own faults, programming pulses and per-cell wear, read noise, drift, ADC
calibration and ledger rows under its qualified name `<layer>.slices.<s>`), so everything the model-level helpers do
to `AnalogLinear`s (`crossbar.program`, `drift`, `adc_calibration`, `record_all_to`, reseeding by name, saving and
loading) reaches every slice. This layer adds the digital combination and records it: S - 1 `shift_add` per output
(per input, transposed) and vector, one `digital_mult` (the row's step) per output and vector, and the bias adds.
ISAAC stores a signed weight with an offset (a biased 16-bit value, one cell per digit) instead of a pair per digit;
the pair keeps this layer's numerics and cell model the same as the unsliced arrays'.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from crossbar.array import check_weight, copy_bias
from crossbar.device import DeviceConfig
from crossbar.extra_state import _device_config
from crossbar.layers import AnalogLinear, BackwardMode
from crossbar.programming import ProgramReport
from crossbar.rng import derive_seed
from energy import LedgerScope

__all__ = ["SlicedAnalogLinear", "slice_config", "slice_digits"]


def slice_config(config: DeviceConfig) -> DeviceConfig:
    """The device config of one slice: unsliced, with the 2^bits_per_cell levels its digits occupy."""
    return config.replace(weight_bits=None, levels=2**config.bits_per_cell)


def slice_digits(
    weight: np.ndarray, weight_bits: int, bits_per_cell: int, weight_bound: float | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(signed digits (S, out, in) float32, step (out,) float32) of `weight` (out, in): sign(w) * d_s with
    sum_s 2^(bits_per_cell s) d_s = rint(min(|w| / w_max, 1) * (2^weight_bits - 1)) and step = w_max / (2^weight_bits
    - 1); w_max per row is its largest |w| (1 for an all-zero row), or `weight_bound` (one number or one per row)."""
    w = np.asarray(weight, dtype=np.float64)
    if weight_bound is None:
        w_max = np.abs(w).max(axis=1)
        w_max = np.where(w_max > 0, w_max, 1.0)
    else:
        w_max = np.broadcast_to(np.asarray(weight_bound, dtype=np.float64), (w.shape[0],))
    top = 2**weight_bits - 1
    q = np.rint(np.minimum(np.abs(w) / w_max[:, None], 1.0) * top).astype(np.int64)
    base = 2**bits_per_cell
    n_slices = -(-weight_bits // bits_per_cell)
    digits = np.stack([(q >> (bits_per_cell * s)) % base for s in range(n_slices)]).astype(np.float64)
    signed = (np.sign(w)[None] * digits).astype(np.float32)
    return signed, (w_max / top).astype(np.float32)


class SlicedAnalogLinear(nn.Module):
    """A linear layer whose weights are bit-sliced over several crossbar arrays (see the module doc). Built by
    `crossbar.convert_to_analog` when the device config sets `weight_bits`, or with `from_weight` / `from_linear`;
    program explicitly, then use like `nn.Linear`. It implements `crossbar.AnalogLayer`."""

    weight: None = None
    """No float weight tensor (as `AnalogLinear`): the weights live in the slices (`programmed_weight()`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        array_config: DeviceConfig,
        *,
        bias: bool = True,
        seed: int = 0,
        name: str = "",
        backward_mode: BackwardMode = "exact",
        weight_bound: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(array_config, DeviceConfig) or array_config.weight_bits is None:
            raise ValueError("SlicedAnalogLinear needs a DeviceConfig with weight_bits set, got "
                             f"{getattr(array_config, 'weight_bits', array_config)!r}")  # fmt: skip
        if weight_bound is not None and not (isinstance(weight_bound, (int, float)) and 0 < weight_bound < np.inf):
            raise ValueError(f"weight_bound must be None or a finite number > 0 (weight units), got {weight_bound!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.name = name
        self.array_config = array_config
        """The layer's device config (with `weight_bits`); each slice holds `slice_config` of it."""
        self.weight_bound = None if weight_bound is None else float(weight_bound)
        """Fixed quantisation range (weight units): |w| = weight_bound is the largest digit string; None = per
        row, its largest |w| at every (re)programming."""
        bound = float(2**array_config.bits_per_cell - 1)
        self.slices = nn.ModuleList(
            AnalogLinear(in_features, out_features, slice_config(array_config), bias=False,
                         seed=derive_seed(seed, "slice", str(s)), name=_slice_name(name, s),
                         backward_mode=backward_mode, weight_bound=bound)
            for s in range(array_config.weight_slices)
        )  # fmt: skip
        self.register_buffer("weight_step", torch.zeros(out_features))
        """(out,) float32: weight units per unit of the combined digits (w_max / (2^weight_bits - 1)) per row."""
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self._ledger: LedgerScope | None = None
        self.rewritten: torch.Tensor | None = None
        """(out, in) bool: the weights the latest `reprogram(..., previous_weight=...)` touched in any slice."""

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_weight(
        cls, weight: torch.Tensor, bias: torch.Tensor | None, array_config: DeviceConfig, *, seed: int = 0,
        name: str = "", backward_mode: BackwardMode = "exact", weight_bound: float | None = None,
    ) -> SlicedAnalogLinear:  # fmt: skip
        """An unprogrammed layer holding the slices of `weight` (out, in) as their targets and `bias` (frozen)."""
        weight = check_weight(weight, None, "weight")
        layer = cls(weight.shape[1], weight.shape[0], array_config, bias=bias is not None, seed=seed, name=name,
                    backward_mode=backward_mode, weight_bound=weight_bound)  # fmt: skip
        digits, step = layer._digits(weight, layer.weight_bound)
        for array, target in zip(layer.slices, digits):
            array.target_weight = torch.from_numpy(target)
        layer.weight_step.copy_(torch.from_numpy(step))
        if bias is not None:
            copy_bias(bias, layer.bias)
        return layer

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, array_config: DeviceConfig, *, seed: int = 0, name: str = "",
        backward_mode: BackwardMode = "exact",
    ) -> SlicedAnalogLinear:  # fmt: skip
        """An unprogrammed sliced copy of `linear` (its weight as the target, its bias frozen)."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls.from_weight(linear.weight, linear.bias, array_config, seed=seed, name=name,
                               backward_mode=backward_mode)  # fmt: skip

    def _digits(self, weight: torch.Tensor, bound: float | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        config = self.array_config
        return slice_digits(weight.numpy(), config.weight_bits, config.bits_per_cell, bound)

    # --- the ledger: one scope for the layer and its slices ---------------------------------------------------
    @property
    def ledger(self) -> LedgerScope | None:
        return self._ledger

    @ledger.setter
    def ledger(self, scope: LedgerScope | None) -> None:
        """Setting the layer's scope sets every slice's (their MVMs and this layer's shift-adds go there)."""
        self.__dict__["_ledger"] = scope
        for array in self.slices:
            array.ledger = scope

    # --- programming, drift, noise streams ---------------------------------------------------------------------
    @property
    def programmed(self) -> bool:
        return all(array.programmed for array in self.slices)

    def program(self, ledger: LedgerScope | None = None) -> ProgramReport:
        """First programming of every slice not yet programmed (each records its own pulses in `ledger`)."""
        if self.programmed:
            raise RuntimeError(f"SlicedAnalogLinear {self.name!r} is already programmed; use reprogram(weight)")
        total = ProgramReport.empty()
        for array in self.slices:
            if not array.programmed:
                total = total + array.program(ledger)
        return total

    def reprogram(
        self, weight: torch.Tensor, ledger: LedgerScope | None = None, *, previous_weight: torch.Tensor | None = None,
        keep_scale: bool = False,
    ) -> ProgramReport:  # fmt: skip
        """Write a new target `weight` (out, in) into every slice. With `previous_weight`, each slice rewrites only
        the cells whose digit moved (`AnalogArray.reprogram`); `keep_scale` quantises at the present per-row step
        (clipping beyond it) instead of the new row maxima."""
        weight = check_weight(weight, (self.out_features, self.in_features), "weight")
        bound: float | np.ndarray | None = self.weight_bound
        if keep_scale and bound is None and self.programmed:
            bound = self.weight_step.detach().cpu().numpy().astype(np.float64) * (2**self.array_config.weight_bits - 1)
        digits, step = self._digits(weight, bound)
        before = None
        if previous_weight is not None:  # the digits last written: the previous weight at the step then in effect
            previous = check_weight(previous_weight, (self.out_features, self.in_features), "previous_weight")
            written_at = self.weight_step.detach().cpu().numpy().astype(np.float64)
            before = self._digits(previous, written_at * (2**self.array_config.weight_bits - 1))[0]
        total = ProgramReport.empty()
        touched = None
        for s, array in enumerate(self.slices):
            prev = None if before is None or not array.programmed else torch.from_numpy(before[s])
            total = total + array.reprogram(torch.from_numpy(digits[s]), ledger, previous_weight=prev)
            if prev is not None and array.rewritten is not None:
                touched = array.rewritten.clone() if touched is None else touched | array.rewritten
        self.rewritten = touched
        self.weight_step.copy_(torch.from_numpy(step))
        return total

    def drift_to(self, t_s: float) -> None:
        """Drift every slice to `t_s` seconds after its latest programming."""
        for array in self.slices:
            array.drift_to(t_s)

    @property
    def time_s(self) -> float:
        return min(array.time_s for array in self.slices)

    def reseed_noise(self, seed: int) -> None:
        """Restart every slice's read-noise and drift streams from its own seed derived from `seed`."""
        for s, array in enumerate(self.slices):
            array.reseed_noise(derive_seed(seed, "slice", str(s)))

    def check_ready(self) -> None:
        for array in self.slices:
            array.check_ready()

    def programmed_weight(self) -> torch.Tensor:
        """(out, in) float32: what the cells hold, as weights (step * sum_s 2^(b s) (G+ - G-)_s * out_scale_s)."""
        total = self._combine([array.programmed_weight() for array in self.slices])
        return total * self.weight_step.to(total)[:, None]

    # --- MVMs -------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Analog MVMs of every slice, shift-added, scaled per row, plus the digital bias."""
        return self._run(x, with_bias=True)

    def mvm(self, x: torch.Tensor) -> torch.Tensor:
        """W x without bias over any leading batch dims (the slices' MVMs, shift-added and scaled)."""
        return self._run(x, with_bias=False)

    def _run(self, x: torch.Tensor, *, with_bias: bool) -> torch.Tensor:
        self.check_ready()
        y = self._combine([array.mvm(x) for array in self.slices])
        y = y * self.weight_step.to(y)
        bias = self.bias is not None and with_bias
        if bias:
            y = y + self.bias.to(y)
        if self._ledger is not None:
            self._record_combine(self._ledger, _vectors(x, self.in_features), self.out_features, bias=bias)
        return y

    def mvm_transposed(self, d: torch.Tensor) -> torch.Tensor:
        """d W on the slices, (..., out) -> (..., in): each slice reads d * step, their outputs shift-added."""
        self.check_ready()
        scaled = d * self.weight_step.to(device=d.device, dtype=d.dtype)
        y = self._combine([array.mvm_transposed(scaled) for array in self.slices])
        if self._ledger is not None:
            self._record_combine(self._ledger, _vectors(d, self.out_features), self.in_features, bias=False)
        return y

    @torch.no_grad()
    def read_out(self, x: torch.Tensor, scope: LedgerScope | None = None, *, transposed: bool = False,
                 full_scale: float | None = None) -> torch.Tensor:  # fmt: skip
        """`AnalogLinear.read_out` of every slice (transposed: of d * step), shift-added and scaled; recorded in
        `scope`. `full_scale` applies to each slice's digits (|digit weight| <= 1 normalised)."""
        width = self.out_features if transposed else self.in_features
        if transposed:
            x = x * self.weight_step.to(device=x.device, dtype=x.dtype)
        y = self._combine([array.read_out(x, scope, transposed=transposed, full_scale=full_scale)
                           for array in self.slices])  # fmt: skip
        if not transposed:
            y = y * self.weight_step.to(y)
        if scope is not None:
            n = _vectors(x, width)
            self._record_combine(scope, n, self.in_features if transposed else self.out_features, bias=False)
        return y

    def calibrate_adc(self, x: torch.Tensor, **options: object) -> int:
        """`AnalogLinear.calibrate_adc` of every slice on the same inputs; returns the conversions observed."""
        if options.get("transposed"):
            x = x * self.weight_step.to(device=x.device, dtype=x.dtype)
        return sum(array.calibrate_adc(x, **options) for array in self.slices)

    def record_reads(self, n_vectors: int, ledger: LedgerScope, *, transposed: bool = False,
                     inputs: torch.Tensor | None = None) -> None:  # fmt: skip
        """Record what `n_vectors` MVMs cost on every slice (`AnalogLinear.record_reads`, inputs as the DAC sees
        them forward; transposed without them) plus their combination, without running them."""
        for array in self.slices:
            array.record_reads(n_vectors, ledger, transposed=transposed, inputs=None if transposed else inputs)
        self._record_combine(ledger, n_vectors, self.in_features if transposed else self.out_features, bias=False)

    def _combine(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """sum_s 2^(bits_per_cell s) parts[s] (exact powers of two), high slices first."""
        shift = self.array_config.bits_per_cell
        total = None
        for s in reversed(range(len(parts))):
            term = parts[s] * float(2 ** (shift * s))
            total = term if total is None else total + term
        return total

    def _record_combine(self, ledger: LedgerScope, n_vectors: int, width: int, *, bias: bool) -> None:
        """The digital combination of `n_vectors` MVMs with `width` outputs: S - 1 shift-adds and one multiply
        (the row's step) per output, and the bias adds."""
        if n_vectors == 0:
            return
        outputs = float(n_vectors * width)
        ledger.record("shift_add", outputs * (len(self.slices) - 1), layer=self.name)
        ledger.record("digital_mult", outputs, layer=self.name)
        if bias:
            ledger.record("digital_add", outputs, layer=self.name)

    # --- module state -------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, object]:
        """The layer's device config and quantisation bound (its slices save their own state)."""
        return {"array_config": dataclasses.asdict(self.array_config), "weight_bound": self.weight_bound}

    def set_extra_state(self, state: dict[str, object]) -> None:
        where = f"SlicedAnalogLinear {self.name!r}"
        if not isinstance(state, dict) or set(state) != {"array_config", "weight_bound"}:
            raise ValueError(f"{where}: extra state must hold array_config and weight_bound")
        config = _device_config(state["array_config"], where)
        if config.weight_slices != len(self.slices):
            raise ValueError(f"{where}: the saved config gives {config.weight_slices} slices, this layer has "
                             f"{len(self.slices)}")  # fmt: skip
        bound = state["weight_bound"]
        if bound is not None and not (isinstance(bound, (int, float)) and not isinstance(bound, bool)
                                      and 0 < bound < np.inf):  # fmt: skip
            raise ValueError(f"{where}: weight_bound must be null or a finite number > 0, got {bound!r}")
        self.array_config = config
        self.weight_bound = None if bound is None else float(bound)

    def extra_repr(self) -> str:
        config = self.array_config
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"array_config={config.name}, weight_bits={config.weight_bits}, bits_per_cell={config.bits_per_cell}, "
                f"slices={len(self.slices)}, programmed={self.programmed}")  # fmt: skip


def _slice_name(name: str, s: int) -> str:
    return f"{name}.slices.{s}" if name else f"slices.{s}"


def _vectors(x: torch.Tensor, width: int) -> int:
    return x.numel() // width
