"""The closed model's row (tailor.methods.external): a team's closed-model answers, in each shape
a file can hold them, scored on the test rows as every arm is; bad lines and unanswered rows refused
in one line before any model loads; `tailor run DATA --plan-only` writing the rows to answer and
`--completions` adding the row to the ladder with its interval and chance of being best; a model
behind a real `tailor serve` asked live; and the verdict never recommending the closed model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import write_tickets
from tailor.datasets import load_task
from tailor.errors import DataError, TailorError
from tailor.methods import make_method
from tailor.methods.external import read_completions


def _lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    root = tmp_path_factory.mktemp("closed")
    path = write_tickets(root / "tickets.jsonl", 30)
    task = load_task(str(path), seed=0, test=10, dev=0)
    return root, path, task


def _answers(test) -> list[str]:
    """The closed model's answers, by hand: right on rows 0, 2, 4, ...; 'Bug.' (read as bug) on row 3;
    an answer that names no label on row 5; the other label elsewhere."""
    other = {"billing": "bug", "bug": "billing"}
    out = []
    for i, ex in enumerate(test):
        out.append(ex.target if i % 2 == 0 else "Bug." if i == 3 else "I cannot tell" if i == 5 else other[ex.target])
    return out


def test_each_shape_of_completions_file_scores_as_the_hand_computed_accuracy(tickets, tiny_base):
    from tailor.measure import measure
    root, _, task = tickets
    test = task.splits["test"]
    answers = _answers(test)
    expected = sum(a == ex.target or (a == "Bug." and ex.target == "bug") for a, ex in zip(answers, test)) / len(test)
    usage = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    shapes = {
        "by-id": [{"id": ex.id, "completion": a, "usage": usage} for ex, a in zip(test, answers)],
        "by-text": [{"text": ex.input, "completion": a} for ex, a in zip(test, answers)],
        "by-input": [{"input": ex.input, "completion": a} for ex, a in zip(test, answers)],
        "batch": [{"id": f"batch_req_{i}", "custom_id": ex.id, "error": None, "response": {
            "status_code": 200, "request_id": f"r{i}", "body": {"object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": a}, "finish_reason": "stop"}]}}}
            for i, (ex, a) in enumerate(zip(test, answers))],
    }
    for shape, rows in shapes.items():
        path = _lines(root / f"{shape}.jsonl", rows + [{"id": "not-a-test-row", "completion": "bug"}])
        arm = make_method("external", {"completions": str(path)})
        adapted = arm.fit(task, tiny_base)
        m = measure(adapted, task, test, cache=None, progress=False, latency_requests=4)
        assert m.metrics["accuracy"] == pytest.approx(expected), shape
        assert m.notes["completions for rows outside the test split (not scored)"] == 1, shape
        assert m.notes["answers read as an option after case, spaces and punctuation"] == 1
        assert m.notes["answers that name no option (scored wrong)"] == 1
        assert m.cost.latency_requests == 0 and m.cost.latency_p50_s is None   # read, not asked: nothing to time
        if shape in ("by-id", "batch"):
            assert (m.cost.prompt_tokens_per_request, m.cost.completion_tokens_per_request) == (30, 2)
        else:
            assert m.cost.prompt_tokens_per_request == 0 and m.notes["answers without token usage (counted as 0 tokens)"] == 10


def test_chat_rows_are_answered_by_their_messages_and_graded_as_generated_text(tmp_path, tiny_base):
    from tailor.measure import measure
    rows = [{"messages": [{"role": "developer", "content": "Answer in one word."},
                          {"role": "user", "content": f"What is {i} plus one?"},
                          {"role": "assistant", "content": f"n{i + 1}"}]} for i in range(12)]
    data = _lines(tmp_path / "chat.jsonl", rows)
    task = load_task(str(data), seed=0, test=4, dev=0)
    test = task.splits["test"]
    # keyed by the conversation as the team's file holds it: the developer turn and the gold answer turn included
    by_input = {json.dumps(r["messages"][1]["content"]): r["messages"] for r in rows}
    lines = [{"messages": by_input[json.dumps(ex.input[-1]["content"])], "completion": f" {ex.target} " if i else "wrong"}
             for i, ex in enumerate(test)]
    arm = make_method("external", {"completions": str(_lines(tmp_path / "closed.jsonl", lines))})
    m = measure(arm.fit(task, tiny_base), task, test, cache=None, progress=False, latency_requests=0)
    assert m.metrics["exact_match"] == pytest.approx(3 / 4)
    assert [p.prediction for p in m.predictions][1:] == [ex.target for ex in test][1:]


@pytest.mark.parametrize("line,where", [
    ('{"id": "a"}', "line 2: field 'completion': missing"),
    ('{"id": ["a"], "completion": "x"}', "line 2: field 'id': expected a row id"),
    ('{"completion": "x"}', "line 2: field 'id': names no row"),
    ('{"id": "a", "completion": 3}', "line 2: field 'completion': expected a string, got a number"),
    ('{"id": "a", "completion": "x", "usage": {"prompt_tokens": -1, "completion_tokens": 1}}',
     "line 2: field 'usage.prompt_tokens': expected a whole number of tokens"),
    ('{"custom_id": "a", "response": {"status_code": 429, "body": {"error": {"message": "rate limited"}}}}',
     "line 2: field 'response.status_code': the request failed with status 429: rate limited"),
    ('{"custom_id": "a", "response": null, "error": {"code": "batch_expired", "message": "expired"}}',
     "line 2: field 'response': the request failed: expired"),
    ('{"custom_id": "a", "response": {"status_code": 200, "body": {"choices": [{"message": {"content": null}}]}}}',
     "line 2: field 'response.body.choices[0].message.content': expected the answer's text, got null"),
    ('{"id": "first", "completion": "other"}', "line 2: field 'id': a second, different completion for the same row "
                                               "(first at line 1)"),
    ('{"id": "b", "completion": "x"', "line 2: invalid JSON"),
])
def test_a_malformed_line_is_one_error_naming_file_line_and_field(tmp_path, line, where):
    path = tmp_path / "closed.jsonl"
    path.write_text('{"id": "first", "completion": "x"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        read_completions(path)
    assert str(e.value).startswith(f"{path}:{where}") and "\n" not in str(e.value)


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`tailor ARGS` through the CLI's entry point (its one-line errors and exit codes), in this process."""
    from tailor.cli import main
    monkeypatch.setattr(sys, "argv", ["tailor", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_unanswered_rows_and_bad_lines_are_refused_by_tailor_run_before_any_model_loads(tickets, tmp_path, monkeypatch,
                                                                                      capsys):
    _, data, task = tickets
    test = task.splits["test"]
    answered = _lines(tmp_path / "some.jsonl", [{"id": ex.id, "completion": ex.target} for ex in test[3:]])
    # test=10 of 30 rows is the fixture's split; tailor run splits a 30-row file 25% test, the same seeded way
    code, _, err = _cli(monkeypatch, capsys, "run", data, "--completions", answered, "--model", "no-such-model",
                        "--runs-dir", tmp_path / "runs")
    planned = load_task(str(data), seed=0, test=0.25, dev=0).splits["test"]
    missing = [ex.id for ex in planned if ex.id not in {e.id for e in test[3:]}]
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{len(missing)} of the {len(planned)} test rows have no completion (first ids: {', '.join(missing[:5])}" in err
    bad = _lines(tmp_path / "bad.jsonl", [{"id": "x", "completion": "bug"}, {"id": "y", "answer": "bug"}])
    code, _, err = _cli(monkeypatch, capsys, "run", data, "--completions", bad, "--model", "no-such-model",
                        "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.strip() == f"error: {bad}:line 2: field 'completion': missing (each line holds the model's " \
                                        "answer as completion, or is a Batch API output line with custom_id and response)"
    assert not (tmp_path / "runs").exists()   # and no-such-model was never looked up


def test_plan_only_writes_the_test_rows_and_completions_add_the_closed_row_to_results(tickets, tmp_path, monkeypatch,
                                                                                     capsys):
    _, data, _ = tickets
    code, out, err = _cli(monkeypatch, capsys, "run", data, "--plan-only", "--model", "tiny-test", "--budget", "5m",
                          "--runs-dir", tmp_path / "plan")
    assert code == 0, err
    (run,) = (tmp_path / "plan").iterdir()
    rows = [json.loads(line) for line in (run / "test_rows.jsonl").read_text().splitlines()]
    assert rows and all(set(r) == {"id", "input"} for r in rows) and not (run / "results.json").exists()
    assert "test_rows.jsonl" in out
    labels = {json.loads(line)["text"]: json.loads(line)["label"] for line in data.read_text().splitlines()}
    closed = _lines(tmp_path / "gpt.jsonl", [{"id": r["id"], "completion": labels[r["input"]], "usage": {
        "prompt_tokens": 20, "completion_tokens": 1}} for r in rows])
    code, out, err = _cli(monkeypatch, capsys, "run", data, "--completions", closed, "--closed-name", "gpt-ft",
                          "--model", "tiny-test", "--budget", "5m", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    results = json.loads((run / "results.json").read_text())
    arm = next(a for a in results["arms"] if a["name"] == "gpt-ft")
    assert arm["method"] == "external" and arm["status"] == "ok" and arm["metrics"]["accuracy"] == 1.0
    n = results["experiment"]["test_rows"]
    assert arm["interval"][1] == 1.0 and arm["interval"][0] < 1.0 and 0 < arm["p_best"] <= 1
    assert arm["cost"]["prompt_tokens_per_request"] == 20 and arm["cost"]["train_cost"] == 0
    rec = results["recommendation"]
    assert rec["arm"] != "gpt-ft" and rec["verdict"]["reference"] == ["gpt-ft"]
    assert "gpt-ft, a reference and not one of the arms to choose from" in rec["text"] or \
        "Against the reference gpt-ft" in rec["text"], rec["text"]
    assert len([v for v in rec["verdict"]["versus_reference"]]) == len(results["arms"]) - 1 and n >= 2
    html = (run / "report.html").read_text()   # the report names the closed row a reference and compares against it
    assert "gpt-ft <span class=\"muted\">(closed model: a reference)</span>" in html
    assert "Against the closed model (gpt-ft)" in html and "reference_" not in html.split('id="verdict"')[1][:600]


def test_an_endpoint_is_asked_live_as_a_zero_shot_arm_through_a_real_tailor_serve(tickets, tiny_base, tmp_path,
                                                                                  monkeypatch):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    from tailor.serve.run import build
    from test_serve import KEY, Server
    _, data, _ = tickets
    monkeypatch.setenv("TAILOR_REMOTE_API_KEY", KEY)
    server = Server(*build(tiny_base, {}, api_key=KEY, batch_size=8))
    try:
        exp = experiment_from_dict({
            "name": "endpoint", "model": "tiny-test", "dtype": "fp32", "task": str(data),
            "task_options": {"test": 6, "dev": 0}, "curate": False, "report": False, "forgetting": False,
            "cache": False, "latency_requests": 1, "runs_dir": str(tmp_path / "runs"),
            "arms": ["zero-shot", {"name": "served", "method": "external",
                                   "endpoint": f"openai:{server.url}/v1#tiny-test"}]}, "endpoint.yaml")
        result = run_ladder(exp, progress=False)
    finally:
        server.close()
    local, served = result.arms
    assert served.ok, served.error
    run = Path(result.run_dir)
    preds = {a: [json.loads(line) for line in (run / f"predictions-{a}.jsonl").read_text().splitlines()]
             for a in ("zero-shot", "served")}
    assert [p["prediction"] for p in preds["served"]] == [p["prediction"] for p in preds["zero-shot"]]
    assert served.metrics["accuracy"] == local.metrics["accuracy"] and served.cost.latency_requests == 1
    assert result.recommendation.arm == "zero-shot"   # the served copy is a reference, never the pick


def test_a_chat_only_endpoint_is_asked_once_per_row_and_its_answers_are_the_arms(tmp_path, tiny_base, monkeypatch):
    """`api: chat`: each test row's conversation sent to /v1/chat/completions of a real `tailor serve`;
    the arm's answers are exactly what that endpoint says to those messages, with its usage as the
    cost, saved with the arm; an endpoint that refuses is one line naming the row."""
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    from tailor.prompts import builder_for
    from tailor.serve.run import build
    from test_serve import KEY, Server
    data = _lines(tmp_path / "qa.jsonl", [{"messages": [{"role": "user", "content": f"Spell {w} backwards."},
                                                        {"role": "assistant", "content": w[::-1]}]}
                                          for w in ("cat", "dog", "owl", "emu", "yak", "ant", "bee", "elk")])
    monkeypatch.setenv("TAILOR_REMOTE_API_KEY", KEY)
    server = Server(*build(tiny_base, {}, api_key=KEY, batch_size=8))
    spec = {"name": "chat", "model": "tiny-test", "dtype": "fp32", "task": str(data), "task_options": {"test": 4, "dev": 0},
            "curate": False, "report": False, "forgetting": False, "cache": False, "latency_requests": 0,
            "max_new_tokens": 6, "runs_dir": str(tmp_path / "runs"),
            "arms": [{"name": "gpt", "method": "external", "endpoint": f"openai:{server.url}/v1#tiny-test", "api": "chat",
                      "max_tokens": 6}, "zero-shot"]}
    try:
        result = run_ladder(experiment_from_dict(spec, "chat.yaml"), progress=False)
        test = load_task(str(data), seed=0, test=4, dev=0).splits["test"]
        builder = builder_for(load_task(str(data), seed=0, test=4, dev=0), tiny_base.tokenizer)
        asked = [server.client().chat.completions.create(model="tiny-test", messages=builder.messages(ex), max_tokens=6,
                                                          temperature=0) for ex in test]
        refused = run_ladder(experiment_from_dict({**spec, "arms": [{**spec["arms"][0], "endpoint":
                                                                     f"openai:{server.url}/v1#no-such-model"}]},
                                                  "x.yaml"), progress=False).arms[0]
    finally:
        server.close()
    gpt = result.arms[0]
    assert gpt.ok, gpt.error
    assert refused.status == "failed" and re.match(r"openai:\S+#no-such-model: row \S+: the chat completions endpoint "
                                                   r"answered NotFoundError: Error code: 404", refused.error), refused.error
    preds = [json.loads(line) for line in (Path(result.run_dir) / "predictions-gpt.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [ex.id for ex in test]
    assert [p["prediction"] for p in preds] == [a.choices[0].message.content.strip() for a in asked]
    assert gpt.cost.prompt_tokens_per_request == sum(a.usage.prompt_tokens for a in asked) / 4
    saved = [json.loads(line) for line in (Path(gpt.arm_dir) / "answers.jsonl").read_text().splitlines()]
    assert [a["completion"] for a in saved] == [a.choices[0].message.content for a in asked]
    assert result.recommendation.arm == "zero-shot"   # the closed model is a reference, never the pick


def test_the_verdict_recommends_an_open_arm_and_says_how_far_the_closed_model_is():
    from tailor.verdict import ArmScores, verdict
    n = 200
    closed = [1.0] * 180 + [0.0] * 20                  # 0.90
    near = [1.0] * 176 + [0.0] * 24                    # 0.88, rows nested in the closed model's
    far = [1.0] * 120 + [0.0] * 80                     # 0.60
    v = verdict([ArmScores("zero-shot", far, 1.0), ArmScores("lora", near, 3.0), ArmScores("gpt", closed, 0.5)],
                metric="accuracy", tolerance=0.05, baseline="zero-shot", reference=["gpt"])
    assert v.best == "gpt" and v.recommended == "lora" and v.claim == "reference_matched"
    assert "lora is recommended: it is shown to be at most 0.05 worse than gpt" in v.sentence()
    v = verdict([ArmScores("zero-shot", far, 1.0), ArmScores("gpt", closed, 0.5)], metric="accuracy", tolerance=0.02,
                baseline="zero-shot", reference=["gpt"])
    c = v.comparison("zero-shot", "gpt")
    assert v.claim == "reference_best" and v.recommended == "zero-shot" and c.separated and len(closed) == n
    assert f"gpt is better by {-c.diff:.3f} (95% CI {-c.hi:+.3f} to {-c.lo:+.3f}" in v.sentence()
    with pytest.raises(TailorError, match="not all of them"):
        verdict([ArmScores("gpt", closed, 0.5)], metric="accuracy", tolerance=0.02, reference=["gpt"])


def test_an_experiment_with_an_external_arm_is_checked_before_any_model_loads(tickets, tmp_path, monkeypatch, capsys):
    _, data, task = tickets
    test = task.splits["test"]
    some = _lines(tmp_path / "some.jsonl", [{"id": ex.id, "completion": ex.target} for ex in test[:4]])
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"model: no-such-model\ntask: {data}\ntask_options: {{test: 10, dev: 0}}\nruns_dir: {tmp_path / 'runs'}\n"
                   f"arms: [zero-shot, {{name: gpt, method: external, completions: {some}}}]\n")
    code, _, err = _cli(monkeypatch, capsys, "run", exp)
    assert code == 2 and "6 of the 10 test rows have no completion" in err and len(err.strip().splitlines()) == 1
    exp.write_text(exp.read_text() + "limit: 4\nrobustness: {perturbations: [typos]}\n")   # the 4 answered rows
    code, _, err = _cli(monkeypatch, capsys, "run", exp)
    assert code == 2 and "robustness measures every arm on perturbed inputs" in err, err
    assert not (tmp_path / "runs").exists()


def test_break_even_leaves_out_the_closed_row_priced_at_the_open_base_s_price():
    from tailor.breakeven import break_even
    from tailor.results import ArmResult, Cost
    arms = [ArmResult(name=n, method=m, options={}, cost=Cost(cost_per_1k_requests=c, train_cost=t))
            for n, m, c, t in (("zero-shot", "zero-shot", 0.02, 0.0), ("lora", "lora", 0.01, 1.0),
                               ("gpt", "external", 0.03, 0.0))]
    assert [(r.weight_arm, r.prompt_arm) for r in break_even(arms, 100_000)] == [("lora", "zero-shot")]
