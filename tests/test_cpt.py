"""Continued pre-training (`cpt`) on tiny-test: documents packed so that every token is a target
exactly once, with EOS at the boundaries and every count reported; a fit lowers the documents'
NLL, also on held-out documents of the same kind; a saved arm reloads to the same predictions; a
lora arm `after:` a cpt arm starts from its adapter; bad settings are refused in one line."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from tailor.datasets import load_task
from tailor.errors import TailorError
from tailor.methods import load_adapted, make_method, save_adapted
from tailor.methods.base import method_class
from tailor.retrieval.documents import Document, read_documents
from tailor.train.text import pack_documents, text_nll

QUICK = {"steps": 6, "batch_size": 4, "lr": 3e-3, "precision": "fp32", "seq_len": 64, "nll_sample": 8}
COLOURS = ["red", "blue", "green", "amber", "violet", "grey"]
ANIMALS = ["otter", "heron", "lynx", "badger", "falcon", "newt"]
TOWNS = ["Quelm", "Astrid", "Borrow", "Cindel", "Dunmore", "Ferrick"]


def facts(seed: int, n: int) -> list[dict]:
    """Records in one regular register (what a team's notes look like to a tiny model)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lines = [f"The {rng.choice(COLOURS)} {rng.choice(ANIMALS)} of {rng.choice(TOWNS)} sings {rng.randint(2, 9)} "
                 f"songs every morning." for _ in range(rng.randint(2, 6))]
        out.append({"id": f"{seed}-{i}", "title": f"Notes {seed}-{i}", "text": " ".join(lines)})
    return out


def write_docs(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def task():
    return load_task("tweet-sentiment")


@pytest.fixture
def docs(tmp_path):
    return write_docs(tmp_path / "docs.jsonl", facts(0, 24))


def test_packing_makes_every_document_token_a_target_exactly_once(tiny_base):
    tok = tiny_base.tokenizer
    eos = tok.eos_token_id
    documents = [Document(r["id"], r["title"], r["text"]) for r in facts(1, 9)]
    documents.append(Document("long", "", "word " * 150))   # several sequences long
    data, report = pack_documents(documents, tok, seq_len=32)
    assert all(len(e) <= 32 and len(e.prompt) == 1 and len(e.targets) == 1 for e in data)
    by_doc: dict[str, list] = {}
    for e in data:
        by_doc.setdefault(e.id.split("@")[0], []).append(e)
    expected_targets = Counter()
    for doc in documents:
        ids = tok(f"{doc.title}\n{doc.text}" if doc.title else doc.text, add_special_tokens=False)["input_ids"]
        pieces = by_doc[doc.id]
        assert pieces[0].prompt == [eos]                                 # a document starts after a boundary
        assert [t for e in pieces for t in e.target] == ids + [eos]      # its tokens in order, once, then EOS
        for prev, nxt in zip(pieces, pieces[1:]):                          # a continuation sees the token before
            assert nxt.prompt == prev.target[-1:]
        expected_targets.update(ids + [eos])
    assert report.documents == report.trained_documents == 10 and report.dropped_documents == 0
    assert report.sequences == len(data) and report.split_documents >= 1 and report.truncated_tokens == 0
    assert report.boundary_tokens == 20 and report.target_tokens == report.tokens + 10
    # THE loop's packing of those sequences: each token is a label exactly once, no row is over-long
    from tailor.train.data import pack
    batches = pack(data, 64, tok.pad_token_id, 4)
    assert Counter(t for b in batches for t in b.labels.tolist()) == expected_targets
    assert sum(b.labels.numel() for b in batches) == report.target_tokens
    # max_documents keeps a seeded sample and counts the rest
    kept, small = pack_documents(documents, tok, 32, max_documents=4, seed=3)
    assert (small.documents, small.trained_documents, small.dropped_documents) == (10, 4, 6)
    assert kept == pack_documents(documents, tok, 32, max_documents=4, seed=3)[0]


def test_fit_lowers_the_documents_nll_also_on_held_out_documents(tiny_base, task, docs, tmp_path):
    held_out = read_documents(write_docs(tmp_path / "held.jsonl", facts(7, 8)))
    held, _ = pack_documents(held_out, tiny_base.tokenizer, 64)
    pad = tiny_base.tokenizer.pad_token_id
    before = text_nll(tiny_base.model, held, pad, 64)
    options = {**QUICK, "steps": 12, "lr": 1e-2, "documents": str(docs)}   # a random tiny model learns slowly
    adapted = make_method("cpt", options).fit(task, tiny_base, tmp_path / "cpt", progress=False)
    after = text_nll(adapted.model, held, pad, 64)
    assert after < before - 0.3, (before, after)   # measured: 10.83 -> 10.19 nats a token
    train = adapted.recipe.train
    assert train["documents_nll"]["after"] < train["documents_nll"]["before"] - 0.3
    reported = train["documents"]
    assert reported["source"] == str(docs) and reported["documents"] == 24 and reported["sequences"] >= 24
    # 12 steps of 4 sequences: about 1.5 passes over them, reported as the share of the documents' targets
    assert 1 < train["epochs_of_documents"] < 2 and train["steps"] == 12


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_cpt_arm_saves_and_reloads_to_the_same_predictions(adapter, tiny_base, task, docs, tmp_path):
    before = {n: p.clone() for n, p in tiny_base.model.named_parameters()}
    folder = tmp_path / adapter
    arm = make_method("cpt", {**QUICK, "documents": str(docs), "adapter": adapter})
    adapted = arm.fit(task, tiny_base, folder, progress=False)
    save_adapted(adapted, folder)
    assert all(torch.equal(p, before[n]) for n, p in tiny_base.model.named_parameters())
    cls = method_class(adapted.recipe.method)
    # what the arm is, for serving and export: a LoRA adapter over the unchanged base, or a model
    assert (cls.lora_adapter, cls.trains_on_pool, cls.changes_weights) == (adapter == "lora", False, True)
    assert (folder / ("adapter" if adapter == "lora" else "model")).is_dir()
    # closed book through the task's own prompt, as a lora arm answers
    assert adapted.recipe.instruction == task.instruction and adapted.recipe.retriever is None
    rows = task.splits["test"][:10]
    preds = adapted.predict(adapted.engine(None, progress=False), task, rows)
    loaded = load_adapted(folder, tiny_base)
    again = loaded.predict(loaded.engine(None, progress=False), task, rows)
    assert loaded.weights_id == adapted.weights_id != tiny_base.weights_id
    assert [p.prediction for p in again] == [p.prediction for p in preds]
    for a, b in zip(preds, again):
        assert a.probs == pytest.approx(b.probs, abs=1e-5)


def test_lora_after_cpt_starts_from_the_cpt_adapter(tiny_base, task, docs, tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from tailor.methods.finetune import start_adapter
    cpt = make_method("cpt", {**QUICK, "documents": str(docs)}).fit(task, tiny_base, tmp_path / "cpt", progress=False)
    save_adapted(cpt, tmp_path / "cpt")
    saved = load_file(str(tmp_path / "cpt" / "adapter" / "adapter_model.safetensors"))
    assert any(n.endswith("lora_B.weight") and v.abs().sum() > 0 for n, v in saved.items())   # it trained
    sft = make_method("lora", {"init_adapter": str(tmp_path / "cpt"), "steps": 2, "batch_size": 4,
                               "max_train_examples": 16, "precision": "fp32"})
    model, continued = start_adapter(sft, tiny_base)
    assert continued and any(p.requires_grad for p in model.parameters())
    start = get_peft_model_state_dict(model)
    assert start.keys() == saved.keys()
    assert all(torch.equal(start[n].float(), saved[n].float()) for n in saved)   # step 0 is the cpt adapter
    fresh, _ = start_adapter(make_method("lora", {}), tiny_base)
    assert not all(torch.equal(get_peft_model_state_dict(fresh)[n].float(), saved[n].float()) for n in saved)
    adapted = sft.fit(task, tiny_base, tmp_path / "sft", progress=False)
    assert adapted.recipe.options["init_adapter"] == str(tmp_path / "cpt")
    # the fit-reuse key follows the started adapter's content
    assert sft.fit_inputs()["init_adapter"] == cpt.recipe.weights["digest"]


def test_a_ladder_chains_lora_after_cpt(tmp_path, docs):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    quick = {"steps": 1, "batch_size": 4, "precision": "fp32"}
    exp = experiment_from_dict({
        "model": "tiny-test", "task": "tweet-sentiment", "limit": 4, "dtype": "fp32", "runs_dir": str(tmp_path / "runs"),
        "curate": False, "forgetting": False, "latency_requests": 0, "cache": False, "report": False,
        "arms": [{"name": "cpt", "method": "cpt", "documents": str(docs), "seq_len": 64, "nll_sample": 0, **quick},
                 {"name": "sft", "method": "lora", "after": "cpt", "max_train_examples": 8, **quick}]}, "exp.yaml")
    results = run_ladder(exp, progress=False)
    arms = {a.name: a for a in results.arms}
    assert [a.status for a in results.arms] == ["ok", "ok"], {n: a.error for n, a in arms.items()}
    recipe = json.loads((Path(arms["sft"].arm_dir) / "recipe.json").read_text())
    assert recipe["options"]["after"] == "cpt" and recipe["options"]["init_adapter"] == arms["cpt"].arm_dir
    assert arms["cpt"].train["documents"]["documents"] == 24


def test_bad_settings_are_refused_in_one_line(tiny_base, task, tmp_path):
    with pytest.raises(TailorError, match=r"nowhere\.jsonl: not found") as e:
        make_method("cpt", {"documents": str(tmp_path / "nowhere.jsonl")}).fit(task, tiny_base, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(TailorError, match="the tweet-sentiment task has no knowledge base; set documents:"):
        make_method("cpt", {}).fit(task, tiny_base, progress=False)
    assert make_method("cpt", {}).source(load_task("narrativeqa")) == "narrativeqa"   # the task's own documents
    # options that cannot be honoured, refused when the file is read
    for method, options, message in [
            ("cpt", {"max_train_examples": 8}, "field 'max_train_examples': unknown setting"),
            ("cpt", {"adapter": "full", "after": "cpt"}, "field 'after': expected nothing here: a full cpt arm"),
            ("qlora", {"after": "cpt"}, "field 'after': unknown setting"),
            ("reward-model", {"init_adapter": "x"}, "field 'init_adapter': unknown setting"),
            ("full", {"after": "cpt"}, "field 'after': unknown setting")]:
        with pytest.raises(TailorError, match=message):
            make_method(method, options)
    # ... or at fit: after: outside a ladder, an adapter that is not a LoRA arm's
    with pytest.raises(TailorError, match="after: 'cpt' names an earlier arm of a ladder"):
        make_method("lora", {"after": "cpt"}).fit(task, tiny_base, progress=False)
    full = make_method("cpt", {**QUICK, "steps": 1, "adapter": "full", "documents": str(write_docs(
        tmp_path / "d.jsonl", facts(2, 4)))}).fit(task, tiny_base, tmp_path / "full", progress=False)
    save_adapted(full, tmp_path / "full")
    with pytest.raises(TailorError, match="init_adapter must be a LoRA arm over the unchanged base"):
        make_method("lora", {"init_adapter": str(tmp_path / "full")}).fit(task, tiny_base, progress=False)
