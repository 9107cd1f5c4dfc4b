"""Deploying a LoRA bank: programming its stacked A and B matrices into analog arrays once, calibrating the row-norm
read-out, and swapping `FusedLinear` layers into a model.

`program_bank` is the `deploy_bank` phase: one A_stack (N*r x d_in) and one B_stack (d_out x N*r) array per adapted
layer, written once with the device's programming model. `attach_fusion` then builds the fused layers with their
coefficient Parameters (per layer, per block or global) and DoRA magnitudes; nothing it does writes a cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crossbar import AnalogLinear, DeviceConfig, ProgramReport, adc_calibration, derive_seed, record_all_to
from energy import LedgerScope
from fusion.bank import LoRABank
from fusion.fused import NORM_STORAGES, READOUT_PARTS, FusedCalibration, FusedLinear, calibrate
from fusion.lora import is_linear, set_module
from fusion.params import CoefficientSharing, coefficient_groups
from fusion.reference import FusionForm, check_form

__all__ = [
    "BankArrays",
    "FusionLayers",
    "ProgrammedBank",
    "attach_fusion",
    "bank_arrays",
    "calibrate_deployed_adc",
    "calibrate_norms",
    "detach_fusion",
    "empty_programmed_bank",
    "program_bank",
    "readout_state",
    "set_readout_state",
]


@dataclass
class BankArrays:
    """One layer's bank on hardware: the A_stack and B_stack arrays and their calibration read-out."""

    a: nn.Module
    b: nn.Module
    calibration: FusedCalibration | None


class ProgrammedBank:
    """A `LoRABank` as it sits in analog arrays (or, with no device, in frozen digital reference layers)."""

    def __init__(self, bank: LoRABank, layers: dict[str, BankArrays], report: object = None) -> None:
        self.bank = bank
        self.layers = layers
        self.report = report
        """Sum of the arrays' programming reports (crossbar `ProgramReport`), None for a digital bank."""

    @property
    def rank(self) -> int:
        return self.bank.rank

    @property
    def alpha(self) -> float:
        return self.bank.alpha

    @property
    def n_entries(self) -> int:
        return self.bank.n_entries

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    def __repr__(self) -> str:
        return f"ProgrammedBank({self.bank!r})"


def base_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"model has no layer {name!r} that the bank adapts") from None
    while not is_linear(module) and hasattr(module, "base"):
        module = module.base
    if not is_linear(module):
        raise ValueError(f"model layer {name!r} is a {type(module).__name__}, not a linear layer")
    return module


def _digital_array(weight: torch.Tensor, name: str) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.weight.requires_grad_(False)
    layer.name = name
    return layer


def program_bank(
    model: nn.Module,
    bank: LoRABank,
    array_config: DeviceConfig | None,
    ledger_scope: LedgerScope | None = None,
    *,
    seed: int = 0,
    calibration_scope: LedgerScope | None | str = "auto",
    calibrate_norms: bool = True,
) -> ProgrammedBank:
    """Write `bank` into two analog arrays per adapted layer of `model`, once, and read out the norm calibration.

    `array_config` is a crossbar `DeviceConfig` (None keeps the bank in frozen digital layers: an exact reference with
    nothing recorded for the arrays). Programming is recorded in `ledger_scope` (normally phase `deploy_bank`), the
    calibration read-out in `calibration_scope`: by default the same ledger, task and method under phase
    `calibration`. Each array gets its own seed derived from `seed` and the layer name. `model` is not modified.
    """
    if bank.n_entries == 0:
        raise ValueError("cannot program an empty bank")
    if calibration_scope == "auto":
        calibration_scope = None
        if ledger_scope is not None:
            calibration_scope = LedgerScope(
                ledger_scope.ledger, phase="calibration", task=ledger_scope.task, method=ledger_scope.method
            )
    layers: dict[str, BankArrays] = {}
    report = None
    for name in bank.layer_names:
        base = base_layer(model, name)
        shape = next(s for s in bank.layer_shapes() if s.name == name)
        if (base.in_features, base.out_features) != (shape.d_in, shape.d_out):
            raise ValueError(
                f"bank layer {name!r} is {shape.d_out}x{shape.d_in}, "
                f"the model's is {base.out_features}x{base.in_features}"
            )
        a_stack, b_stack = bank.stacked(name)
        if array_config is None:
            array_a, array_b = _digital_array(a_stack, f"{name}.bank_A"), _digital_array(b_stack, f"{name}.bank_B")
        else:
            array_a = AnalogLinear.from_weight(
                a_stack, None, array_config, seed=derive_seed(seed, "bank_A", name), name=f"{name}.bank_A"
            )
            array_b = AnalogLinear.from_weight(
                b_stack, None, array_config, seed=derive_seed(seed, "bank_B", name), name=f"{name}.bank_B"
            )
            for array in (array_a, array_b):
                programmed = array.program(ledger_scope)
                report = programmed if report is None else report + programmed
        calibration = calibrate(base, array_a, array_b, calibration_scope, layer=name) if calibrate_norms else None
        layers[name] = BankArrays(array_a, array_b, calibration)
    return ProgrammedBank(bank, layers, report)


def calibrate_deployed_adc(
    model: nn.Module,
    bank: ProgrammedBank | None,
    x_calibration: torch.Tensor,
    scope: LedgerScope | None,
    *,
    percentile: float = 99.99,
    granularity: str = "column",
    forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
) -> int:
    """The ADC calibration phase of a deployment: run the calibration set through the programmed `model` once
    (`forward(model, x)`, default `model(x)`), calibrating every analog layer's column ADCs from its own inputs
    (`crossbar.adc_calibration`), and each bank layer's A_stack from the same input as its base layer and B_stack
    from A_stack's outputs (all entries weighted alike: the coefficients are not known yet, and the DAC normalises
    each vector, so only their ratios would matter). Returns the ADC conversions observed; the calibration MVMs
    are recorded in `scope`. Layers of a device with adc_range "fixed" are left alone."""
    arrays_of: dict[int, BankArrays] = {}
    if bank is not None:
        for name, arrays in bank.layers.items():
            arrays_of[id(base_layer(model, name))] = arrays

    def bank_arrays(name: str, layer: nn.Module, x: torch.Tensor) -> int:
        arrays = arrays_of.get(id(layer))
        if arrays is None or not isinstance(arrays.a, AnalogLinear):
            return 0
        conversions = 0
        if arrays.a.array_config.adc_range == "calibrated":
            conversions += arrays.a.calibrate_adc(x, percentile=percentile, granularity=granularity, scope=scope)
        with record_all_to(arrays.a, scope):
            u = arrays.a.mvm(x)
        if isinstance(arrays.b, AnalogLinear) and arrays.b.array_config.adc_range == "calibrated":
            conversions += arrays.b.calibrate_adc(u, percentile=percentile, granularity=granularity, scope=scope)
        return conversions

    run = forward or (lambda module, x: module(x))
    with adc_calibration(model, scope, percentile=percentile, granularity=granularity, on_input=bank_arrays) as rep:
        run(model, x_calibration)
    return rep.conversions


def calibrate_norms(
    model: nn.Module, bank: ProgrammedBank, scope: LedgerScope | None, *, reads: int = 0, storage: str = "readout"
) -> None:
    """Read out every bank layer's row-norm calibration (`fusion.fused.calibrate`: `reads` noisy read-outs averaged,
    0 = noise-free; `storage` = what SRAM keeps) from the programmed arrays, after the ADC calibration phase;
    recorded in `scope` (normally phase `calibration`)."""
    for name, arrays in bank.layers.items():
        arrays.calibration = calibrate(
            base_layer(model, name), arrays.a, arrays.b, scope, layer=name, reads=reads, storage=storage
        )


def empty_programmed_bank(bank: LoRABank, array_config: DeviceConfig | None, *, seed: int = 0) -> ProgrammedBank:
    """`bank` on unprogrammed arrays of the shapes, names and seeds `program_bank` gives them, with no calibration
    and no report: the structure a saved deployment's state (`bank_arrays`, `set_readout_state`) loads into, so that
    a saved bank is rebuilt from its `LoRABank` and config instead of being programmed again or unpickled."""
    if bank.n_entries == 0:
        raise ValueError("cannot program an empty bank")
    width = bank.n_entries * bank.rank
    layers: dict[str, BankArrays] = {}
    for shape in bank.layer_shapes():
        name = shape.name
        if array_config is None:
            array_a = _digital_array(torch.zeros(width, shape.d_in), f"{name}.bank_A")
            array_b = _digital_array(torch.zeros(shape.d_out, width), f"{name}.bank_B")
        else:
            array_a = AnalogLinear(shape.d_in, width, array_config, bias=False,
                                   seed=derive_seed(seed, "bank_A", name), name=f"{name}.bank_A")  # fmt: skip
            array_b = AnalogLinear(width, shape.d_out, array_config, bias=False,
                                   seed=derive_seed(seed, "bank_B", name), name=f"{name}.bank_B")  # fmt: skip
        layers[name] = BankArrays(array_a, array_b, None)
    return ProgrammedBank(bank, layers, None)


def bank_arrays(programmed: ProgrammedBank) -> nn.ModuleList:
    """Every layer's A_stack and B_stack array as one module (`<i>.a`, `<i>.b`, layers in `layer_names` order):
    its state_dict is the state of all the bank's arrays."""
    return nn.ModuleList(nn.ModuleDict({"a": arrays.a, "b": arrays.b}) for arrays in programmed.layers.values())


def readout_state(programmed: ProgrammedBank) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What the arrays' state does not hold, as tensors and JSON-safe values (`set_readout_state` reads them back):
    each layer's calibration read-out (tensors `<layer>/<part>`; its reads, storage and parts) and the programming
    report."""
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any] | None] = {}
    for name, arrays in programmed.layers.items():
        calibration = arrays.calibration
        if calibration is None:
            layers[name] = None
            continue
        parts = calibration.parts()
        tensors.update({f"{name}/{part}": tensor for part, tensor in parts.items()})
        layers[name] = {"reads": calibration.reads, "storage": calibration.storage, "parts": list(parts)}
    report = None if programmed.report is None else dataclasses.asdict(programmed.report)
    return tensors, {"layers": layers, "report": report}


def set_readout_state(
    programmed: ProgrammedBank, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]
) -> ProgrammedBank:
    """Install what `readout_state` saved into `programmed` (in place, e.g. an `empty_programmed_bank`); returns it.
    Raises ValueError naming the first entry that does not fit the bank."""
    layers = state.get("layers") if isinstance(state, Mapping) else None
    if not isinstance(layers, dict) or list(layers) != programmed.layer_names:
        raise ValueError(f"read-out state: layers must be {programmed.layer_names}, got {_keys(layers)}")
    width = programmed.n_entries * programmed.rank
    used: set[str] = set()
    for name, entry in layers.items():
        if entry is None:
            programmed.layers[name].calibration = None
            continue
        d_out = programmed.layers[name].b.out_features
        shapes = {"w0_sq": (d_out,), "cross": (d_out, width), "gram": (width, width), "b_read": (d_out, width)}
        parts = entry.get("parts") if isinstance(entry, dict) else None
        if not isinstance(parts, list) or not set(parts) <= set(READOUT_PARTS):
            raise ValueError(
                f"read-out state: layers.{name}.parts must be a list of {list(READOUT_PARTS)}, got {parts!r}"
            )
        values: dict[str, torch.Tensor | None] = dict.fromkeys(READOUT_PARTS)
        for part in parts:
            tensor = tensors.get(f"{name}/{part}")
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shapes[part]:
                got = None if tensor is None else tuple(getattr(tensor, "shape", ()))
                raise ValueError(f"read-out tensor {name}/{part}: expected shape {shapes[part]}, got {got}")
            values[part] = tensor
            used.add(f"{name}/{part}")
        reads, storage = entry.get("reads"), entry.get("storage")
        if isinstance(reads, bool) or not isinstance(reads, int) or reads < 0 or storage not in NORM_STORAGES:
            raise ValueError(f"read-out state: layers.{name}: reads {reads!r} / storage {storage!r} out of range")
        programmed.layers[name].calibration = FusedCalibration(**values, reads=reads, storage=storage)
    extra = sorted(set(tensors) - used)
    if extra:
        raise ValueError(f"read-out state: {len(extra)} tensor(s) no layer names, e.g. {extra[0]!r}")
    programmed.report = _report(state.get("report"))
    return programmed


def _report(value: object) -> ProgramReport | None:
    names = [f.name for f in dataclasses.fields(ProgramReport)]
    if value is None:
        return None
    if not isinstance(value, dict) or sorted(value) != sorted(names) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
    ):  # fmt: skip
        raise ValueError(f"read-out state: report must be null or numbers for {names}, got {value!r}"[:300])
    return ProgramReport(**value)


def _keys(value: object) -> object:
    return list(value) if isinstance(value, dict) else type(value).__name__


@dataclass
class FusionLayers:
    """The fused layers swapped into a model and their coefficient Parameters (one per sharing group)."""

    layers: dict[str, FusedLinear]
    coefficients: dict[str, nn.Parameter]
    groups: dict[str, str]
    """Layer name -> coefficient group."""

    def magnitudes(self) -> list[nn.Parameter]:
        return [layer.magnitude for layer in self.layers.values() if layer.magnitude is not None]


def attach_fusion(
    model: nn.Module,
    bank: ProgrammedBank,
    *,
    form: FusionForm = "lorahub",
    sharing: CoefficientSharing = "layer",
    block_of: Callable[[str], str] | None = None,
    coefficient_init: str | torch.Tensor = "xavier",
    use_magnitude: bool = True,
    seed: int = 0,
    scope: LedgerScope | None = None,
) -> FusionLayers:
    """Replace each bank layer of `model` (in place) by a `FusedLinear` on the bank's arrays.

    Coefficients: one (N,) Parameter per group of `sharing`. `coefficient_init` is `"xavier"` (LoRAFusion: a
    (N, n_groups) matrix drawn jointly with `xavier_uniform_` from a generator seeded with `seed`, column g going to
    group g), `"zeros"` (LoraHub's start) or an (N, n_groups) tensor. Magnitudes start at n(c) so every layer starts
    equal to W0 + dW(c); that first norm computation is recorded in `scope`.
    """
    check_form(form)
    if use_magnitude and any(arrays.calibration is None for arrays in bank.layers.values()):
        raise ValueError("the DoRA magnitude needs the calibration read-out: program_bank(..., calibrate_norms=True)")
    groups = coefficient_groups(bank.layer_names, sharing, block_of)
    group_names = list(dict.fromkeys(groups.values()))
    n = bank.n_entries
    if isinstance(coefficient_init, torch.Tensor):
        init = coefficient_init.detach().to(torch.float32)
        if init.shape != (n, len(group_names)):
            raise ValueError(f"coefficient_init must have shape ({n}, {len(group_names)}), got {tuple(init.shape)}")
    elif coefficient_init == "xavier":
        init = torch.empty(n, len(group_names))
        # LoRAFusion: torch.nn.init.xavier_uniform_ on (lora_num, num_blocks): U(+-sqrt(6 / (N + n_groups))).
        nn.init.xavier_uniform_(init, generator=torch.Generator().manual_seed(seed))
    elif coefficient_init == "zeros":
        init = torch.zeros(n, len(group_names))
    else:
        raise ValueError(f"coefficient_init must be 'xavier', 'zeros' or a tensor, got {coefficient_init!r}")
    coefficients = {g: nn.Parameter(init[:, j].clone()) for j, g in enumerate(group_names)}
    layers: dict[str, FusedLinear] = {}
    for name, arrays in bank.layers.items():
        base = base_layer(model, name)
        fused = FusedLinear(
            base,
            arrays.a,
            arrays.b,
            n_entries=n,
            rank=bank.rank,
            alpha=bank.alpha,
            coefficients=coefficients[groups[name]],
            calibration=arrays.calibration,
            form=form,
            use_magnitude=use_magnitude,
            name=name,
        )
        if use_magnitude:
            fused.reset_magnitude(scope)
        set_module(model, name, fused)
        layers[name] = fused
    return FusionLayers(layers, coefficients, groups)


def detach_fusion(model: nn.Module) -> nn.Module:
    """Put the base layers back in place of every `FusedLinear` (in place); returns `model`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, FusedLinear):
            set_module(model, name, module.base)
    return model
