"""Task files: format detection in every file type, located one-line errors for every class of
bad input, and deterministic seeded splits."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tailor.errors import DataError
from tailor.task import Example, Task, load_task_file, read_records

# ---------------------------------------------------------------- writing test files

SAMPLES = {
    "chat": [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
    ],
    "prompt_completion": [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}],
    "alpaca": [{"instruction": "Translate to English", "input": "chat", "output": "cat"},
               {"instruction": "Say hi", "input": "", "output": "hi"}],
    "text_label": [{"text": "great film", "label": "pos"}, {"text": "dull film", "label": "neg"}],
    "choice": [{"question": "Capital of France?", "choices": ["Rome", "Paris"], "answer": 1},
               {"question": "2+2?", "choices": ["3", "4", "5"], "answer": "4"}],
}
# What each sample's first two records become: (kind, input, target, choices).
EXPECTED = {
    "chat": ("generate", [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "Hello"],
             [[{"role": "user", "content": "2+2?"}], "4"]),
    "prompt_completion": ("generate", ["2+2=", "4"], ["3+3=", "6"]),
    "alpaca": ("generate", ["Translate to English\n\nchat", "cat"], ["Say hi", "hi"]),
    "text_label": ("classify", ["great film", "pos"], ["dull film", "neg"]),
    "choice": ("choice", ["Capital of France?", "Paris"], ["2+2?", "4"]),
}
SUFFIXES = ("jsonl", "json", "csv", "parquet")


def write(path, records: list[dict]):
    """Writes records in the file type named by the suffix, as a user's tools would."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif suffix == ".csv":
        columns = list(dict.fromkeys(k for r in records for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            for r in records:  # nested values (messages, choices) go in as JSON text
                w.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()})
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise ValueError(suffix)
    return path


# ---------------------------------------------------------------- format detection


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_detects_every_format_in_every_file_type(tmp_path, fmt, suffix):
    records = [dict(r, choices=list(r["choices"])) if "choices" in r else r for r in SAMPLES[fmt]]
    if fmt == "choice" and suffix == "parquet":
        records = [dict(r, answer=str(r["answer"])) for r in records]  # one type per column
    path = write(tmp_path / f"data.{suffix}", records)
    task = load_task_file(path)
    kind, *rows = EXPECTED[fmt]
    assert task.kind == kind
    assert [[ex.input, ex.target] for ex in task.examples] == rows
    if fmt == "choice":
        assert [ex.choices for ex in task.examples] == [["Rome", "Paris"], ["3", "4", "5"]]
        assert task.labels is None
    if fmt == "text_label":
        assert task.labels == ["neg", "pos"]
    # ids are made from the file name and the line/record/row when the file has none
    assert len({ex.id for ex in task.examples}) == 2


def test_format_and_field_names_from_config(tmp_path):
    path = write(tmp_path / "tweets.jsonl", [{"tweet": "so good", "sentiment": "pos", "id": "a"},
                                             {"tweet": "so bad", "sentiment": "neg", "id": "b"}])
    with pytest.raises(DataError, match="cannot detect the format"):
        load_task_file(path)
    task = load_task_file(path, format="text_label", fields={"text": "tweet", "label": "sentiment"})
    assert [(ex.id, ex.input, ex.target) for ex in task.examples] == [("a", "so good", "pos"), ("b", "so bad", "neg")]
    # the renamed name is the one errors point at
    write(path, [{"tweet": "so good", "sentiment": "pos"}, {"tweet": "", "sentiment": "neg"}])
    with pytest.raises(DataError) as e:
        load_task_file(path, fields={"text": "tweet", "label": "sentiment"})
    assert str(e.value) == f"{path}:line 2: field 'tweet': is empty"


def test_choice_answer_as_index_letter_or_text(tmp_path):
    path = write(tmp_path / "mc.jsonl", [
        {"question": "a", "choices": ["x", "y", "z"], "answer": 2},
        {"question": "b", "choices": ["x", "y", "z"], "answer": "B"},
        {"question": "c", "choices": ["x", "y", "z"], "answer": "z"},
        {"question": "d", "choices": ["1", "2", "3"], "answer": "1"},  # the text, not index 1
    ])
    assert [ex.target for ex in load_task_file(path).examples] == ["z", "y", "z", "1"]


def test_csv_with_byte_order_mark_and_other_encoding(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext,label\ncafé,pos\nthé,neg\n".encode("utf-8"))
    task = load_task_file(path)
    assert [ex.input for ex in task.examples] == ["café", "thé"]
    path.write_bytes("text,label\ncafé,pos\nthé,neg\n".encode("latin-1"))
    assert [ex.input for ex in load_task_file(path, encoding="latin-1").examples] == ["café", "thé"]


def test_extra_fields_go_to_meta(tmp_path):
    path = write(tmp_path / "t.jsonl", [{"text": "a", "label": "x", "source": "web"},
                                        {"text": "b", "label": "y", "source": "mail"}])
    ex = load_task_file(path).examples[0]
    assert ex.meta["source"] == "web" and ex.meta["_line"] == 1


# ---------------------------------------------------------------- bad input: exact messages


def err(tmp_path, name: str, content, **kwargs) -> str:
    """Writes `content` (records, text or bytes) and returns the DataError message of loading it."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        write(path, content)
    with pytest.raises(DataError) as e:
        load_task_file(path, **kwargs)
    return str(e.value)


def test_invalid_json_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    msg = err(tmp_path, "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"\n')
    assert re.fullmatch(rf"{re.escape(str(p))}:line 2: invalid JSON \(Expecting ',' delimiter at column \d+\)", msg)
    p = tmp_path / "bad.json"
    msg = err(tmp_path, "bad.json", '[\n {"text": "a", "label": "x"},\n {"text": "b" "label": "y"}\n]')
    assert re.fullmatch(rf"{re.escape(str(p))}:line 3: invalid JSON \(Expecting ',' delimiter at column \d+\)", msg)
    p = tmp_path / "obj.jsonl"
    assert err(tmp_path, "obj.jsonl", '{"text": "a", "label": "x"}\n[1, 2]\n') == \
        f"{p}:line 2: expected a JSON object, got an array"


def test_chat_messages_cell_with_invalid_json(tmp_path):
    p = tmp_path / "chat.csv"
    p.write_text('messages\n"[{""role"": ""user""}"\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_task_file(p)
    assert re.fullmatch(rf"{re.escape(str(p))}:line 2: field 'messages': invalid JSON \(.+ at column \d+\)",
                        str(e.value))


@pytest.mark.parametrize("name,content,line,field", [
    ("enc.jsonl", b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n', 2, "text"),
    ("enc.csv", b"id,text,label\n1,ok,x\n2,caf\xe9,y\n", 3, "text"),
    ("enc2.csv", b"text,label\nok,x\nfine,caf\xe9\n", 3, "label"),
])
def test_wrong_encoding_names_line_and_field(tmp_path, name, content, line, field):
    p = tmp_path / name
    col = content.split(b"\n")[line - 1].index(b"\xe9") + 1
    assert err(tmp_path, name, content) == (
        f"{p}:line {line}: field '{field}': not valid utf-8 (byte 0xe9 at column {col}); "
        "set the file's encoding, e.g. --encoding latin-1")


def test_unknown_encoding(tmp_path):
    p = write(tmp_path / "t.jsonl", SAMPLES["text_label"])
    with pytest.raises(DataError) as e:
        load_task_file(p, encoding="no-such-codec")
    assert str(e.value) == f"{p}: unknown encoding 'no-such-codec'"


@pytest.mark.parametrize("suffix,unit,where", [("jsonl", "line", 2), ("json", "record", 2),
                                                ("csv", "line", 2), ("parquet", "row", 2)])
def test_missing_field_names_line_and_field(tmp_path, suffix, unit, where):
    records = [{"text": "a", "label": "x"}, {"label": "y"}]  # key absent
    if suffix == "parquet":
        records[1] = {"text": None, "label": "y"}  # a null cell
    kwargs = {}
    if suffix == "csv":  # the whole column is absent: the format must then come from the config
        records, kwargs = [{"label": "x"}, {"label": "y"}], {"format": "text_label"}
    name = f"miss.{suffix}"
    assert err(tmp_path, name, records, **kwargs) == f"{tmp_path / name}:{unit} {where}: field 'text': missing"


def test_missing_csv_cell(tmp_path):
    # a short row: fewer cells than the header has columns
    msg = err(tmp_path, "short.csv", "text,label\na,x\nb\n")
    assert msg == f"{tmp_path / 'short.csv'}:line 3: field 'label': missing"


@pytest.mark.parametrize("name,records,where,field", [
    ("e.jsonl", [{"text": "a", "label": "x"}, {"text": "   ", "label": "y"}], "line 2", "text"),
    ("e.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": ""}], "line 3", "label"),
    ("e.parquet", [{"prompt": "a", "completion": "x"}, {"prompt": "b", "completion": ""}], "row 2", "completion"),
    ("e.json", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}],
     "record 1", "messages[1].content"),
])
def test_empty_field_names_line_and_field(tmp_path, name, records, where, field):
    assert err(tmp_path, name, records) == f"{tmp_path / name}:{where}: field '{field}': is empty"


@pytest.mark.parametrize("records,where,field,problem", [
    ([{"text": "a", "label": "x"}, {"text": 5, "label": "y"}], "line 2", "text", "expected a string, got a number"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": 1.5}], "line 2", "label", "expected a string, got a number"),
    ([{"text": "a", "label": "x"}, {"text": ["b"], "label": "y"}], "line 2", "text", "expected a string, got an array"),
    ([{"messages": "hi"}], "line 1", "messages", "expected an array of messages, got a string"),
    ([{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}], "line 1",
     "messages[0].content", "expected a string, got a number"),
    ([{"question": "q", "choices": "[1]", "answer": 0}], "line 1", "choices", "needs at least 2 choices"),
    ([{"question": "q", "choices": {"a": 1}, "answer": 0}], "line 1", "choices",
     "expected an array of at least 2 choices, got an object"),
    ([{"question": "q", "choices": ["a", "b"], "answer": 5}], "line 1", "answer", "index 5 is out of range for 2 choices"),
    ([{"text": "a", "label": "x", "id": {"n": 1}}], "line 1", "id", "expected a string or number, got an object"),
])
def test_wrong_type_names_line_and_field(tmp_path, records, where, field, problem):
    p = tmp_path / "types.jsonl"
    assert err(tmp_path, "types.jsonl", records) == f"{p}:{where}: field '{field}': {problem}"


def test_label_outside_the_label_set(tmp_path):
    records = [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": "Pos"}]
    assert err(tmp_path, "l.jsonl", records, labels=["pos", "neg"]) == \
        f"{tmp_path / 'l.jsonl'}:line 3: field 'label': label 'Pos' is not one of ['pos', 'neg']"
    assert err(tmp_path, "l.parquet", records, labels=["pos", "neg"]) == \
        f"{tmp_path / 'l.parquet'}:row 3: field 'label': label 'Pos' is not one of ['pos', 'neg']"
    # without a label set, every label found is one
    assert load_task_file(tmp_path / "l.jsonl").labels == ["Pos", "neg", "pos"]


@pytest.mark.parametrize("name,content", [
    ("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n"), ("empty.json", "[]"), ("empty.csv", ""),
    ("header_only.csv", "text,label\n"), ("empty.parquet", []),
])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path)
        content = None
    msg = err(tmp_path, name, content) if content is not None else _load_err(path)
    tail = " (no rows under the header)" if name == "header_only.csv" else ""
    assert msg == f"{path}: file is empty{tail}"


def _load_err(path) -> str:
    with pytest.raises(DataError) as e:
        load_task_file(path)
    return str(e.value)


def test_split_too_small(tmp_path):
    path = write(tmp_path / "small.jsonl", [{"text": t, "label": "xy"[i % 2]} for i, t in enumerate("abcde")])
    task = load_task_file(path)
    with pytest.raises(DataError) as e:
        task.split(seed=0, test=0.05, dev=0.2)
    assert str(e.value) == (f"{path}: split 'test' is too small: 0 of 5 rows (asked for 0.05); "
                            "add rows or change the split size")
    with pytest.raises(DataError) as e:
        task.split(seed=0, test=1, dev=0.01)
    assert str(e.value).startswith(f"{path}: split 'dev' is too small: 0 of 5 rows")


def test_duplicate_ids(tmp_path):
    records = [{"id": "a", "text": "x", "label": "p"}, {"id": "b", "text": "y", "label": "n"},
               {"id": "a", "text": "z", "label": "p"}]
    assert err(tmp_path, "dup.jsonl", records) == \
        f"{tmp_path / 'dup.jsonl'}:line 3: field 'id': duplicate id 'a' (first at line 1)"
    assert err(tmp_path, "dup.csv", records) == \
        f"{tmp_path / 'dup.csv'}:line 4: field 'id': duplicate id 'a' (first at line 2)"
    # numbers and strings that print the same are the same id
    records[2]["id"] = 7
    records[0]["id"] = "7"
    assert err(tmp_path, "dup2.json", records) == \
        f"{tmp_path / 'dup2.json'}:record 3: field 'id': duplicate id '7' (first at record 1)"


def test_undetectable_format_names_fields(tmp_path):
    msg = err(tmp_path, "odd.jsonl", [{"foo": 1, "bar": 2}])
    assert msg.startswith(f"{tmp_path / 'odd.jsonl'}:line 1: cannot detect the format from fields ['bar', 'foo']")


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    assert _load_err(tmp_path / "x.txt").startswith(f"{tmp_path / 'x.txt'}: unsupported file type '.txt'")
    assert _load_err(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_read_records_units(tmp_path):
    assert read_records(write(tmp_path / "a.jsonl", SAMPLES["alpaca"]))[1] == "line"
    recs, unit = read_records(write(tmp_path / "a.csv", SAMPLES["alpaca"]))
    assert unit == "line" and [no for no, _ in recs] == [2, 3]  # line 1 is the header
    assert read_records(write(tmp_path / "a.parquet", SAMPLES["alpaca"]))[1] == "row"


# ---------------------------------------------------------------- splits


def _task(n: int, order=None) -> Task:
    ids = list(range(n)) if order is None else order
    return Task("t", "classify", "Classify.", [Example(f"ex{i:03d}", f"text {i}", "ab"[i % 2]) for i in ids],
                labels=["a", "b"])


def _ids(task: Task) -> dict[str, list[str]]:
    return {k: [ex.id for ex in v] for k, v in task.splits.items()}


def test_split_is_deterministic_and_covers_every_row_once():
    a = _ids(_task(100).split(seed=3, test=0.2, dev=10))
    b = _ids(_task(100).split(seed=3, test=0.2, dev=10))
    assert a == b
    assert (len(a["test"]), len(a["dev"]), len(a["train"])) == (20, 10, 70)
    everything = a["train"] + a["dev"] + a["test"]
    assert sorted(everything) == sorted(f"ex{i:03d}" for i in range(100))
    # another seed gives another split
    assert _ids(_task(100).split(seed=4, test=0.2, dev=10))["test"] != a["test"]


def test_split_does_not_depend_on_file_order():
    import random
    order = list(range(100))
    random.Random(1).shuffle(order)
    assert _ids(_task(100, order).split(seed=0))["test"] == _ids(_task(100).split(seed=0))["test"]


def test_rows_that_name_their_split_keep_it(tmp_path):
    records = [{"text": f"t{i}", "label": "xy"[i % 2], "split": "test" if i < 3 else ""} for i in range(20)]
    task = load_task_file(write(tmp_path / "s.jsonl", records)).split(seed=0, test=0.5, dev=2)
    assert sorted(ex.input for ex in task.splits["test"]) == ["t0", "t1", "t2"]
    assert len(task.splits["dev"]) == 2 and len(task.splits["train"]) == 15


def test_data_hash_changes_with_content():
    a, b = _task(10), _task(10)
    assert a.data_hash == b.data_hash and len(a.data_hash) == 64
    b.examples[3].target = "a" if b.examples[3].target == "b" else "b"
    from tailor.task import hash_examples
    assert hash_examples(b.examples) != a.data_hash


def test_bad_kind_is_a_data_error():
    with pytest.raises(DataError, match="kind 'regress' is not one of"):
        Task("t", "regress", "", [])


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    # U+2028 and U+0085 are legal unescaped inside JSON strings (tweets carry them); only \n
    # ends a JSONL record
    path = tmp_path / "sep.jsonl"
    rows = [{"text": "first\u2028half", "label": "x"}, {"text": "a\x85b", "label": "y"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    task = load_task_file(path)
    assert [ex.input for ex in task.examples] == ["first\u2028half", "a\x85b"]
    assert [ex.meta["_line"] for ex in task.examples] == [1, 2]


def test_a_split_smaller_than_asked_is_noted():
    task = _task(8).split(seed=0, test=5, dev=5)
    assert [len(task.splits[k]) for k in ("test", "dev", "train")] == [5, 3, 0]
    assert task.notes == ["split 'dev' has 3 rows, fewer than the 5 asked for",
                          "split 'train' is empty: methods that learn from examples cannot run"]
    task.split(seed=0, test=5, dev=5)
    assert len(task.notes) == 2  # splitting again does not repeat them
    assert _task(100).split(seed=0, test=10, dev=10).notes == []
