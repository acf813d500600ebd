"""`tune:` an equal budget of trials on the dev rows for every tuned arm (tailor.tune): the settings
checked when the file is read, the arm as written as trial 0, the test rows never read by a trial
and measured once per arm, the budget kept, THE loop's dev watch changing nothing it trains, and
two worker processes sharing one SQLite study."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import optuna
import pytest

from conftest import write_tickets
from tailor.config import experiment_from_dict, load_experiment
from tailor.errors import DataError

LORA = {"name": "lora", "method": "lora", "steps": 4, "batch_size": 4, "r": 4}
ICL = {"name": "icl", "method": "icl", "k": 2, "selector": "ngram"}


@pytest.fixture
def task_file(tmp_path):
    return write_tickets(tmp_path / "tickets.jsonl", 80)


def _data(task_file, tmp_path, arms, **over) -> dict:
    data = {"model": "tiny-test", "task": str(task_file), "task_options": {"test": 12, "dev": 12}, "arms": arms,
            "runs_dir": str(tmp_path / "runs"), "curate": False, "report": False, "dtype": "fp32",
            "forgetting": False, "latency_requests": 0}
    return {**data, **over}


# ---------------------------------------------------------------- settings, checked when the file is read

@pytest.mark.parametrize("arm,field,message", [
    ({"method": "lora", "tune": {"knobs": {"rnak": [4, 8]}}}, "arms[0].tune.knobs.rnak", "not an option of a lora arm"),
    ({"method": "lora", "lr": 1e-3, "tune": {"knobs": {"lr": {"low": 1e-5, "high": 1e-4}}}}, "arms[0].tune.knobs.lr",
     "the arm's own lr 0.001 is outside [1e-05, 0.0001]"),
    ({"method": "icl", "tune": {"knobs": {"selector": ["similarity", "telepathy"]}}}, "arms[0].tune.knobs.selector",
     "'telepathy' is not a valid selector"),
    ({"method": "lora", "tune": {"knobs": {"lr": {"low": 1e-2, "high": 1e-4}}}}, "arms[0].tune.knobs.lr",
     "expected low below high"),
    ({"method": "lora", "tune": {"knobs": {"lr": {"low": 0, "high": 1, "log": True}}}}, "arms[0].tune.knobs.lr",
     "expected low > 0 for a log range"),
    ({"method": "lora", "steps": 10, "tune": {"knobs": {"steps": {"low": 5.5, "high": 20}}}},
     "arms[0].tune.knobs.steps", "steps is a whole number"),
    ({"method": "lora", "tune": {"knobs": {"dropout": "default"}}}, "arms[0].tune.knobs.dropout",
     "a lora arm declares no range for 'dropout'"),
    ({"method": "icl", "tune": {"knobs": {"k": []}}}, "arms[0].tune.knobs.k", "expected at least one choice"),
    ({"method": "lora", "tune": {"budget_minutes": 0}}, "arms[0].tune.budget_minutes", "expected greater than 0"),
    ({"method": "lora", "tune": {"trials": 2.5}}, "arms[0].tune.trials", "expected a valid integer"),
    ({"method": "lora", "tune": {"storage": "tune.db"}}, "arms[0].tune.storage", "expected a database URL"),
    ({"method": "lora", "tune": {"pruner": "asha"}}, "arms[0].tune.pruner", "expected 'successive-halving'"),
    ({"method": "lora", "tune": {"budget": 5}}, "arms[0].tune.budget", "unknown setting"),
    ({"method": "lora", "tune": "yes"}, "arms[0].tune", "expected a mapping (budget_minutes, trials, knobs, ...)"),
    ({"method": "truncated", "tune": {}}, "arms[0].tune.knobs", "a truncated arm declares no knobs to tune"),
    ({"method": "reward-model", "tune": {}}, "arms[0].tune", "a reward-model arm is a scorer"),
])
def test_bad_tune_settings_are_one_line_errors_naming_the_field(arm, field, message):
    with pytest.raises(DataError) as e:
        experiment_from_dict({"arms": [arm]}, "exp.yaml")
    assert str(e.value).startswith(f"exp.yaml: field '{field}': {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_tune_errors_name_the_line_and_reading_it_imports_neither_torch_nor_optuna(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: tiny-test\narms:\n  - method: lora\n    tune:\n      knobs:\n        lr: {low: 1, high: 2}\n")
    with pytest.raises(DataError, match=r"exp.yaml:line 6: field 'arms\[0\].tune.knobs.lr': the arm's own lr 0.001"):
        load_experiment(path)
    path.write_text("model: tiny-test\ntune: {knobs: {lr: default}}\narms: [lora]\n")
    with pytest.raises(DataError, match=r"exp.yaml:line 2: field 'tune.knobs': knobs belong to an arm's tune"):
        load_experiment(path)
    path.write_text("model: tiny-test\ntune: {budget_minutes: 3}\narms: [zero-shot, {method: lora, tune: {trials: 5}}]\n")
    code = (f"import sys; from tailor.config import load_experiment; load_experiment({str(path)!r}); "
            "print(sorted(m for m in ('torch', 'optuna', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_experiment_tunes_every_arm_with_knobs_and_an_arm_overrides_or_opts_out():
    exp = experiment_from_dict({"tune": {"budget_minutes": 3, "dev_rows": 50}, "arms": [
        "zero-shot", {"name": "icl", "method": "icl", "tune": {"trials": 6, "knobs": {"k": [2, 4, 8], "selector": "default"}}},
        {"name": "pearl", "method": "pearl"}, {"name": "fixed", "method": "few-shot", "tune": False},
        {"name": "lora", "method": "lora", "steps": 30, "lr": 2e-4}]}, "exp.yaml")
    arms = {a.name: a for a in exp.arms}
    assert arms["pearl"].tune is None and arms["fixed"].tune is None   # no knobs declared; opted out
    icl = arms["icl"].tune
    assert (icl.budget_minutes, icl.dev_rows, icl.trials) == (3, 50, 6)   # the experiment's, the arm's on top
    assert list(icl.knobs) == ["k", "selector"] and icl.knobs["k"].choices == [2, 4, 8]
    assert set(icl.knobs["selector"].choices) == {"similarity", "mmr", "ngram", "random"}
    lora = arms["lora"].tune.knobs   # the family's space, around the arm's own values
    assert (lora["lr"].low, lora["lr"].high, lora["lr"].log) == (pytest.approx(2e-5), pytest.approx(2e-3), True)
    assert (lora["steps"].low, lora["steps"].high) == (15, 60) and 16 in lora["r"].choices
    assert set(arms["zero-shot"].tune.knobs) == {"calibrate"}


# ---------------------------------------------------------------- THE loop's dev watch

class _Recorder:
    def __init__(self, prune: bool = False):
        self.values, self.prune = [], prune

    def due(self, step, total):
        return step == total // 2

    def seen(self, step, total, value):
        self.values.append((step, total, value))
        if self.prune:
            raise optuna.TrialPruned("stop")


def test_a_watched_run_trains_exactly_what_an_unwatched_one_does(tiny_base, task_file):
    from tailor.datasets import load_task
    from tailor.methods import make_method
    from tailor.train.loop import DEV_WATCH
    task = load_task(str(task_file), seed=0, test=12, dev=12)
    arm = make_method("lora", {"steps": 6, "batch_size": 4, "r": 4})
    plain = arm.fit(task, tiny_base, None, progress=False)
    watch = _Recorder()
    token = DEV_WATCH.set(watch)
    try:
        watched = arm.fit(task, tiny_base, None, progress=False)
        with pytest.raises(optuna.TrialPruned):
            DEV_WATCH.set(_Recorder(prune=True))
            arm.fit(task, tiny_base, None, progress=False)
    finally:
        DEV_WATCH.reset(token)
    assert [(s, t) for s, t, _ in watch.values] == [(3, 6)] and 0 <= watch.values[0][2] <= 1
    assert watched.weights_id == plain.weights_id               # the same trained weights, digest for digest
    assert watched.recipe.train["dev_history"] == plain.recipe.train["dev_history"] == []   # not the run's own


# ---------------------------------------------------------------- the ladder: trial 0, the test rows, the record

def test_default_is_trial_0_the_best_is_the_arm_and_test_rows_are_measured_once_per_arm(task_file, tmp_path,
                                                                                        monkeypatch):
    import tailor.ladder
    import tailor.tune
    from tailor.ladder import run_ladder
    from tailor.report.html import render_html
    from tailor.results import read_results
    calls = {"ladder": [], "tune": []}
    for name, module in (("ladder", tailor.ladder), ("tune", tailor.tune)):
        real = module.measure
        monkeypatch.setattr(module, "measure", lambda adapted, task, rows, _n=name, _r=real, **kw:
                            calls[_n].append({r.id for r in rows}) or _r(adapted, task, rows, **kw))
    exp = experiment_from_dict(_data(task_file, tmp_path, [
        {**LORA, "tune": {"trials": 4, "knobs": {"lr": "default", "steps": [2, 4, 6]}}},
        {**ICL, "tune": {"trials": 5}}]), "exp.yaml")
    results = run_ladder(exp, progress=False)
    from tailor.datasets import load_task
    test = {ex.id for ex in load_task(str(task_file), seed=0, test=12, dev=12).splits["test"]}
    for arm in results.arms:
        t = arm.tuning
        assert arm.ok and t is not None and t.error is None
        assert t.trials[0].number == 0 and t.trials[0].default and sum(x.default for x in t.trials) == 1
        written = {"lora": {"lr": 1e-3, "steps": 4}, "icl": {"calibrate": "off", "k": 2, "selector": "ngram"}}[arm.name]
        assert t.trials[0].params == written and t.default_dev == t.trials[0].dev
        best = next(x for x in t.trials if x.number == t.best_trial)
        assert best.dev == t.best_dev == max(x.dev for x in t.trials if x.state == "complete")
        assert {k: arm.options[k] for k in best.params} == best.params   # the arm is its best trial
        assert len(t.trials) <= {"lora": 4, "icl": 5}[arm.name] and t.trials_per_minute > 0
    # every arm's test rows: measured in exactly one call, by the ladder; no trial measured a test row
    test_calls = [rows for rows in calls["ladder"] if rows & test]
    assert len(test_calls) == 2 and all(rows == test for rows in test_calls)
    assert calls["tune"] and not any(rows & test for rows in calls["tune"])
    # the best weight trial's fit is the arm's: measured, not trained again
    lora = next(a for a in results.arms if a.name == "lora")
    assert lora.fit_reused_from and f"trial-{lora.tuning.best_trial}" in lora.fit_reused_from
    saved = read_results(results.run_dir)
    assert saved.arms[0].tuning == results.arms[0].tuning
    html = render_html(saved)
    assert "Tuning: an equal budget on dev" in html and "(as written)" in html and 'href="#tuning"' in html


def test_the_tuner_never_reads_test_rows(task_file, tmp_path):
    """The same trials and the same choice whether the test rows hold the task or garbage."""
    from tailor.context import open_run
    from tailor.tune import tune_arm
    exp = experiment_from_dict(_data(task_file, tmp_path, [
        {**LORA, "tune": {"trials": 3, "knobs": {"lr": "default", "r": [4, 8]}}}, {**ICL, "tune": {"trials": 4}}],
        cache=False), "exp.yaml")
    runs = []
    with open_run("ladder", exp.name, exp.to_json(), runs_dir=exp.runs_dir, model=exp.model, dtype=exp.dtype,
                  task=exp.task, task_options=exp.task_options.loader_options(exp.seed), cache=False) as ctx:
        clean = ctx.task
        garbage = [dataclasses.replace(ex, input="@@ garbage " * 50, target="not-a-label") for ex in clean.splits["test"]]
        poisoned = dataclasses.replace(clean, splits={**clean.splits, "test": garbage},
                                       examples=clean.splits["train"] + clean.splits["dev"] + garbage)
        for task in (clean, poisoned):
            ctx.task = task
            tuned = [tune_arm(exp, arm, ctx, progress=False) for arm in exp.arms]
            runs.append([(a.options.model_dump(), [(t.number, t.params, t.state, t.dev) for t in r.trials])
                         for a, r in tuned])
    assert runs[0] == runs[1]
    assert [len(trials) for _, trials in runs[0]] == [3, 4]


def test_the_budget_is_honoured(task_file, tmp_path):
    """No trial starts after the study's deadline; tuning ends within one trial of it."""
    from tailor.context import open_run
    from tailor.tune import tune_arm
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    exp = experiment_from_dict(_data(task_file, tmp_path, [
        {**LORA, "tune": {"budget_minutes": 0.05, "storage": url, "knobs": {"lr": "default"}}}]), "exp.yaml")
    with open_run("ladder", exp.name, exp.to_json(), runs_dir=exp.runs_dir, model=exp.model, dtype=exp.dtype,
                  task=exp.task, task_options=exp.task_options.loader_options(exp.seed)) as ctx:
        t0 = time.time()
        arm, record = tune_arm(exp, exp.arms[0], ctx, progress=False)
        took = time.time() - t0
    study = optuna.load_study(study_name=record.study, storage=url)
    deadline = study.user_attrs["deadline"]
    starts = [t.datetime_start.timestamp() for t in study.trials]
    assert record.stopped == "budget" and len(record.trials) >= 2
    assert all(s <= deadline for s in starts)
    assert took <= 3 + max(t.seconds for t in record.trials) + 5   # the 3 s budget, one trial, opening the study
    assert arm.tune is None and arm.options.lr == record.best_params["lr"]


# ---------------------------------------------------------------- two workers, one SQLite study

def test_two_worker_processes_share_one_sqlite_study_and_the_ladder_joins_it(task_file, tmp_path):
    """Two `tailor tune` processes, one torch thread each (the caller holds the machine's lock for
    both), contribute to one study; the ladder then takes its best without running another trial."""
    from tailor.ladder import run_ladder
    url = f"sqlite:///{tmp_path / 'study.db'}"
    data = _data(task_file, tmp_path, [{**LORA, "tune": {"budget_minutes": 0.4, "storage": url, "study": "shared",
                                                         "knobs": {"lr": "default", "steps": [2, 4, 6]}}}])
    path = tmp_path / "exp.yaml"
    import yaml
    path.write_text(yaml.safe_dump(data))
    no_storage = subprocess.run([sys.executable, "-m", "tailor.cli", "tune", str(path), "--arm", "nope"],
                                capture_output=True, text=True)
    assert no_storage.returncode == 2 and "no arm named 'nope'" in no_storage.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "tailor.cli", "tune", str(path), "--arm", "lora", "--worker",
                                 str(n), "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env) for n in (1, 2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == len(trials) and sorted(numbers) == list(range(len(trials)))
    by_worker = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs.get("worker"), []).append(t.number)
    assert len(by_worker) == 2 and all(by_worker.values()), by_worker   # both contributed
    assert [t.number for t in trials if t.user_attrs.get("default")] == [0]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    # the ladder joins the study after its deadline: the workers' trials choose the arm, which is
    # measured from the best worker's saved fit
    results = run_ladder(load_experiment(path), progress=False)
    arm = results.arms[0]
    assert len(arm.tuning.trials) == len(trials) and set(arm.tuning.workers) == set(by_worker)
    assert arm.options["lr"] == arm.tuning.best_params["lr"] and arm.fit_reused_from


def test_calibrate_is_left_out_of_the_search_on_a_task_without_a_label_set():
    from tailor.task import Example, Task
    from tailor.tune import _applicable
    exp = experiment_from_dict({"model": "tiny-test", "arms": [{"name": "icl", "method": "icl", "k": 2,
                                                                 "tune": {"budget_minutes": 1}}]}, "exp.yaml")
    settings = exp.arms[0].tune
    assert "calibrate" in settings.knobs
    summaries = Task("notes", "generate", "Summarise.", [Example("1", "a long text", "short")])
    tickets = Task("tickets", "classify", "Label it.", [Example("1", "refund", "billing")], labels=["billing", "bug"])
    assert set(_applicable(settings, summaries).knobs) == set(settings.knobs) - {"calibrate"}
    assert _applicable(settings, tickets) is settings


# ---------------------------------------------------------------- a grader is what tuning and THE loop's dev evaluation maximise

def test_a_task_grader_steers_tuning_and_the_loops_dev_evaluation(task_file, tmp_path, monkeypatch):
    """With `metric: {grader: ...}` the tuner's trials and THE loop's dev checkpoints are scored by the
    grader, not by the task kind's accuracy. The grader here is "the answer is NOT the label", so it
    is 1 - accuracy on every trial, and the best trial is the least accurate one."""
    import json

    import tailor.tune
    from tailor.context import open_run
    from tailor.graders.agreement import gate_task_judge
    from tailor.tune import tune_arm
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"type": "string_check", "name": "not_the_label", "input": "{{ sample.output_text }}",
                                 "reference": "{{ item.target }}", "operation": "ne"}))
    billing = tmp_path / "billing.json"   # 1 on a dev row labelled billing, whatever the model says
    billing.write_text(json.dumps({"type": "string_check", "name": "billing_row", "input": "{{ item.target }}",
                                   "reference": "billing", "operation": "eq"}))
    accuracies = []
    real = tailor.tune.measure
    monkeypatch.setattr(tailor.tune, "measure", lambda *a, **kw: (m := real(*a, **kw), accuracies.append(
        m.metrics["accuracy"]))[0])
    exp = experiment_from_dict(_data(task_file, tmp_path, [
        {**ICL, "tune": {"trials": 4, "pruner": "none", "knobs": {"k": [0, 1, 2, 4]}}}], cache=False), "exp.yaml")
    lora = experiment_from_dict(_data(task_file, tmp_path, [{**LORA, "eval_every": 2}]), "exp.yaml").arms[0].options
    with open_run("ladder", exp.name, exp.to_json(), runs_dir=exp.runs_dir, model=exp.model, dtype=exp.dtype,
                  task=exp.task, task_options=exp.task_options.loader_options(exp.seed), cache=False) as ctx:
        gate_task_judge(ctx.task, str(wrong))   # what the ladder does with `metric: {grader: FILE}`
        arm, record = tune_arm(exp, exp.arms[0], ctx, progress=False)
        gate_task_judge(ctx.task, str(billing))
        trained = lora.fit(ctx.task, ctx.base, None, progress=False)
        dev = ctx.task.splits["dev"][: lora.eval_examples]
    done = [t for t in record.trials if t.state == "complete"]
    assert record.metric == "not_the_label" and len(done) == len(accuracies) >= 2
    assert [t.dev for t in done] == pytest.approx([1 - a for a in accuracies])
    assert arm.options.k == done[[t.dev for t in done].index(max(t.dev for t in done))].params["k"]
    share = sum(r.target == "billing" for r in dev) / len(dev)
    history = trained.recipe.train["dev_history"]
    assert [h["step"] for h in history] == [2, 4] and all(h["billing_row"] == pytest.approx(share) for h in history)
