"""`tailor predict`: rows of a task file (targets optional) or an OpenAI Batch file through a saved
arm, in input order, per-row failures apart, and resumable after SIGKILL without losing a row or
computing one twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_tickets
from tailor.errors import TailorError
from tailor.methods import load_adapted, make_method, save_adapted
from tailor.predict import run_predict
from tailor.task import load_inputs, load_task_file


@pytest.fixture(scope="module")
def arm(tiny_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("arm")
    tickets = load_task_file(write_tickets(folder / "tickets.jsonl", 60)).split(seed=0)
    save_adapted(make_method("few-shot", {"k": 2}).fit(tickets, tiny_base), folder / "fs")
    return folder / "fs"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_task_file_is_predicted_as_the_ladder_measures_it(arm, tiny_base, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "text": f"ticket {i}: crash error", **(
        {"label": "bug"} if i % 2 else {})}) + "\n" for i in range(20)))
    s = run_predict(arm, rows, tmp_path / "out.jsonl", model="tiny-test", dtype="fp32", device="cpu",
                    runs_dir=str(tmp_path / "runs"), progress=False, cache=False)
    out = _lines(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == [f"r{i}" for i in range(20)] and s["computed"] == 20 and s["failed"] == 0
    adapted = load_adapted(arm, tiny_base)
    examples = load_inputs(rows)
    want = adapted.predict(adapted.engine(None, progress=False), load_task_file(arm.parent / "tickets.jsonl"), examples)
    assert [o["prediction"] for o in out] == [p.prediction for p in want]
    assert all(("target" in o) == (i % 2 == 1) for i, o in enumerate(out))
    assert s["metrics"]["rows"] == 10 and 0 <= s["metrics"]["accuracy"] <= 1   # scored where a target is given
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_an_openai_batch_file_gets_openai_s_output_lines_and_an_error_file(arm, tmp_path):
    chat = {"model": "x", "messages": [{"role": "user", "content": "ticket: refund please"}]}
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat},
             {"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": chat},
             {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "x"}},
             {"custom_id": "d", "method": "POST", "url": "/v1/completions",
              "body": {"model": "x", "prompt": "ticket: crash", "n": 2}}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    s = run_predict(arm, batch, tmp_path / "out.jsonl", tmp_path / "err.jsonl", model="tiny-test", dtype="fp32",
                    device="cpu", runs_dir=str(tmp_path / "runs"), progress=False)
    out, err = _lines(tmp_path / "out.jsonl"), _lines(tmp_path / "err.jsonl")
    assert [o["custom_id"] for o in out] == ["a", "d"] and [e["custom_id"] for e in err] == ["b", "c"]
    assert s["written"] == 2 and s["failed"] == 2
    a = out[0]["response"]
    assert a["status_code"] == 200 and a["body"]["object"] == "chat.completion" and out[0]["error"] is None
    assert a["body"]["choices"][0]["message"]["content"] in ("billing", "bug")   # the classifier's label
    assert [c["index"] for c in out[1]["response"]["body"]["choices"]] == [0, 1]
    assert err[0]["response"] is None and err[0]["error"]["code"] == "invalid_url"
    assert "messages" in err[1]["error"]["message"]


def _predict_cmd(arm, rows, out, runs):
    return [str(Path(sys.executable).parent / "tailor"), "predict", str(arm), "--input", str(rows), "--output",
            str(out), "--model", "tiny-test", "--dtype", "fp32", "--no-cache", "--runs-dir", str(runs)]


def test_killed_twice_with_sigkill_and_resumed_no_row_is_lost_or_computed_twice(arm, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "text": f"ticket {i}: words {i % 97}"}) + "\n"
                            for i in range(10_000)))
    out, journal = tmp_path / "out.jsonl", tmp_path / "out.jsonl.partial"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    seen = 0
    for kill_after in (1500, 5000):
        proc = subprocess.Popen(_predict_cmd(arm, rows, out, tmp_path / "runs"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count("\n") >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        done = [json.loads(line)["i"] for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
        assert len(done) == len(set(done)) > seen      # each finished row journaled once, more each run
        seen = len(done)
        assert not out.exists()                         # nothing half-written
    final = subprocess.run(_predict_cmd(arm, rows, out, tmp_path / "runs"), env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    result = _lines(out)
    assert [r["id"] for r in result] == [f"r{i}" for i in range(10_000)]   # complete, in order, no duplicates
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/predict.json")]
    assert summary["from_journal"] == seen and summary["computed"] == 10_000 - seen   # computed once in all
    assert not journal.exists()


def test_a_torn_journal_line_is_cut_and_a_foreign_journal_refused(arm, tmp_path):
    """A kill mid-write leaves a torn last line: it is cut (not glued to the next entry, which a
    later resume could not read: that row would be computed twice). A journal of another input is
    an error, never mixed in."""
    from tailor.predict import Journal
    out = tmp_path / "out.jsonl"
    made_of = {"input": "abc", "arm": "x"}
    j = Journal(out, made_of)
    j.add([{"i": 0, "line": {}}, {"i": 1, "line": {}}])
    with open(j.path, "a") as f:
        f.write('{"i": 2, "li')            # torn
    j = Journal(out, made_of)
    assert set(j.done) == {0, 1}
    j.add([{"i": 2, "line": {}}])
    assert set(Journal(out, made_of).done) == {0, 1, 2}
    with pytest.raises(TailorError, match="another input, arm or options"):
        Journal(out, {"input": "other", "arm": "x"})
