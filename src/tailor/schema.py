"""Typed settings: the base of every options model (experiment, task loading, each arm's
options), YAML with line numbers, and validation errors as one line naming file, line and field.

Pydantic checks the types, strictly: YAML already gives real numbers, booleans and lists, so a
string where a number belongs (`limit: "all"`) is an error, never a silent coercion. The one
YAML quirk handled here is `1e-3`, which YAML 1.1 reads as a string; Tailor's loader reads it as
the number everyone means.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import DataError


class Options(BaseModel):
    """Strict, closed settings: unknown names and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, protected_namespaces=())


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-3, 5E4) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(path: str | Path, what: str = "settings") -> tuple[dict, dict]:
    """A YAML file whose top level is a mapping, and the line of every key and list item
    (keyed by its path, e.g. ("arms", 0, "k")). Errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_Loader)
        lines = _lines(yaml.compose(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, f"invalid YAML ({getattr(e, 'problem', None) or e})",
                        mark.line + 1 if mark else None) from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid UTF-8") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a mapping of {what} at the top level")
    return data, lines


def _lines(node, at: tuple = ()) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = at + (key.value,)
            out[here] = key.start_mark.line + 1
            out.update(_lines(value, here))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[at + (i,)] = item.start_mark.line + 1
            out.update(_lines(item, at + (i,)))
    return out


def validate(cls: type[BaseModel], data: Any, path: str | Path, lines: dict | None = None,
             at: tuple = ()) -> Any:
    """`cls(**data)`, or a DataError for its first problem. `at` is where `data` sits in the
    file (errors name the full field, e.g. arms[2].lr, and its line)."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise located_error(e, cls, data, path, lines or {}, at) from None


def located_error(error: ValidationError, cls: type[BaseModel], data: Any, path, lines: dict,
                  at: tuple = ()) -> DataError:
    # Union members add their type names to an error's location: keep only the part of the
    # location that exists in the input, and merge what each member expected.
    first, expected = None, []
    for err in error.errors(include_url=False):
        loc = _in_input(data, err["loc"])
        if first is None:
            first = (loc, err)
        if loc == first[0]:
            expected.append(err)
    loc, err = first
    full = at + loc
    field = _field_name(full) or None
    line = next((lines[full[:n]] for n in range(len(full), 0, -1) if full[:n] in lines), None)
    if err["type"] == "extra_forbidden":
        known = sorted(_model_at(cls, loc[:-1]).model_fields) if _model_at(cls, loc[:-1]) else []
        problem = "unknown setting" + (f" (known: {', '.join(known)})" if known else "")
    elif err["type"] == "missing":
        problem = "missing"
    else:
        wanted = " or ".join(dict.fromkeys(_expected(x["msg"]) for x in expected))
        problem = f"expected {wanted}, got {_show(err.get('input'))}"
    return DataError(path, problem, line, field)


def _in_input(data: Any, loc: tuple) -> tuple:
    out = []
    for n, part in enumerate(loc):
        if isinstance(data, dict) and isinstance(part, str):
            if part not in data:
                if n == len(loc) - 1:   # a missing or unknown key: it is the field
                    out.append(part)
                break
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            break
        out.append(part)
    return tuple(out)


def _model_at(cls, loc: tuple):
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        cls = next((a for a in (getattr(field.annotation, "__args__", None) or (field.annotation,))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _expected(msg: str) -> str:
    return re.sub(r"^(Input|Value) should be ", "", msg)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
