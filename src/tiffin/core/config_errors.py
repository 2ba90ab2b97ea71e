"""A mistake in a configuration file (a spec, params.yaml) as a message for the person who wrote it.

pydantic reports where a value is wrong as a location tuple; this names the file and the key path
(`columns.<name>.parse`) and says what is allowed there, so a user never reads a validation traceback.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration file that cannot be used: the message names the file, the key and what is allowed."""


def read_mapping(path: str | Path, what: str, kind: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """A YAML file of keys, as a dict (an empty file: none); unreadable, malformed or not a mapping: `kind`,
    naming the file and what it should hold (`what`, e.g. "a spec is a mapping of keys (name, source, ...)")."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except OSError as unreadable:
        raise kind(f"{path}: cannot be read: {unreadable.strerror}") from None
    except yaml.YAMLError as malformed:
        raise kind(f"{path}: not valid YAML: {malformed}") from None
    if content is not None and not isinstance(content, dict):
        raise kind(f"{path}: {what}, not {content!r}")
    return content or {}


def explain(
    error: ValidationError, file: str | Path, model: type[BaseModel], kind: type[ConfigError] = ConfigError
) -> ConfigError:
    """One line per problem: `file: key.path: what is wrong (what is allowed)`."""
    return kind("\n".join(f"{file}: {_problem(problem, model)}" for problem in error.errors()))


def _problem(problem: Any, model: type[BaseModel]) -> str:
    loc = [str(part) for part in problem["loc"]]
    where = ".".join(loc) or "(top level)"
    kind = problem["type"]
    if kind == "extra_forbidden":
        allowed = _keys_of(_model_at(model, loc[:-1]))
        return f"{where}: unknown key; allowed here: {', '.join(allowed)}" if allowed else f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required, missing"
    message = problem["msg"].removeprefix("Value error, ")
    given = problem.get("input")
    scalar = isinstance(given, str | int | float | bool) or given is None
    shown = f" (given: {given!r})" if scalar and repr(given) not in message else ""
    return f"{where}: {message}{shown}"


def _keys_of(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    """The model class that holds the keys at `loc` (through dicts, lists and optionals), if there is one."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for name, f in current.model_fields.items() if part in (name, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` as X; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            return options[0]
    return annotation
