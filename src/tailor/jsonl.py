"""THE JSONL reader: every JSON-lines file Tailor reads (task files, knowledge-base documents and
chunks, arm pools, journals, predictions, teacher labels, training metrics) goes through it.

Lines are split on "\\n" only, never with str.splitlines(): that also breaks at U+2028, U+2029,
\\x85, \\x0b, \\x0c, \\x1c-\\x1e, which JSON strings written with ensure_ascii=False hold raw (tweets
do), so a line would be cut inside a string. A bad line is a one-line DataError naming the file
and line. A file written by appending can end in a line torn by a killed write: `torn` says what
its reader does with it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Literal

from .errors import DataError

log = logging.getLogger("tailor")

# Deeper values are refused when read: Python's JSON parser, json.dumps and the hashing of
# examples all recurse, and fail with RecursionError near 1000 levels (fewer on a deep stack).
MAX_DEPTH = 100

# Strings are skipped whole, so brackets and digits inside them are not counted.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|\d+')


class Unusable(json.JSONDecodeError):
    """JSON that tailor refuses though it is valid: nested too deep, or a number too long."""


def loads(text: str):
    """json.loads, whose other failures (RecursionError on deep nesting, ValueError on an integer
    longer than Python converts) become an Unusable located where the limit is passed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as e:
        depth, digits = 0, sys.get_int_max_str_digits() or len(text)
        for m in _JSON_TOKENS.finditer(text):
            tok = m.group()
            if tok in ("[", "{"):
                depth += 1
                if depth > MAX_DEPTH and isinstance(e, RecursionError):
                    raise Unusable(f"nested deeper than {MAX_DEPTH} levels", text, m.start()) from None
            elif tok in ("]", "}"):
                depth -= 1
            elif tok[0].isdigit() and len(tok) > digits:
                raise Unusable(f"a number longer than {digits} digits", text, m.start()) from None
        raise Unusable(str(e).split(":")[0], text, 0) from None


def read_json_object(path: str | Path, what: str, shape: str = "a JSON object") -> dict:
    """A saved file that must hold one JSON object (a recipe, a checkpoint's state or pointer, a
    run's results), read through `loads` (nesting and number lengths bounded): every way it can be
    unreadable is one DataError naming the file."""
    try:
        data = loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read the {what} ({e})") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected {shape}, got {json_type(data)}")
    return data


def json_type(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def parse_jsonl(text: str, source, *, objects: bool = True) -> list[tuple[int, object]]:
    """[(line number, value)] of the non-blank lines of `text`, split on "\\n" only. `source`
    names the file in errors; `objects`: every line must hold a JSON object."""
    out = []
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = loads(line)
        except json.JSONDecodeError as e:
            raise DataError(source, f"invalid JSON ({e.msg} at column {e.colno})", no) from None
        if objects and not isinstance(value, dict):
            raise DataError(source, f"expected a JSON object, got {json_type(value)}", no)
        out.append((no, value))
    return out


def read_jsonl(path: str | Path, *, torn: Literal["read", "drop", "cut"] = "read",
               objects: bool = True) -> list[tuple[int, object]]:
    """[(line number, value)] of the JSONL file `path` (UTF-8; a leading byte-order mark is
    skipped). `torn` is what happens to a last line without its "\\n":
    - "read": it is read like any other (a file need not end in a newline; files written whole
      and atomically are never torn, so invalid JSON there is an error like anywhere else);
    - "drop": it is left out, with a warning: a file that is appended to a line at a time, each
      written with its "\\n", holds such a line only when a write was killed;
    - "cut": left out and also cut from the file, so the next append starts a fresh line instead
      of being glued to the torn one (a journal that is read and then appended to)."""
    path = Path(path)
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if torn != "read" and end < len(raw):
        if raw[end:].strip():
            log.warning("%s: line %d was torn by a killed write and is %s", path, raw.count(b"\n", 0, end) + 1,
                        "cut from the file" if torn == "cut" else "left out")
        if torn == "cut":
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        raw = raw[:end]
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(path, f"not valid utf-8 (byte 0x{raw[e.start]:02x} at column {col})", line) from None
    return parse_jsonl(text, path, objects=objects)
