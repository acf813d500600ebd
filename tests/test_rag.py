"""Knowledge-base arms on the tiny model: a user's own markdown folder, rag and rag+lora arms
saved and reloaded, retrieval recorded per prediction, and the ladder's grounding figures."""

from __future__ import annotations

import json

import pytest

from tailor.methods import load_adapted, make_method, save_adapted
from tailor.retrieval import Chunker, build, read_documents
from tailor.task import load_task_file

FACTS = {"lyon": ("Where is the office?", "The office of Tailor is in Lyon, by the river.", "Lyon"),
         "refund": ("How long do refunds take?", "A refund takes fourteen days to arrive.", "fourteen days"),
         "color": ("What color is the logo?", "The logo of the company is green.", "green"),
         "pets": ("Are pets allowed?", "Pets are welcome in the office on Fridays.", "on Fridays")}


@pytest.fixture(scope="module")
def kb_and_task(tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs"
    docs.mkdir()
    for name, (_, text, _) in FACTS.items():
        (docs / f"{name}.md").write_text(f"# {name.title()}\n\n{text}\n")
    build(read_documents(docs), root / "kb", Chunker(tiny_base.tokenizer), progress=False)
    rows = []
    for i in range(12):
        for name, (q, _, a) in FACTS.items():
            answer = "unknown" if i % 6 == 5 else a
            rows.append({"id": f"{name}-{i}", "prompt": f"{q} (asked {i})", "completion": answer,
                         "gold_passages": [f"{name}.md"]})
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task_file(path).split(seed=0, test=8, dev=4)
    task.no_answer = "unknown"
    return root / "kb", task


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid"])
def test_rag_finds_the_gold_page_and_records_it(kb_and_task, tiny_base, retriever):
    from tailor.measure import measure
    kb, task = kb_and_task
    adapted = make_method("rag", {"kb": str(kb), "k": 2, "retriever": retriever}).fit(task, tiny_base)
    m = measure(adapted, task, task.splits["test"], max_new_tokens=6, progress=False, latency_requests=2)
    # BM25 returns only chunks sharing a word with the question: one, sometimes
    assert all(len(p.retrieved) == (2 if retriever != "bm25" else len(p.retrieved)) >= 1 for p in m.predictions)
    assert all("[1] " in p.prompt and ("[2] " in p.prompt) == (len(p.retrieved) == 2) for p in m.predictions)
    assert m.retrieval["recall_at_k"] == m.retrieval["hit_at_k"] == 1.0, "each question names its page's words"
    assert m.retrieval["ms_per_query"] > 0 and m.retrieval["queries"] == len(task.splits["test"])
    assert m.retrieval["unanswerable"] == sum(ex.target == "unknown" for ex in task.splits["test"])
    assert "cite the passage you used as [n]" in adapted.builder.instruction


def test_rag_arm_saved_and_reloaded_predicts_identically(kb_and_task, tiny_base, tmp_path):
    kb, task = kb_and_task
    adapted = make_method("rag", {"kb": str(kb), "k": 3}).fit(task, tiny_base)
    rows = task.splits["test"]
    before = adapted.predict(adapted.engine(None), task, rows, 6)
    save_adapted(adapted, tmp_path / "arm")
    recipe = json.loads((tmp_path / "arm" / "recipe.json").read_text())
    assert recipe["retriever"]["k"] == 3 and recipe["retriever"]["kb_id"]
    again = load_adapted(tmp_path / "arm", tiny_base)
    after = again.predict(again.engine(None), task, rows, 6)
    assert [(p.prompt, p.prediction, p.retrieved) for p in before] == [(p.prompt, p.prediction, p.retrieved) for p in after]


def test_a_changed_knowledge_base_is_refused_by_a_saved_arm(kb_and_task, tiny_base, tmp_path):
    import shutil

    from tailor.errors import TailorError
    kb, task = kb_and_task
    copy = tmp_path / "kb"
    shutil.copytree(kb, copy)
    adapted = make_method("rag", {"kb": str(copy)}).fit(task, tiny_base)
    save_adapted(adapted, tmp_path / "arm")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "new.md").write_text("Something else entirely.\n")
    build(read_documents(docs), copy, Chunker(tiny_base.tokenizer), progress=False)
    with pytest.raises(TailorError, match="changed since this arm was measured"):
        load_adapted(tmp_path / "arm", tiny_base)


def test_raft_prompts_keep_the_gold_passage_in_about_the_share_asked(kb_and_task, tiny_base):
    from tailor.methods.retrieval import open_retriever, raft_passages
    kb, task = kb_and_task
    retriever = open_retriever(str(kb), task, tiny_base, 2, "hybrid")
    rows = task.splits["train"]
    passages, kept = raft_passages(rows, retriever, 2, 0.5, seed=0)
    assert all(len(p) == 2 for p in passages)
    texts = {name: text for name, (_, text, _) in FACTS.items()}
    with_gold = sum(any(texts[ex.id.split("-")[0]] in p for p in ps) for ex, ps in zip(rows, passages))
    assert with_gold == kept and 0.25 * len(rows) < kept < 0.75 * len(rows)
    assert raft_passages(rows, retriever, 2, 0.5, seed=0) == (passages, kept), "seeded: the same prompts again"


def test_rag_lora_trains_on_passages_and_is_probed_closed_book(kb_and_task, tiny_base, tmp_path):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    kb, task = kb_and_task
    task_file = tmp_path / "qa.jsonl"
    task_file.write_text("".join(json.dumps({"id": ex.id, "prompt": ex.input, "completion": ex.target,
                                             "gold_passages": ex.meta["gold_passages"], "split": name}) + "\n"
                                 for name, rows in task.splits.items() for ex in rows))
    exp = experiment_from_dict({
        "model": "tiny-test", "task": str(task_file), "dtype": "fp32", "runs_dir": str(tmp_path / "runs"),
        "forgetting": False, "curate": False, "report": False, "latency_requests": 1, "max_new_tokens": 6,
        "arms": ["zero-shot", {"method": "rag", "kb": str(kb), "k": 2},
                 {"method": "rag+lora", "kb": str(kb), "k": 2, "steps": 2, "batch_size": 4, "eval_every": 0,
                  "r": 4}]})
    result = run_ladder(exp, progress=False)
    by = {a.name: a for a in result.arms}
    assert all(a.ok for a in result.arms), [a.error for a in result.arms]
    assert by["zero-shot"].retrieval is None and by["zero-shot"].versus_closed_book is None
    for name in ("rag", "rag+lora"):
        v = by[name].versus_closed_book
        assert v["baseline"] == "zero-shot" and v["helped"] + v["hurt"] + v["unchanged"] == v["rows"] == 8
        assert by[name].retrieval.recall_at_k == 1.0
    assert by["rag"].retrieval.closed_book is None
    assert set(by["rag+lora"].retrieval.closed_book) >= {"exact_match", "rougeL"}
    assert by["rag+lora"].train["gold_passage_kept"] > 0
    assert by["rag+lora"].cost.prompt_tokens_per_request > by["zero-shot"].cost.prompt_tokens_per_request + 20
    saved = json.loads((tmp_path / "runs").glob("*/results.json").__next__().read_text())
    assert saved["arms"][1]["retrieval"]["k"] == 2


def test_a_served_rag_arm_retrieves_for_each_request(kb_and_task, tiny_base, tmp_path):
    from tailor.serve.arms import load_arms
    kb, task = kb_and_task
    save_adapted(make_method("rag", {"kb": str(kb), "k": 1}).fit(task, tiny_base), tmp_path / "arm")
    served = load_arms(tiny_base, {"docs": tmp_path / "arm"})["docs"]
    prompt = served.prompt([{"role": "user", "content": "How long do refunds take?"}])
    assert "[1] " in prompt and FACTS["refund"][1] in prompt and "[2] " not in prompt
