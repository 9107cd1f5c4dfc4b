"""Scenario sections derived from the config dataclasses of what they configure, and the schema's shared pieces.

A method (`fusion.register_method`), a task family (`scenarios.families.TaskFamily.settings`) and a model kind
(`scenarios.workload.register_workload`) each declare their options once, as a frozen dataclass whose fields carry
a default, a one-line doc with unit and bounds (`setting(...)`, or `fusion.option(...)` for methods).
`derive_section` turns such a dataclass into the pydantic model of its YAML section (strict types, unknown keys
forbidden, bounds copied), so nothing else is edited when one is registered. `KeyedError` is how any check names
the key, the value and what was expected; `scenarios.loading` words it as one line.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator

from scenarios.errors import describe_value, did_you_mean
from scenarios.names import NAME_RULE, name_problem

__all__ = ["KeyedError", "Section", "SectionError", "check_name", "check_unique", "derive_section", "setting"]

_BOUNDS = ("ge", "gt", "le")


def setting(
    default: object = dataclasses.MISSING,
    doc: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    path: bool = False,
) -> Any:
    """A settings field: its default (none: the key is required), its one-line doc (with unit) and bounds. `path`:
    a file path (or a mapping of paths), relative to the scenario file when the scenario is loaded from one."""
    return dataclasses.field(default=default, metadata={"doc": doc, "ge": ge, "gt": gt, "le": le, "path": path})


class KeyedError(ValueError):
    """Raised inside validators to point at a key below the validated model: its relative path, the bad value and
    what was expected (or, with `problem`, a whole phrase replacing "got ..., expected ...")."""

    def __init__(self, loc: tuple[str | int, ...], value: object, expected: str, problem: str | None = None) -> None:
        self.loc = loc
        self.value = value
        self.expected = expected
        self.problem = problem if problem is not None else f"got {describe_value(value)}, expected {expected}"
        super().__init__(self.problem)


class SectionError(ValueError):
    """A derived section (a `methods:` entry, `model`, `tasks`) failed its own model; carries pydantic's errors and
    the section's location for the loader to word."""

    def __init__(self, loc: tuple[str | int, ...], error: ValidationError) -> None:
        self.loc = loc
        self.errors = error.errors()
        super().__init__(str(error))


class Section(BaseModel):
    """A scenario section: unknown keys are errors, types are strict (YAML already types its scalars)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_unique(items: Sequence[object], field: str, expected: str = "no repeats") -> None:
    seen: set[object] = set()
    for index, item in enumerate(items):
        if item in seen:
            raise KeyedError((field, index), item, f"{expected} (it appears twice in {field})")
        seen.add(item)


def check_name(loc: tuple[str | int, ...], name: object) -> None:
    """The one name rule (`scenarios.names`) for names that become file names: tasks, method keys, the run."""
    problem = name_problem(name)
    if problem is not None:
        raise KeyedError(loc, name, NAME_RULE, problem=f"got {problem}, expected {NAME_RULE}")


def in_schema(spec: dataclasses.Field) -> bool:
    """Whether a config field is a YAML key (private and non-init fields are not)."""
    return spec.init and not spec.name.startswith("_")


def settings_of(section: BaseModel, config: type) -> Any:
    """The config dataclass `config` built from a derived section's values."""
    return config(**{f.name: getattr(section, f.name) for f in dataclasses.fields(config) if in_schema(f)})


def _schema_annotation(annotation: Any) -> Any:
    """A config field's annotation as the YAML schema takes it: tuples of strings are YAML lists."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, [_schema_annotation(a) for a in typing.get_args(annotation)])
    return annotation


def _resolved(value: str, folder: Path | None) -> str:
    """A path relative to the scenario file's folder (absolute and `~` paths as they are)."""
    if not value or Path(value).expanduser().is_absolute() or folder is None:
        return str(Path(value).expanduser()) if value else value
    return str((folder / value).resolve())


def _resolve_paths(value: object, info: ValidationInfo) -> object:
    folder = (info.context or {}).get("scenario_folder")
    folder = Path(folder) if folder is not None else None
    if isinstance(value, str):
        return _resolved(value, folder)
    if isinstance(value, dict):
        return {key: _resolved(item, folder) if isinstance(item, str) else item for key, item in value.items()}
    return value


@functools.cache
def derive_section(config: type, base: type[Section], tag: str, value: str, doc: str) -> type[Section]:
    """The pydantic model of a section whose `tag` key names `value` (a method, family or model kind), with one
    field per YAML key of `config` (a dataclass): its type, default, doc and bounds."""
    hints = typing.get_type_hints(config)
    fields: dict[str, Any] = {tag: (Literal[value], Field(value, description=base.model_fields[tag].description))}
    paths = []
    for spec in dataclasses.fields(config):
        if not in_schema(spec):
            continue
        bounds = {key: spec.metadata[key] for key in _BOUNDS if spec.metadata.get(key) is not None}
        if spec.default is not dataclasses.MISSING:
            default: Any = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            default = ...
        description = spec.metadata.get("doc")
        fields[spec.name] = (_schema_annotation(hints[spec.name]), Field(default, description=description, **bounds))
        if spec.metadata.get("path"):
            paths.append(spec.name)
    validators = {"_paths": field_validator(*paths, mode="after")(_resolve_paths)} if paths else {}
    return create_model(
        f"{''.join(part.title() for part in value.split('_'))}{base.__name__}",
        __base__=base,
        __doc__=doc or config.__doc__,
        __module__=base.__module__,
        __validators__=validators,
        **fields,
    )


def validate_variant(
    model: type[Section], raw: Mapping[str, Any], loc: tuple[str | int, ...], info: ValidationInfo
) -> Section:
    """`raw` validated by the section model that its tag selected; pydantic's errors travel as a `SectionError`."""
    try:
        return model.model_validate(raw, context=info.context)
    except ValidationError as error:
        raise SectionError(loc, error) from None


def foreign_key(raw: Mapping[str, Any], own: Mapping[str, Any], others: Mapping[str, type], what: str) -> None:
    """A KeyedError for the first key of `raw` that is not one of `own`'s keys but a setting of another registered
    variant (`others`: name -> config dataclass): that key belongs elsewhere, so say so rather than "unknown"."""
    for key, value in raw.items():
        if key in own:
            continue
        users = [name for name, config in others.items() if key in {f.name for f in dataclasses.fields(config)}]
        if users:
            problem = f"not used by {what} (a setting of {', '.join(users)}); remove it"
            raise KeyedError((key,), value, "", problem=problem)


def unknown_name(loc: tuple[str | int, ...], name: object, known: Sequence[str], what: str) -> KeyedError:
    """The error for a name that is not among `known` (`what` says which: "the task families")."""
    listed = f"{', '.join(known)}{did_you_mean(str(name), list(known))}"
    return KeyedError(loc, name, f"one of {what}: {listed}" if what else f"one of: {listed}")
