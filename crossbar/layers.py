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
import copy
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from crossbar.device import DeviceConfig
from crossbar.mapping import map_weights, state_weights
from crossbar.mvm import (
    MvmSettings,
    analog_mvm,
    analog_mvm_transposed,
    conductance_sums,
    partial_sum_abs_max,
    record_mvm,
)
from crossbar.noise import apply_drift, fabricate_faults
from crossbar.presets import device_preset
from crossbar.programming import ProgramReport, program_state
from crossbar.protocols import Recording
from crossbar.rng import derive_seed
from crossbar.scheme import ConductanceSums
from crossbar.selection import name_matcher
from crossbar.state import ArrayState
from energy import LedgerScope

__all__ = [
    "AnalogLinear",
    "analog_layers",
    "convert_to_analog",
    "drift",
    "layer_seed",
    "program",
    "record_all_to",
]

BackwardMode = Literal["exact", "analog"]

_READ_NOISE_STREAM = 0x52454144  # "READ": separates the read-noise generator from other uses of the layer seed


class AnalogLinear(nn.Module):
    """A linear layer whose weight lives on a simulated ReRAM crossbar (differential pairs, tiles, DAC/ADC).

    Construct with `from_linear` / `from_weight` (which hold the float32 target until `program()`), program
    explicitly, then use like `nn.Linear`. Works in train and eval mode (the same analog physics in both) and under
    `torch.no_grad` (a fast path without autograd). Read noise is drawn fresh for every input vector of every
    forward from a generator seeded with `seed`, so a layer's outputs are reproducible from its seed.

    When `adc_range` is "calibrated", the ADC full scale is set by `calibrate_adc(x)`, or from the first batch
    the layer sees if it was not called; the transposed direction calibrates on its own first batch.
    """

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
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_buffer("out_scale", None)
        self.state: ArrayState | None = None
        self.ledger: LedgerScope | None = None
        self.adc_full_scale: float | None = array_config.adc_full_scale if array_config.adc_range == "fixed" else None
        """Forward ADC range (normalised units); None until calibrated when adc_range is "calibrated"."""
        self.adc_full_scale_transposed: float | None = self.adc_full_scale
        self._target: torch.Tensor | None = None
        self._noise_rng = np.random.default_rng(np.random.SeedSequence([seed, _READ_NOISE_STREAM]))
        self._program_calls = 0
        self._drift_calls = 0
        self._drift_seed = seed
        self._t_s = 0.0
        self._g_sums: ConductanceSums | None = None
        self._settings_cache: tuple[tuple[DeviceConfig, float], MvmSettings] | None = None

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
    ) -> AnalogLinear:
        """An unprogrammed layer holding `weight` (out, in) as its programming target and `bias` (frozen)."""
        weight = _check_weight(weight, None, "weight")
        layer = cls(
            weight.shape[1], weight.shape[0], array_config, bias=bias is not None, seed=seed, name=name,
            backward_mode=backward_mode,
        )  # fmt: skip
        layer._target = weight
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
        return self.state is not None

    def program(self, ledger: LedgerScope | None = None) -> ProgramReport:
        """First programming of the held target: fabricate the array (stuck-at faults from the seed), write-verify
        every cell, record the pulses in `ledger`, then drop the float32 target (state stays at 12 bytes/weight)."""
        if self.state is not None:
            raise RuntimeError(f"AnalogLinear {self.name!r} is already programmed; use reprogram(weight) to rewrite it")
        if self._target is None:
            raise RuntimeError(f"AnalogLinear {self.name!r} holds no target weight; use reprogram(weight)")
        report = self._program_new_array(self._target, ledger)
        self._target = None
        return report

    def reprogram(
        self,
        weight: torch.Tensor,
        ledger: LedgerScope | None = None,
        *,
        previous_weight: torch.Tensor | None = None,
    ) -> ProgramReport:
        """Write a new target `weight` (out, in). With `previous_weight`, only weights whose quantised target
        changed are touched (cells of other weights cost nothing); otherwise every weight is verified first and
        written if out of tolerance. On an unprogrammed layer this is the first programming.

        The drift clock restarts at 0 (t counts from the latest programming for the whole array: a simplification
        for partially rewritten arrays)."""
        weight = _check_weight(weight, (self.out_features, self.in_features), "weight")
        if self.state is None:
            report = self._program_new_array(weight, ledger)
            self._target = None
            return report
        targets = map_weights(weight.numpy(), self.array_config, self.state)
        changed = None
        if previous_weight is not None:
            previous = _check_weight(previous_weight, (self.out_features, self.in_features), "previous_weight")
            before = map_weights(previous.numpy(), self.array_config, self.state)
            changed = (targets.pos_us != before.pos_us) | (targets.neg_us != before.neg_us)
        report = program_state(
            self.state, targets, self.array_config, seed=self.seed, stream=self._next_program_stream(), ledger=ledger,
            layer=self.name, changed=changed,
        )  # fmt: skip
        self.out_scale = torch.from_numpy(targets.out_scale.copy())
        self._after_write()
        return report

    def _program_new_array(self, weight: torch.Tensor, ledger: LedgerScope | None) -> ProgramReport:
        state = ArrayState.fresh(self.in_features, self.out_features, self.array_config)
        fabricate_faults(state, self.array_config, seed=self.seed)
        targets = map_weights(weight.numpy(), self.array_config, state)
        report = program_state(
            state, targets, self.array_config, seed=self.seed, stream=self._next_program_stream(), ledger=ledger,
            layer=self.name,
        )  # fmt: skip
        self.state = state
        self.out_scale = torch.from_numpy(targets.out_scale.copy())
        self._after_write()
        return report

    def _next_program_stream(self) -> int:
        self._program_calls += 1
        return self._program_calls - 1

    def _after_write(self) -> None:
        self._t_s = 0.0
        self._g_sums = None

    def programmed_weight(self) -> torch.Tensor:
        """(out, in) float32: what the cells hold, as weights ((G+ - G-) * out_scale), noise-free."""
        state = self._require_state()
        return torch.from_numpy(state_weights(state, self._out_scale_np()))

    def drift_to(self, t_s: float) -> None:
        """Let the conductances relax until `t_s` seconds after the latest programming (t_s >= the current time)."""
        state = self._require_state()
        if isinstance(t_s, bool) or not isinstance(t_s, (int, float)) or not math.isfinite(t_s) or t_s < self._t_s:
            raise ValueError(f"t_s must be a finite number >= the layer's current time {self._t_s} s, got {t_s!r}")
        self._drift_calls += 1
        apply_drift(
            state, self.array_config, t_from_s=self._t_s, t_to_s=float(t_s), seed=self._drift_seed,
            stream=self._drift_calls - 1,
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
        return self._apply(x, with_bias=True)

    def mvm(self, x: torch.Tensor) -> torch.Tensor:
        """Analog MVM without bias, over any leading batch dims."""
        return self._apply(x, with_bias=False)

    def mvm_transposed(self, d: torch.Tensor) -> torch.Tensor:
        """d @ W on the array, (..., out) -> (..., in), with the device's DAC, ADC and read noise (see
        `crossbar.mvm`); no gradient. Recorded in the ledger when set."""
        state = self._require_state()
        d2 = _flatten(d, self.out_features, "d")
        y = self._transposed_analog(d2.detach(), state)
        return y.reshape(*d.shape[:-1], self.in_features).to(device=d.device, dtype=d.dtype)

    def calibrate_adc(self, x: torch.Tensor) -> None:
        """Set the forward ADC full scale to the largest |tile partial sum| of batch `x` (normalised units), for
        devices with adc_range="calibrated"."""
        if self.array_config.adc_range != "calibrated":
            raise ValueError(f"calibrate_adc needs device.adc_range='calibrated', got {self.array_config.adc_range!r}")
        state = self._require_state()
        self.adc_full_scale = self._calibrated(_flatten(x, self.in_features, "x"), state, transposed=False)

    def _apply(self, x: torch.Tensor, *, with_bias: bool) -> torch.Tensor:
        state = self._require_state()
        x2 = _flatten(x, self.in_features, "x")
        bias = self.bias if with_bias else None
        if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
            y = _AnalogMvmFunction.apply(x2, self)
            if bias is not None:
                y = y + bias
        else:
            y = self._forward_analog(x2.detach(), state, bias)
        if self.ledger is not None:
            record_mvm(
                self.ledger, layer=self.name, device=self.array_config, d_in=self.in_features,
                d_out=self.out_features, n_vectors=x2.shape[0], conductance=self._conductance_sums(state), inputs=x2,
                bias=bias is not None,
            )  # fmt: skip
        return y.reshape(*x.shape[:-1], self.out_features).to(device=x.device, dtype=x.dtype)

    def _forward_analog(self, x2: torch.Tensor, state: ArrayState, bias: torch.Tensor | None) -> torch.Tensor:
        if self.adc_full_scale is None:
            self.adc_full_scale = self._calibrated(x2, state, transposed=False)
        settings = self._settings(self.adc_full_scale)
        return analog_mvm(x2, state, self.out_scale, settings, key=self._next_key(), bias=bias)

    def _transposed_analog(self, d2: torch.Tensor, state: ArrayState, record: bool = True) -> torch.Tensor:
        if self.adc_full_scale_transposed is None:
            self.adc_full_scale_transposed = self._calibrated(d2, state, transposed=True)
        settings = self._settings(self.adc_full_scale_transposed)
        y = analog_mvm_transposed(
            d2, state, self.out_scale, settings, key=self._next_key(), tile_cols=self.array_config.tile_cols
        )
        if record:
            self._record_transposed(d2, state)
        return y

    def _transposed_exact(self, d2: torch.Tensor, state: ArrayState) -> torch.Tensor:
        """grad_y @ W_programmed without forming W: (d * out_scale) @ (G+ - G-)^T on a zero-copy view."""
        g = torch.from_numpy(state.g_diff_us).reshape(state.n_tiles * state.tile_rows, state.d_out)[: state.d_in]
        scaled = d2.to(torch.float32) * self.out_scale.to(torch.float32)[None, :]
        y = scaled @ g.T
        self._record_transposed(d2, state)
        return y

    def _record_transposed(self, d2: torch.Tensor, state: ArrayState) -> None:
        if self.ledger is not None:
            scaled = d2.detach().to(torch.float32) * self.out_scale.to(torch.float32)[None, :]  # what the DAC sees
            self.record_reads(d2.shape[0], self.ledger, transposed=True, inputs=scaled)

    def record_reads(
        self, n_vectors: int, ledger: LedgerScope, *, transposed: bool = False, inputs: torch.Tensor | None = None
    ) -> None:
        """Record what `n_vectors` MVMs (or transposed MVMs) on this array cost, without running them: for
        read-outs whose values are taken noise-free (calibration), so that recording never changes the layer's
        random streams or its ADC calibration. `inputs` as the DAC sees them prices the cells actually conducting;
        without them every line counts as driven at full scale (`crossbar.mvm.record_mvm`)."""
        record_mvm(
            ledger, layer=self.name, device=self.array_config, d_in=self.in_features, d_out=self.out_features,
            n_vectors=n_vectors, conductance=self._conductance_sums(self._require_state()), inputs=inputs,
            transposed=transposed,
        )  # fmt: skip

    def _settings(self, full_scale: float) -> MvmSettings:
        key = (self.array_config, full_scale)
        if self._settings_cache is None or self._settings_cache[0] != key:
            self._settings_cache = (key, MvmSettings.from_device(self.array_config, full_scale))
        return self._settings_cache[1]

    def _calibrated(self, x2: torch.Tensor, state: ArrayState, *, transposed: bool) -> float:
        settings = MvmSettings.from_device(self.array_config)
        peak = partial_sum_abs_max(
            x2, state, self.out_scale, settings, transposed=transposed, tile_cols=self.array_config.tile_cols
        )
        return peak if peak > 0 else self.array_config.adc_full_scale

    def reseed_noise(self, seed: int) -> None:
        """Restart the read-noise and drift streams from `seed` (e.g. independent draws per evaluation repeat)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self._noise_rng = np.random.default_rng(np.random.SeedSequence([seed, _READ_NOISE_STREAM]))
        self._drift_seed = seed

    def _next_key(self) -> int:
        """A fresh 64-bit read-noise key: the next raw output of the layer's seeded generator."""
        return int(self._noise_rng.bit_generator.random_raw())

    def _conductance_sums(self, state: ArrayState) -> ConductanceSums:
        if self._g_sums is None:
            self._g_sums = conductance_sums(state)
        return self._g_sums

    def _out_scale_np(self) -> np.ndarray:
        return self.out_scale.detach().to(torch.float32).contiguous().numpy()

    def _require_state(self) -> ArrayState:
        if self.state is None or self.out_scale is None:
            raise RuntimeError(
                f"AnalogLinear {self.name or '(unnamed)'!r} is not programmed: call its program() "
                "(or crossbar.program(model)) before running it"
            )
        return self.state

    def extra_repr(self) -> str:
        n_row_tiles = -(-self.in_features // self.array_config.tile_rows)
        n_col_tiles = -(-self.out_features // self.array_config.tile_cols)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"device={self.array_config.name}, tiles={n_row_tiles}x{n_col_tiles} of {self.array_config.tile_rows}x"
            f"{self.array_config.tile_cols}, programmed={self.programmed}"
        )


class _AnalogMvmFunction(torch.autograd.Function):
    """Analog forward; backward = transposed MVM of the programmed weights (straight-through through the DAC,
    ADC and read noise). The layer's weights are not tensors of the graph, so they never get gradients."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, layer: AnalogLinear) -> torch.Tensor:  # noqa: ANN001
        ctx.layer = layer
        ctx.input_dtype = x2.dtype
        ctx.input_device = x2.device
        return layer._forward_analog(x2.detach(), layer._require_state(), None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        layer: AnalogLinear = ctx.layer
        state = layer._require_state()
        grad2 = grad.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if layer.backward_mode == "analog":
            grad_x = layer._transposed_analog(grad2, state)
        else:
            grad_x = layer._transposed_exact(grad2, state)
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


def convert_to_analog(
    model: nn.Module,
    array_config: DeviceConfig | None = None,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    seed: int = 0,
    inplace: bool = False,
    backward_mode: BackwardMode = "exact",
) -> nn.Module:
    """Swap every `nn.Linear` whose qualified name matches `include` (fnmatch patterns; None = all) and none of
    `exclude` for an unprogrammed `AnalogLinear` with its own seed `layer_seed(seed, name)` and `name` set to the
    qualified name. Returns a converted copy (or `model` itself with `inplace`). Linear layers inside
    `nn.MultiheadAttention` are left digital: that module reads their weights directly instead of calling them.
    A model that is itself an `nn.Linear` is converted under the name "". Hugging Face GPT-2-style `Conv1D`
    layers (a linear layer storing its weight as (in, out)) are converted like `nn.Linear`, weight transposed."""
    selected = name_matcher(include, exclude)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)

    def analog(name: str, linear: nn.Module) -> AnalogLinear:
        if _is_hf_conv1d(linear):  # y = x W + b with W stored (in, out): the array holds W^T like nn.Linear's
            return AnalogLinear.from_weight(
                linear.weight.detach().T.contiguous(), linear.bias, array_config, seed=layer_seed(seed, name),
                name=name, backward_mode=backward_mode,
            )  # fmt: skip
        return AnalogLinear.from_linear(
            linear, array_config, seed=layer_seed(seed, name), name=name, backward_mode=backward_mode
        )

    if isinstance(model, nn.Linear) or _is_hf_conv1d(model):
        return analog("", model) if selected("") else model
    swaps: list[tuple[nn.Module, str, str, nn.Linear]] = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.MultiheadAttention):
            continue
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if (isinstance(child, nn.Linear) or _is_hf_conv1d(child)) and selected(name):
                swaps.append((parent, child_name, name, child))
    if include is not None and not swaps:
        raise ValueError(f"include patterns {list(include)} matched no nn.Linear (or Conv1D) module")
    for parent, child_name, name, child in swaps:
        setattr(parent, child_name, analog(name, child))
    return model


def _is_hf_conv1d(module: nn.Module) -> bool:
    """A Hugging Face `transformers.pytorch_utils.Conv1D` (GPT-2's linear layers), recognised by class name and
    module path so that transformers is never imported here (it is an optional dependency)."""
    return any(
        cls.__name__ == "Conv1D" and cls.__module__.split(".")[0] == "transformers" for cls in type(module).__mro__
    )


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
