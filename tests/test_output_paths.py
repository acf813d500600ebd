"""Output paths: an output, errors file, review file or journal never overwrites an input, an arm's
files or another output, under any spelling (./x and x, a symlink); names with glob and shell
characters work literally; a user's files that merely share an output's prefix are never read or
deleted; a journal refuses to resume under an arm edited since; a fit memo is trusted only while
its folder holds what was recorded. Refusals go through the CLI's entry: one line, exit 2, and
nothing written."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from conftest import write_tickets
from tailor.errors import TailorError
from tailor.methods import make_method, save_adapted
from tailor.task import load_task_file

OPTS = {"model": "tiny-test", "dtype": "fp32", "device": "cpu", "progress": False, "cache": False}


@pytest.fixture(scope="module")
def arm(tiny_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("arm")
    tickets = load_task_file(write_tickets(folder / "tickets.jsonl", 40)).split(seed=0)
    save_adapted(make_method("few-shot", {"k": 2}).fit(tickets, tiny_base), folder / "fs")
    return folder / "fs"


def _rows(path: Path, n: int = 6) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"ticket {i}: crash error"}) + "\n" for i in range(n)))
    return path


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`tailor ARGS` through the CLI's own entry (tailor.cli.main), in this process: (exit code, stderr)."""
    from tailor.cli import main
    monkeypatch.setattr(sys, "argv", ["tailor", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _refused(code: int, err: str, *parts: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    line = " ".join(err.split())   # rich may wrap a long line on a narrow terminal
    assert line.startswith("error: ") and all(p in line for p in parts), err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- outputs that are inputs


def test_an_output_that_is_an_input_or_an_arm_file_is_refused_before_anything_is_written(arm, tmp_path, monkeypatch,
                                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    rows = _rows(tmp_path / "preds.errors.jsonl")
    (tmp_path / "link.jsonl").symlink_to(rows)
    arm_before = _snapshot(arm)
    common = ["--model", "tiny-test", "--dtype", "fp32", "--no-cache", "--runs-dir", "runs"]
    cases = [
        # the default errors file of ./preds.jsonl is preds.errors.jsonl: the input
        (["--input", "preds.errors.jsonl", "--output", "./preds.jsonl"], ["errors file would overwrite the input"]),
        # the output through a symlink to the input
        (["--input", str(rows), "--output", "link.jsonl"], ["the output would overwrite the input"]),
        # --errors spelled another way than the input
        (["--input", "preds.errors.jsonl", "--output", "p.jsonl", "--errors", f"../{tmp_path.name}/preds.errors.jsonl"],
         ["errors file would overwrite the input"]),
        (["--input", str(rows), "--output", "same.jsonl", "--errors", "./same.jsonl"], ["are one file"]),
        # the arm's own recipe and pool
        (["--input", str(rows), "--output", str(arm / "recipe.json")], ["would overwrite the arm's recipe"]),
        (["--input", str(rows), "--output", str(arm / "pool.jsonl")], ["would overwrite the arm's pool"]),
        (["--input", str(rows), "--output", "."], ["the output is a folder"]),
    ]
    for args, parts in cases:
        code, err = cli(monkeypatch, capsys, "predict", arm, *args, *common)
        _refused(code, err, *parts)
    code, err = cli(monkeypatch, capsys, "label", rows, "--with", arm, "--out", arm / "pool.jsonl", *common)
    _refused(code, err, "would overwrite the arm's pool")
    assert _snapshot(arm) == arm_before                   # the arm untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "preds.errors.jsonl"]   # nothing written
    assert rows.read_text() == _rows(tmp_path / "again.jsonl").read_text()


# ---------------------------------------------------------------- names and prefixes


def test_glob_characters_work_literally_and_prefix_sharing_files_are_never_read_or_deleted(arm, tmp_path):
    from tailor.predict import run_predict
    rows = _rows(tmp_path / "in [1] *?$.jsonl")
    out = tmp_path / "out [1] *?$ x.jsonl"
    # a user's own files that merely begin with an output's name: none is a journal of it
    mine = {tmp_path / "out.jsonl.partial.bak": "my notes\n", tmp_path / "out.jsonl.partial-old": "{not json\n",
            tmp_path / "out [1] *?$ x.jsonl.partial.backup": "keep\n", tmp_path / "out1 x.jsonl.partial": "keep\n"}
    for path, text in mine.items():
        path.write_text(text)
    s = run_predict(arm, rows, out, runs_dir=str(tmp_path / "runs"), **OPTS)
    assert s["written"] == 6 and [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"r{i}" for i in range(6)]
    s = run_predict(arm, rows, tmp_path / "out.jsonl", runs_dir=str(tmp_path / "runs"), **OPTS)
    assert s["written"] == 6 and s["from_journal"] == 0
    assert all(path.read_text() == text for path, text in mine.items())
    assert not Path(f"{out}.partial").exists() and not (tmp_path / "out.jsonl.partial").exists()


# ---------------------------------------------------------------- a resumed run under an edited arm


class Killed(Exception):
    pass


def test_a_journal_refuses_to_resume_under_a_prompting_arm_edited_since(arm, tmp_path, monkeypatch):
    from tailor.journal import Journal
    from tailor.predict import run_predict
    edited = tmp_path / "arm"
    shutil.copytree(arm, edited)
    rows, out = _rows(tmp_path / "rows.jsonl", 8), tmp_path / "out.jsonl"
    add = Journal.add

    def add_then_die(self, entries):
        add(self, entries)
        raise Killed()
    monkeypatch.setattr(Journal, "add", add_then_die)
    with pytest.raises(Killed):
        run_predict(edited, rows, out, batch_size=4, runs_dir=str(tmp_path / "runs"), **OPTS)
    monkeypatch.setattr(Journal, "add", add)
    saved_recipe, saved_pool = (edited / "recipe.json").read_bytes(), (edited / "pool.jsonl").read_bytes()
    recipe = json.loads(saved_recipe)
    assert not (recipe.get("weights") or {}).get("digest")       # a prompting arm: no weights to tell it by
    (edited / "recipe.json").write_text(json.dumps({**recipe, "instruction": recipe["instruction"] + " In capitals."}))
    with pytest.raises(TailorError, match=r"out\.jsonl\.partial: the arm was edited since it was left"):
        run_predict(edited, rows, out, batch_size=4, runs_dir=str(tmp_path / "runs"), **OPTS)
    # the pool too decides the answers (the shots)
    (edited / "recipe.json").write_bytes(saved_recipe)
    pool = saved_pool.decode().splitlines()
    assert len(pool) >= 2
    (edited / "pool.jsonl").write_text("\n".join(pool[1:] + pool[:1]) + "\n")
    with pytest.raises(TailorError, match="the arm was edited since"):
        run_predict(edited, rows, out, batch_size=4, runs_dir=str(tmp_path / "runs"), **OPTS)
    (edited / "pool.jsonl").write_bytes(saved_pool)   # as it was: the journal's rows count again
    s = run_predict(edited, rows, out, batch_size=4, runs_dir=str(tmp_path / "runs"), **OPTS)
    assert s["from_journal"] == 4 and s["computed"] == 4


# ---------------------------------------------------------------- fit reuse


def test_a_fit_memo_is_trusted_only_while_its_folder_holds_what_was_recorded(arm, tiny_base, tmp_path, monkeypatch,
                                                                             caplog):
    from tailor import fits
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "fit"
    shutil.copytree(arm, folder)
    fits.remember("k1", folder)
    assert fits.reuse("k1", tiny_base).recipe.instruction == json.loads((folder / "recipe.json").read_text())["instruction"]
    # another run rewrote the folder with another arm: not the fit the key names
    recipe = json.loads((folder / "recipe.json").read_text())
    (folder / "recipe.json").write_text(json.dumps({**recipe, "instruction": "Something else."}))
    with caplog.at_level(logging.WARNING, logger="tailor"):
        assert fits.reuse("k1", tiny_base) is None
    assert "changed since it was recorded" in caplog.text
    # a damaged memo (a killed write of an older Tailor, an edit): trained again, with a warning
    memo = tmp_path / "cache" / "fits" / "k1.json"
    for text in ("{not json", "[]", '{"arm": 3, "digest": "x"}', '{"arm": "x"}'):
        memo.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tailor"):
            assert fits.reuse("k1", tiny_base) is None
        assert "not a fit memo" in caplog.text
