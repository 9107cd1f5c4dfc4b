"""The scenario sections whose keys come from a registry: `model` (its `kind`), `tasks` (its `family`) and each
`methods:` entry (its `name`).

Each base model here holds the keys every variant shares; the registered model kind
(`scenarios.workload.register_workload`), task family (`scenarios.families.TaskFamily.settings`) or method
(`fusion.register_method`) brings a config dataclass from which `scenarios.sections.derive_section` derives the
rest (`model_spec`, `tasks_spec`, `method_spec`). `Scenario` (`scenarios.schema`) validates the raw section with the
model its tag selects (`validate_variants`), so a registration needs no edit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator

from fusion.registry import METHODS
from scenarios.families import get_task_family, task_families
from scenarios.names import NAME_RULE
from scenarios.sections import (
    KeyedError,
    Section,
    check_name,
    check_unique,
    derive_section,
    foreign_key,
    settings_of,
    unknown_name,
    validate_variant,
)
from scenarios.workload import model_kinds

__all__ = ["MethodSpec", "ModelSpec", "TasksSpec", "method_spec", "model_spec", "tasks_spec", "validate_variants"]


class _Variant(Section):
    """A section whose `TAG` key selects the model that validates the rest."""

    TAG: ClassVar[str]
    WHAT: ClassVar[str]
    """What the tag names, for messages ("the model kinds"; empty: "one of: ...")."""

    @classmethod
    def configs(cls) -> Mapping[str, type]:
        """Config dataclass by registered name."""
        raise NotImplementedError

    @classmethod
    def variant(cls, name: object) -> type[_Variant] | None:
        """The derived model for the registered name `name`, or None."""
        base = next(c for c in cls.__mro__ if "TAG" in c.__dict__)  # the base, also when asked of a derived model
        config = base.configs().get(name) if isinstance(name, str) else None
        return derive_section(config, base, base.TAG, name, base.doc_of(name)) if config is not None else None

    @classmethod
    def doc_of(cls, name: str) -> str:
        return cls.configs()[name].__doc__ or ""

    @classmethod
    def variant_for(cls, raw: object) -> type[_Variant] | None:
        """The derived model that a raw section's tag (or the tag's default) selects, or None."""
        if not isinstance(raw, dict):
            return None
        return cls.variant(raw.get(cls.TAG, cls.model_fields[cls.TAG].default))

    def settings(self) -> Any:
        """This section's values as its registered config dataclass (which checks itself)."""
        return settings_of(self, self.configs()[getattr(self, self.TAG)])


class ModelSpec(_Variant):
    """The base network: a registered model kind and its own settings (`model_spec`)."""

    TAG: ClassVar[str] = "kind"
    WHAT: ClassVar[str] = "the model kinds"

    kind: str = Field(
        "transformer",
        description="Registered model kind (scenarios.workload.register_workload): `transformer` (a small vision "
        "transformer trained on the base task), `cnn` (two conv layers and an MLP, trained), `hf_encoder` (a "
        "pretrained BERT-family encoder with a zero-shot classifier, not trained; for the text families), or one a "
        "plugin registers. Its other keys are the kind's settings.",
    )

    @classmethod
    def configs(cls) -> Mapping[str, type]:
        return model_kinds()

    @_model_validator(mode="after")
    def _own_rules(self) -> ModelSpec:
        if type(self) is not ModelSpec:
            self.settings()  # the kind's checks (scenarios.workload.ModelSettings.check)
        return self

    def layer_shape(self, layer: str) -> tuple[int, int]:
        """(in_features, out_features) of a block layer by name, as far as the kind knows before it loads."""
        return self.settings().layer_shape(layer)


class TasksSpec(_Variant):
    """Which tasks the study uses: the base task, the bank's source tasks and the few-shot target tasks."""

    TAG: ClassVar[str] = "family"
    WHAT: ClassVar[str] = "the task families"

    family: str = Field(
        "digits",
        description="Registered task family (scenarios.families): `digits` (sklearn's 8x8 digits under named "
        "domain shifts), `npz` (the user's files, named in `npz`), `wordnet`, `bbc`, or one a plugin registers. "
        "Its own settings are further keys of this section.",
    )
    base: str = Field("clean", description="Task the base model is trained on (digits: `clean` or `mild`).")
    sources: list[str] = Field(min_length=1, description="Source tasks; one LoRA per task forms the bank (N = count).")
    targets: list[str] = Field(min_length=1, description="Target tasks, learned few-shot; none may be a source task.")
    few_shot_train: int = Field(95, ge=1, description="Labelled training examples per target task (LoRAFusion: 95).")
    few_shot_val: int = Field(5, ge=0, description="Labelled validation examples per task (LoRAFusion: 5).")
    test_size: int = Field(1000, ge=1, description="Test examples per task (npz: at most this many of x_test).")
    base_train_size: int = Field(
        3000, ge=1, description="Training examples of the base task (npz: at most this; text families: unused)."
    )
    n_classes: int | None = Field(
        None,
        ge=2,
        description="Number of classes, for families that do not fix it (npz); default 1 + the largest base "
        "training label.",
    )

    @classmethod
    def configs(cls) -> Mapping[str, type]:
        return {name: family.settings for name, family in task_families().items()}

    @classmethod
    def doc_of(cls, name: str) -> str:
        description = task_families()[name].description
        return f"{cls.__doc__} Family `{name}`" + (f": {description}." if description else ".")

    @_model_validator(mode="after")
    def _consistent(self) -> TasksSpec:
        if type(self) is TasksSpec:  # only a family's derived model knows its settings
            return self
        settings = self.settings()  # the family's own checks (scenarios.families.FamilySettings.check)
        check_name(("base",), self.base)
        for field, names in (("sources", self.sources), ("targets", self.targets)):
            for index, name in enumerate(names):
                check_name((field, index), name)
        check_unique(self.sources, "sources")
        check_unique(self.targets, "targets")
        family = get_task_family(self.family)
        if family.n_classes is not None and self.n_classes not in (None, family.n_classes):
            raise KeyedError(("n_classes",), self.n_classes, f"{family.n_classes} or null for family {self.family!r}")
        if family.n_classes is None and not family.accepts_n_classes and self.n_classes is not None:
            expected = f"null for family {self.family!r} (classes come with each task)"
            raise KeyedError(("n_classes",), self.n_classes, expected)
        named = (family.task_names, f"the {self.family} tasks") if family.task_names else settings.named_tasks()
        for field, names in (("base", [self.base]), ("sources", self.sources), ("targets", self.targets)):
            for index, name in enumerate(names):
                if named is not None and name not in named[0]:
                    loc = (field,) if field == "base" else (field, index)
                    raise unknown_name(loc, name, list(named[0]), named[1])
        if self.base in self.sources:
            raise KeyedError(("base",), self.base, "a task that is not also a source task")
        for index, name in enumerate(self.targets):
            if name in self.sources:
                raise KeyedError(("targets", index), name, "a task that is not also in tasks.sources")
            if name == self.base:
                raise KeyedError(("targets", index), name, "a task other than the base task tasks.base")
        return self


class MethodSpec(_Variant):
    """One `methods:` entry. Each registered method gets a subclass derived from its config (`method_spec`)."""

    TAG: ClassVar[str] = "name"
    WHAT: ClassVar[str] = ""

    name: str = Field(description="Registered adaptation method (fusion.METHODS).")
    label: str | None = Field(
        None,
        description="Name of this entry in the results (default: the method name); lets a method appear twice "
        f"with different settings. {NAME_RULE[0].upper()}{NAME_RULE[1:]}.",
    )

    @classmethod
    def configs(cls) -> Mapping[str, type]:
        return {name: method.config for name, method in METHODS.items()}

    @classmethod
    def doc_of(cls, name: str) -> str:
        return METHODS[name].description

    @field_validator("label")
    @classmethod
    def _label(cls, label: str | None) -> str | None:
        if label is not None:
            check_name((), label)
        return label

    @property
    def key(self) -> str:
        """The name this entry's results are filed under."""
        return self.label or self.name

    def config(self) -> Any:
        """The method's own config (`fusion.MethodConfig`) with this entry's settings."""
        return self.settings()


def model_spec(kind: str) -> type[ModelSpec] | None:
    """The schema model of a `model:` section of kind `kind` (derived from its settings), or None if unknown."""
    return ModelSpec.variant(kind)  # type: ignore[return-value]


def tasks_spec(family: str) -> type[TasksSpec] | None:
    """The schema model of a `tasks:` section of family `family` (derived from its settings), or None."""
    return TasksSpec.variant(family)  # type: ignore[return-value]


def method_spec(name: str) -> type[MethodSpec] | None:
    """The schema model of a `methods:` entry naming `name` (derived from the method's config), or None if no
    method of that name is registered."""
    return MethodSpec.variant(name)  # type: ignore[return-value]


def _validated(base: type[_Variant], raw: object, loc: tuple[str | int, ...], info: ValidationInfo) -> object:
    """One raw section validated by its variant's model (anything but a mapping is left for pydantic to reject)."""
    if isinstance(raw, _Variant) or not isinstance(raw, dict):
        return raw
    tag = raw.get(base.TAG, base.model_fields[base.TAG].default)
    model, configs = base.variant(tag), base.configs()
    if model is None:
        raise unknown_name((*loc, base.TAG), tag, list(configs), base.WHAT)
    if base is not MethodSpec:  # a key of another kind or family: say whose it is (methods share many keys)
        others = {name: config for name, config in configs.items() if config is not configs[tag]}
        try:
            foreign_key(raw, model.model_fields, others, f"{base.TAG} {tag}")
        except KeyedError as error:
            raise KeyedError((*loc, *error.loc), error.value, "", problem=error.problem) from None
    return validate_variant(model, raw, loc, info)


def validate_variants(data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """A raw scenario with `model`, `tasks` and each `methods:` entry validated by their registered variants."""
    data = dict(data)
    data["model"] = _validated(ModelSpec, data.get("model", {}), ("model",), info)
    if "tasks" in data:
        data["tasks"] = _validated(TasksSpec, data["tasks"], ("tasks",), info)
    entries = data.get("methods")
    if isinstance(entries, list):
        for index, entry in enumerate(entries):
            if isinstance(entry, dict) and "name" not in entry:
                problem = f"no `name` key, expected a method entry with name one of: {', '.join(METHODS)}"
                raise KeyedError(("methods", index), entry, "", problem=problem)
        data["methods"] = [_validated(MethodSpec, entry, ("methods", index), info) for index, entry in
                           enumerate(entries)]  # fmt: skip
    return data
