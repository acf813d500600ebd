"""OpenAI's fine-tuning files read as they are (the examples of OpenAI's supervised, DPO and
reinforcement fine-tuning guides, written inline): chat rows train SFT arms, DPO rows are
preference pairs planned and run as a dpo arm, RFT rows are prompts with the fields a grader
reads, planned as a grpo arm on that grader. Malformed lines are one-line errors naming the
file, the line and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tailor.errors import DataError, TailorError
from tailor.graders import item_of, load_grader
from tailor.plan import DataSummary, Speed, plan_experiment
from tailor.preference.data import read_preferences
from tailor.task import load_task_file

TAILOR = str(Path(sys.executable).with_name("tailor"))
SMOL = Speed(forward_s=0.0146, token_s=1.26e-3, train_token_s=2.13e-3, load_s=0.4, params=134_515_008)

# OpenAI's supervised fine-tuning guide (chat format)
SFT = [{"messages": [{"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
                     {"role": "user", "content": "What's the capital of France?"},
                     {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."}]},
       {"messages": [{"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
                     {"role": "user", "content": "Who wrote 'Romeo and Juliet'?"},
                     {"role": "assistant", "content": "Oh, just some guy named William Shakespeare. Ever heard of him?"}]}]
# OpenAI's direct preference optimization guide
DPO = {"input": {"messages": [{"role": "user", "content": "Hello, can you tell me how cold San Francisco is today?"}],
                 "tools": [], "parallel_tool_calls": True},
       "preferred_output": [{"role": "assistant", "content": "Today in San Francisco, it is not quite cold as expected. "
                             "Morning clouds will give away to sunshine, with a high near 68°F (20°C) and a low "
                             "around 57°F (14°C)."}],
       "non_preferred_output": [{"role": "assistant", "content": "It is not particularly cold in San Francisco today."}]}
# OpenAI's reinforcement fine-tuning guide: the prompt, and the fields its grader reads beside it
RFT = [{"messages": [{"role": "user", "content": "Evaluate the following paragraph for compliance with the security "
                                               "policy: 'Employees must rotate their passwords every 90 days.' Answer "
                                               "in JSON with compliant (yes or no) and explanation."}],
        "compliant": "yes", "explanation": "The paragraph asks for password rotation, which the policy requires."},
       {"messages": [{"role": "developer", "content": "You are a security compliance reviewer."},
                     {"role": "user", "content": [{"type": "text", "text": "Evaluate: 'Passwords may be sent to "
                                                                          "contractors by email.'"}]}],
        "compliant": "no", "explanation": "Sending passwords by email breaks the policy."}]
# the guide's string_check grader on the structured answer
COMPLIANT = {"type": "string_check", "name": "compliant", "input": "{{ sample.output_json.compliant }}",
             "reference": "{{ item.compliant }}", "operation": "eq"}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_the_three_shapes_read_from_the_guides_examples(tmp_path):
    developer = {"messages": [{"role": "developer", "content": "Be sarcastic."}, *SFT[0]["messages"][1:]]}
    chat = load_task_file(write(tmp_path / "sft.jsonl", [*SFT, developer]))
    assert chat.kind == "generate" and chat.examples[1].target.startswith("Oh, just some guy")
    assert [m["role"] for m in chat.examples[0].input] == ["system", "user"]
    assert chat.examples[2].input[0] == {"role": "system", "content": "Be sarcastic."}   # developer: the system turn

    second = {**DPO, "input": {"messages": [{"role": "developer", "content": "Be brief."},
                                            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]},
              "preferred_output": [{"role": "assistant", "content": "4"}],
              "non_preferred_output": [{"role": "assistant", "content": "5"}]}
    (a, b) = read_preferences(write(tmp_path / "dpo.jsonl", [DPO, second]))
    assert a.input == DPO["input"]["messages"] and a.target.startswith("Today in San Francisco")
    assert a.meta["rejected"] == "It is not particularly cold in San Francisco today."
    # a developer message is the system message; text parts are joined
    assert b.input == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert (b.target, b.meta["rejected"]) == ("4", "5")

    rft = load_task_file(write(tmp_path / "rft.jsonl", RFT))
    assert rft.kind == "generate" and [ex.target for ex in rft.examples] == ["", ""]
    assert rft.examples[1].input == [{"role": "system", "content": "You are a security compliance reviewer."},
                                     {"role": "user", "content": "Evaluate: 'Passwords may be sent to contractors by "
                                                                 "email.'"}]
    items = [item_of(ex) for ex in rft.examples]
    assert [it["compliant"] for it in items] == ["yes", "no"] and "_rft" not in items[0]
    grader = load_grader(COMPLIANT)
    answers = ['{"compliant": "yes", "explanation": "rotation is required"}', '{"compliant": "yes"}']
    assert grader.grade(answers, items) == [1.0, 0.0]


def _line(line: dict, path: Path) -> str:
    with pytest.raises(DataError) as e:
        if "messages" in line:
            load_task_file(write(path, [RFT[0], line]))
        else:
            read_preferences(write(path, [DPO, line]))
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}:line 2: ")
    return text


@pytest.mark.parametrize("line, field, problem", [
    ({**DPO, "preferred_output": None}, "preferred_output", "missing"),
    ({**DPO, "non_preferred_output": [{"role": "user", "content": "b"}]}, "non_preferred_output",
     "exactly one assistant message"),
    ({**DPO, "preferred_output": [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "preferred_output", "exactly one assistant message"),
    ({**DPO, "input": "hello"}, "input", "expected an object"),
    ({**DPO, "input": {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}},
     "input.tools", "do not call tools"),
    ({**DPO, "input": {"messages": [{"role": "assistant", "content": "hi"}]}}, "input.messages[0].role",
     "end with the user's turn"),
    ({**DPO, "input": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}},
     "input.messages[0].content[0]", "only text parts"),
    ({**DPO, "non_preferred_output": DPO["preferred_output"]}, "non_preferred_output", "identical"),
    ({"input": {"messages": [{"role": "user", "content": "hi"}]}}, "preferred_output", "missing"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "compliant": "no"},
     "messages[1].role", "ends with the user's turn"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content", "expected a string or text parts"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "expected system, developer, user"),
])
def test_malformed_lines_are_one_line_errors_naming_file_line_and_field(tmp_path, line, field, problem):
    text = _line(line, tmp_path / "bad.jsonl")
    assert f"field '{field}'" in text and problem in text, text


def test_malformed_file_and_a_grader_less_rft_file_exit_2_on_the_command_line(tmp_path):
    bad = write(tmp_path / "bad.jsonl", [DPO, {**DPO, "preferred_output": "just text"}])
    rft = write(tmp_path / "rft.jsonl", RFT * 10)
    for path, message in ((bad, "bad.jsonl:line 2: field 'preferred_output': expected an array of messages"),
                          (rft, "rft.jsonl: a reinforcement fine-tuning file")):
        r = subprocess.run([TAILOR, "run", path.name, "--model", "no-such-model", "--runs-dir", "runs"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**__import__("os").environ,
                                                                                             "COLUMNS": "300"})
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr[-2000:]
        assert "no-such-model" not in lines[0] and not (tmp_path / "runs").exists()


def rft_summary(**kw) -> DataSummary:
    base = dict(path="/data/rft.jsonl", kind="generate", rows=400, train=320, dev=0, test=80, prompt_tokens=60,
                input_tokens=40, target_tokens=1, target_tokens_p95=1, split={"test": 0.2, "dev": 0},
                reinforcement=True, grader="/data/grader.json", answered=0)
    return DataSummary(**{**base, **kw})


def test_an_rft_file_plans_grpo_on_its_grader_and_refuses_without_grader_or_grpo():
    plan = plan_experiment(rft_summary(), model="m", budget_s=3600, speed=SMOL, methods={"grpo", "lora", "dpo"})
    arms = [a if isinstance(a, str) else a["method"] for a in plan.experiment["arms"]]
    assert arms == ["zero-shot", "grpo"]   # no reference answers: nothing to show as shots or to imitate
    grpo = plan.experiment["arms"][-1]
    assert grpo["rewards"] == [{"grader": "/data/grader.json"}] and grpo["steps"] >= 1
    assert plan.experiment["metric"] == {"grader": "/data/grader.json"} and plan.experiment["max_new_tokens"] == 128
    answered = plan_experiment(rft_summary(answered=320, target_tokens=3, target_tokens_p95=4), model="m",
                               budget_s=3600, speed=SMOL, methods={"grpo"})
    assert [a if isinstance(a, str) else a["method"] for a in answered.experiment["arms"]] == \
        ["zero-shot", "few-shot", "grpo"]
    with pytest.raises(TailorError, match="no grpo method registered"):
        plan_experiment(rft_summary(), model="m", budget_s=3600, speed=SMOL, methods={"lora", "dpo"})
    with pytest.raises(TailorError, match="--grader grader.json"):
        plan_experiment(rft_summary(grader=None), model="m", budget_s=3600, speed=SMOL, methods={"grpo"})


def test_an_rft_file_is_repaired_in_a_copy_that_reads_back_as_rft(tmp_path):
    """Repeated prompts (exact duplicates, and train rows that are test rows) are dropped in the run's
    copy as for any file, and the copy is still reinforcement fine-tuning rows with their fields."""
    from tailor.curate import curated_task, write_clean
    from tailor.models import load_tokenizer
    from tailor.run_file import read_task, repair
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i + 1}? Answer in JSON."}], "compliant": "yes",
             "reference_answer": str(2 * i + 1)} for i in range(30)]
    path = write(tmp_path / "rft.jsonl", rows + rows[:6])
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(COMPLIANT))
    task, preference, split = read_task(path, grader=str(grader))
    assert task.grader["name"] == "compliant"
    assert preference is None and all(ex.meta.get("_rft") for ex in task.examples)
    repaired, kept, counts = repair(task, load_tokenizer("tiny-test"), preference)
    assert repaired and sum(counts.values()) >= 6 and len(kept) == 30
    copy = load_task_file(write_clean(tmp_path / "copy.jsonl", kept, curated_task(task, kept)))
    assert len(copy.examples) == 30 and all(ex.meta.get("_rft") and ex.meta["compliant"] == "yes"
                                            for ex in copy.examples)
    assert sorted(ex.target for ex in copy.examples) == sorted(r["reference_answer"] for r in rows)


def test_a_dpo_file_plans_a_dpo_arm_and_runs_it_on_tiny_test(tmp_path):
    """The planner's experiment for an OpenAI DPO file (16 pairs: dpo from the base, no SFT arm
    first), run with its trained arm shrunk to a few steps on a few rows."""
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    from tailor.models import load_tokenizer
    from tailor.run_file import read_task, repair, summarise
    rows = [{"input": {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}], "tools": []},
             "preferred_output": [{"role": "assistant", "content": str(a + b)}],
             "non_preferred_output": [{"role": "assistant", "content": str(a + b + 1)}]}
            for a in range(1, 5) for b in range(1, 5)]
    path = write(tmp_path / "dpo.jsonl", rows)
    task, preference, split = read_task(path)
    assert preference == "pairs" and len(task.examples) == 16
    tok = load_tokenizer("tiny-test")
    assert repair(task, tok, preference) == (False, None, {})
    summary = summarise(task, tok, preference, split, str(path))
    plan = plan_experiment(summary, model="tiny-test", budget_s=1800, speed=SMOL, task=str(path))
    methods = [a if isinstance(a, str) else a["method"] for a in plan.experiment["arms"]]
    assert methods[-1] == "dpo"
    quick = {"steps": 2, "batch_size": 4, "precision": "fp32", "max_train_examples": None}
    arms = [a if isinstance(a, str) or a["method"] not in ("lora", "dpo") else {**a, **quick}
            for a in plan.experiment["arms"] if isinstance(a, str) or a["method"] in ("zero-shot", "lora", "dpo")]
    exp = experiment_from_dict({**plan.experiment, "arms": arms, "runs_dir": str(tmp_path / "runs"), "dtype": "fp32",
                                "forgetting": False, "forgetting_size": None, "latency_requests": 0, "report": False,
                                "max_new_tokens": 4, "cache": False, "limit": 3, "budget_minutes": None,
                                "curate": False})   # "1 plus 2" and "2 plus 1" are near duplicates by design
    results = run_ladder(exp, progress=False)
    by = {a.method: a for a in results.arms}
    assert by["dpo"].status == "ok", by["dpo"].error
    assert [a.method for a in results.arms] == ["zero-shot", "dpo"]   # under 100 pairs: no SFT arm first
    # measured on the held-out pairs like every arm: chosen over rejected by the policy's likelihood
    assert 0.0 <= by["dpo"].metrics["preference_accuracy"] <= 1.0 and by["dpo"].train


def test_an_rft_file_with_its_grader_plans_grpo_and_runs_it_on_tiny_test(tmp_path):
    """An OpenAI reinforcement fine-tuning file and its grader, end to end: read, planned, and the
    planned grpo arm (shrunk to 2 steps) trains on the grader's reward and is ranked by the grader."""
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    from tailor.models import load_tokenizer
    from tailor.run_file import read_task, summarise
    rows = [{"messages": [{"role": "user", "content": f"Is {i} even? Answer in JSON."}],
             "compliant": "yes" if i % 2 == 0 else "no"} for i in range(40)]
    path = write(tmp_path / "rft.jsonl", rows)
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(COMPLIANT))
    task, preference, split = read_task(path, grader=str(grader))
    summary = summarise(task, load_tokenizer("tiny-test"), preference, split, str(path), str(grader))
    plan = plan_experiment(summary, model="tiny-test", budget_s=1800, speed=SMOL, task=str(path))
    assert [a if isinstance(a, str) else a["method"] for a in plan.experiment["arms"]][-1] == "grpo"
    quick = {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4}
    arms = [a if isinstance(a, str) or a["method"] != "grpo" else {**a, **quick} for a in plan.experiment["arms"]]
    exp = experiment_from_dict({**plan.experiment, "arms": arms, "runs_dir": str(tmp_path / "runs"), "dtype": "fp32",
                                "forgetting": False, "forgetting_size": None, "latency_requests": 0, "report": False,
                                "max_new_tokens": 4, "cache": False, "limit": 4, "budget_minutes": None,
                                "curate": False})
    results = run_ladder(exp, progress=False)
    grpo = next(a for a in results.arms if a.method == "grpo")
    assert grpo.status == "ok", grpo.error
    assert results.primary_metric == "compliant" and all("compliant" in a.metrics for a in results.ok_arms)
    assert [r["grader"] for r in grpo.options["rewards"]] == [str(grader)]
    history = grpo.train["history"]
    assert [h["step"] for h in history] == [1, 2] and all(0 <= h["reward/compliant"] <= 1 for h in history)
