"""Every registered method, served exactly as it was measured: three small ladders on tiny-test
(a classifier, questions over documents, preference pairs) fit every method once; then each arm,
reloaded from its folder, predicts what the ladder measured, `tailor predict` writes the same,
and `tailor serve` answers each test row with the same text. Arms that are LoRA adapters of the
base share the server's mixed-adapter batches and pass the vLLM export check; a reward model is
refused by the server in one line. A method without a case here fails the first test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import write_tickets
from tailor.config import experiment_from_dict
from tailor.errors import TailorError
from tailor.methods import METHODS, load_adapted
from tailor.methods.base import method_class
from tailor.recipe import read_recipe

TRAIN = {"steps": 2, "batch_size": 4, "precision": "fp32", "eval_every": 0}
NEW_TOKENS = 6
STORIES = {
    "harbour": "Mark Hunter runs a pirate radio station from the basement of his parents' house in Phoenix. "
               "Nora, a fellow student, finds out who he is. The principal wants to close the station.",
    "forest": "Anna lives in a forest village with her brother Tom. Tom leaves to become a sailor. "
              "Anna waits for him for ten years and then opens a school in the village.",
}


def _tickets(root: Path, kb: Path) -> tuple[Path, list[dict]]:
    arms = [{"method": "zero-shot"}, {"method": "few-shot", "k": 2}, {"method": "icl", "k": 2, "selector": "ngram"},
            {"method": "full", **TRAIN, "lr": 1e-4}, {"name": "lora", "method": "lora", **TRAIN},
            {"method": "prompt-tuning", **TRAIN, "n_virtual_tokens": 4}, {"method": "prefix", **TRAIN, "n_virtual_tokens": 4},
            {"method": "ia3", **TRAIN}, {"method": "bitfit", **TRAIN},
            {"method": "distill", **TRAIN, "teacher": "lora", "labels": "soft", "student": {"layers": 1},
             "max_params_ratio": 1.0},
            {"method": "grpo", "after": "lora", "steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 3,
             "precision": "fp32"}]
    try:
        import bitsandbytes  # noqa: F401
        arms.append({"method": "qlora", **TRAIN})
    except ImportError:
        pass
    tickets = write_tickets(root / "tickets.jsonl", 40)
    # a closed model's answers, keyed by each row's input (every row: those outside the test split are counted)
    rows = [json.loads(line) for line in tickets.read_text().splitlines()]
    (root / "closed.jsonl").write_text("".join(json.dumps({"text": r["text"], "completion": r["label"] if i % 3 else "bug"})
                                               + "\n" for i, r in enumerate(rows)))
    arms.append({"name": "closed", "method": "external", "completions": str(root / "closed.jsonl")})
    return tickets, arms


def _stories(root: Path, kb: Path) -> tuple[Path, list[dict]]:
    rows = [{"prompt": f"Question: {q} ({i})", "completion": a, "document": d}
            for i in range(6) for q, a, d in (("What does Mark run?", "a pirate radio station", "harbour"),
                                              ("Who is Tom?", "Anna's brother", "forest"))]
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    longdoc = {"kb": str(kb)}
    arms = [{"method": "rag", "kb": str(kb), "k": 2}, {"name": "rag-lora", "method": "rag+lora", "kb": str(kb), "k": 2, **TRAIN},
            {"method": "truncated", **longdoc, "context_tokens": 32},
            {"method": "extract", **longdoc, "extract_tokens": 8},
            {"method": "pearl", **longdoc, "mine_questions": 2, "demo_questions": 2, "max_retries": 1,
             "plan_tokens": 16, "step_tokens": 6},
            {"name": "cpt", "method": "cpt", "documents": str(root / "stories.jsonl"), **TRAIN},
            {"method": "cpt-full", "documents": str(root / "stories.jsonl"), **TRAIN, "lr": 1e-4},
            {"name": "lora-after-cpt", "method": "lora", "after": "cpt", **TRAIN}]
    return path, arms


def _pairs(root: Path, kb: Path) -> tuple[Path, list[dict]]:
    rows = [{"prompt": f"question {i % 8}: say something {i}", "chosen": f"yes indeed {i % 3}",
             "rejected": f"no way never {i % 5}"} for i in range(24)]
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arms = [{"name": "rm", "method": "reward-model", **TRAIN}, {"method": "dpo", **TRAIN}, {"method": "kto", **TRAIN},
            {"method": "orpo", **TRAIN},
            {"method": "ppo", "reward_model": "rm", "steps": 1, "rollout_prompts": 4, "minibatch_prompts": 2,
             "max_new_tokens": 4, "precision": "fp32"}]
    return path, arms


LADDERS = {"tickets": _tickets, "stories": _stories, "pairs": _pairs}


@pytest.fixture(scope="module")
def ladders(tiny_base, tmp_path_factory) -> dict[str, dict]:
    """Each ladder's run: its task file, test rows, and per arm its folder and predictions."""
    from tailor.ladder import run_ladder, slug
    from tailor.retrieval import Chunker, build, read_documents
    root = tmp_path_factory.mktemp("every-method")
    docs = root / "stories.jsonl"
    docs.write_text("".join(json.dumps({"id": k, "title": k, "text": v * 4}) + "\n" for k, v in STORIES.items()))
    kb = root / "kb"
    build(read_documents(docs), kb, Chunker(tiny_base.tokenizer, 48, 8), progress=False)
    out = {}
    for name, make in LADDERS.items():
        task_file, arms = make(root, kb)
        exp = experiment_from_dict({
            "name": name, "model": "tiny-test", "dtype": "fp32", "task": str(task_file), "arms": arms,
            "task_options": {"test": 4, "dev": 2},
            "curate": False, "report": False, "forgetting": False, "cache": False, "reuse_fits": False,
            "latency_requests": 0, "max_new_tokens": NEW_TOKENS, "runs_dir": str(root / "runs")}, f"{name}.yaml")
        result = run_ladder(exp, progress=False)
        run = Path(result.run_dir)
        failed = {a.name: a.error for a in result.arms if not a.ok}
        assert not failed, failed
        out[name] = {"task_file": task_file, "run": run, "arms": {
            a.name: {"method": a.method, "folder": Path(a.arm_dir),
                     "predictions": [json.loads(line) for line in
                                     (run / f"predictions-{slug(a.name)}.jsonl").read_text().splitlines() if line]}
            for a in result.arms}}
    return out


def _arms(ladders):
    return [(lname, name, arm) for lname, lad in ladders.items() for name, arm in lad["arms"].items()]


def _answering(ladders):
    return [(lname, name, arm) for lname, name, arm in _arms(ladders) if not method_class(arm["method"]).scorer]


def _served(ladders):
    """The arms Tailor runs itself: an external arm's answers came from outside (refused below)."""
    return [(lname, name, arm) for lname, name, arm in _answering(ladders) if not method_class(arm["method"]).external]


def test_every_registered_method_has_a_case_here(ladders):
    measured = {arm["method"] for _, _, arm in _arms(ladders)}
    optional = {"qlora"}   # needs bitsandbytes, an optional extra
    assert set(METHODS) - optional <= measured, f"methods never fitted here: {sorted(set(METHODS) - measured)}"


def test_each_arm_reloaded_from_its_folder_predicts_what_the_ladder_measured(ladders, tiny_base):
    from tailor.measure import measure
    for lname, name, arm in _answering(ladders):
        adapted = load_adapted(arm["folder"], tiny_base)
        task, test = _task_and_test(ladders[lname], tiny_base)
        m = measure(adapted, task, test, cache=None, max_new_tokens=NEW_TOKENS, progress=False, latency_requests=0)
        assert [p.prediction for p in m.predictions] == [p["prediction"] for p in arm["predictions"]], name
        del adapted


def test_tailor_predict_writes_what_the_ladder_measured(ladders, tiny_base, tmp_path):
    from tailor.predict import run_predict
    for lname, name, arm in _served(ladders):
        task, test = _task_and_test(ladders[lname], tiny_base)
        rows = tmp_path / f"{lname}-test.jsonl"
        rows.write_text("".join(json.dumps(_row(ex, task.kind == "classify")) + "\n" for ex in test))
        out = tmp_path / f"{name}.jsonl"
        run_predict(str(arm["folder"]), rows, out, model="tiny-test", dtype="fp32", device="cpu", cache=False,
                    max_new_tokens=NEW_TOKENS, runs_dir=str(tmp_path / "runs"), progress=False)
        written = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
        assert written == [p["prediction"] for p in arm["predictions"]], name


def test_the_server_answers_every_arm_as_the_ladder_measured(ladders, tiny_base):
    from tailor.retrieval.grounding import strip_citations
    from tailor.serve.run import build
    for lname, lad in ladders.items():
        served = {name: arm for l2, name, arm in _served(ladders) if l2 == lname}
        app, scheduler = build(tiny_base, {n: a["folder"] for n, a in served.items()})
        _, test = _task_and_test(lad, tiny_base)
        try:
            client = TestClient(app)
            for name, arm in served.items():
                program = method_class(arm["method"]).own_predict
                got = []
                for ex in test:
                    body = {"model": name, "prompt": ex.input_text, "max_tokens": NEW_TOKENS, "temperature": 0}
                    if program:
                        body["metadata"] = {"document": ex.meta["document"]}
                    r = client.post("/v1/completions", json=body)
                    assert r.status_code == 200, (name, r.text)
                    got.append(strip_citations(r.json()["choices"][0]["text"].strip()))
                assert got == [p["prediction"] for p in arm["predictions"]], name
                if program:   # a program arm needs its document, and says so in one line
                    r = client.post("/v1/completions", json={"model": name, "prompt": test[0].input_text})
                    assert r.status_code == 400 and "document" in r.json()["error"]["message"]
                    meta = {"document": test[0].meta["document"]}
                    user = {"role": "user", "content": test[0].input_text}
                    r = client.post("/v1/chat/completions", json={"model": name, "metadata": meta, "max_tokens": NEW_TOKENS,
                                                                  "messages": [user]})
                    assert r.status_code == 200 and strip_citations(r.json()["choices"][0]["message"]["content"].strip()) \
                        == arm["predictions"][0]["prediction"]
                    r = client.post("/v1/chat/completions", json={   # a system turn would be dropped unread: refused
                        "model": name, "metadata": meta, "messages": [{"role": "system", "content": "Be brief."}, user]})
                    assert r.status_code == 400 and "single user message" in r.json()["error"]["message"]
        finally:
            scheduler.stop()


def test_every_lora_arm_shares_mixed_batches_and_passes_the_vllm_check(ladders, tiny_base):
    from tailor.serve.arms import load_arms
    from tailor.serve.vllm import check_arm
    adapters = {name: arm for _, name, arm in _arms(ladders) if method_class(arm["method"]).lora_adapter}
    assert {"lora", "dpo", "ppo", "grpo", "kto", "orpo", "rag+lora"} <= {a["method"] for a in adapters.values()}
    served = load_arms(tiny_base, {n: a["folder"] for n, a in adapters.items()})
    engines = {id(served[n].engine) for n in adapters}
    assert len(engines) == 1 and all(served[n].adapter == n for n in adapters)   # one engine, one batch
    for name, arm in adapters.items():
        vllm = check_arm(name, arm["folder"])
        assert vllm.rank == read_recipe(arm["folder"])[0].options["r"] and (vllm.adapter / "adapter_config.json").is_file()
    others = [n for _, n, a in _arms(ladders) if not method_class(a["method"]).lora_adapter]
    for name in others:
        with pytest.raises(TailorError, match="vLLM serves LoRA adapters"):
            check_arm(name, ladders_folder(ladders, name))


def test_a_reward_model_is_refused_by_the_server_and_by_predict_in_one_line(ladders, tiny_base, tmp_path):
    from tailor.predict import run_predict
    from tailor.serve.arms import load_arms
    folder = ladders["pairs"]["arms"]["rm"]["folder"]
    with pytest.raises(TailorError, match="scores answers, it writes none") as e:
        load_arms(tiny_base, {"rm": folder})
    assert "\n" not in str(e.value)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "question 1: say something", "completion": "yes"}) + "\n")
    with pytest.raises(TailorError, match="scores answers, it writes none"):
        run_predict(str(folder), rows, tmp_path / "out.jsonl", model="tiny-test", dtype="fp32", device="cpu",
                    runs_dir=str(tmp_path / "runs"), progress=False)
    assert not (tmp_path / "runs").exists()   # refused before any work


def test_an_external_arm_is_refused_by_the_server_predict_and_export_in_one_line(ladders, tiny_base, tmp_path):
    from tailor.export.arm import refuse_unexportable
    from tailor.predict import run_predict
    from tailor.serve.arms import load_arms
    folder = ladders["tickets"]["arms"]["closed"]["folder"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "ticket: invoice", "label": "billing"}) + "\n")
    for refuse in (lambda: load_arms(tiny_base, {"closed": folder}),
                   lambda: run_predict(str(folder), rows, tmp_path / "out.jsonl", model="tiny-test", dtype="fp32",
                                       device="cpu", runs_dir=str(tmp_path / "runs"), progress=False),
                   lambda: refuse_unexportable(folder, read_recipe(folder)[0])):
        with pytest.raises(TailorError, match="come from outside Tailor") as e:
            refuse()
        assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()   # refused before any work


def ladders_folder(ladders, name: str) -> Path:
    return next(arm["folder"] for _, n, arm in _arms(ladders) if n == name)


def _task_and_test(lad: dict, base):
    """The ladder's task and test rows, read again as the ladder read them."""
    from tailor.debug import run_task
    task = run_task(lad["run"])
    return task, task.splits["test"]


def _row(ex, classify: bool) -> dict:
    """A test row as a team's file to predict on would hold it."""
    if classify:
        return {"text": ex.input_text, "label": ex.target}
    return {"prompt": ex.input_text, "completion": ex.target, **{k: ex.meta[k] for k in ("document",) if k in ex.meta}}
