"""The one JSONL reader (split on "\\n" only, located errors, torn last lines), the one atomic
writer (file and folder, fsynced), the one base-name rule; and the arm whose pool holds U+2028."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tailor.errors import DataError, TailorError
from tailor.jsonl import read_jsonl
from tailor.utils import atomic_dir, atomic_write, atomic_write_text

# Characters str.splitlines() breaks at besides "\n", all legal raw inside a JSON string.
SEPARATORS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r"


def _write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_lines_are_split_on_newline_only(tmp_path):
    rows = [{"id": "a", "text": f"one{SEPARATORS}two"}, {"id": "b", "text": "tweet\u2028with\u2029breaks"}]
    path = _write(tmp_path / "x.jsonl", rows)
    assert len(path.read_text(encoding="utf-8").splitlines()) > 2   # what a splitlines() reader would have cut
    assert read_jsonl(path) == [(1, rows[0]), (2, rows[1])]


def test_a_bad_line_is_one_located_error(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2, "text": "a\u2028b"}\n{"id": 3,\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:line 4: invalid JSON \(.* at column \d+\)$") as e:
        read_jsonl(path)
    assert "\n" not in str(e.value)
    path.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"^{path}:line 2: expected a JSON object, got an array$"):
        read_jsonl(path)
    path.write_bytes(b'{"id": 1}\n{"t": "caf\xe9"}\n')
    with pytest.raises(DataError, match=rf"^{path}:line 2: not valid utf-8 \(byte 0xe9 at column 11\)$"):
        read_jsonl(path)
    path.write_text('{"id": 1}\n' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DataError, match=rf"^{path}:line 2: invalid JSON \(nested deeper than 100 levels"):
        read_jsonl(path, objects=False)


def test_a_torn_last_line_is_read_dropped_or_cut(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    whole = '{"i": 0, "text": "a\u2028b"}\n{"i": 1}\n'
    path.write_text(whole + '{"i": 2, "te', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:line 3: invalid JSON"):   # read: like any other line
        read_jsonl(path)
    assert [r["i"] for _, r in read_jsonl(path, torn="drop")] == [0, 1]
    assert path.read_text(encoding="utf-8").endswith('"te')                # drop leaves the file alone
    assert "line 3 was torn" in caplog.text
    assert [r["i"] for _, r in read_jsonl(path, torn="cut")] == [0, 1]
    assert path.read_text(encoding="utf-8") == whole                        # cut: the next append starts a line
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"i": 2}\n')
    assert [r["i"] for _, r in read_jsonl(path, torn="cut")] == [0, 1, 2]
    # a whole last line without its newline is read by "read" (a file need not end in one)
    path.write_text('{"i": 0}\n{"i": 1}', encoding="utf-8")
    assert [r["i"] for _, r in read_jsonl(path)] == [0, 1]


@pytest.mark.parametrize("method,options", [("few-shot", {"k": 3}), ("icl", {"k": 2, "selector": "ngram"})])
def test_an_arm_whose_pool_holds_line_separators_reloads(method, options, tiny_base, tmp_path):
    from tailor.methods import load_adapted, make_method, save_adapted
    from tailor.task import Example, Task
    labels = ("billing", "bug", "other")
    rows = [Example(f"r{i}", f"ticket {i}\u2028second line\u2029next paragraph {labels[i % 3]}", labels[i % 3])
            for i in range(30)]
    task = Task("t", "classify", "Route the ticket.", rows, labels=list(labels)).split(seed=0, test=6, dev=3)
    adapted = make_method(method, options).fit(task, tiny_base)
    assert adapted.pool and all("\u2028" in ex.input and "\u2029" in ex.input for ex in adapted.pool)
    save_adapted(adapted, tmp_path / "arm")
    loaded = load_adapted(tmp_path / "arm", tiny_base)
    assert [(ex.id, ex.input, ex.target) for ex in loaded.pool] == [(ex.id, ex.input, ex.target) for ex in adapted.pool]
    ex = task.splits["test"][0]
    assert loaded.builder.build(ex, loaded.shots(ex)).text == adapted.builder.build(ex, adapted.shots(ex)).text


def test_a_pool_line_without_a_field_is_a_located_error(tmp_path):
    from tailor.recipe import POOL, Recipe, read_recipe, save_recipe
    from tailor.task import Example
    save_recipe(tmp_path, Recipe(method="few-shot", kind="classify", instruction="x"),
                [Example("a", "in\u2028put", "t")])
    assert read_recipe(tmp_path)[1][0].input == "in\u2028put"
    with open(tmp_path / POOL, "a", encoding="utf-8") as f:
        f.write('{"id": "b", "input": "x"}\n')
    with pytest.raises(DataError, match=rf"{tmp_path / POOL}:line 2: field 'target': missing"):
        read_recipe(tmp_path)


def _fsynced(monkeypatch) -> list[int]:
    """The inodes os.fsync is called on (the real fsync still runs)."""
    seen, real = [], os.fsync

    def fsync(fd):
        seen.append(os.fstat(fd).st_ino)
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_the_atomic_writer_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    seen = _fsynced(monkeypatch)
    path = tmp_path / "sub" / "out.npy"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"x" * 10))
    assert path.read_bytes() == b"x" * 10
    assert path.stat().st_ino in seen and path.parent.stat().st_ino in seen
    assert os.listdir(path.parent) == ["out.npy"]

    def killed(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):   # a failed write leaves the old file and no temporary one
        atomic_write(path, killed)
    assert path.read_bytes() == b"x" * 10 and os.listdir(path.parent) == ["out.npy"]
    # the temporary file keeps the suffix, so writers that add one (np.save) add none
    import numpy as np
    atomic_write(path, lambda tmp: np.save(tmp, np.arange(3)))
    assert np.load(path).tolist() == [0, 1, 2] and os.listdir(path.parent) == ["out.npy"]


def test_the_atomic_folder_replaces_whole_and_fsyncs(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.bin").write_text("old")
    seen = _fsynced(monkeypatch)
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new.bin").write_text("new")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (out / "old.bin").exists()
    with atomic_dir(out) as tmp:
        (tmp / "a").mkdir()
        (tmp / "a" / "new.bin").write_text("new")
        atomic_write_text(tmp / "b.json", "{}")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a", "a/new.bin", "b.json"]
    assert {(out / "a" / "new.bin").stat().st_ino, (out / "a").stat().st_ino, out.stat().st_ino,
            tmp_path.stat().st_ino} <= set(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_arms_base_is_named_one_way(tmp_path):
    from tailor.models import recipe_base
    arm = lambda **base: SimpleNamespace(base=base)   # noqa: E731
    # a bundled model by its name: its path is a cache folder of the machine it was fitted on
    assert recipe_base(arm(name="tiny-test", path="/elsewhere/.cache/tailor/models/tiny-test"), tmp_path) == "tiny-test"
    # an endpoint by its spec: its path is only the tokenizer's folder
    spec = "openai:http://127.0.0.1:8000/v1#m"
    assert recipe_base(arm(name=spec, path="/cache/models/smollm2-135m"), tmp_path) == spec
    # a local folder by its path (~ expanded when loaded), a hub id as it was given
    assert recipe_base(arm(name="~/models/m", path="/home/u/models/m"), tmp_path) == "/home/u/models/m"
    assert recipe_base(arm(name="org/model", path="org/model"), tmp_path) == "org/model"
    with pytest.raises(TailorError, match=rf"^{tmp_path / 'recipe.json'}: the recipe does not name the base"):
        recipe_base(arm(weights_id="x"), tmp_path)
