"""Fuzzing the knowledge-base readers (documents, a base's manifest) and the review reader of
`tailor label --accept`: whatever a file holds, reading it gives valid values (text every later
step can encode, hash and write) or a one-line TailorError naming the file, never another exception.
The cases the fuzzer and a read of the code found are kept below as plain tests."""

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
from tailor.label import read_review
from tailor.retrieval.documents import MAX_ID_CHARS, read_documents
from tailor.retrieval.kb import read_manifest

# Bounded and reproducible: a fixed sequence of examples and no example database.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

tricky = st.sampled_from(["", " ", "\ud800", "a\udfffb", "a\u2028b", "0", "1", "²", "9" * 1200, "pos", "neg",
                          "accept", "reject", "user", "[1, 2]", '[{"role": "user", "content": "\\ud800"}]', "a\nb",
                          "{}", "nan", "inf", "-0.5", "0.7", "\x00"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.integers(10**50, 10**60),
                    st.floats(allow_nan=True), tricky, st.text(max_size=8))
names = st.one_of(st.sampled_from(["id", "title", "text", "input", "label", "confidence", "probs", "review",
                                   "choices", "gold", "kept", "p_pos", "p_neg"]), st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)), max_leaves=12)
usually = st.sampled_from([True] * 12 + [False])   # shrinks towards True: the valid value
byte_soup = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(
    [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\n", b"\\", b'"id"', b'"text"', b'"title"', b'"a"', b"1", b"null",
     b"\\ud800", b"\xef\xbb\xbf", b"\xe9", b"\r", b"\x00", b"<p>", b"</p>", b"&#xd800;", b"# "]), max_size=40).map(b"".join))


def _usable(text: str) -> None:
    """What every later step does with a read string: UTF-8 (files, hashes, tokenizers)."""
    assert isinstance(text, str)
    text.encode("utf-8")


def _one_line(e: TailorError, path: Path) -> None:
    assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)


# ---------------------------------------------------------------- documents


@st.composite
def document_records(draw):
    out = []
    for i in range(draw(st.integers(1, 6))):
        if not draw(usually):
            out.append(draw(st.one_of(st.dictionaries(names, values, max_size=4), values)))
            continue
        rec = {"id": draw(st.one_of(st.just(f"d{i}"), st.integers(0, 9), st.integers(10**30, 10**40)))
               if draw(usually) else draw(values),
               "text": draw(st.one_of(st.text(min_size=1, max_size=30), tricky)) if draw(usually) else draw(values)}
        if draw(st.booleans()):
            rec["title"] = draw(st.one_of(st.text(max_size=10), tricky)) if draw(usually) else draw(values)
        out.append(rec)
    return out


def _read_docs(path: Path) -> None:
    try:
        docs = read_documents(path)
    except TailorError as e:
        _one_line(e, path)
        return
    assert docs and len({d.id for d in docs}) == len(docs)
    for d in docs:
        assert 0 < len(d.id) <= MAX_ID_CHARS and d.text.strip()
        for s in (d.id, d.title, d.text):
            _usable(s)
        assert len(d.sha256) == 64


@FUZZ
@given(recs=document_records())
def test_random_document_records_never_crash(tmp_path_factory, recs):
    path = tmp_path_factory.mktemp("docs") / "kb.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in recs).encode("utf-8"))
    _read_docs(path)


@FUZZ
@given(data=byte_soup, suffix=st.sampled_from([".jsonl", ".txt", ".md", ".html"]))
def test_random_document_bytes_never_crash(tmp_path_factory, data, suffix):
    folder = tmp_path_factory.mktemp("bytes")
    (folder / f"doc{suffix}").write_bytes(data)
    _read_docs(folder / f"doc{suffix}")
    if suffix != ".jsonl":
        _read_docs(folder)


@pytest.mark.parametrize("content,message", [
    ('{"id": "a", "text": "x\\ud800y"}\n', "line 1: field 'text': holds an unpaired surrogate '\\ud800'"),
    ('{"id": "\\udc00", "text": "xy"}\n', "line 1: field 'id': holds an unpaired surrogate '\\udc00'"),
    ('{"id": "a", "title": "\\ud800", "text": "xy"}\n', "line 1: field 'title': holds an unpaired surrogate"),
    ('{"id": ' + "7" * 4000 + ', "text": "a"}\n', f"line 1: field 'id': 4000 characters long; an id is at most {MAX_ID_CHARS}"),
    ('{"id": ' + "7" * 5000 + ', "text": "a"}\n', "line 1: invalid JSON (a number longer than 4300 digits"),
    ('{"id": 1.5, "text": "a"}\n', "line 1: field 'id': expected a non-empty string or an integer, got a number"),
    ('{"id": "a", "text": {"p": ["x"]}}\n', "line 1: field 'text': expected a string, got an object"),
    ('{"id": "a", "text": "x", "m": ' + "[" * 3000 + "]" * 3000 + "}\n", "line 1: invalid JSON (nested deeper than 100"),
    ("", "no documents found (the file holds no record)"),
])
def test_found_document_cases_are_located_errors(tmp_path, content, message):
    path = tmp_path / "kb.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_documents(path)
    assert str(e.value).startswith(f"{path}:{message}" if message.startswith("line") else f"{path}: {message}")


def test_a_file_name_that_is_not_utf8_is_a_located_error(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "fine.txt").write_text("fine")
    try:
        with open(bytes(folder) + b"/caf\xe9.txt", "w") as f:
            f.write("x")
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    with pytest.raises(DataError, match="the file name is not valid utf-8"):
        read_documents(folder)


# ---------------------------------------------------------------- a knowledge base's manifest


GOOD_MANIFEST = {"format": 1, "generation": "g-0123456789ab", "content_id": "c0ffee", "chunker": {}, "embedder": {},
                 "lexical": {}, "documents": {"a": {"sha256": "0" * 64, "title": "", "chunks": 1}}, "n_documents": 1,
                 "n_chunks": 1, "bytes": 10}


@FUZZ
@given(edit=st.dictionaries(st.sampled_from(list(GOOD_MANIFEST) + ["x"]), values, max_size=3),
       whole=st.one_of(st.none(), values))
def test_an_edited_manifest_is_read_whole_or_refused_in_one_line(tmp_path_factory, edit, whole):
    folder = tmp_path_factory.mktemp("kb")
    manifest = {**GOOD_MANIFEST, **edit} if whole is None else whole
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    try:
        m = read_manifest(folder)
    except TailorError as e:
        _one_line(e, folder / "manifest.json")
        return
    # what the readers index into is there, of its type, and names only a generation folder
    assert re.fullmatch(r"g-[0-9a-f]{12}", m["generation"]) and isinstance(m["content_id"], str)
    assert all(isinstance(v.get("sha256"), str) for v in m["documents"].values())


@pytest.mark.parametrize("content,message", [
    ("[1]", "expected a JSON object, got an array"),
    (b'{"format": 1, "x": "\xff"}', "not valid utf-8"),
    (json.dumps({**GOOD_MANIFEST, "generation": "../../etc"}), "field 'generation': expected a generation folder's name"),
    (json.dumps({**GOOD_MANIFEST, "generation": 7}), "field 'generation'"),
    (json.dumps({**GOOD_MANIFEST, "documents": []}), "field 'documents': expected an object, got an array"),
    ('{"format": 1, "x": ' + "[" * 3000 + "]" * 3000 + "}", "nested deeper than 100 levels"),
])
def test_found_manifest_cases_are_located_errors(tmp_path, content, message):
    (tmp_path / "manifest.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as e:
        read_manifest(tmp_path)
    assert message in str(e.value) and str(e.value).startswith(str(tmp_path / "manifest.json"))


# ---------------------------------------------------------------- review files


@st.composite
def review_records(draw):
    kind = draw(st.sampled_from(["classify", "choice", "generate"]))
    out = []
    for i in range(draw(st.integers(1, 5))):
        if not draw(usually):
            out.append(draw(st.dictionaries(names, values, max_size=5)))
            continue
        label = draw(st.sampled_from(["pos", "neg"]))
        rec = {"id": draw(st.one_of(st.just(f"r{i}"), st.integers(0, 5))),
               "input": draw(st.one_of(st.text(min_size=1, max_size=10), tricky,
                                       st.just([{"role": "user", "content": "hi"}]))),
               "label": label, "confidence": draw(st.floats(0, 1)), "review": draw(tricky)}
        if kind == "classify":
            rec["probs"] = {"pos": 0.6, "neg": 0.4}
        elif kind == "choice":
            rec["choices"], rec["probs"] = ["pos", "neg"], {"pos": 0.6, "neg": 0.4}
        else:
            rec["probs"], rec["confidence"] = None, None
        for key in list(rec):
            if not draw(usually):
                rec[key] = draw(values)
        out.append(rec)
    return out


def _review_csv(recs) -> bytes:
    """As a spreadsheet exports the review: nested values as JSON text, a classify review's
    probabilities as p_<label> columns."""
    rows = []
    for r in recs:
        r = dict(r)
        if isinstance(r.get("probs"), dict) and "choices" not in r:
            r.update({f"p_{k}": v for k, v in r.pop("probs").items()})
        rows.append(r)
    columns = list(dict.fromkeys(str(k) for r in rows for k in r))
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if k not in r or r[k] is None else r[k] if isinstance(r[k], str) else json.dumps(r[k])
                    for k in columns])
    return f.getvalue().encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@FUZZ
@given(recs=review_records())
def test_random_review_files_never_crash(tmp_path_factory, suffix, recs):
    path = tmp_path_factory.mktemp("review") / f"review{suffix}"
    path.write_bytes(_review_csv(recs) if suffix == ".csv" else
                     "".join(json.dumps(r) + "\n" for r in recs).encode("utf-8"))
    try:
        kind, rows = read_review(path)
    except TailorError as e:
        _one_line(e, path)
        return
    assert kind in ("classify", "choice", "generate")
    for row in rows:   # every string a merge writes into a task file is UTF-8
        _usable(json.dumps([row.id, row.input, row.label, row.review, row.choices], ensure_ascii=False))


_HEAD = "id,review,label,confidence,input,choices,probs\n"
_OK = '1,,a,0.9,hi,"[""a"",""b""]","{""a"": 0.9, ""b"": 0.1}"\n'


@pytest.mark.parametrize("name,content,message", [
    ("deep.csv", _HEAD + _OK + '2,,a,0.5,hi,"[""a"",""b""]","' + "[" * 3000 + '"\n',
     "line 3: field 'probs': invalid JSON (nested deeper than 100 levels"),
    ("long.csv", _HEAD + _OK + '2,,a,0.5,hi,"[""a"",""b""]","{""a"": ' + "9" * 5000 + '}"\n',
     "line 3: field 'probs': invalid JSON (a number longer than 4300 digits"),
    ("lone.csv", _HEAD + '1,,a,0.9,hi,"[""a"",""\\ud800""]","{""a"": 0.9, ""\\ud800"": 0.1}"\n',
     "line 2: field 'choices': holds an unpaired surrogate '\\ud800'"),
    ("chat.csv", 'id,review,label,confidence,input\n1,,a,,"[{""role"": ""user"", ""content"": ""\\ud800""}]"\n',
     "line 2: field 'input': holds an unpaired surrogate '\\ud800'"),
    ("probs.jsonl", json.dumps({"id": "1", "input": "hi", "label": "pos", "confidence": 0.9, "probs": ["pos"],
                                "review": ""}) + "\n",
     "line 1: field 'probs': expected an object of probabilities (or null), got an array"),
    ("big.jsonl", json.dumps({"id": "1", "input": "hi", "label": "pos", "confidence": 10**4000,
                              "probs": {"pos": 1, "neg": 0}, "review": ""}) + "\n",
     "line 1: field 'confidence': expected a number from 0 to 1, got a number of 4001 digits"),
])
def test_found_review_cases_are_located_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_review(path)
    assert str(e.value).startswith(f"{path}:{message}"), str(e.value)


# ---------------------------------------------------------------- through the CLI: one line, exit 2, nothing written


def test_the_commands_refuse_bad_sources_manifests_and_reviews_in_one_line_and_write_nothing(tmp_path, monkeypatch,
                                                                                            capsys):
    from test_output_paths import _refused, _snapshot, cli
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lone.jsonl").write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "x\\ud800"}\n')
    code, err = cli(monkeypatch, capsys, "index", "lone.jsonl", "--out", "kb", "--model", "tiny-test")
    _refused(code, err, "lone.jsonl:line 2: field 'text': holds an unpaired surrogate '\\ud800'")
    assert not (tmp_path / "kb").exists()

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Refunds take 14 days.")
    code, err = cli(monkeypatch, capsys, "index", "docs", "--out", "docs/kb", "--model", "tiny-test")
    _refused(code, err, "docs/kb: the knowledge base folder is inside its source folder")
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["a.txt"]

    for manifest, problem in (("[1]", "manifest.json: expected a JSON object, got an array"),
                              ('{"format": 1, "generation": 5}', "manifest.json: field 'generation'")):
        kb = tmp_path / "edited-kb"
        kb.mkdir(exist_ok=True)
        (kb / "manifest.json").write_text(manifest)
        before = _snapshot(kb)
        code, err = cli(monkeypatch, capsys, "index", "docs", "--out", kb, "--model", "tiny-test")
        _refused(code, err, problem)
        assert _snapshot(kb) == before

    (tmp_path / "deep.csv").write_text(_HEAD + _OK + '2,,a,0.5,hi,"[""a"",""b""]","' + "[" * 3000 + '"\n')
    code, err = cli(monkeypatch, capsys, "label", "--accept", "deep.csv", "--into", "task.jsonl")
    _refused(code, err, "deep.csv:line 3: field 'probs': invalid JSON (nested deeper than 100 levels")
    assert not (tmp_path / "task.jsonl").exists()
