"""Every arm, prompting arms included, is saved as data (recipe.json + pool.jsonl + weights) and
rebuilt from it exactly: the same prompts, the same predictions."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from conftest import write_tickets
from tailor.cli import app
from tailor.errors import TailorError
from tailor.methods import load_adapted, make_method, save_adapted
from tailor.recipe import read_recipe
from tailor.task import load_task_file


@pytest.fixture
def task_file(tmp_path):
    return write_tickets(tmp_path / "tickets.jsonl", 80, ("billing", "bug", "other"), seed=2)


def _predictions(run) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", [["--method", "few-shot", "--k", "3"], ["--method", "icl", "--k", "2",
                                                                            "--selector", "ngram"]])
def test_eval_adapter_reruns_a_prompting_arm_as_it_was_measured(method, task_file, tmp_path):
    common = ["eval", "--model", "tiny-test", "--dtype", "fp32", "--task", str(task_file), "--no-cache",
              "--latency-requests", "0"]
    first = CliRunner().invoke(app, common + method + ["--runs-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    (run,) = (tmp_path / "a").iterdir()
    recipe, pool = read_recipe(run)
    assert recipe.method == method[1] and recipe.shots.k == int(method[3]) and pool
    assert [ex.id for ex in pool] == recipe.shots.ids
    # The arm folder stands alone: its shots come from its own pool, not from the task file. The
    # same rows (same ids, same split) with every training input garbled must change nothing.
    train_ids = {ex.id for ex in load_task_file(task_file).split(seed=0).splits["train"]}
    copy_file = tmp_path / "copy" / task_file.name
    copy_file.parent.mkdir()
    rows = [json.loads(line) for line in task_file.read_text().splitlines()]
    copy_file.write_text("".join(json.dumps({**r, "text": "garbled"} if f"tickets-{n}" in train_ids else r) + "\n"
                                 for n, r in enumerate(rows, 1)))
    again = CliRunner().invoke(app, ["eval", "--model", "tiny-test", "--dtype", "fp32", "--no-cache",
                                     "--task", str(copy_file), "--adapter", str(run),
                                     "--latency-requests", "0", "--runs-dir", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    (rerun,) = (tmp_path / "b").iterdir()
    a, b = _predictions(run), _predictions(rerun)
    assert [p["prompt"] for p in a] == [p["prompt"] for p in b]          # the same prompts, shots included
    assert [p["prediction"] for p in a] == [p["prediction"] for p in b]
    metrics = [json.loads((r / "metrics.json").read_text())["metrics"] for r in (run, rerun)]
    assert metrics[0] == metrics[1]


def test_a_reloaded_arm_renders_with_its_saved_chat_template(task_file, tiny_base, tmp_path):
    task = load_task_file(task_file).split(seed=0, test=10, dev=5)
    adapted = make_method("few-shot", {"k": 2}).fit(task, tiny_base)
    save_adapted(adapted, tmp_path / "arm")
    other = copy.copy(tiny_base)
    other.tokenizer = copy.deepcopy(tiny_base.tokenizer)
    other.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}|{% endfor %}"
    loaded = load_adapted(tmp_path / "arm", other)
    ex = task.splits["test"][0]
    assert loaded.builder.build(ex, loaded.shots(ex)).text == adapted.builder.build(ex, adapted.shots(ex)).text


def test_a_ladder_arm_loads_from_its_folder_and_a_run_names_its_arms(task_file, tmp_path):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    from tailor.models import load_base
    exp = experiment_from_dict({"model": "tiny-test", "task": str(task_file), "dtype": "fp32", "curate": False,
                                "report": False, "forgetting": False, "runs_dir": str(tmp_path / "runs"),
                                "arms": [{"name": "icl", "method": "icl", "k": 2, "selector": "random"}],
                                "latency_requests": 0}, "exp.yaml")
    result = run_ladder(exp, progress=False)
    run = tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir())
    assert result.arms[0].arm_dir == str(run / "arms" / "icl")
    base = load_base("tiny-test", "fp32", "cpu")
    loaded = load_adapted(run / "arms" / "icl", base)
    test = load_task_file(task_file).split(seed=0).splits["test"]
    preds = loaded.predict(loaded.engine(None, progress=False), load_task_file(task_file).split(seed=0), test)
    saved = [json.loads(line) for line in (run / "predictions-icl.jsonl").read_text().splitlines()]
    assert [p.prediction for p in preds] == [p["prediction"] for p in saved]
    with pytest.raises(TailorError, match=r"not an arm folder .*arms/\{icl\}"):
        load_adapted(run, base)
