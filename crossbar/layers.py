"""PyTorch layers on simulated crossbars: `AnalogLinear` and the model-level helpers around it.

`AnalogLinear` is thin: it is an array (`crossbar.array.AnalogArray`: state, programming, drift, faults, random
streams) plus a digital bias, picks an MVM engine for the arrays' device (`MVM_ENGINES`: `crossbar.engine_numba`,
`crossbar.engine_torch`), defines forward and backward, and records its MVMs in the ledger (`crossbar.pricing`).
Programming is explicit (`program`, `reprogram`) so its pulses land in the ledger scope the caller names. The analog
weights never get gradients; the input does, through a straight-through backward whose transposed MVM uses the
programmed weights (see `AnalogLinear.backward_mode`).

Model level: `convert_to_analog` swaps `nn.Linear` modules by qualified name (fnmatch patterns), `program` and
`drift` act on every analog layer, `record_all_to` points every recording module of a model (analog arrays, and the
digital modules of `fusion` and `scenarios` that hold a `ledger`) at one ledger scope.

The layer's device config is `array_config`; `device`, as everywhere in torch, is where its tensors live.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from crossbar.array import STATE_BUFFERS, AnalogArray, check_weight, copy_bias
from crossbar.device import DeviceConfig
from crossbar.engine import MvmEngine
from crossbar.engine_numba import NumbaEngine, adc_inputs
from crossbar.engine_torch import TorchEngine
from crossbar.mvm import MvmSettings
from crossbar.periphery import check_adc_calibration, pooled_ranges
from crossbar.pricing import MvmTally, close_tally, open_tally, record_tallies
from crossbar.programming import ProgramReport
from crossbar.protocols import Recording
from crossbar.rng import derive_seed
from energy import LedgerScope

__all__ = [
    "MVM_ENGINES",
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

MVM_ENGINES: dict[str, type[MvmEngine]] = {NumbaEngine.kind: NumbaEngine, TorchEngine.kind: TorchEngine}
"""The MVM engines by the name `AnalogLinear.mvm_backend` uses (a new backend: a `crossbar.engine.MvmEngine`
subclass in its own module, registered here)."""


class AnalogLinear(AnalogArray):
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

    Module state: the array's (`crossbar.array.AnalogArray`: buffers and extra state) plus the bias, so
    `.to(device)` moves everything and loading a state_dict continues exactly where the saved layer was.
    """

    mvm_backend: MvmBackend = "auto"
    """Which engine computes the MVMs: "auto" runs the numba kernels when the arrays are on the CPU and the
    pure-torch engine (`crossbar.engine_torch`, same numerics) on the arrays' own device otherwise; "torch" forces
    the torch engine (also on the CPU); "numba" forces the kernels (arrays off the CPU are copied there once per
    generation). Programming, drift and faults always run as numba kernels on the CPU."""

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
        super().__init__(in_features, out_features, array_config, seed=seed, name=name, weight_bound=weight_bound)
        if backward_mode not in ("exact", "analog"):
            raise ValueError(f"backward_mode must be 'exact' or 'analog', got {backward_mode!r}")
        self.backward_mode: BackwardMode = backward_mode
        """"exact" (default): the input gradient is the noise-free, unquantised transposed MVM of the programmed
        weights, grad_x = grad_y @ W_programmed (straight-through through DAC, ADC and read noise). "analog": the
        transposed MVM runs on the array with the device's DAC, ADC and read noise (`mvm_transposed`). Either way
        the ledger, when set, records it as an analog transposed MVM."""
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.ledger: LedgerScope | None = None
        self._before_mvm = None
        """Set by `crossbar.adc_calibration` while a calibration pass runs: called with (layer, x) before the MVM."""

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
        weight = check_weight(weight, None, "weight")
        layer = cls(
            weight.shape[1], weight.shape[0], array_config, bias=bias is not None, seed=seed, name=name,
            backward_mode=backward_mode, weight_bound=weight_bound,
        )  # fmt: skip
        layer.target_weight = weight
        if bias is not None:
            copy_bias(bias, layer.bias)
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
        self.check_ready()
        d2 = _flatten(d, self.out_features, "d").detach()
        y = self.engine().mvm(self, d2, transposed=True)
        self._record_read(self.ledger, d2, transposed=True)
        return _shaped_like(y, d)

    def engine(self, backend: str | None = None) -> MvmEngine:
        """The MVM engine of `backend` (default: the one `mvm_backend` picks for the arrays' device, kept per
        generation), one per layer and backend, made at first use (`_engine_of`)."""
        if backend is None:
            kept = self.__dict__.get("_engine")
            if kept is not None and kept[0] == self.generation:
                return kept[1]
        return _engine_of(self, backend)

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
        state = self.cpu_state()
        x2 = self._cpu_inputs(x, transposed)
        if x2.shape[0] == 0:
            raise ValueError(f"AnalogLinear {self.name!r}: the calibration set is empty")
        config = self.array_config
        values = adc_inputs(x2, state, self.out_scale.cpu(), MvmSettings.from_device(config), transposed=transposed,
                            tile_cols=config.tile_cols)  # fmt: skip
        tile = config.tile_rows if transposed else config.tile_cols
        ranges = pooled_ranges(values, percentile, granularity, tile, config.adc_full_scale)
        setattr(self, "adc_ranges_transposed" if transposed else "adc_ranges", ranges)
        self._record_read(scope, x2, transposed)
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
        ADC on the numba engine; recorded in `scope` (not in the layer's own ledger). `full_scale` sets every
        column's ADC range for this read (e.g. 1.0 for one-hot probe inputs, whose partial sums are single weights,
        |w| <= 1 normalised); None uses the layer's ranges (calibrated or fixed)."""
        self.check_ready()
        x2 = self._cpu_inputs(x, transposed)
        settings = None if full_scale is None else MvmSettings.from_device(self.array_config, adc_full_scale=full_scale)
        y = self.engine("numba").mvm(self, x2, transposed=transposed, settings=settings)
        self._record_read(scope, x2, transposed)
        return y

    def _cpu_inputs(self, x: torch.Tensor, transposed: bool) -> torch.Tensor:
        """Read-out or calibration inputs as a (B, width) float32 CPU tensor (transposed: width = out_features)."""
        width = self.out_features if transposed else self.in_features
        return _flatten(x.detach(), width, "d" if transposed else "x").to(device="cpu", dtype=torch.float32)

    def _record_read(self, scope: LedgerScope | None, x2: torch.Tensor, transposed: bool) -> None:
        """Record the read-outs of x2 in `scope` with the inputs the DAC sees (transposed: x2 * out_scale)."""
        if scope is not None:
            scale = self.out_scale.to(device=x2.device, dtype=torch.float32)
            inputs = x2.to(torch.float32) * scale[None, :] if transposed else x2
            self._record_mvms(scope, x2.shape[0], inputs.detach(), transposed=transposed, bias=False)

    def _run(self, x: torch.Tensor, *, with_bias: bool) -> torch.Tensor:
        x2 = _flatten(x, self.in_features, "x")
        self.check_ready()
        if self._before_mvm is not None:
            self._before_mvm(self, x2)
        bias = self.bias if with_bias else None
        engine = self.engine()
        tally = self._tally(self.ledger, transposed=False, bias=bias is not None)
        bias_grad = bias is not None and bias.requires_grad
        if torch.is_grad_enabled() and (x.requires_grad or bias_grad):
            y = _apply_mvm(x2, self, engine, tally, None if bias_grad else bias)  # a frozen bias: in the kernel
            if bias_grad:
                y = y + bias
        else:
            y = engine.forward(self, x2.detach(), bias=bias, tally=tally)
        close_tally(self.__dict__.get("_tallies"), tally, self.name)
        return _shaped_like(y, x)

    # --- ledger ----------------------------------------------------------------------------------------------
    def _tally(self, ledger: LedgerScope | None, *, transposed: bool, bias: bool) -> MvmTally | None:
        """Where the next MVM of this direction adds its activity for `ledger` (`crossbar.pricing.open_tally`,
        priced by the engine's kept `MvmPricing`); None without a ledger. `close_tally` records it after the MVM."""
        if ledger is None:
            return None
        engine = self.engine()
        pricing = engine.pricing(self, ledger.costs, transposed=transposed, bias=bias)
        tallies = self.__dict__.get("_tallies")
        return open_tally(tallies, (transposed, bias), ledger, pricing, engine.conductance(self), self.name)

    def record_reads(
        self, n_vectors: int, ledger: LedgerScope, *, transposed: bool = False, inputs: torch.Tensor | None = None
    ) -> None:
        """Record what `n_vectors` MVMs (or transposed MVMs) on this array cost, without running them: for
        read-outs whose values are taken noise-free (calibration), so that recording never changes the layer's
        random streams or its ADC calibration. `inputs` as the DAC sees them prices the cells actually conducting;
        without them every line counts as driven at full scale (`crossbar.pricing.record_mvm`)."""
        self._record_mvms(ledger, n_vectors, inputs, transposed=transposed, bias=False)

    def _record_mvms(
        self, ledger: LedgerScope, n_vectors: int, inputs: torch.Tensor | None, *, transposed: bool, bias: bool
    ) -> None:
        """Record `n_vectors` MVMs in `ledger`, or add them up while deferred recording is on."""
        tally = self._tally(ledger, transposed=transposed, bias=bias)
        tally.add(n_vectors, inputs)
        close_tally(self.__dict__.get("_tallies"), tally, self.name)

    def defer_mvm_records(self, defer: bool) -> None:
        """Start (True) adding MVMs up per direction instead of recording each, or stop (False) and record what was
        added up. Use `crossbar.deferred_mvm_records(model)`, which stops even when its block raises."""
        record_tallies(self.__dict__.get("_tallies"), self.name)
        self.__dict__["_tallies"] = {} if defer else None

    def extra_repr(self) -> str:
        n_row_tiles = -(-self.in_features // self.array_config.tile_rows)
        n_col_tiles = -(-self.out_features // self.array_config.tile_cols)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"array_config={self.array_config.name}, tiles={n_row_tiles}x{n_col_tiles} of "
            f"{self.array_config.tile_rows}x{self.array_config.tile_cols}, programmed={self.programmed}"
        )


class _AnalogMvmFunction(torch.autograd.Function):
    """Analog forward; backward = transposed MVM of the programmed weights (straight-through through the DAC,
    ADC and read noise). The layer's weights are not tensors of the graph, so they never get gradients."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, layer: AnalogLinear, engine: MvmEngine, tally: MvmTally | None,  # noqa: ANN001
                bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        ctx.layer = layer
        ctx.input_dtype = x2.dtype
        ctx.input_device = x2.device
        return engine.forward(layer, x2.detach(), bias=bias, tally=tally)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        layer: AnalogLinear = ctx.layer
        layer.check_ready()
        grad2 = grad.detach()
        if grad2.dtype is not torch.float32:
            grad2 = grad2.to(torch.float32)
        grad2 = grad2.contiguous()
        engine = layer.engine()
        if layer.backward_mode == "analog":
            grad_x = engine.mvm(layer, grad2, transposed=True)
            layer._record_read(layer.ledger, grad2, transposed=True)
        else:
            tally = layer._tally(layer.ledger, transposed=True, bias=False)
            grad_x = engine.backward_exact(layer, grad2, tally)
            close_tally(layer.__dict__.get("_tallies"), tally, layer.name)
        if grad_x.dtype is not ctx.input_dtype or grad_x.device != ctx.input_device:
            grad_x = grad_x.to(device=ctx.input_device, dtype=ctx.input_dtype)
        return grad_x, None, None, None, None


try:  # `Function.apply` minus its Python wrapper (a third of a small layer's forward glue): see `_apply_mvm`
    from torch._C._functorch import unwrap_if_dead as _unwrap_if_dead

    _FUNCTION_APPLY = super(torch.autograd.Function, _AnalogMvmFunction).apply
except (ImportError, AttributeError):  # another torch: the public path
    _FUNCTION_APPLY = None


def _apply_mvm(x2: torch.Tensor, layer: AnalogLinear, engine: MvmEngine, tally: MvmTally | None,
               bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """`_AnalogMvmFunction.apply(...)`. Without functorch transforms active, torch's `Function.apply` binds
    default arguments (only with a `setup_context`, which this function has not), unwraps dead functorch wrappers
    in its arguments (done here for the one tensor that can hold one) and calls the C++ apply: called here directly,
    which saves a pytree pass over the arguments on every training MVM."""
    if _FUNCTION_APPLY is None or torch._C._are_functorch_transforms_active():
        return _AnalogMvmFunction.apply(x2, layer, engine, tally, bias)
    return _FUNCTION_APPLY(_unwrap_if_dead(x2), layer, engine, tally, bias)


def _engine_of(layer: AnalogLinear, backend: str | None) -> MvmEngine:
    """`layer.engine(backend)` made or looked up; the layer's own (backend None) is kept with its generation (a move
    or a new `mvm_backend` bumps it). Neither is copied with the layer (`AnalogArray.__getstate__`)."""
    name = layer.mvm_backend if backend is None else backend
    if name == "auto":
        g = layer._buffers["g_diff_us"]
        name = "numba" if g is None or g.device.type == "cpu" else "torch"
    engines = layer.__dict__.setdefault("_engines", {})
    engine = engines.get(name) or engines.setdefault(name, MVM_ENGINES[name]())
    if backend is None:
        layer.__dict__["_engine"] = (layer.generation, engine)
    return engine


def _shaped_like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y (B, width) as x's leading dims, dtype and device (no copy where they already agree)."""
    if x.dim() != 2:
        y = y.reshape(*x.shape[:-1], y.shape[-1])
    if y.dtype is not x.dtype or y.device != x.device:
        y = y.to(device=x.device, dtype=x.dtype)
    return y


def _flatten(x: torch.Tensor, width: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != width:
        raise ValueError(f"{name} must have last dimension {width}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x if x.dim() == 2 else x.reshape(-1, width)


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
