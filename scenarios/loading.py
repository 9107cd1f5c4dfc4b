"""Loading scenario files: bundled names, `--set key.path=value` overrides, paths relative to the file, a check
of the npz files' contents, and every problem as one `ScenarioError` line of the form
`multitask.yaml: bank.rank: got 4096, expected <= 64 (the smallest adapted layer width)`.

The models and their rules are in `scenarios.schema`; this module turns pydantic's errors into those lines (naming
the key path, the bad value and what was expected) and reads YAML strictly (duplicate keys are errors).
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from scenarios.bundled import BUNDLED_SCENARIOS
from scenarios.errors import ScenarioError, describe_value, did_you_mean
from scenarios.families import get_task_family
from scenarios.plugins import is_plugin_path
from scenarios.schema import KeyedError, Scenario, SectionError

__all__ = ["ScenarioError", "bundled_scenarios", "load_scenario", "load_study", "parse_sweep_option"]


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


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _child(annotation: Any, segment: str | int, raw: object) -> tuple[Any, str | None]:
    """Annotation of `segment` below a node of type `annotation` whose raw data is `raw`.

    Returns (child annotation, None), or (None, reason) when the segment cannot exist there. A child annotation of
    `Any` means "anything goes below here" (free-form mappings, or a method entry without a valid name).
    """
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if hasattr(annotation, "variant_for"):  # model, tasks, a method entry: the model its registered config derives
        model = annotation.variant_for(raw)
        if model is not annotation:
            return _child(model, segment, raw) if model is not None else (Any, None)
    if _is_model(annotation):
        fields = annotation.model_fields
        if segment not in fields:
            return None, f"unknown key, expected one of: {', '.join(fields)}{did_you_mean(segment, list(fields))}"
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
    section with registered variants (model, tasks, a method entry) resolves to the model its tag selects."""
    annotation: Any = Scenario
    for segment in loc:
        annotation, problem = _child(annotation, segment, raw)
        if problem is not None or annotation is None:
            return None
        raw = raw.get(segment) if isinstance(raw, dict) else (raw[segment] if isinstance(raw, list) else None)  # type: ignore[index]
    annotation = _unwrap(annotation)
    if hasattr(annotation, "variant_for"):
        return annotation.variant_for(raw)
    return annotation


def _path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _clean_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Drop the `[key]` marker pydantic inserts for mapping keys."""
    cleaned: list[str | int] = []
    for part in loc:
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
    if isinstance(cause, KeyedError):
        return f"{_path(loc + cause.loc)}: {cause.problem}"
    if isinstance(cause, SectionError):  # a section's registered model rejected it: word its first error
        first = cause.errors[0]
        return _describe_error({**first, "loc": (*loc, *cause.loc, *first["loc"])}, raw)
    path = _path(loc)
    if kind == "extra_forbidden":
        parent = _annotation_at(loc[:-1], raw)
        if _is_model(parent):
            fields = list(parent.model_fields)
            return f"{path}: unknown key, expected one of: {', '.join(fields)}{did_you_mean(loc[-1], fields)}"
        return f"{path}: unknown key"
    if kind == "missing":
        parent = _annotation_at(loc[:-1], raw)
        field = parent.model_fields.get(loc[-1]) if _is_model(parent) else None
        meaning = f" ({field.description})" if field is not None and field.description else ""
        return f"{path}: required key is missing{meaning}"
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
    """Scenario files shipped inside the package, by name, in the order of `scenarios.bundled.BUNDLED_SCENARIOS`
    (the one list of them, which the CLI's help and the README show)."""
    folder = Path(str(resources.files("scenarios")))
    return {name: folder / f"{name}.yaml" for name in BUNDLED_SCENARIOS}


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
    if not equals:
        raise ScenarioError(f"{where}: bad syntax, expected key.path=value (e.g. --set bank.rank=8)")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ScenarioError(f"{where}: the value is not valid YAML ({problem}), expected a scalar or [list]") from None
    _apply_value(raw, key, value, where)


def _split_key(key: str, where: str) -> list[str]:
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    segments = key.split(".")
    if not key or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ScenarioError(f"{where}: bad syntax, expected key.path=value (e.g. --set bank.rank=8)")
    return segments


def _apply_value(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set the dotted `key` of the raw scenario dict to `value`, checking the path against the schema."""
    segments = _split_key(key, where)
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


def _resolve_plugin_paths(raw: dict[str, Any], folder: Path) -> None:
    """Make relative plugin file paths relative to the scenario file's folder (module names stay as they are)."""
    plugins = raw.get("plugins")
    if isinstance(plugins, list):
        for index, entry in enumerate(plugins):
            if isinstance(entry, str) and is_plugin_path(entry) and not Path(entry).expanduser().is_absolute():
                plugins[index] = str((folder / entry).resolve())


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
    opened and checked (keys, lengths, labels, finite values, image size against `model.patch_size`); for the text
    families the model folder, the corpora and every task's pool sizes (tokenizing takes about a second).
    """
    path = _locate(path_or_name)
    label = path.name
    raw = _read_yaml(path, label)
    try:
        for text in overrides:
            _apply_override(raw, text)
    except ScenarioError as error:
        raise ScenarioError(f"{label}: {error}") from None
    return _validate(path, raw, context)


# --- sweeps ----------------------------------------------------------------------------------------------------
def parse_sweep_option(text: str) -> tuple[str, list[Any]]:
    """`key.path=v1,v2,...` (each value parsed as YAML) or `key.path=[v1, v2]` -> (key, values)."""
    where = f"--sweep {text!r}"
    key, equals, value_text = text.partition("=")
    if not equals or not key.strip():
        raise ScenarioError(f"{where}: bad syntax, expected key.path=v1,v2,... (e.g. --sweep bank.rank=2,4)")
    try:
        parsed = yaml.safe_load(value_text)
        values = parsed if isinstance(parsed, list) else [yaml.safe_load(v) for v in value_text.split(",")]
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ScenarioError(f"{where}: a value is not valid YAML ({problem})") from None
    if not values or any(v is None and not value_text.strip() for v in values):
        raise ScenarioError(f"{where}: no values, expected key.path=v1,v2,...")
    return ".".join(_split_key(key, where)), values


def load_study(
    path_or_name: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    sweeps: Sequence[str] = (),
    *,
    context: Mapping[str, Any] | None = None,
):
    """Load a scenario and expand its sweep (`sweep:` section plus `--sweep key=v1,v2` options, which join the
    grid) into validated points; any problem is a one-line `ScenarioError` naming the point and key."""
    import copy
    import itertools

    from scenarios.sweep import Study, SweepPoint

    path = _locate(path_or_name)
    label = path.name
    raw = _read_yaml(path, label)
    section = raw.get("sweep")
    if sweeps:
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ScenarioError(f"{label}: sweep: got {describe_value(section)}, expected a mapping with grid, zip")
        grid = section.setdefault("grid", {})
        if not isinstance(grid, dict):
            raise ScenarioError(f"{label}: sweep.grid: got {describe_value(grid)}, expected a mapping")
        try:
            for text in sweeps:
                key, values = parse_sweep_option(text)
                grid[key] = values
        except ScenarioError as error:
            raise ScenarioError(f"{label}: {error}") from None
        raw["sweep"] = section
    try:
        for text in overrides:
            _apply_override(raw, text)
    except ScenarioError as error:
        raise ScenarioError(f"{label}: {error}") from None
    base = _validate(path, raw, context)
    spec = base.sweep
    if spec is None or spec.empty:
        return Study.single(base)
    grid = dict(spec.grid)
    seeds = grid.pop("seed", None)
    keys = [*grid, *spec.zip]
    combos = list(itertools.product(*grid.values())) if grid else [()]
    rows = list(zip(*spec.zip.values())) if spec.zip else [()]
    points = []
    for combo in combos:
        for row in rows:
            values = dict(zip(keys, (*combo, *row)))
            index = len(points)
            point_raw = copy.deepcopy(raw)
            point_raw.pop("sweep", None)
            if seeds is not None:
                point_raw["seeds"] = list(seeds)
            where = f"sweep point p{index:03d} ({', '.join(f'{k}={describe_value(v)}' for k, v in values.items())})"
            try:
                for key, value in values.items():
                    _apply_value(point_raw, key, copy.deepcopy(value), where)
            except ScenarioError as error:
                raise ScenarioError(f"{label}: {error}") from None
            try:
                scenario = _validate(path, point_raw, context, where=where)
            except ScenarioError as error:
                raise ScenarioError(str(error)) from None
            points.append(SweepPoint(index, f"p{index:03d}", values, scenario))
    if not keys:  # only seeds were swept: one point with those seeds
        return Study.single(points[0].scenario)
    return Study(base, points, keys)


def _validate(path: Path, raw: dict[str, Any], context: Mapping[str, Any] | None, where: str = "") -> Scenario:
    """Relative paths and validation of a raw scenario dict (a copy; `raw` is left as it is), as `load_scenario`."""
    import copy

    label = path.name
    raw = copy.deepcopy(raw)
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "scenario")
    prefix = f"{label}: {where + ': ' if where else ''}"
    _resolve_plugin_paths(raw, path.resolve().parent)
    try:  # settings declared as paths (tasks.npz, model.path) are resolved against the scenario's folder
        scenario = Scenario.model_validate(raw, context={**(context or {}), "scenario_folder": path.resolve().parent})
    except ValidationError as error:
        raise ScenarioError(f"{prefix}{_format_validation_error(error, raw)}") from None
    scenario._source = path.resolve()
    if get_task_family(scenario.tasks.family).check_on_load:  # files, packages and pool sizes checked up front
        from scenarios.workloads import build_tasks

        try:
            build_tasks(scenario)
        except ScenarioError as error:
            raise ScenarioError(f"{prefix}{error}") from None
    return scenario
