"""Examples, tasks, task files in the formats users already have, and seeded splits.

Every problem in a file is reported as a DataError naming the file, the line (or row) and the
field, so a user can fix it without reading a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError
from .jsonl import MAX_DEPTH, Unusable, parse_jsonl
from .jsonl import json_type as _type
from .jsonl import loads as _loads

KINDS = ("classify", "generate", "choice")
DEFAULT_METRICS = {
    "classify": ["accuracy", "macro_f1", "ece"],
    "choice": ["accuracy", "ece"],
    "generate": ["exact_match", "rouge", "bleu", "chrf"],
}
# Field sets that identify a format, checked in this order.
FORMATS = {
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "choice": ("question", "choices", "answer"),
    "text_label": ("text", "label"),
    # OpenAI's reinforcement fine-tuning file: chat messages ending with the user's turn, the
    # reference fields its grader reads beside them (never detected by fields: a chat file whose
    # first conversation ends with the user's turn is one)
    "rft": ("messages",),
}
# The fields that carry the input of each format: a file to predict on needs no targets.
INPUT_FIELDS = {"chat": ("messages",), "prompt_completion": ("prompt",), "alpaca": ("instruction",),
                "choice": ("question", "choices"), "text_label": ("text",)}
FORMAT_KIND = {"chat": "generate", "prompt_completion": "generate", "alpaca": "generate",
               "choice": "choice", "text_label": "classify", "rft": "generate"}
SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "test": "test"}


@dataclass
class Example:
    """One record. `input` is text, or chat messages without the final assistant turn."""

    id: str
    input: str | list[dict]
    target: str
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_text(self) -> str:
        if isinstance(self.input, str):
            return self.input
        return "\n".join(m["content"] for m in self.input if m["role"] != "system")


@dataclass
class Task:
    name: str
    kind: str
    instruction: str
    examples: list[Example]
    labels: list[str] | None = None
    metrics: list[str] = field(default_factory=list)
    source: str = ""
    splits: dict[str, list[Example]] = field(default_factory=dict)
    data_hash: str = ""
    notes: list[str] = field(default_factory=list)  # rows dropped or changed while loading
    knowledge: str | None = None   # the knowledge base its questions are about (a bundled one's name)
    no_answer: str | None = None   # the output that means "the context does not say" (abstention)
    # a grader spec (tailor.graders, OpenAI's shapes) that is the task's primary metric, named by its
    # "name": every arm's outputs are graded by it, one score per row (asdiv: number_check)
    grader: dict | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(self.source or self.name, f"kind '{self.kind}' is not one of {list(KINDS)}")
        self.metrics = self.metrics or list(DEFAULT_METRICS[self.kind])
        self.data_hash = self.data_hash or hash_examples(self.examples)

    def split(self, seed: int = 0, test: float | int = 0.1, dev: float | int = 0.1) -> "Task":
        """Deterministic seeded split. Rows that name their own split keep it."""
        fixed = {"train": [], "dev": [], "test": []}
        free = []
        for ex in self.examples:
            name = SPLIT_NAMES.get(str(ex.meta.get("split", "")).lower())
            (fixed[name] if name else free).append(ex)
        free = sorted(free, key=lambda e: e.id)  # order of the file does not change the split
        random.Random(seed).shuffle(free)
        n = len(free)
        n_test = _count(test, n) if not fixed["test"] else 0
        n_dev = _count(dev, n) if not fixed["dev"] else 0
        fixed["test"] += free[:n_test]
        fixed["dev"] += free[n_test:n_test + n_dev]
        fixed["train"] += free[n_test + n_dev:]
        for name, want in (("test", test), ("dev", dev)):
            if want and not fixed[name]:
                raise DataError(self.source or self.name,
                                f"split '{name}' is too small: 0 of {len(self.examples)} rows "
                                f"(asked for {want}); add rows or change the split size")
            # Nothing silent: a split that got fewer rows than asked for is noted.
            if isinstance(want, int) and len(fixed[name]) < want:
                self._note(f"split '{name}' has {len(fixed[name])} rows, fewer than the {want} asked for")
        if not fixed["train"]:
            self._note("split 'train' is empty: methods that learn from examples cannot run")
        self.splits = fixed
        return self

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def summary(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "rows": len(self.examples),
               "labels": self.labels, "metrics": self.metrics, "data_hash": self.data_hash[:16]}
        out.update({f"{k}_rows": len(v) for k, v in self.splits.items()})
        out["notes"] = self.notes
        out.update({k: v for k, v in (("knowledge", self.knowledge), ("no_answer", self.no_answer),
                                      ("grader", self.grader)) if v})
        if self.kind == "classify":
            counts: dict[str, int] = {}
            for ex in self.examples:
                counts[ex.target] = counts.get(ex.target, 0) + 1
            out["label_counts"] = counts
        return out


def _count(size: float | int, n: int) -> int:
    return min(n, int(size) if isinstance(size, int) or size >= 1 else int(round(size * n)))


def primary_metric(kind: "str | Task") -> str:
    """THE metric arms of a task kind are ranked by (ladder, recommendation), trained to (dev
    evaluation, early stopping, best checkpoint) and judged by: accuracy for labels and choices,
    ROUGE-L for generated text; given a task with a grader, the grader's name (its mean score)."""
    if isinstance(kind, Task):
        if kind.grader:
            return str(kind.grader.get("name") or kind.grader.get("type"))
        kind = kind.kind
    return {"classify": "accuracy", "choice": "accuracy", "generate": "rougeL"}[kind]


def hash_examples(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.input, ex.target, ex.choices], ensure_ascii=False).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- reading records


def read_records(path: str | Path, encoding: str = "utf-8") -> tuple[list[tuple[int, dict]], str]:
    """Returns [(line_or_row, record)] and the unit name ('line', 'record' or 'row')."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path), "row"
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(path, "file is empty")
    try:
        # Spreadsheet exports start with a byte-order mark that would otherwise become part of
        # the first column's name.
        text = raw.decode(encoding).removeprefix("\ufeff")
    except LookupError:
        raise DataError(path, f"unknown encoding '{encoding}'") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(path, f"not valid {encoding} (byte 0x{raw[e.start]:02x} at column {col}); "
                        "set the file's encoding, e.g. --encoding latin-1", line,
                        _field_at_byte(raw, e.start, suffix, encoding)) from None
    if suffix == ".jsonl":
        return _read_jsonl(path, text), "line"
    if suffix == ".json":
        return _read_json(path, text)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, text, "\t" if suffix == ".tsv" else ","), "line"
    raise DataError(path, f"unsupported file type '{suffix}' (use .jsonl, .json, .csv, .tsv or .parquet)")


def _field_at_byte(raw: bytes, pos: int, suffix: str, codec: str) -> str | None:
    """The field (CSV column or top-level JSON key) that holds an undecodable byte, so the
    error can name it. Best effort: None when the line cannot be parsed."""
    start = raw.rfind(b"\n", 0, pos) + 1
    end = raw.find(b"\n", pos)
    line = raw[start:len(raw) if end < 0 else end]
    try:
        if suffix in (".csv", ".tsv"):
            delim = "\t" if suffix == ".tsv" else ","
            header = next(csv.reader([raw.split(b"\n", 1)[0].decode(codec, "replace")], delimiter=delim))
            before = raw[start:pos].decode(codec, "replace")
            col = len(next(csv.reader([before], delimiter=delim), [""])) - 1
            return header[col].strip() if 0 <= col < len(header) else None
        if suffix == ".jsonl":
            rec = json.loads(line.decode(codec, "surrogateescape"))
            for key, value in rec.items():  # undecodable bytes became lone surrogates
                if any("\udc80" <= ch <= "\udcff" for ch in json.dumps(value, ensure_ascii=False)):
                    return key
    except (ValueError, StopIteration, UnicodeError, AttributeError, csv.Error, RecursionError):
        pass
    return None


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    out = parse_jsonl(text, path)   # the text is decoded here already: the file's encoding may be another
    for no, rec in out:
        _check_record(path, no, rec, "line")
    if not out:
        raise DataError(path, "file is empty")
    return out


def _read_json(path: Path, text: str) -> tuple[list[tuple[int, dict]], str]:
    try:
        data = _loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON ({e.msg} at column {e.colno})", e.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON array of objects, got {_type(data)}")
    if not data:
        raise DataError(path, "file is empty")
    for i, rec in enumerate(data, 1):
        if not isinstance(rec, dict):
            raise DataError(path, f"expected a JSON object, got {_type(rec)}", i, unit="record")
        _check_record(path, i, rec, "record")
    return list(enumerate(data, 1)), "record"


def _read_csv(path: Path, text: str, delimiter: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    out = []
    try:
        names = [n for n in reader.fieldnames or [] if n]  # unnamed columns are spreadsheet padding
        if dup := next((n for n in names if names.count(n) > 1), None):
            # a dict row keeps only the last of them: the others would be lost without a word
            raise DataError(path, f"the header names column '{dup}' twice", 1)
        for rec in reader:
            if None in rec:  # more cells than header columns
                raise DataError(path, f"{len(rec) - 1 + len(rec[None])} cells but the header has "
                                f"{len(reader.fieldnames)} columns", reader.line_num)
            out.append((reader.line_num, rec))
    except csv.Error as e:
        raise DataError(path, f"invalid CSV ({e})", reader.line_num) from None
    if not out:
        raise DataError(path, "file is empty (no rows under the header)")
    return out


def _read_parquet(path: Path) -> list[tuple[int, dict]]:
    import pyarrow.parquet as pq
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(path, f"cannot read Parquet ({e})") from None
    if not rows:
        raise DataError(path, "file is empty")
    for i, rec in enumerate(rows, 1):
        _check_record(path, i, rec, "row")
    return list(enumerate(rows, 1))


_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair, alone


def _bad_value(value) -> str | None:
    """Why a parsed value cannot be used, or None. Walks with a stack, not recursion, since the
    nesting it guards against would overflow a recursive walk."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            # JSON may write a lone surrogate (\ud800) that no UTF-8 file or tokenizer can take.
            if not v.isascii() and (m := _SURROGATE.search(v)):
                return f"holds an unpaired surrogate {ascii(m.group())} (not valid Unicode)"
        elif isinstance(v, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            items = [*v, *v.values()] if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)
    return None


def _check_record(path, no, rec: dict, unit: str) -> None:
    for key, value in rec.items():
        if problem := _bad_value(key):
            raise DataError(path, f"a field name {problem}", no, unit=unit)
        if problem := _bad_value(value):
            raise DataError(path, problem, no, key, unit)


# ---------------------------------------------------------------- records -> examples


def detect_format(path, records: list[tuple[int, dict]], unit: str = "line") -> str:
    no, first = records[0]
    for name, keys in FORMATS.items():
        if all(k in first for k in keys):
            return name
    expected = " | ".join(dict.fromkeys("+".join(k) for k in FORMATS.values()))
    raise DataError(path, f"cannot detect the format from fields {sorted(first)}; expected one of: "
                    f"{expected} (or set format and field names in the config)", no, unit=unit)


class _Row:
    """Field access for one record that raises located errors."""

    def __init__(self, path, no, rec, unit, fields, optional_target=False):
        self.path, self.no, self.rec, self.unit, self.fields = path, no, rec, unit, fields
        self.optional_target = optional_target

    def target(self, name, **kw) -> str:
        """A target field; "" when targets are optional (inputs to predict on) and it is absent."""
        if self.optional_target and self.get(name) is None:
            return ""
        return self.text(name, **kw)

    def err(self, name, problem):
        return DataError(self.path, problem, self.no, self.fields.get(name, name), self.unit)

    def text(self, name, allow_empty=False, label=False) -> str:
        key = self.fields.get(name, name)
        if key not in self.rec or self.rec[key] is None:
            raise self.err(name, "missing")
        v = self.rec[key]
        if label and isinstance(v, (int, bool)) and not isinstance(v, float):
            v = str(v).lower() if isinstance(v, bool) else str(v)
        if not isinstance(v, str):
            raise self.err(name, f"expected a string, got {_type(v)}")
        if not allow_empty and not v.strip():
            raise self.err(name, "is empty")
        return v

    def get(self, name):
        return self.rec.get(self.fields.get(name, name))


def records_to_examples(path, records, unit, fmt, fields=None, optional_target=False) -> list[Example]:
    fields = fields or {}
    out, seen = [], {}
    used = {fields.get(k, k) for k in FORMATS[fmt]} | {fields.get("id", "id")}
    for no, rec in records:
        row = _Row(path, no, rec, unit, fields, optional_target)
        ex = _convert(row, fmt)
        raw_id = row.get("id")
        if raw_id is not None and raw_id != "":
            if isinstance(raw_id, float):  # str(3.0) is '3.0', not the '3' the user meant
                raise row.err("id", f"expected a string or a whole number, got {raw_id!r}")
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
                raise row.err("id", f"expected a string or number, got {_type(raw_id)}")
            ex.id = str(raw_id)
        else:
            ex.id = f"{Path(path).stem}-{no}"
        if ex.id in seen:
            raise row.err("id", f"duplicate id '{ex.id}' (first at {unit} {seen[ex.id]})")
        seen[ex.id] = no
        ex.meta.update({k: v for k, v in rec.items() if k not in used})
        ex.meta["_line"] = no
        out.append(ex)
    return out


def _convert(row: _Row, fmt: str) -> Example:
    if fmt == "text_label":
        return Example("", row.text("text"), row.target("label", label=True).strip())
    if fmt == "prompt_completion":
        return Example("", row.text("prompt"), row.target("completion"))
    if fmt == "alpaca":
        instr = row.text("instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise row.err("input", f"expected a string, got {_type(extra)}")
        return Example("", instr + (f"\n\n{extra}" if extra and extra.strip() else ""),
                       row.target("output"))
    if fmt == "chat":
        return _chat(row)
    if fmt == "rft":
        return _rft(row)
    if fmt == "choice":
        return _choice(row)
    raise ValueError(fmt)


def _chat(row: _Row) -> Example:
    msgs = row.get("messages")
    if isinstance(msgs, str) and msgs.lstrip().startswith("["):  # a CSV cell: a JSON array
        try:
            msgs = _loads(msgs)
        except json.JSONDecodeError as e:
            raise row.err("messages", f"invalid JSON ({e.msg} at column {e.colno})") from None
        if problem := _bad_value(msgs):
            raise row.err("messages", problem)
    if not isinstance(msgs, list):
        raise row.err("messages", f"expected an array of messages, got {_type(msgs)}")
    if len(msgs) < (1 if row.optional_target else 2):
        raise row.err("messages", "needs at least a user and an assistant message")
    msgs = list(msgs)   # developer turns are renamed below, in this copy, not in the record
    for i, m in enumerate(msgs):
        name = f"messages[{i}]"
        if not isinstance(m, dict):
            raise row.err(name, f"expected an object, got {_type(m)}")
        if m.get("role") == "developer":   # OpenAI's system message for newer models: same place, same purpose
            msgs[i] = m = {**m, "role": "system"}
        if m.get("role") not in ("system", "user", "assistant"):
            raise row.err(f"{name}.role", f"expected system, developer, user or assistant, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise row.err(f"{name}.content", f"expected a string, got {_type(m.get('content'))}")
        if not m["content"].strip() and m["role"] != "system":
            raise row.err(f"{name}.content", "is empty")
    if msgs[-1]["role"] != "assistant" and row.optional_target:   # a conversation to answer
        return Example("", [{"role": m["role"], "content": m["content"]} for m in msgs], "")
    if msgs[-1]["role"] != "assistant":
        raise row.err(f"messages[{len(msgs) - 1}].role", "the last message must be the assistant's answer")
    return Example("", [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]],
                   msgs[-1]["content"])


def _rft(row: _Row) -> Example:
    """A reinforcement fine-tuning row (OpenAI's shape): `messages` ending with the user's turn (a
    developer message is the system message of newer models), and the fields its grader reads
    (`{{ item.reference_answer }}`, `{{ item.compliant }}` ...), kept in the example's meta. The
    target is `reference_answer` when that is text or a number, else empty: such a row is graded,
    not imitated."""
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise row.err("messages", f"expected an array of messages, got {_type(msgs)}"
                      if not isinstance(msgs, list) else "is empty")
    out = []
    for i, m in enumerate(msgs):
        name = f"messages[{i}]"
        if not isinstance(m, dict):
            raise row.err(name, f"expected an object, got {_type(m)}")
        if m.get("role") not in ("system", "developer", "user", "assistant"):
            raise row.err(f"{name}.role", f"expected system, developer, user or assistant, got {m.get('role')!r}")
        content = m.get("content")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                             and isinstance(p.get("text"), str) for p in content):
            content = "".join(p["text"] for p in content)   # OpenAI's text parts
        if not isinstance(content, str):
            raise row.err(f"{name}.content", f"expected a string or text parts, got {_type(m.get('content'))}")
        if not content.strip() and m["role"] not in ("system", "developer"):
            raise row.err(f"{name}.content", "is empty")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    if out[-1]["role"] != "user":
        raise row.err(f"messages[{len(out) - 1}].role", "a reinforcement fine-tuning row ends with the user's turn "
                      f"(the model writes the answer), got {out[-1]['role']!r}; a row ending with the answer is "
                      "supervised (chat) data")
    ref = row.get("reference_answer")
    target = str(ref) if isinstance(ref, (str, int, float)) and not isinstance(ref, bool) else ""
    return Example("", out, target, meta={"_rft": True})   # the planner tells RFT rows apart by it


def _choice(row: _Row) -> Example:
    q = row.text("question")
    choices = row.get("choices")
    if isinstance(choices, str):  # CSV cells: a JSON array or one choice per line
        try:
            choices = _loads(choices)
        except Unusable as e:
            raise row.err("choices", f"invalid JSON ({e.msg} at column {e.colno})") from None
        except json.JSONDecodeError:
            choices = [c for c in choices.splitlines() if c.strip()]
        if problem := _bad_value(choices):
            raise row.err("choices", problem)
    if not isinstance(choices, list) or len(choices) < 2:
        raise row.err("choices", f"expected an array of at least 2 choices, got {_type(choices)}"
                      if not isinstance(choices, list) else "needs at least 2 choices")
    for i, c in enumerate(choices):
        if not isinstance(c, str) or not c.strip():
            raise row.err(f"choices[{i}]", "expected a non-empty string")
    ans = row.get("answer")
    if ans is None and row.optional_target:
        return Example("", q, "", choices=[str(c) for c in choices])
    # The text of a choice wins over reading it as an index: with choices ["1", "2", "3"] the
    # answer "1" is the first choice, not choices[1]. isdecimal, not isdigit: int() refuses "²";
    # and past 9 digits it is no index (int() refuses past 4300).
    if isinstance(ans, str) and ans.strip().isdecimal() and len(ans.strip()) <= 9 and ans not in choices:
        ans = int(ans.strip())
    if isinstance(ans, int) and not isinstance(ans, bool):
        if not 0 <= ans < len(choices):
            raise row.err("answer", f"index {ans} is out of range for {len(choices)} choices")
        target = choices[ans]
    elif isinstance(ans, str) and ans in choices:
        target = ans
    elif isinstance(ans, str) and len(ans.strip()) == 1 and ans.strip().upper() in _LETTERS[:len(choices)]:
        target = choices[_LETTERS.index(ans.strip().upper())]
    elif ans is None:
        raise row.err("answer", "missing")
    else:
        raise row.err("answer", f"{ans!r} is not a choice, a choice index or a choice letter")
    return Example("", q, target, choices=[str(c) for c in choices])


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------- the entry point


def load_task_file(path: str | Path, *, name: str | None = None, kind: str | None = None,
                   format: str | None = None, fields: dict | None = None,
                   labels: list[str] | None = None, instruction: str | None = None,
                   metrics: list[str] | None = None, encoding: str = "utf-8") -> Task:
    """Loads a user's task file. `fields` renames fields, e.g. {"text": "tweet"}."""
    path = Path(path)
    records, unit = read_records(path, encoding)
    fields = fields or {}
    if format is None:
        renamed = [(no, {next((k for k, v in fields.items() if v == key), key): val
                         for key, val in rec.items()}) for no, rec in records[:1]]
        format = detect_format(path, renamed, unit)
        if format == "chat" and is_rft_record(renamed[0][1]):
            format = "rft"
    if format not in FORMATS:
        raise DataError(path, f"format '{format}' is not one of {list(FORMATS)}")
    examples = records_to_examples(path, records, unit, format, fields)
    kind = kind or FORMAT_KIND[format]
    if kind == "classify":
        found = sorted({ex.target for ex in examples})
        if labels:
            labels = [str(x) for x in labels]
            for ex in examples:
                if ex.target not in labels:
                    raise DataError(path, f"label '{ex.target}' is not one of {labels}",
                                    ex.meta["_line"], fields.get("label", "label"), unit)
        labels = labels or found
        if len(labels) < 2:
            raise DataError(path, f"a classification task needs at least 2 labels, found {labels}")
    return Task(name=name or path.stem, kind=kind, instruction=instruction or default_instruction(kind, labels),
                examples=examples, labels=labels if kind == "classify" else None,
                metrics=metrics or [], source=str(path))


def is_rft_record(record: dict) -> bool:
    """Whether a chat record is a reinforcement fine-tuning row: its messages end with the user's
    turn, so the model writes the answer and a grader scores it."""
    msgs = record.get("messages")
    return (isinstance(msgs, list) and bool(msgs) and isinstance(msgs[-1], dict)
            and msgs[-1].get("role") == "user")


def load_inputs(path: str | Path, *, fields: dict | None = None, encoding: str = "utf-8") -> list[Example]:
    """The rows of a file to predict on: any format `load_task_file` reads, targets optional
    (an absent target is ""; a chat may end with the user's turn). Errors name file, line, field."""
    path = Path(path)
    records, unit = read_records(path, encoding)
    fields = fields or {}
    first = {next((k for k, v in fields.items() if v == key), key) for key in records[0][1]}
    fmt = next((name for name, keys in INPUT_FIELDS.items() if all(k in first for k in keys)), None)
    if fmt is None:
        expected = " | ".join("+".join(k) for k in INPUT_FIELDS.values())
        raise DataError(path, f"cannot tell the input from fields {sorted(first)}; expected one of: {expected}",
                        records[0][0], unit=unit)
    return records_to_examples(path, records, unit, fmt, fields, optional_target=True)


def default_instruction(kind: str, labels: list[str] | None = None) -> str:
    if kind == "classify":
        return "Classify the text. Answer with exactly one of: " + ", ".join(labels or []) + "."
    if kind == "choice":
        return "Answer the question with the correct choice."
    return "Follow the instruction and answer."
