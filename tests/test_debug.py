"""`tailor debug`: failures clustered, and the training rows that teach the model's mistakes found,
on a real `tailor eval` run (tiny-test, zero-shot) over a task file with planted mislabelled rows."""

from __future__ import annotations

import json
from pathlib import Path

from tailor.arm_run import EvalConfig, run_eval
from tailor.debug import debug_run, run_task

TOPICS = {
    "billing": ["my invoice was charged twice this month", "please refund the duplicate payment on my card",
                "the subscription price on the bill is wrong", "I was billed after cancelling my plan"],
    "bug": ["the app crashes when I open the settings page", "the screen freezes after I upload a photo",
            "login fails with an error code five hundred", "the export button does nothing on android"],
    "other": ["thanks for the quick help yesterday", "do you have an office in berlin",
              "what are your opening hours on sunday", "can I speak to someone about a partnership"],
}


def _rows():
    for label, texts in TOPICS.items():
        for i, text in enumerate(texts):
            yield {"text": text, "label": label, "split": "test"}
            yield {"text": f"{text} (case {i})", "label": label, "split": "dev"}


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval(task: Path, runs: Path) -> Path:
    r = run_eval(EvalConfig(model="tiny-test", task=str(task), method="zero-shot", dtype="fp32", cache=False,
                            latency_requests=0, runs_dir=str(runs)), progress=False)
    return Path(r["run_dir"])


def test_debug_finds_the_planted_label_errors_and_leaves_the_correct_rows(tmp_path):
    normal = [{"text": f"general note number {i} about the weather and gardening", "label": "other", "split": "train"}
              for i in range(20)]
    first = _eval(_write(tmp_path / "a.jsonl", [*_rows(), *normal]), tmp_path / "runs-a")
    preds = [json.loads(line) for line in (first / "predictions.jsonl").read_text().splitlines()]
    wrong = [p for p in preds if p["prediction"] != p["target"]]
    right = [p for p in preds if p["prediction"] == p["target"]]
    assert wrong, "the tiny model should get some rows wrong"
    inputs = {ex.id: ex.input_text for ex in run_task(first).splits["test"]}
    # planted: a near copy of each failed test row labelled with the model's wrong answer; controls:
    # near copies of rows it gets right, correctly labelled
    planted = [{"text": inputs[p["id"]] + " please", "label": p["prediction"], "split": "train"} for p in wrong]
    controls = [{"text": inputs[p["id"]] + " please", "label": p["target"], "split": "train"} for p in right]
    second = _eval(_write(tmp_path / "b.jsonl", [*_rows(), *normal, *planted, *controls]), tmp_path / "runs-b")
    assert [json.loads(x)["prediction"] for x in (second / "predictions.jsonl").read_text().splitlines()] == \
        [p["prediction"] for p in preds]   # zero-shot ignores the train rows: the same failures

    fixes = tmp_path / "fixes.jsonl"
    report = debug_run(second, write_fixes=fixes)
    flagged = {r["input"] for r in report["likely_label_errors"]}
    assert flagged == {r["text"] for r in planted}
    assert not flagged & {r["text"] for r in controls}
    assert report["failures"] == len(wrong) and sum(c["size"] for c in report["clusters"]) == len(wrong)
    assert all(f["teaches_the_mistake"] for f in report["failed_rows"])
    by_id = {p["id"]: p for p in map(json.loads, (second / "predictions.jsonl").read_text().splitlines())}
    written = [json.loads(line) for line in fixes.read_text().splitlines()]
    assert {w["input"] for w in written} == flagged
    for w in written:   # the fix it suggests is the gold label of the failure the row taught
        failure = by_id[w["implicated_by"][0]]
        assert w["label"] == failure["prediction"] and w["suggested_label"] == failure["target"]
    kinds = {k["kind"]: k for k in report["output_kinds"]}
    assert abs(sum(k["predicted_share"] for k in kinds.values()) - 1) < 1e-6
    assert json.loads(Path(report["json"]).read_text())["failures"] == len(wrong)


def test_debug_names_a_coverage_gap_where_the_training_rows_are_elsewhere(tmp_path):
    """With training rows about one topic only, failures on the other topics have nothing nearby."""
    train = [{"text": f"{t} again {i}", "label": "billing", "split": "train"}
             for i in range(3) for t in TOPICS["billing"]]
    run = _eval(_write(tmp_path / "c.jsonl", [*_rows(), *train]), tmp_path / "runs")
    report = debug_run(run)
    far = [c for c in report["clusters"] if c["nearby_training_rows"] == 0]
    assert far and all(c["gap"] and c["add"] >= 1 for c in far)
    assert set(report["coverage_gaps"]) == {c["id"] for c in report["clusters"] if c["gap"]}


def test_debug_counts_only_the_rows_a_short_training_run_consumed():
    """An arm trained for fewer steps than one pass learned from the rows its steps consumed (the
    demo's 40 steps of 16 over a 2,000-row sample), not from its whole sample."""
    from types import SimpleNamespace

    from tailor.debug import learned_rows
    from tailor.task import Example, Task
    from tailor.train.data import step_examples
    rows = [Example(f"r{i}", f"text {i}", "a" if i % 2 else "b") for i in range(40)]
    task = Task("t", "classify", "x", rows, labels=["a", "b"], splits={"train": rows, "dev": [], "test": []})

    def recipe(steps, method="lora", kept=40, dropped=()):
        return SimpleNamespace(method=method, options={"batch_size": 4, "seed": 3, "max_train_examples": None},
                               train={"steps": steps, "data": {"kept": kept, "dropped_too_long_ids": list(dropped)}})

    short = learned_rows(task, recipe(3), [])
    assert {ex.id for ex in short} == {ex.id for s in range(3) for ex in step_examples(rows, 4, 3, s)}
    assert len(short) == 12
    assert len(learned_rows(task, recipe(10), [])) == 40          # a full pass: every row
    assert len(learned_rows(task, recipe(3, method="distill"), [])) == 40   # not read in that order
    assert len(learned_rows(task, recipe(3, kept=39), [])) == 40  # the encoding differs: the whole sample
    kept = [ex for ex in rows if ex.id != "r0"]
    assert {ex.id for ex in learned_rows(task, recipe(3, kept=39, dropped=["r0"]), [])} == \
        {ex.id for s in range(3) for ex in step_examples(kept, 4, 3, s)}
