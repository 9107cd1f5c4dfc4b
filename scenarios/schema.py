"""The scenario file schema (DESIGN section 6): pydantic models, and the loader that turns any problem into one line.

A scenario YAML has the top-level sections `name`, `seed`, `plugins`, `device`, `costs`, `model`, `tasks`, `bank`,
`methods`, `calibration`, `evaluate` and `outputs`. Each option is documented once, in its `Field(description=...)`,
with its unit. All models forbid unknown keys and use strict types (YAML already types its scalars: `4.0` is not an
integer and `"3"` is not a number). Cross-field rules (rank against layer widths, sources disjoint from targets, ...)
are checked by the models themselves, so `Scenario.model_validate` alone accepts only runnable scenarios.

Three sections come from registries rather than from this file (`scenarios.registered`): a `methods:` entry is
validated by the model derived from its method's config dataclass (`fusion.register_method`, `method_spec`), the
`model:` section by the one its model kind's settings derive (`scenarios.workload.register_workload`,
`model_spec`) and `tasks:` by the one its task family's settings derive (`scenarios.families`, `tasks_spec`); each
kind's and family's own rules live with it. `plugins:` files are imported first, so what they register is known
when the rest is validated.

Loading a file (bundled names, `--set` overrides, one-line errors) is `scenarios.loading.load_scenario`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SerializeAsAny, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator

from scenarios.errors import ScenarioError, did_you_mean
from scenarios.families import get_task_family
from scenarios.models import ADAPTABLE_LAYERS
from scenarios.names import NAME_RULE
from scenarios.plugins import load_plugins
from scenarios.registered import (
    MethodSpec,
    ModelSpec,
    TasksSpec,
    method_spec,
    model_spec,
    tasks_spec,
    validate_variants,
)
from scenarios.sections import KeyedError, Section, SectionError, check_name, check_unique

__all__ = [
    "ADAPTABLE_LAYERS",
    "BankSpec",
    "CalibrationSpec",
    "CostSpec",
    "DeviceSpec",
    "EvaluateSpec",
    "KeyedError",
    "LifetimeSpec",
    "MethodSpec",
    "ModelSpec",
    "OutputsSpec",
    "Scenario",
    "ScenarioError",
    "SectionError",
    "SweepSpec",
    "TasksSpec",
    "method_spec",
    "model_spec",
    "tasks_spec",
]

LayerName = Literal["q", "k", "v", "o", "fc1", "fc2", "all"]


def _check_overrides(preset: object, overrides: Mapping[str, Any], kind: str) -> None:
    """Apply overrides one by one, then together, to a preset that offers `.replace(**overrides)` and validates
    itself (CostTable, DeviceConfig), so a bad key or value is reported at its own path."""
    replace = preset.replace
    if dataclasses.is_dataclass(preset):
        known = [f.name for f in dataclasses.fields(preset) if f.name not in ("name", "sources")]
        for key, value in overrides.items():
            if key not in known:
                problem = f"unknown {kind} field, expected one of: {', '.join(known)}{did_you_mean(key, known)}"
                raise KeyedError(("overrides", key), value, "", problem=problem)
    for key, value in overrides.items():
        try:
            replace(**{key: value})
        except (TypeError, ValueError) as error:
            raise KeyedError(("overrides", key), value, f"a valid {kind} value ({error})") from None
    try:
        replace(**overrides)
    except (TypeError, ValueError) as error:
        raise KeyedError(("overrides",), dict(overrides), f"a consistent {kind} ({error})") from None


def _registry(info: ValidationInfo, key: str) -> Mapping[str, object]:
    """Preset registry from the validation context (tests pass their own), else the installed one."""
    context = info.context or {}
    if key in context:
        return context[key]
    if key == "cost_presets":
        from energy import COST_PRESETS

        return COST_PRESETS
    from crossbar.presets import DEVICE_PRESETS  # an import failure is an error, never a shorter preset list

    return DEVICE_PRESETS


def _check_preset(spec: DeviceSpec | CostSpec, info: ValidationInfo, key: str, kind: str) -> None:
    registry = _registry(info, key)
    if spec.preset not in registry:
        raise KeyedError(("preset",), spec.preset, f"one of the {kind} presets: {', '.join(registry)}")
    _check_overrides(registry[spec.preset], spec.overrides, kind)


def _check_scalars(overrides: dict[str, Any]) -> dict[str, Any]:
    """Override values must be YAML scalars (the configs are flat dataclasses of numbers, strings and flags)."""
    for key, value in overrides.items():
        if not isinstance(value, (bool, int, float, str, type(None))):
            raise KeyedError((key,), value, "a number, string, true/false or null")
    return overrides


class DeviceSpec(Section):
    """Which simulated ReRAM device and peripherals to use (`crossbar-sim presets` lists them)."""

    preset: str = Field("reram_wan2022", description="Device preset name from crossbar.presets.DEVICE_PRESETS.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Device config fields to change, e.g. {read_noise_frac: 0.02}; units are in the field names.",
    )

    _scalars = field_validator("overrides")(_check_scalars)

    @_model_validator(mode="after")
    def _known_preset(self, info: ValidationInfo) -> DeviceSpec:
        _check_preset(self, info, "device_presets", "device")
        return self


class CostSpec(Section):
    """Which energy/latency cost table prices the ledger's events (`crossbar-sim presets` lists them)."""

    preset: str = Field("isaac_horowitz", description="Cost preset name from energy.COST_PRESETS.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="CostTable fields to change, e.g. {write_pulse_pj: 3.0}; *_pj in pJ, *_ns in ns.",
    )

    _scalars = field_validator("overrides")(_check_scalars)

    @_model_validator(mode="after")
    def _known_preset(self, info: ValidationInfo) -> CostSpec:
        _check_preset(self, info, "cost_presets", "cost table")
        return self


class BankSpec(Section):
    """The LoRA bank: one LoRA per source task, trained digitally and programmed into crossbars once."""

    rank: int = Field(4, ge=1, description="LoRA rank r of every bank module.")
    alpha: float = Field(8.0, gt=0, description="LoRA scale numerator; the update is (alpha / rank) * B A.")
    target_modules: list[LayerName] = Field(
        default_factory=lambda: ["q", "v"],
        min_length=1,
        description="Block layers that get LoRA modules: any of q, k, v, o, fc1, fc2, or [all] for all six.",
    )
    epochs: int = Field(12, ge=1, description="Passes over each source task's training set per LoRA.")
    lr: float = Field(0.01, gt=0, description="Adam learning rate for LoRA training (constant: no schedule).")
    train_size: int = Field(800, ge=1, description="Training examples per source task (npz: at most this).")
    batch_size: int | None = Field(None, ge=1, description="Mini-batch size (examples); default model.batch_size.")
    hardware_aware: bool = Field(
        False,
        description="Train each LoRA through the base as programmed (same cells, ADC ranges, read noise) instead of "
        "the digital base; false: digital, as LoRAFusion's bank (scenarios/hardware_bank.py).",
    )

    @_model_validator(mode="after")
    def _modules(self) -> BankSpec:
        check_unique(self.target_modules, "target_modules")
        if "all" in self.target_modules and len(self.target_modules) > 1:
            raise KeyedError(("target_modules",), self.target_modules, "either [all] or a list of layer names")
        return self

    @property
    def modules(self) -> tuple[str, ...]:
        """The targeted layer names with `all` expanded, in block order."""
        chosen = set(ADAPTABLE_LAYERS if "all" in self.target_modules else self.target_modules)
        return tuple(name for name in ADAPTABLE_LAYERS if name in chosen)


class EvaluateSpec(Section):
    """How adapted models are evaluated on the target tasks' test sets."""

    drift_times_s: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [0.0],
        min_length=1,
        description="Times after programming (s) at which accuracy is measured under conductance drift; 0 = fresh.",
    )
    repeats: int = Field(1, ge=1, description="Independent noise draws (read noise, drift) per evaluation.")
    recalibrate_after_drift: bool = Field(
        False,
        description="Before evaluating at a drift time > 0, read the fused layers' norm calibration out again from "
        "the drifted arrays (reads only, recorded under phase `calibration`); false keeps the read-out taken at "
        "programming time.",
    )

    @_model_validator(mode="after")
    def _distinct(self) -> EvaluateSpec:
        check_unique(self.drift_times_s, "drift_times_s")
        return self


class LifetimeSpec(Section):
    """A long sequence of task switches on one device (the targets in rotation), with time passing between
    switches so drift acts: accuracy and cell wear over the device's life per method (`lifetime.csv`)."""

    switches: int = Field(2000, ge=1, description="Task switches over the device's life (the targets in rotation).")
    interval_s: float = Field(
        86400.0, gt=0, allow_inf_nan=False, description="Time between two switches (s); the arrays drift meanwhile."
    )
    simulate_exact: int = Field(
        20,
        ge=1,
        description="Switches simulated exactly (adaptation, writes, drift, evaluation); beyond them, wear is "
        "extrapolated per cell from the measured per-switch pulses and accuracy is not simulated (rows say which).",
    )
    points: int = Field(
        40, ge=2, description="Extrapolated rows written: switch counts log-spaced from simulate_exact to switches."
    )

    @_model_validator(mode="after")
    def _exact_within(self) -> LifetimeSpec:
        if self.simulate_exact > self.switches:
            raise KeyedError(("simulate_exact",), self.simulate_exact, f"an int <= switches ({self.switches})")
        return self


class CalibrationSpec(Section):
    """The calibration phase after programming (reads only, recorded under phase `calibration`): the column ADCs'
    ranges (when `device` has `adc_range: calibrated`) and fusion's row-norm read-out."""

    samples: int = Field(
        256,
        ge=1,
        description="Examples of the base task's TRAINING set (a seeded draw, never test data or an adaptation "
        "minibatch) in the calibration set that sets the ADC ranges; at most the training set. A base task with "
        "no training set (text families: zero-shot `wn_all`) draws from the source tasks' training pools.",
    )
    adc_percentile: float = Field(
        99.99,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Each ADC's full scale is this percentile (%) of the |partial sums| it converts over the "
        "calibration set (100 = the largest: no clipping on that set).",
    )
    adc_granularity: Literal["column", "tile", "layer"] = Field(
        "column",
        description="One ADC range per tile column (`column`), per physical array (`tile`) or per layer (`layer`).",
    )
    renew_adc_after_drift: bool = Field(
        False,
        description="Before evaluating at a drift time > 0, set the ADC ranges again from the calibration set on the "
        "drifted arrays (reads only, recorded under phase `calibration`).",
    )
    norm_reads: int = Field(
        0,
        ge=0,
        le=1024,
        description="Fusion's row-norm read-out (W0 A_stack^T, A_stack A_stack^T, B_stack, ||W0 row||^2) as the "
        "mean of this many noisy analog read-outs through the arrays' read noise and ADCs, each priced; 0 = the "
        "noise-free read-out (an idealisation, priced as one).",
    )
    norm_storage: Literal["readout", "no_b_copy", "on_demand"] = Field(
        "readout",
        description="What fusion keeps digitally for its row norms: `readout` stores the whole read-out; "
        "`no_b_copy` stores ||W0 row||^2, W0 A^T and A A^T and reads B_stack out again (norm_reads times) whenever "
        "the coefficients change; `on_demand` stores nothing and recomputes the norms from probe MVMs through the "
        "arrays whenever the coefficients change (see fusion.fused).",
    )


class OutputsSpec(Section):
    """What the run writes besides results.json, metrics.csv, ledger.csv and report.md."""

    plots: bool = Field(True, description="Draw the figures into the run directory.")
    formats: list[Literal["png", "svg"]] = Field(
        default_factory=lambda: ["png", "svg"], min_length=1, description="Image formats of each figure."
    )

    @_model_validator(mode="after")
    def _distinct(self) -> OutputsSpec:
        check_unique(self.formats, "formats")
        return self


class SweepSpec(Section):
    """Points of a sweep: every combination of the `grid` values, each combined with every row of the `zip` values.

    Keys are dotted key paths as for `--set` (e.g. `device.overrides.read_noise_frac`, `bank.rank`,
    `methods.fusion.epochs`); each point is the scenario with those values set, validated like the file itself.
    `seed` in `grid` sets the seeds of every point (`seeds`) rather than adding points: results then carry a mean
    and a 95 % confidence interval over seeds."""

    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Key path -> list of values; points are all combinations of the lists."
    )
    zip: dict[str, list[Any]] = Field(
        default_factory=dict, description="Key path -> list of values, all lists of one length: paired values."
    )

    @_model_validator(mode="after")
    def _shape(self) -> SweepSpec:
        for section in ("grid", "zip"):
            for key, values in getattr(self, section).items():
                if not values:
                    raise KeyedError((section, key), values, "a non-empty list of values")
                if key in ("name", "sweep", "seeds") or key.startswith(("sweep.", "name.")):
                    raise KeyedError((section, key), values, "", problem="this key cannot be swept")
        lengths = {key: len(values) for key, values in self.zip.items()}
        if len(set(lengths.values())) > 1:
            raise KeyedError(("zip",), lengths, "lists of one length (zip pairs the i-th values)")
        both = sorted(set(self.grid) & set(self.zip))
        if both:
            raise KeyedError(("zip", both[0]), self.zip[both[0]], "", problem="this key is also in sweep.grid")
        if "seed" in self.zip:
            raise KeyedError(("zip", "seed"), self.zip["seed"], "", problem="seeds are swept in sweep.grid only")
        return self

    @property
    def empty(self) -> bool:
        return not self.grid and not self.zip


class Scenario(Section):
    """A whole study: hardware, network, tasks, LoRA bank, methods compared, evaluation and outputs."""

    name: str = Field(
        description=f"Study name; names the run directory: {NAME_RULE}. Default: the file name.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random draw in the run (data, init, noise).")
    plugins: list[str] = Field(
        default_factory=list,
        description="Python files (paths relative to the scenario file) or importable module names, imported "
        "before the rest is validated: they may register methods (fusion.register_method) and task families "
        "(scenarios.families.register_task_family).",
    )
    seeds: int | list[Annotated[int, Field(ge=0, le=2**32 - 1)]] | None = Field(
        None,
        description="Seeds to repeat the whole study with (each redraws data split, base model, bank, programming "
        "and noise): null = [seed]; a count N = seed, seed+1, ..., seed+N-1; or a list.",
    )
    device: DeviceSpec = Field(default_factory=DeviceSpec, description="Simulated device and peripherals.")
    costs: CostSpec = Field(default_factory=CostSpec, description="Energy/latency cost table of the ledger.")
    model: SerializeAsAny[ModelSpec] = Field(
        default_factory=lambda: model_spec("transformer")(),  # type: ignore[misc]
        description="Base network: its kind and the kind's settings.",
    )
    tasks: SerializeAsAny[TasksSpec] = Field(description="Base, source and target tasks, and the family's settings.")
    bank: BankSpec = Field(default_factory=BankSpec, description="The LoRA bank (one module per source task).")
    methods: list[SerializeAsAny[MethodSpec]] = Field(
        min_length=1, description="Adaptation methods compared on each target task (any registered method)."
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec, description="The calibration phase after programming (ADC ranges, norms)."
    )
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec, description="Evaluation settings.")
    outputs: OutputsSpec = Field(default_factory=OutputsSpec, description="Figures and their formats.")
    lifetime: LifetimeSpec | None = Field(
        None, description="Lifetime study: a long rotation of task switches with drift in between; null = none."
    )
    sweep: SweepSpec | None = Field(None, description="Sweep over key paths (grid and zip); null = one point.")

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        check_name((), name)
        return name

    @_model_validator(mode="before")
    @classmethod
    def _registered(cls, data: object, info: ValidationInfo) -> object:
        """Import the plugins, then validate `model`, `tasks` and each method entry with the model their registered
        kind, family and method derive."""
        if not isinstance(data, dict):
            return data
        plugins = data.get("plugins")
        if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
            try:
                load_plugins(plugins)
            except ScenarioError as error:
                raise KeyedError(("plugins",), plugins, "", problem=str(error)) from None
        return validate_variants(data, info)

    @_model_validator(mode="after")
    def _consistent(self) -> Scenario:
        family = get_task_family(self.tasks.family)
        if self.model.kind not in family.model_kinds:
            expected = f"{' or '.join(family.model_kinds)} for family {family.name!r}"
            raise KeyedError(("model", "kind"), self.model.kind, expected)
        self.model.settings().check_with(self)  # the kind's rules across sections
        width = self.min_adapted_width(self.bank.modules)
        if self.bank.rank > width:
            raise KeyedError(("bank", "rank"), self.bank.rank, f"<= {width} (the smallest adapted layer width)")
        for index, method in enumerate(self.methods):  # method keys become checkpoint file names
            check_name(("methods", index, "label" if method.label is not None else "name"), method.key)
        check_unique([m.key for m in self.methods], "methods", "a distinct name or label per method entry")
        if isinstance(self.seeds, int) and not 1 <= self.seeds <= 1000:
            raise KeyedError(("seeds",), self.seeds, "a count of 1..1000 or a list of seeds")
        if isinstance(self.seeds, list):
            if not self.seeds:
                raise KeyedError(("seeds",), self.seeds, "at least one seed")
            check_unique(self.seeds, "seeds")
        for index, method in enumerate(self.methods):
            rank = getattr(method, "rank", None)
            if rank is not None and rank > width:
                raise KeyedError(("methods", index, "rank"), rank, f"<= {width} (the smallest adapted layer width)")
            if getattr(method, "early_stopping", False) and self.tasks.few_shot_val == 0:
                raise KeyedError(
                    ("methods", index, "early_stopping"), True, "false when tasks.few_shot_val is 0 (no validation set)"
                )
            examples = getattr(method, "examples", None)
            if examples is not None and examples > self.tasks.few_shot_train:
                raise KeyedError(
                    ("methods", index, "examples"), examples, f"<= tasks.few_shot_train={self.tasks.few_shot_train}"
                )
        return self

    @property
    def seed_list(self) -> list[int]:
        """The seeds this scenario's units run with (see `seeds`)."""
        if self.seeds is None:
            return [self.seed]
        if isinstance(self.seeds, int):
            return [self.seed + i for i in range(self.seeds)]
        return list(self.seeds)

    def for_seed(self, seed: int) -> Scenario:
        """This scenario with one seed and no sweep: what one unit of the run sees."""
        return self.model_copy(update={"seed": seed, "seeds": None, "sweep": None})

    def min_adapted_width(self, modules: Sequence[str]) -> int:
        """Smallest in/out width among the given block layers: the largest rank a LoRA on them can have."""
        return min(min(self.model.layer_shape(name)) for name in modules)

    @property
    def source_path(self) -> Path | None:
        """The YAML file this scenario was loaded from (None if built in code)."""
        return self._source

    def resolved_dict(self) -> dict[str, Any]:
        """Every setting, defaults filled in, as plain JSON/YAML types: what a run directory records."""
        return self.model_dump(mode="json")

    def device_config(self) -> Any:
        """The `crossbar.DeviceConfig` of the `device` section (its preset with the overrides)."""
        from crossbar import device_preset

        return device_preset(self.device.preset, **self.device.overrides)

    def new_ledger(self) -> Any:
        """An empty `energy.Ledger` priced by the `costs` section (its preset with the overrides)."""
        from energy import Ledger, cost_preset

        return Ledger(cost_preset(self.costs.preset, **self.costs.overrides))

    def adaptation_data(self, task: Any) -> tuple[Any, Any, float]:
        """A target task's few-shot examples as `fusion.adapt` takes them: inputs and labels (training examples,
        then validation examples) and the validation fraction that splits them again."""
        import torch

        x = torch.cat([torch.as_tensor(task.x_train), torch.as_tensor(task.x_val)])
        y = torch.cat([torch.as_tensor(task.y_train), torch.as_tensor(task.y_val)])
        return x, y, (len(task.x_val) / len(x) if len(task.x_val) else 0.0)
