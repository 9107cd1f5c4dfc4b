"""The scenario file schema (DESIGN section 6): pydantic models, and the loader that turns any problem into one line.

A scenario YAML has the top-level sections `name`, `seed`, `device`, `costs`, `model`, `tasks`, `bank`, `methods`,
`evaluate` and `outputs`. Each option is documented once, in its `Field(description=...)`, with its unit. All
models forbid unknown keys and use strict types (YAML already types its scalars: `4.0` is not an integer and `"3"`
is not a number). Cross-field rules (rank against layer widths, sources disjoint from targets, ...) are checked by
the models themselves, so `Scenario.model_validate` alone accepts only runnable scenarios.

`load_scenario` adds what a file needs: bundled names, `--set key.path=value` overrides, npz paths relative to the
file, a check of the npz files' contents, and one-line `ScenarioError` messages of the form
`multitask.yaml: bank.rank: got 4096, expected <= 64 (the smallest adapted layer width)`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator

from scenarios.errors import ScenarioError, describe_value
from scenarios.tasks import DIGITS_CLASSES, DIGITS_IMAGE_SHAPE, TASK_FAMILIES

__all__ = [
    "ADAPTABLE_LAYERS",
    "FALLBACK_DEVICE_PRESETS",
    "METHOD_NAMES",
    "BankSpec",
    "CostSpec",
    "DeviceSpec",
    "EvaluateSpec",
    "FullFinetuneSpec",
    "FusionSpec",
    "LoraDigitalSpec",
    "LoraHubSpec",
    "LoraInSituSpec",
    "LoraProgramOnceSpec",
    "MethodSpec",
    "ModelSpec",
    "OutputsSpec",
    "Scenario",
    "ScenarioError",
    "TasksSpec",
    "ZeroShotSpec",
    "bundled_scenarios",
    "load_scenario",
]

ADAPTABLE_LAYERS: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")
"""Names of the `nn.Linear` layers inside each transformer block that a LoRA bank may target (`scenarios.models`)."""

FALLBACK_DEVICE_PRESETS: frozenset[str] = frozenset({"ideal", "reram_wan2022", "reram_milo2021", "neurosim_rram"})
"""Device preset names accepted when `crossbar.presets` cannot be imported (its values are then not checked)."""

LayerName = Literal["q", "k", "v", "o", "fc1", "fc2", "all"]


class _KeyedError(ValueError):
    """Raised inside validators to point at a key below the validated model: its relative path, the bad value and
    what was expected (or, with `problem`, a whole phrase replacing "got ..., expected ...")."""

    def __init__(self, loc: tuple[str | int, ...], value: object, expected: str, problem: str | None = None) -> None:
        self.loc = loc
        self.value = value
        self.expected = expected
        self.problem = problem if problem is not None else f"got {describe_value(value)}, expected {expected}"
        super().__init__(self.problem)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_unique(items: Sequence[object], field: str, expected: str = "no repeats") -> None:
    seen: set[object] = set()
    for index, item in enumerate(items):
        if item in seen:
            raise _KeyedError((field, index), item, f"{expected} (it appears twice in {field})")
        seen.add(item)


def _check_overrides(preset: object, overrides: Mapping[str, Any], kind: str) -> None:
    """Apply overrides one by one, then together, to a preset that offers `.replace(**overrides)` and validates
    itself (CostTable, DeviceConfig), so a bad key or value is reported at its own path."""
    replace = getattr(preset, "replace", None)
    if replace is None:  # preset known by name only (crossbar not importable): nothing to check against
        return
    if dataclasses.is_dataclass(preset):
        known = [f.name for f in dataclasses.fields(preset) if f.name not in ("name", "sources")]
        for key, value in overrides.items():
            if key not in known:
                problem = f"unknown {kind} field, expected one of: {', '.join(known)}{_did_you_mean(key, known)}"
                raise _KeyedError(("overrides", key), value, "", problem=problem)
    for key, value in overrides.items():
        try:
            replace(**{key: value})
        except (TypeError, ValueError) as error:
            raise _KeyedError(("overrides", key), value, f"a valid {kind} value ({error})") from None
    try:
        replace(**overrides)
    except (TypeError, ValueError) as error:
        raise _KeyedError(("overrides",), dict(overrides), f"a consistent {kind} ({error})") from None


def _registry(info: ValidationInfo, key: str) -> Mapping[str, object]:
    """Preset registry from the validation context (tests pass their own), else the installed one."""
    context = info.context or {}
    if key in context:
        return context[key]
    if key == "cost_presets":
        from energy import COST_PRESETS

        return COST_PRESETS
    try:
        from crossbar.presets import DEVICE_PRESETS
    except ImportError:
        return dict.fromkeys(sorted(FALLBACK_DEVICE_PRESETS))
    return DEVICE_PRESETS


def _check_preset(spec: DeviceSpec | CostSpec, info: ValidationInfo, key: str, kind: str) -> None:
    registry = _registry(info, key)
    if spec.preset not in registry:
        raise _KeyedError(("preset",), spec.preset, f"one of the {kind} presets: {', '.join(registry)}")
    _check_overrides(registry[spec.preset], spec.overrides, kind)


def _check_scalars(overrides: dict[str, Any]) -> dict[str, Any]:
    """Override values must be YAML scalars (the configs are flat dataclasses of numbers, strings and flags)."""
    for key, value in overrides.items():
        if not isinstance(value, (bool, int, float, str, type(None))):
            raise _KeyedError((key,), value, "a number, string, true/false or null")
    return overrides


class DeviceSpec(_Section):
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


class CostSpec(_Section):
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


class ModelSpec(_Section):
    """The base network: a patch transformer classifier (`scenarios.models.build_model`) and its training."""

    kind: Literal["transformer"] = Field("transformer", description="Network family; only `transformer` exists.")
    d_model: int = Field(64, ge=4, description="Token width (features); q, k, v, o are d_model x d_model layers.")
    n_blocks: int = Field(4, ge=1, description="Number of transformer blocks (each holds q, k, v, o, fc1, fc2).")
    n_heads: int = Field(4, ge=1, description="Attention heads per block; must divide d_model.")
    d_ff: int = Field(128, ge=1, description="Hidden width of each block's MLP (fc1: d_model -> d_ff, fc2 back).")
    patch_size: int = Field(2, ge=1, description="Side of the square image patches (pixels); must divide the image.")
    base_epochs: int = Field(15, ge=1, description="Passes over the base task's training set to train the base model.")
    base_lr: float = Field(2e-3, gt=0, description="Peak Adam learning rate for base training (cosine decay to 0).")
    batch_size: int = Field(64, ge=1, description="Mini-batch size (examples) for base and bank training.")

    @_model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSpec:
        if self.d_model % self.n_heads:
            raise _KeyedError(("n_heads",), self.n_heads, f"a divisor of model.d_model={self.d_model}")
        return self

    def layer_shape(self, layer: str) -> tuple[int, int]:
        """(in_features, out_features) of a block layer by name."""
        return {"fc1": (self.d_model, self.d_ff), "fc2": (self.d_ff, self.d_model)}.get(layer, (self.d_model,) * 2)


class TasksSpec(_Section):
    """Which tasks the study uses: the base task, the bank's source tasks and the few-shot target tasks."""

    family: Literal["digits", "npz"] = Field(
        "digits", description="`digits`: sklearn's 8x8 digits under named domain shifts; `npz`: the user's files."
    )
    base: str = Field("clean", description="Task the base model is trained on (digits: `clean` or `mild`).")
    sources: list[str] = Field(min_length=1, description="Source tasks; one LoRA per task forms the bank (N = count).")
    targets: list[str] = Field(min_length=1, description="Target tasks, learned few-shot; none may be a source task.")
    few_shot_train: int = Field(95, ge=1, description="Labelled training examples per target task (LoRAFusion: 95).")
    few_shot_val: int = Field(5, ge=0, description="Labelled validation examples per task (LoRAFusion: 5).")
    test_size: int = Field(1000, ge=1, description="Test examples per task (npz: at most this many of x_test).")
    base_train_size: int = Field(3000, ge=1, description="Training examples of the base task (npz: at most this).")
    n_classes: int | None = Field(
        None, ge=2, description="npz only: number of classes; default 1 + the largest base training label."
    )
    npz: dict[str, str] | None = Field(
        None,
        description="npz only: task name -> .npz path (relative to the scenario file) with x_train, y_train, "
        "x_test, y_test and optionally x_val, y_val.",
    )

    @_model_validator(mode="after")
    def _consistent(self) -> TasksSpec:
        _check_unique(self.sources, "sources")
        _check_unique(self.targets, "targets")
        if self.family == "npz":
            if not self.npz:
                raise _KeyedError(("npz",), self.npz, "a mapping of task name -> .npz file for family 'npz'")
            known: Sequence[str] = list(self.npz)
            where = "the tasks named in tasks.npz"
        else:
            if self.npz is not None:
                raise _KeyedError(("npz",), self.npz, "no npz mapping for family 'digits' (use family: npz)")
            if self.n_classes not in (None, DIGITS_CLASSES):
                raise _KeyedError(("n_classes",), self.n_classes, f"{DIGITS_CLASSES} or null for family 'digits'")
            known = TASK_FAMILIES["digits"] or ()
            where = f"the {self.family} tasks"
        for field, names in (("base", [self.base]), ("sources", self.sources), ("targets", self.targets)):
            for index, name in enumerate(names):
                if name not in known:
                    loc = (field,) if field == "base" else (field, index)
                    raise _KeyedError(loc, name, f"one of {where}: {', '.join(known)}{_did_you_mean(name, known)}")
        if self.base in self.sources:
            raise _KeyedError(("base",), self.base, "a task that is not also a source task")
        for index, name in enumerate(self.targets):
            if name in self.sources:
                raise _KeyedError(("targets", index), name, "a task that is not also in tasks.sources")
            if name == self.base:
                raise _KeyedError(("targets", index), name, "a task other than the base task tasks.base")
        return self


class BankSpec(_Section):
    """The LoRA bank: one LoRA per source task, trained digitally and programmed into crossbars once."""

    rank: int = Field(4, ge=1, description="LoRA rank r of every bank module.")
    alpha: float = Field(8.0, gt=0, description="LoRA scale numerator; the update is (alpha / rank) * B A.")
    target_modules: list[LayerName] = Field(
        default_factory=lambda: ["q", "v"],
        min_length=1,
        description="Block layers that get LoRA modules: any of q, k, v, o, fc1, fc2, or [all] for all six.",
    )
    epochs: int = Field(12, ge=1, description="Passes over each source task's training set per LoRA.")
    lr: float = Field(0.01, gt=0, description="Peak Adam learning rate for LoRA training (cosine decay to 0).")
    train_size: int = Field(800, ge=1, description="Training examples per source task (npz: at most this).")
    batch_size: int | None = Field(None, ge=1, description="Mini-batch size (examples); default model.batch_size.")

    @_model_validator(mode="after")
    def _modules(self) -> BankSpec:
        _check_unique(self.target_modules, "target_modules")
        if "all" in self.target_modules and len(self.target_modules) > 1:
            raise _KeyedError(("target_modules",), self.target_modules, "either [all] or a list of layer names")
        return self

    @property
    def modules(self) -> tuple[str, ...]:
        """The targeted layer names with `all` expanded, in block order."""
        chosen = set(ADAPTABLE_LAYERS if "all" in self.target_modules else self.target_modules)
        return tuple(name for name in ADAPTABLE_LAYERS if name in chosen)


# --- methods ---------------------------------------------------------------------------------------------------
class _MethodBase(_Section):
    label: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        description="Name of this entry in the results (default: the method name); lets a method appear twice "
        "with different settings.",
    )

    @property
    def key(self) -> str:
        """The name this entry's results are filed under."""
        return self.label or self.name  # type: ignore[attr-defined]


class _TrainedMethod(_MethodBase):
    epochs: int = Field(20, ge=1, description="Passes over the few-shot training set (LoRAFusion: 20).")
    batch_size: int = Field(5, ge=1, description="Mini-batch size in examples (LoRAFusion: 5-10).")
    early_stopping: bool = Field(
        False,
        description="Keep the parameters with the best validation loss (needs tasks.few_shot_val >= 1; "
        "LoRAFusion's option, off in its final runs).",
    )
    patience: int | None = Field(
        None, ge=1, description="Epochs without a new best validation loss before stopping; null = epochs // 3."
    )


class ZeroShotSpec(_MethodBase):
    """The base model alone, no adaptation."""

    name: Literal["zero_shot"]


class FusionSpec(_TrainedMethod):
    """LoRAFusion: train per-layer fusion coefficients and DoRA magnitudes digitally; zero cell writes."""

    name: Literal["fusion"]
    coefficient_lr: float = Field(0.01, gt=0, description="Adam learning rate of the coefficients (LoRAFusion).")
    magnitude_lr: float = Field(0.005, gt=0, description="Adam learning rate of the magnitude vectors (LoRAFusion).")
    weight_decay: float = Field(1e-5, ge=0, description="Adam weight decay on the coefficients (LoRAFusion).")
    l1: float = Field(5e-4, ge=0, description="L1 penalty weight on mean |coefficient| (LoRAFusion: 0.0005).")
    form: Literal["lorahub", "linear"] = Field(
        "lorahub", description="`lorahub`: s (sum c B)(sum c A); `linear`: s sum c B A (DESIGN section 5)."
    )
    share: Literal["layer", "block", "global"] = Field(
        "layer",
        description="One coefficient vector per adapted layer, one per block shared by its layers (LoRAFusion's "
        "code), or one for the whole model.",
    )
    magnitude: bool = Field(True, description="Train the DoRA magnitude vectors (false: coefficients only).")


class _LoraMethod(_TrainedMethod):
    lr: float = Field(5e-3, gt=0, description="Peak Adam learning rate of the task's fresh LoRA.")
    rank: int | None = Field(None, ge=1, description="Rank of the task's LoRA; default bank.rank.")
    alpha: float | None = Field(None, gt=0, description="LoRA scale numerator; default bank.alpha.")


class LoraProgramOnceSpec(_LoraMethod):
    """A fresh LoRA trained digitally for the task, then written into crossbar cells once."""

    name: Literal["lora_program_once"]


class LoraInSituSpec(_LoraMethod):
    """A LoRA trained on the device: its cells are rewritten (write-verify of changed cells) during training."""

    name: Literal["lora_in_situ"]
    write_every_steps: int = Field(1, ge=1, description="Optimizer steps between rewrites of the LoRA's cells.")


class LoraDigitalSpec(_LoraMethod):
    """A LoRA kept in digital logic beside the analog base (AHWA-LoRA): no writes, digital work per inference."""

    name: Literal["lora_digital"]


class LoraHubSpec(_MethodBase):
    """LoraHub: gradient-free search (nevergrad NGOpt) of one coefficient per bank module."""

    name: Literal["lorahub"]
    budget: int = Field(40, ge=1, description="Loss evaluations the optimizer may spend (LoraHub: 40 steps).")
    bound: float = Field(1.5, gt=0, description="Coefficients are searched in [-bound, bound] (LoraHub: 1.5).")
    l1: float = Field(0.05, ge=0, description="L1 penalty weight on mean |coefficient| (LoraHub: 0.05).")
    examples: int | None = Field(
        5, ge=1, description="Few-shot examples the loss is computed on (LoraHub: 5); null = all of few_shot_train."
    )
    form: Literal["lorahub", "linear"] = Field("lorahub", description="Fusion form, as for `fusion`.")


class FullFinetuneSpec(_TrainedMethod):
    """Fine-tune every base weight digitally and rewrite the base arrays: the upper bound on writes."""

    name: Literal["full_finetune"]
    lr: float = Field(1e-3, gt=0, description="Peak Adam learning rate of the base weights.")


MethodSpec = Annotated[
    ZeroShotSpec | FusionSpec | LoraProgramOnceSpec | LoraInSituSpec | LoraDigitalSpec | LoraHubSpec | FullFinetuneSpec,
    Field(discriminator="name"),
]
METHOD_NAMES: tuple[str, ...] = (
    "zero_shot",
    "fusion",
    "lora_program_once",
    "lora_in_situ",
    "lora_digital",
    "lorahub",
    "full_finetune",
)


class EvaluateSpec(_Section):
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
        _check_unique(self.drift_times_s, "drift_times_s")
        return self


class OutputsSpec(_Section):
    """What the run writes besides results.json, metrics.csv, ledger.csv and report.md."""

    plots: bool = Field(True, description="Draw the figures into the run directory.")
    formats: list[Literal["png", "svg"]] = Field(
        default_factory=lambda: ["png", "svg"], min_length=1, description="Image formats of each figure."
    )

    @_model_validator(mode="after")
    def _distinct(self) -> OutputsSpec:
        _check_unique(self.formats, "formats")
        return self


class Scenario(_Section):
    """A whole study: hardware, network, tasks, LoRA bank, methods compared, evaluation and outputs."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=80,
        description="Study name; names the run directory. Letters, digits, '_', '.', '-'. Default: the file name.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random draw in the run (data, init, noise).")
    device: DeviceSpec = Field(default_factory=DeviceSpec, description="Simulated device and peripherals.")
    costs: CostSpec = Field(default_factory=CostSpec, description="Energy/latency cost table of the ledger.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Base network and its training.")
    tasks: TasksSpec = Field(description="Base, source and target tasks.")
    bank: BankSpec = Field(default_factory=BankSpec, description="The LoRA bank (one module per source task).")
    methods: list[MethodSpec] = Field(min_length=1, description="Adaptation methods compared on each target task.")
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec, description="Evaluation settings.")
    outputs: OutputsSpec = Field(default_factory=OutputsSpec, description="Figures and their formats.")

    _source: Path | None = PrivateAttr(default=None)

    @_model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.tasks.family == "digits":
            side = DIGITS_IMAGE_SHAPE[-1]
            if side % self.model.patch_size:
                raise _KeyedError(
                    ("model", "patch_size"), self.model.patch_size, f"a divisor of the {side}x{side} digit images"
                )
        width = self.min_adapted_width(self.bank.modules)
        if self.bank.rank > width:
            raise _KeyedError(("bank", "rank"), self.bank.rank, f"<= {width} (the smallest adapted layer width)")
        _check_unique([m.key for m in self.methods], "methods", "a distinct name or label per method entry")
        for index, method in enumerate(self.methods):
            rank = getattr(method, "rank", None)
            if rank is not None and rank > width:
                raise _KeyedError(("methods", index, "rank"), rank, f"<= {width} (the smallest adapted layer width)")
            if getattr(method, "early_stopping", False) and self.tasks.few_shot_val == 0:
                raise _KeyedError(
                    ("methods", index, "early_stopping"), True, "false when tasks.few_shot_val is 0 (no validation set)"
                )
            examples = getattr(method, "examples", None)
            if examples is not None and examples > self.tasks.few_shot_train:
                raise _KeyedError(
                    ("methods", index, "examples"), examples, f"<= tasks.few_shot_train={self.tasks.few_shot_train}"
                )
        return self

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


# --- error messages --------------------------------------------------------------------------------------------
_EXPECTED_BY_TYPE = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _did_you_mean(word: object, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] from a field annotation (other unions are kept)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _strip_annotated(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _all_models(members: Sequence[Any]) -> bool:
    return all(_is_model(_strip_annotated(m)) for m in members)


def _child(annotation: Any, segment: str | int, raw: object) -> tuple[Any, str | None]:
    """Annotation of `segment` below a node of type `annotation` whose raw data is `raw`.

    Returns (child annotation, None), or (None, reason) when the segment cannot exist there. A child annotation of
    `Any` means "anything goes below here" (free-form mappings, or a method entry without a valid name).
    """
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if _is_model_union(annotation):  # a method entry: the model its name selects
        model = _member_for(annotation, raw)
        return _child(model, segment, raw) if model is not None else (Any, None)
    if _is_model(annotation):
        fields = annotation.model_fields
        if segment not in fields:
            return None, f"unknown key, expected one of: {', '.join(fields)}{_did_you_mean(segment, list(fields))}"
        return fields[segment].annotation, None  # type: ignore[index]
    if origin is list:
        return typing.get_args(annotation)[0], None
    if origin is dict:
        return typing.get_args(annotation)[1], None
    if annotation is Any:
        return Any, None
    return None, "not a section (its value is a single setting)"


def _annotation_at(loc: Sequence[str | int], raw: object) -> Any:
    """Annotation of the node at `loc` (a pydantic error location) below Scenario, or None if not resolvable. A
    method entry resolves to the method model its `name` selects."""
    annotation: Any = Scenario
    for segment in loc:
        annotation, problem = _child(annotation, segment, raw)
        if problem is not None or annotation is None:
            return None
        raw = raw.get(segment) if isinstance(raw, dict) else (raw[segment] if isinstance(raw, list) else None)  # type: ignore[index]
    annotation = _unwrap(annotation)
    if _is_model_union(annotation):
        return _member_for(annotation, raw)
    return annotation


def _is_model_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType) and _all_models(typing.get_args(annotation))


def _member_for(union: Any, raw: object) -> type[BaseModel] | None:
    """The member of a union of method models that a raw entry's `name` selects (None if it selects none)."""
    tag = raw.get("name") if isinstance(raw, dict) else None
    for member in typing.get_args(union):
        model = _strip_annotated(member)
        if tag in typing.get_args(model.model_fields["name"].annotation):
            return model
    return None


def _path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _clean_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Drop the union tag pydantic inserts after `methods[i]` and the `[key]` marker of mapping keys."""
    cleaned: list[str | int] = []
    for part in loc:
        if len(cleaned) >= 2 and cleaned[-2] == "methods" and isinstance(cleaned[-1], int) and part in METHOD_NAMES:
            continue
        if part == "[key]":
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _describe_error(error: Mapping[str, Any], raw: object) -> str:
    loc = _clean_loc(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    cause = ctx.get("error")
    if isinstance(cause, _KeyedError):
        return f"{_path(loc + cause.loc)}: {cause.problem}"
    path = _path(loc)
    if kind == "extra_forbidden":
        parent = _annotation_at(loc[:-1], raw)
        if _is_model(parent):
            fields = list(parent.model_fields)
            return f"{path}: unknown key, expected one of: {', '.join(fields)}{_did_you_mean(loc[-1], fields)}"
        return f"{path}: unknown key"
    if kind == "missing":
        parent = _annotation_at(loc[:-1], raw)
        field = parent.model_fields.get(loc[-1]) if _is_model(parent) else None
        meaning = f" ({field.description})" if field is not None and field.description else ""
        return f"{path}: required key is missing{meaning}"
    if kind == "union_tag_invalid":
        tag = value.get("name") if isinstance(value, dict) else ctx.get("tag")
        return f"{path}.name: got {describe_value(tag)}, expected one of: {', '.join(METHOD_NAMES)}"
    if kind == "union_tag_not_found":
        return f"{path}: no `name` key, expected a method entry with name one of: {', '.join(METHOD_NAMES)}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        expected = f"{bounds[kind]} {limit}"
    elif kind == "too_short":
        expected = f"at least {ctx.get('min_length')} item(s)"
    elif kind == "too_long":
        expected = f"at most {ctx.get('max_length')} item(s)"
    elif kind == "literal_error":
        expected = f"one of {ctx.get('expected')}"
    elif kind == "string_pattern_mismatch":
        expected = "a name made of letters, digits, '_', '.', '-' (starting with a letter or digit)"
    elif kind in _EXPECTED_BY_TYPE:
        expected = _EXPECTED_BY_TYPE[kind]
    else:
        expected = error["msg"][0].lower() + error["msg"][1:]
    return f"{path}: got {describe_value(value)}, expected {expected}"


def _format_validation_error(error: ValidationError, raw: object) -> str:
    errors = error.errors()
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return _describe_error(errors[0], raw) + more


# --- loading ---------------------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would otherwise silently resolve to the last one."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (each key may appear once)", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def bundled_scenarios() -> dict[str, Path]:
    """Scenario files shipped inside the package, by name (file stem)."""
    folder = Path(str(resources.files("scenarios")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def _locate(path_or_name: str | os.PathLike[str]) -> Path:
    text = os.fspath(path_or_name)
    path = Path(text)
    if path.is_file():
        return path
    if path.exists():
        raise ScenarioError(f"{text}: is a directory, expected a scenario YAML file")
    bundled = bundled_scenarios()
    stem = text[:-5] if text.endswith(".yaml") else text
    if "/" not in text and os.sep not in text and stem in bundled:
        return bundled[stem]
    raise ScenarioError(
        f"{text}: no such file, expected a scenario file or a bundled scenario name ({', '.join(bundled)})"
    )


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{label}: not a text file (not UTF-8), expected a scenario YAML file") from None
    except OSError as error:
        raise ScenarioError(f"{label}: cannot be read ({error.strerror or error}), expected a readable file") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ScenarioError(f"{label}: not valid YAML{where}: {problem}, expected a YAML mapping of keys") from None
    if data is None:
        raise ScenarioError(f"{label}: the file is empty, expected a YAML mapping with keys {_top_keys()}")
    if not isinstance(data, dict):
        kind = "list" if isinstance(data, list) else f"{type(data).__name__} value"
        raise ScenarioError(f"{label}: got a YAML {kind} at the top level, expected a mapping with keys {_top_keys()}")
    return data


def _top_keys() -> str:
    return ", ".join(Scenario.model_fields)


_SEGMENT = re.compile(r"[A-Za-z0-9_+\-]+")


def _apply_override(raw: dict[str, Any], text: str) -> None:
    """Apply one `key.path=value` override to the raw scenario dict, checking the path against the schema.

    List items are addressed by index (`methods.1.epochs` or `methods[1].epochs`) or, for methods, by their label
    or name (`methods.fusion.epochs`). The value is parsed as YAML (`3`, `0.5`, `true`, `[q, v]`, `null`).
    """
    where = f"--set {text!r}"
    key, equals, value_text = text.partition("=")
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    segments = key.split(".")
    if not equals or not key or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ScenarioError(f"{where}: bad syntax, expected key.path=value (e.g. --set bank.rank=8)")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ScenarioError(f"{where}: the value is not valid YAML ({problem}), expected a scalar or [list]") from None
    node: Any = raw
    annotation: Any = Scenario
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        here = _path(segments[:depth]) if depth else "the top level"
        if isinstance(node, list):
            index = _list_index(node, segment)
            if index is None:
                raise ScenarioError(
                    f"{where}: {here} has {len(node)} item(s), expected an index 0..{len(node) - 1}"
                    + (" or a method name/label" if segments[0] == "methods" else "")
                )
            annotation, _ = _child(annotation, index, node)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ScenarioError(f"{where}: {here} is {describe_value(node)}, expected a mapping or a list there")
        annotation, problem = _child(annotation, segment, node)
        if problem is not None:
            raise ScenarioError(f"{where}: {_path(segments[: depth + 1])}: {problem}")
        if last:
            node[segment] = value
        elif segment not in node or node[segment] is None:
            if (
                _unwrap(annotation) is Any
                or _is_model(_unwrap(annotation))
                or typing.get_origin(_unwrap(annotation)) is dict
            ):
                node[segment] = {}
            else:
                raise ScenarioError(f"{where}: {_path(segments[: depth + 1])} is not set, so it has no items to change")
            node = node[segment]
        else:
            node = node[segment]


def _list_index(items: list[Any], segment: str) -> int | None:
    if segment.isdigit():
        index = int(segment)
        return index if index < len(items) else None
    matches = [
        i for i, item in enumerate(items) if isinstance(item, dict) and segment in (item.get("label"), item.get("name"))
    ]
    labelled = [i for i in matches if items[i].get("label") == segment]
    chosen = labelled or matches
    return chosen[0] if len(chosen) == 1 else None


def _resolve_npz_paths(raw: dict[str, Any], folder: Path) -> None:
    """Make relative npz paths relative to the scenario file's folder (not to the working directory)."""
    tasks = raw.get("tasks")
    npz = tasks.get("npz") if isinstance(tasks, dict) else None
    if isinstance(npz, dict):
        for name, value in npz.items():
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                npz[name] = str((folder / value).resolve())
            elif isinstance(value, str):
                npz[name] = str(Path(value).expanduser())


def load_scenario(
    path_or_name: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    context: Mapping[str, Any] | None = None,
) -> Scenario:
    """Read, override and validate a scenario; any problem raises a one-line `ScenarioError`.

    `path_or_name` is a YAML file or the name of a bundled scenario (`multitask`, `tiny`). `overrides` are
    `key.path=value` strings applied in order before validation. `context` may supply `device_presets` and
    `cost_presets` registries (name -> config) instead of the installed ones. For `family: npz` the files are
    opened and checked (keys, lengths, labels, finite values, image size against `model.patch_size`).
    """
    path = _locate(path_or_name)
    label = path.name
    raw = _read_yaml(path, label)
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "scenario")
    try:
        for text in overrides:
            _apply_override(raw, text)
    except ScenarioError as error:
        raise ScenarioError(f"{label}: {error}") from None
    _resolve_npz_paths(raw, path.resolve().parent)
    try:
        scenario = Scenario.model_validate(raw, context=dict(context or {}))
    except ValidationError as error:
        raise ScenarioError(f"{label}: {_format_validation_error(error, raw)}") from None
    scenario._source = path.resolve()
    if scenario.tasks.family == "npz":
        from scenarios.tasks import build_tasks

        try:
            build_tasks(scenario)
        except ScenarioError as error:
            raise ScenarioError(f"{label}: {error}") from None
    return scenario
