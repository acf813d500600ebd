"""Entity and attribute extraction as lossy compression of a context that does not fit: each
chunk of a document becomes JSON records (one object per line) validated by a schema the team
gives; the records of a document, merged by name, stand in for its text in the prompt. What it
saves is measured (document tokens against record tokens) beside what it does to accuracy.

A schema file (JSON or YAML):

    record: a character, place or object of the story     # what one record describes
    fields:
      name: {type: string, required: true}
      facts: {type: list}                                  # string, number, boolean or list (of strings)
    example: {passage: "...", records: [{...}]}            # optional: one worked example, checked too
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..errors import DataError

TYPES = {"string": str, "number": float, "boolean": bool, "list": list[str]}
DEFAULT_SCHEMA = {
    "record": "a character, place or object of the story",
    "fields": {"name": {"type": "string", "required": True}, "kind": {"type": "string"},
               "facts": {"type": "list"}},
    "example": {"passage": "Tom, a baker in Leeds, lends his van to his sister May. May drives it to the coast "
                           "to find their father.",
                "records": [{"name": "Tom", "kind": "character", "facts": ["a baker in Leeds", "lends his van to May"]},
                            {"name": "May", "kind": "character",
                             "facts": ["Tom's sister", "drives to the coast to find their father"]}]},
}
_OBJECT = re.compile(r"\{.*\}")


class Schema:
    def __init__(self, spec: dict, source: str = "the default schema"):
        self.spec, self.source = spec, source
        where = lambda f: DataError(source, f, field=None)   # noqa: E731
        if not isinstance(spec, dict) or not isinstance(spec.get("fields"), dict) or not spec["fields"]:
            raise where("expected a mapping with 'fields' (each field: {type: string|number|boolean|list})")
        if not isinstance(spec.get("record", ""), str):
            raise DataError(source, "must be text (what one record describes)", field="record")
        unknown = sorted(set(spec) - {"record", "fields", "example"})
        if unknown:
            raise DataError(source, "unknown key (known: record, fields, example)", field=unknown[0])
        fields: dict[str, Any] = {}
        for name, f in spec["fields"].items():
            at = f"fields.{name}"
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$", str(name)):
                raise DataError(source, "a field name must be a word (letters, digits, _)", field=at)
            if not isinstance(f, dict) or f.get("type") not in TYPES:
                raise DataError(source, f"type must be one of {', '.join(TYPES)}", field=f"{at}.type")
            if set(f) - {"type", "required"} or not isinstance(f.get("required", False), bool):
                raise DataError(source, "only 'type' and 'required' (true/false) are allowed", field=at)
            t = TYPES[f["type"]]
            fields[name] = (t, ...) if f.get("required") else (t | None, None)
        self.required = [n for n, f in spec["fields"].items() if f.get("required")]
        self.model: type[BaseModel] = create_model("Record", __config__=ConfigDict(extra="ignore", strict=True),
                                                   **fields)
        example = spec.get("example")
        if example is not None:
            if not isinstance(example, dict) or not isinstance(example.get("passage"), str) \
                    or not isinstance(example.get("records"), list):
                raise DataError(source, "expected {passage: text, records: [...]}", field="example")
            for i, r in enumerate(example["records"]):
                problem = self.problem(r)
                if problem:
                    raise DataError(source, problem, field=f"example.records[{i}]")

    @classmethod
    def read(cls, path: str | Path | None) -> Schema:
        if not path:
            return cls(DEFAULT_SCHEMA)
        from ..schema import read_yaml
        p = Path(path)
        if p.suffix.lower() == ".json":
            try:
                spec = json.loads(p.read_text(encoding="utf-8"))
            except OSError as e:
                raise DataError(p, f"cannot read ({e.strerror})") from None
            except json.JSONDecodeError as e:
                raise DataError(p, f"invalid JSON ({e.msg})", e.lineno) from None
        else:
            spec, _ = read_yaml(p, "schema settings")
        return cls(spec, str(p))

    def problem(self, record) -> str | None:
        """Why `record` does not fit the schema (one line), or None."""
        if not isinstance(record, dict):
            return "a record must be a JSON object"
        try:
            r = self.model.model_validate(record)
        except ValidationError as e:
            err = e.errors()[0]
            return f"field '{'.'.join(map(str, err['loc']))}': {err['msg']}"
        empty = [n for n in self.required if not str(getattr(r, n)).strip()]
        return f"field '{empty[0]}': required, and empty" if empty else None

    def describe(self) -> str:
        parts = [f"{n} ({f['type']}{', required' if f.get('required') else ''})" for n, f in self.spec["fields"].items()]
        return ", ".join(parts)

    def messages(self, passage: str) -> list[dict]:
        """The chat that asks for the records of one passage (the worked example as an earlier turn)."""
        system = (f"Extract every {self.spec.get('record') or 'entity'} mentioned in the passage as JSON, one object "
                  f"per line, with the fields: {self.describe()}. Write only the JSON lines.")
        turns = [{"role": "system", "content": system}]
        ex = self.spec.get("example")
        if ex:
            turns += [{"role": "user", "content": f"Passage: {ex['passage']}"},
                      {"role": "assistant", "content": "\n".join(json.dumps(r, ensure_ascii=False)
                                                                 for r in ex["records"])}]
        return turns + [{"role": "user", "content": f"Passage: {passage}"}]


@dataclass
class ExtractStats:
    """What extraction did, counted (nothing dropped silently)."""
    documents: int = 0
    chunks: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lines: int = 0                # non-empty output lines
    records_valid: int = 0
    invalid_json: int = 0         # lines that held no JSON object
    invalid_schema: int = 0       # objects the schema rejected
    records_merged: int = 0       # duplicates (same name) merged into one record
    documents_without_records: int = 0   # their prompt gets the document's opening instead (counted)

    def to_json(self) -> dict:
        return asdict(self)


def parse_records(text: str, schema: Schema, stats: ExtractStats) -> list[dict]:
    out = []
    for line in text.split("\n"):   # not splitlines(): it also breaks inside a JSON string at U+2028 and friends
        if not line.strip():
            continue
        stats.lines += 1
        m = _OBJECT.search(line)
        try:
            record = json.loads(m.group(0)) if m else None
        except json.JSONDecodeError:
            record = None
        if record is None:
            stats.invalid_json += 1
            continue
        if schema.problem(record):
            stats.invalid_schema += 1
            continue
        clean = schema.model.model_validate(record).model_dump(exclude_none=True)
        out.append(clean)
        stats.records_valid += 1
    return out


def merge_records(records: list[dict], key: str, stats: ExtractStats) -> list[dict]:
    """One record per name (case and spacing ignored): list fields joined without repeats, the
    first value of any other field kept."""
    merged: dict[str, dict] = {}
    for r in records:
        k = " ".join(str(r.get(key, "")).lower().split())
        if k not in merged:
            merged[k] = dict(r)
            continue
        stats.records_merged += 1
        into = merged[k]
        for f, v in r.items():
            if isinstance(v, list):
                into[f] = list(dict.fromkeys((into.get(f) or []) + v))
            else:
                into.setdefault(f, v)
    return list(merged.values())


def render(record: dict) -> str:
    """A record as the prompt shows it: compact JSON (the schema's own format, fewest tokens)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
