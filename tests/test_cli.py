"""The CLI as a user runs it (a subprocess): every bad input is one line on stderr and exit code
2, never a traceback; `tailor check` on a good file; `tailor eval` writes a complete run
directory and a repeated run is served from the cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

TAILOR = str(Path(sys.executable).with_name("tailor"))


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([TAILOR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=_env())


def _env() -> dict:
    import os
    env = dict(os.environ)
    env["COLUMNS"] = "200"  # rich tables are not squeezed into 80 columns
    return env


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# name -> (file name, content, extra CLI args, expected message after "error: ")
BAD = {
    "invalid_json": ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"\n', [],
                     r"{f}:line 2: invalid JSON \(Expecting ',' delimiter at column \d+\)"),
    "wrong_encoding": ("latin.csv", "text,label\nok,x\ncafé,y\n".encode("latin-1"), [],
                       r"{f}:line 3: field 'text': not valid utf-8 \(byte 0xe9 at column 4\); "
                       r"set the file's encoding, e.g. --encoding latin-1"),
    "missing_field": ("missing.jsonl", _jsonl([{"text": "a", "label": "x"}, {"text": "b"}]), [],
                      r"{f}:line 2: field 'label': missing"),
    "empty_field": ("empty_field.csv", "text,label\na,x\n ,y\n", [], r"{f}:line 3: field 'text': is empty"),
    "wrong_type": ("types.json", json.dumps([{"text": "a", "label": "x"}, {"text": 3, "label": "y"}]), [],
                   r"{f}:record 2: field 'text': expected a string, got a number"),
    "label_outside_set": ("labels.jsonl", _jsonl([{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}]),
                          ["--labels", "pos, neg"],
                          r"{f}:line 2: field 'label': label 'meh' is not one of \['pos', 'neg'\]"),
    "empty_file": ("empty.jsonl", "", [], r"{f}: file is empty"),
    "split_too_small": ("small.jsonl", _jsonl([{"text": t, "label": "xy"[i % 2]} for i, t in enumerate("abc")]), [],
                        r"{f}: split 'test' is too small: 0 of 3 rows \(asked for 0.1\); add rows or change the split size"),
    "duplicate_ids": ("dup.jsonl", _jsonl([{"id": 1, "text": "a", "label": "x"}, {"id": 1, "text": "b", "label": "y"}]),
                      [], r"{f}:line 2: field 'id': duplicate id '1' \(first at line 1\)"),
    "markup_in_data": ("markup.jsonl", _jsonl([{"text": "a", "label": "[bold]"}, {"text": "b", "label": "[/x]"}]),
                       ["--labels", "a,b"], r"{f}:line 1: field 'label': label '\[bold\]' is not one of \['a', 'b'\]"),
    "unknown_encoding": ("enc.jsonl", _jsonl([{"text": "a", "label": "x"}]), ["--encoding", "klingon"],
                         r"{f}: unknown encoding 'klingon'"),
    "missing_file": (None, None, [], r"task '{f}' is neither a bundled task \(.+\) nor a file"),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Runs `tailor check` on every bad file at once (each is a separate process)."""
    root = tmp_path_factory.mktemp("bad")
    procs = {}
    for name, (fname, content, args, _) in BAD.items():
        path = root / (fname or "does-not-exist.jsonl")
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content, encoding="utf-8")
        procs[name] = (path, subprocess.Popen([TAILOR, "check", str(path), *args], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, env=_env()))
    results = {}
    for name, (path, proc) in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = (path, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2_no_traceback(bad_runs, name):
    path, rc, out, err = bad_runs[name]
    assert rc == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    want = "error: " + BAD[name][3].format(f=re.escape(str(path)))
    assert re.fullmatch(want, lines[0]), lines[0]
    assert out == ""


def test_eval_on_a_bad_task_file_is_one_line_too(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n')
    r = run_cli("eval", "--model", "tiny-test", "--task", path, "--runs-dir", tmp_path / "runs")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {path}:line 2: field 'text': expected a string, got a number"


def test_unknown_method_and_model_are_user_errors(tmp_path):
    good = _good_file(tmp_path)
    r = run_cli("eval", "--model", "tiny-test", "--task", good, "--method", "telepathy", "--runs-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: unknown method 'telepathy' (known: zero-shot, few-shot")


def test_the_ladder_under_a_launcher_is_refused_in_one_line_before_any_rank_writes(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("model: tiny-test\ntask: tweet-sentiment\narms: [zero-shot]\n")
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1"}   # what torchrun gives each rank
    for args in (["run", exp, "--runs-dir", tmp_path / "runs"], ["demo", "--runs-dir", tmp_path / "runs"]):
        r = subprocess.run([TAILOR, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert re.fullmatch(r"error: tailor (run|demo) runs in one process, .*tailor train CONFIG --processes N.*",
                            r.stderr.strip())
    assert not (tmp_path / "runs").exists()


def _good_file(tmp_path, n: int = 40, tag: str = "") -> Path:
    """A classification file; `tag` makes its texts unique so the engine cache has never seen them."""
    words = ["great", "awful", "fine"]
    labels = ["positive", "negative", "neutral"]
    rows = [{"id": f"r{i}", "text": f"{words[i % 3]} day number {i} {tag}".strip(), "label": labels[i % 3]}
            for i in range(n)]
    path = tmp_path / "good.jsonl"
    path.write_text(_jsonl(rows), encoding="utf-8")
    return path


def test_check_a_good_file(tmp_path):
    path = _good_file(tmp_path)
    r = run_cli("check", path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert f"ok: {path} is a valid classify task" in out
    assert re.search(r"rows\s+│\s+40\b", out) and re.search(r"test_rows\s+│\s+4\b", out)
    assert "negative (13), neutral (13), positive (14)" in out


def test_eval_writes_a_run_directory_and_repeats_from_cache(tmp_path):
    from tailor.task import load_task_file
    path = _good_file(tmp_path, tag=uuid.uuid4().hex)  # never seen by the engine cache
    runs = tmp_path / "runs"
    args = ["eval", "--model", "tiny-test", "--task", path, "--limit", 3, "--runs-dir", runs]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    dirs = sorted(runs.iterdir())
    assert len(dirs) == 1
    run = dirs[0]
    assert f"run directory: {run}" in first.stdout
    for name in ("config.json", "manifest.json", "metrics.json", "predictions.jsonl", "log.txt"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name

    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["task"], config["limit"], config["method"]) == \
        ("tiny-test", str(path), 3, "zero-shot")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0
    assert manifest["data_hashes"] == {"good": load_task_file(path).data_hash}
    assert {"torch", "transformers", "llm-tailor"} <= set(manifest["versions"])
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", manifest["git_commit"] or "")
    assert manifest["model"]["name"] == "tiny-test" and manifest["model"]["weights_id"].startswith("tiny-test:")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rows"] == 3 and 0 <= metrics["metrics"]["accuracy"] <= 1
    assert {"accuracy", "macro_f1", "ece"} <= set(metrics["metrics"])
    assert metrics["cost"]["cached_share"] == 0.0 and metrics["cost"]["prompt_tokens_per_request"] > 0
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().split("\n") if line]
    assert len(preds) == 3
    assert all(p["prediction"] in ("negative", "neutral", "positive") for p in preds)
    assert {p["id"] for p in preds} <= {f"r{i}" for i in range(40)}
    assert "eval zero-shot on good" in (run / "log.txt").read_text()
    # the printed table
    assert re.search(r"accuracy\s+│\s+\d\.\d{4}", first.stdout)
    assert re.search(r"served from cache\s+│\s+0%", first.stdout)

    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert re.search(r"served from cache\s+│\s+100%", second.stdout)
    run2 = next(d for d in runs.iterdir() if d != run)
    metrics2 = json.loads((run2 / "metrics.json").read_text())
    assert metrics2["cost"]["cached_share"] == 1.0
    assert metrics2["metrics"] == metrics["metrics"]
    preds2 = [json.loads(line) for line in (run2 / "predictions.jsonl").read_text().split("\n") if line]
    assert [p["prediction"] for p in preds2] == [p["prediction"] for p in preds]


def test_the_run_seed_splits_a_task_file(tmp_path):
    from tailor.arm_run import EvalConfig, run_eval
    from tailor.task import load_task_file
    path = _good_file(tmp_path)
    test_ids = {}
    for seed in (0, 1):
        result = run_eval(EvalConfig(model="tiny-test", task=str(path), seed=seed, cache=False, dtype="fp32",
                                     runs_dir=str(tmp_path / "runs")), progress=False)
        preds = (Path(result["run_dir"]) / "predictions.jsonl").read_text().split("\n")
        test_ids[seed] = {json.loads(line)["id"] for line in preds if line}
        assert test_ids[seed] == {ex.id for ex in load_task_file(path).split(seed=seed).splits["test"]}
    assert test_ids[0] != test_ids[1]
