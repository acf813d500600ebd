"""Fuzzing the task-file readers: whatever a file holds, loading and splitting it gives a Task or a
one-line TailorError, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailor.errors import DataError, TailorError
from tailor.task import Task, load_task_file

# Bounded and reproducible in CI: a fixed sequence of examples and no example database.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

KNOWN = ["text", "label", "prompt", "completion", "messages", "role", "content", "instruction",
         "output", "input", "question", "choices", "answer", "id", "split"]
names = st.one_of(st.sampled_from(KNOWN), st.text(max_size=4))
# JSON allows lone surrogates (written as \ud800), which cannot be encoded as UTF-8 later.
tricky = st.sampled_from(["", " ", "\ud800", "a\u2028b", "0", "1", " 1 ", "²", "٣", "A", "b", "9" * 5000,
                          "train", "test", "user", "assistant", "[1, 2]", "a\nb", "{}"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(),
                    st.floats(allow_nan=True), tricky, st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)), max_leaves=12)
# Valid field values, so that most files load and the later steps (ids, labels, splits) run too.
words = st.text(st.characters(codec="utf-8", exclude_categories=("Z", "C")), min_size=1, max_size=8)
words = st.one_of(words, words, words, st.sampled_from(["x\ud800y", "a\u2028b", "²", "\ufeffx", "a\r\nb"]))
msg = {role: st.fixed_dictionaries({"role": st.just(role), "content": words})
       for role in ("system", "user", "assistant")}
valid = {
    "text": words, "prompt": words, "completion": words, "instruction": words, "output": words,
    "input": st.one_of(st.just(""), words), "question": words,
    "label": st.one_of(st.sampled_from(["pos", "neg", "1"]), st.integers(0, 2), st.booleans()),
    "messages": st.tuples(st.lists(msg["system"], max_size=1),
                          st.lists(st.tuples(msg["user"], msg["assistant"]), min_size=1, max_size=2)).map(
        lambda p: p[0] + [m for turn in p[1] for m in turn]),
    "choices": st.lists(words, min_size=2, max_size=4, unique=True),
    "answer": st.one_of(*[st.integers(0, 1), st.sampled_from(["0", " 1 ", "A", "b"])] * 2,
                        st.sampled_from(["²", "٣", "9" * 5000, "-1", "7", "a\ud800"]), words),
    "id": st.one_of(st.integers(0, 20), st.integers(0, 20), words, st.floats(0, 3)),
    "split": st.sampled_from(["train", "test", "dev", "validation", "", "TEST", "other"]),
}
formats = [("text", "label"), ("prompt", "completion"), ("instruction", "output", "input"),
           ("messages",), ("question", "choices", "answer")]
usually = st.sampled_from([True] * 20 + [False])  # shrinks towards True: the valid value


@st.composite
def records(draw):
    """Records of one format, a few of them odd: any field may hold a random value, a record may
    be no object at all, or lack fields, or have more."""
    keys = draw(st.sampled_from(formats))
    out = []
    for _ in range(draw(st.integers(1, 10))):
        if not draw(usually):
            out.append(draw(st.one_of(st.dictionaries(names, values, max_size=5), values)))
            continue
        extra = draw(st.lists(st.sampled_from(["id", "split", "meta"]) | st.text(max_size=4), max_size=2))
        out.append({k: draw(valid[k]) if k in valid and draw(usually) else draw(values)
                    for k in (*keys, *extra)})
    return out


def _csv(recs, delimiter) -> bytes:
    rows = [r for r in recs if isinstance(r, dict)]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    f = io.StringIO(newline="")
    w = csv.writer(f, delimiter=delimiter)
    w.writerow(columns)
    for r in rows:  # nested values go in as JSON text, as in a spreadsheet export
        w.writerow(["" if k not in r else r[k] if isinstance(r[k], str) else json.dumps(r[k])
                    for k in columns])
    return f.getvalue().encode("utf-8", "surrogatepass")


def _write(path: Path, recs) -> bool:
    """Writes the records in the file type named by the suffix; False when that type cannot hold
    them (Parquet needs one type per column)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(recs, indent=1), encoding="utf-8")
    elif path.suffix in (".csv", ".tsv"):
        path.write_bytes(_csv(recs, "\t" if path.suffix == ".tsv" else ","))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            pq.write_table(pa.Table.from_pylist(recs), path)
        except (pa.ArrowException, TypeError, ValueError, UnicodeError, AttributeError):
            return False
    return True


def _load(path: Path):
    """Loads and splits the file; a TailorError is a fine answer, any other exception fails."""
    try:
        task = load_task_file(path)
        assert isinstance(task, Task)
        task.split(seed=0, test=0.2, dev=0.2)
    except TailorError:
        pass


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv"])
@FUZZ
@given(data=st.one_of(st.binary(max_size=200),
                      st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\n", b"\t",
                                                b"\\", b'"text"', b'"label"', b'"a"', b"1", b"null",
                                                b"\xef\xbb\xbf", b"\xe9", b"\r", b"\x00"]),
                               max_size=40).map(b"".join)))
def test_random_bytes_never_crash(tmp_path_factory, suffix, data):
    # a fresh folder per example: function-scoped fixtures such as tmp_path are not reset
    # between examples
    path = tmp_path_factory.mktemp("bytes") / f"task{suffix}"
    path.write_bytes(data)
    _load(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
@FUZZ
@given(recs=records())
def test_random_records_never_crash(tmp_path_factory, suffix, recs):
    path = tmp_path_factory.mktemp("records") / f"task{suffix}"
    if _write(path, recs):
        _load(path)


# ---------------------------------------------------------------- deep nesting, found by hand


@pytest.mark.parametrize("name,content,where", [
    ("deep.jsonl", '{"text": "a", "label": "x"}\n{"text": ' + "[" * 5000 + "]" * 5000 + ', "label": "a"}\n',
     "line 2"),
    ("deep.json", '[\n{"text": "a", "label": "x"},\n{"text": ' + "[" * 5000 + "]" * 5000 + ', "label": "a"}\n]',
     "line 3"),
])
def test_deep_nesting_is_a_data_error(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_task_file(path)
    assert re.fullmatch(rf"{re.escape(str(path))}:{where}: .*nested deeper than 100 levels.*", str(e.value))


@pytest.mark.parametrize("name", ["mid.jsonl", "mid.json", "mid.csv"])
def test_nesting_that_parses_but_is_too_deep_names_the_field(tmp_path, name):
    deep = "[" * 150 + '"x"' + "]" * 150  # parses, but deeper than tailor takes
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("question,choices,answer\nq,\"" + deep.replace('"', '""') + '",0\n', encoding="utf-8")
        field, where = "choices", "line 2"
    else:
        rec = '{"text": "a", "label": "x", "meta": {"m": ' + deep + "}}"
        path.write_text(rec + "\n" if name.endswith(".jsonl") else f"[{rec}]", encoding="utf-8")
        field, where = "meta", "line 1" if name.endswith(".jsonl") else "record 1"
    with pytest.raises(DataError) as e:
        load_task_file(path)
    assert str(e.value) == f"{path}:{where}: field '{field}': nested deeper than 100 levels"


# ---------------------------------------------------------------- what the fuzzer found, kept as cases


@pytest.mark.parametrize("name,content,message", [
    ("sup.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": "²"}\n',
     "line 1: field 'answer': '²' is not a choice, a choice index or a choice letter"),
    ("long.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": "' + "9" * 5000 + '"}\n',
     "line 1: field 'answer': '999"),
    ("int.json", '[{"text": "a", "label": "x", "n": 1' + "0" * 5000 + "}]",
     "line 1: invalid JSON (a number longer than 4300 digits at column 35)"),
    ("lone.jsonl", '{"text": "a\\ud800", "label": "x"}\n',
     "line 1: field 'text': holds an unpaired surrogate '\\ud800' (not valid Unicode)"),
    ("id.jsonl", '{"text": "a", "label": "x", "id": 1.5}\n',
     "line 1: field 'id': expected a string or a whole number, got 1.5"),
    ("dup.csv", "text,label,text\na,x,b\n", "line 1: the header names column 'text' twice"),
    ("cr.csv", b"\r\x80", "line 1: not valid utf-8 (byte 0x80 at column 2)"),
])
def test_fuzzer_finds_are_data_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DataError) as e:
        load_task_file(path)
    assert str(e.value).startswith(f"{path}:{message}")
