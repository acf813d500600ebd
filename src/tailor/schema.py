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
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import DataError


def check_range(value, bounds: str):
    """`value` inside `bounds` ("[1," at least 1, "(0,1]" above 0 and at most 1), else a ValueError
    that reads as what was expected ("at least 1"). One rule for settings files and command lines."""
    if value is None:
        return value
    low, _, high = bounds[1:].rstrip(")]").partition(",")
    if low and (value < float(low) if bounds[0] == "[" else value <= float(low)):
        raise ValueError(f"{'at least' if bounds[0] == '[' else 'more than'} {low}")
    if high and (value > float(high) if bounds[-1] == "]" else value >= float(high)):
        raise ValueError(f"{'at most' if bounds[-1] == ']' else 'less than'} {high}")
    return value


# The range of a number by its name, wherever it is set (an experiment, an arm, a `tailor train`
# config, a recipe read back): "[1," at least 1, "(0,1]" above 0 and at most 1. By name, so a family
# that redeclares an option with its own default (`lr: float = 5e-5`) keeps the range, and a count
# is never zero or negative in one model and unchecked in another.
RANGES = {"steps": "[0,", "epochs": "(0,", "lr": "[0,", "weight_decay": "[0,", "warmup_ratio": "[0,1)",
          "min_lr_ratio": "[0,1]", "batch_size": "[1,", "micro_batch_tokens": "[1,", "seq_len": "[1,",
          "pack_len": "[1,", "max_train_examples": "[1,", "max_grad_norm": "(0,", "seed": "[0,4294967295]",
          "eval_every": "[0,", "eval_examples": "[1,", "patience": "[0,", "save_every": "[0,",
          "keep_checkpoints": "[1,", "log_every": "[1,", "budget_minutes": "(0,", "k": "[0,", "pool_size": "[1,",
          "ngram": "[1,", "token_budget": "[1,", "mmr_lambda": "[0,1]", "r": "[1,", "top_k": "[1,",
          "max_new_tokens": "[1,", "temperature": "(0,"}


class Options(BaseModel):
    """Strict, closed settings: unknown names and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, protected_namespaces=(),
                              allow_inf_nan=False)   # nan and inf are never a setting

    @field_validator("*")
    @classmethod
    def _in_range(cls, value, info):
        bounds = RANGES.get(info.field_name)
        if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
            check_range(value, bounds)
        _check_text(value)
        return value


def _check_text(value) -> None:
    """Text a file name, a prompt or a JSON file can hold: no NUL (paths refuse it) and no unpaired
    surrogate (UTF-8 cannot write it), which YAML's escapes ("\\0", "\\ud800") let through."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text without NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text without unpaired surrogates (not valid Unicode)") from None
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)


# A seed as every library Tailor seeds takes it (numpy refuses negative ones, torch more than 64 bits);
# seeds N, N+1, ... of repeated fits stay in range too.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-3, 5E4) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


# A settings file is small and shallow: these bound what a hostile or broken one can cost before
# anything is built from it. YAML aliases are references, so a few hundred bytes of nested aliases
# ("billion laughs") stand for billions of values that every later walk would visit.
MAX_DEPTH = 64              # nesting of mappings and lists
MAX_VALUES = 100_000        # values with every alias expanded
_STR, _MERGE = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"


def read_yaml(path: str | Path, what: str = "settings") -> tuple[dict, dict]:
    """A YAML file whose top level is a mapping, and the line of every key and list item
    (keyed by its path, e.g. ("arms", 0, "k")). Errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8")
        _check_shape(text, path)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            lines = _lines(node, path) if node is not None else {}
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if isinstance(e, yaml.reader.ReaderError):   # a character YAML does not allow, e.g. NUL
            line = text.count("\n", 0, e.position) + 1
            ch = e.character
            e = f"character {f'U+{ch:04X}' if isinstance(ch, int) else repr(ch)} is not allowed in YAML"
        problem = " ".join(str(getattr(e, "problem", None) or e).split())   # one line
        raise DataError(path, f"invalid YAML ({problem})", line) from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid UTF-8") from None
    except (ValueError, OverflowError, IndexError, TypeError) as e:
        # a scalar PyYAML resolves but cannot build: !!int '', a 13th month, !!float x
        raise DataError(path, f"invalid YAML value ({' '.join(str(e).split()) or type(e).__name__})") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a mapping of {what} at the top level")
    return data, lines


def _check_shape(text: str, path: Path) -> None:
    """Depth and expanded size from the event stream (flat, no recursion), before any tree is built."""
    sizes: dict[str, int] = {}
    stack: list[tuple[int, str | None]] = [(0, None)]   # values so far, anchor of each open collection
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) > MAX_DEPTH:
                raise DataError(path, f"nested more than {MAX_DEPTH} levels deep", event.start_mark.line + 1)
            stack.append((1, event.anchor))
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            n, anchor = stack.pop()
            if anchor:
                sizes[anchor] = n
        elif isinstance(event, yaml.ScalarEvent):
            n = 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            n = sizes.get(event.anchor, 1)   # an unknown anchor: the composer reports it
        else:
            continue
        count, anchor = stack[-1]
        stack[-1] = (count + n, anchor)
        if count + n > MAX_VALUES:
            raise DataError(path, f"more than {MAX_VALUES:,} values once its aliases (*name) are expanded",
                            event.start_mark.line + 1)


def _lines(node, path: Path, at: tuple = ()) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.tag == _MERGE:
                continue
            if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                shown = key.value if isinstance(key, yaml.ScalarNode) else "a " + type(key).__name__[:-4].lower()
                raise DataError(path, f"a setting's name must be text, got {shown!r} (quote it)",
                                key.start_mark.line + 1, _field_name(at) or None)
            here = at + (key.value,)
            out[here] = key.start_mark.line + 1
            out.update(_lines(value, path, here))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[at + (i,)] = item.start_mark.line + 1
            out.update(_lines(item, path, at + (i,)))
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
    return re.sub(r"^(Input should be |Value should be |Value error, )", "", msg)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
