"""Knowledge bases without a model: documents, chunking, indexes, fusion, citations, grounding."""

from __future__ import annotations

import numpy as np
import pytest

from tailor.errors import DataError, TailorError
from tailor.evaluate import parse_citations, strip_citations
from tailor.retrieval import Chunker, Document, KnowledgeBase, build, read_documents
from tailor.retrieval.chunking import sentence_spans
from tailor.retrieval.grounding import (
    citation_scores,
    helped_hurt,
    item_correct,
    retrieval_scores,
    supports,
)
from tailor.retrieval.search import Hit, rrf


@pytest.fixture(scope="module")
def tok():
    from tailor.models import load_tokenizer
    return load_tokenizer("tiny-test")


def write_docs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "refunds.md").write_text("# Refunds\n\nRefunds take 14 days. They go back to the original card.\n")
    (folder / "shipping.html").write_text("<html><head><title>Shipping</title><style>p {}</style></head><body>"
                                          "<p>We ship to France and Spain.</p><script>var x = 1;</script>"
                                          "<p>Shipping costs 5 euros per parcel.</p></body></html>")
    (folder / "office.txt").write_text("Our office is in Lyon, near the station.\n")
    return folder


# ---------------------------------------------------------------- documents and chunks


def test_folder_documents_reduce_html_and_take_titles(tmp_path, caplog):
    (write_docs(tmp_path / "docs") / "manual.pdf").write_bytes(b"%PDF-1.4")
    docs = {d.id: d for d in read_documents(tmp_path / "docs")}
    assert "1 files skipped" in caplog.text and "manual.pdf" in caplog.text
    assert set(docs) == {"refunds.md", "shipping.html", "office.txt"}
    assert docs["shipping.html"].title == "Shipping"
    assert "var x" not in docs["shipping.html"].text and "p {}" not in docs["shipping.html"].text
    assert docs["shipping.html"].text.split("\n\n") == ["We ship to France and Spain.", "Shipping costs 5 euros per parcel."]
    assert docs["refunds.md"].title == "Refunds"


def test_chunks_keep_offsets_positions_and_overlap(tok):
    sentences = [f"Sentence number {i} says something about topic {i}." for i in range(40)]
    doc = Document("d", "T", " ".join(sentences))
    chunks = Chunker(tok, chunk_tokens=40, overlap_tokens=16).chunks(doc)   # a sentence is ~13 tokens
    assert len(chunks) > 5
    for i, c in enumerate(chunks):
        assert c.text == doc.text[c.start:c.end] and c.position == i and c.id == f"d#{i}"
        assert c.n_tokens <= 40 and c.text.endswith(".")
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end, "consecutive chunks share their boundary sentences"
        assert b.start > a.start, "every chunk moves forward"
    assert chunks[0].start == 0 and chunks[-1].end == len(doc.text)


def test_one_sentence_longer_than_a_chunk_is_cut_at_tokens(tok):
    doc = Document("long", "", "word " * 300 + "end.")
    chunks = Chunker(tok, chunk_tokens=64, overlap_tokens=8).chunks(doc)
    assert len(chunks) >= 4
    assert all(len(tok(c.text, add_special_tokens=False).input_ids) <= 64 for c in chunks)
    covered = "".join(doc.text[c.start:c.end] for c in chunks).replace(" ", "")
    assert covered == doc.text.replace(" ", ""), "no text lost between windows"


def test_unicode_and_crlf(tok, tmp_path):
    (tmp_path / "u.txt").write_bytes("Café déjà vu — naïve 東京.\r\nZweiter Satz über Ölpreise!\r\n\r\nDritter.".encode())
    doc = read_documents(tmp_path)[0]
    assert "\r" not in doc.text
    chunks = Chunker(tok, chunk_tokens=8, overlap_tokens=0).chunks(doc)
    assert [c.text for c in chunks][0].startswith("Café") and chunks[-1].text == "Dritter."
    assert all(c.text == doc.text[c.start:c.end] for c in chunks)
    assert sentence_spans("A.\n\nB") == [(0, 2), (4, 5)]


def test_empty_document_gives_no_chunks(tok):
    assert Chunker(tok).chunks(Document("e", "", "")) == []


@pytest.mark.parametrize("name,content,problem", [
    ("bad.jsonl", '{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "bad.jsonl:line 2: field 'id': duplicate id '1'"),
    ("bad.jsonl", '{"id": "a", "title": "t"}\n', "bad.jsonl:line 1: field 'text': missing"),
    ("bad.jsonl", '{"id": "a", "text": "   "}\n', "bad.jsonl:line 1: field 'text': empty document"),
    ("bad.jsonl", '{"id": "a", "text": "x"}\nnot json\n', "bad.jsonl:line 2: invalid JSON"),
    ("docs/empty.md", "   \n", "empty.md: empty document"),
    ("docs/latin.txt", b"caf\xe9", "latin.txt: not valid utf-8"),
])
def test_bad_knowledge_sources_give_one_line_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as e:
        read_documents(path if path.suffix == ".jsonl" else path.parent)
    assert problem in str(e.value) and "\n" not in str(e.value)


def test_cli_index_bad_input_exits_2_and_writes_nothing(tmp_path):
    from test_cli import run_cli
    src = tmp_path / "kb.jsonl"
    src.write_text('{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n')
    r = run_cli("index", str(src), "--out", str(tmp_path / "kb"), "--model", "tiny-test")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "kb.jsonl:line 2: field 'id': duplicate id 'a'" in r.stderr
    assert not (tmp_path / "kb").exists()


# ---------------------------------------------------------------- the index


def test_reopen_equals_fresh_build_and_rebuild_embeds_only_changes(tok, tmp_path):
    docs = read_documents(write_docs(tmp_path / "docs"))
    kb, stats = build(docs, tmp_path / "kb", Chunker(tok), progress=False)
    assert stats.chunks_embedded == stats.chunks == 3
    queries = ["how long does a refund take", "where is the office", "shipping price"]
    again = KnowledgeBase.open(tmp_path / "kb")
    assert [c.to_json() for c in again.chunks] == [c.to_json() for c in kb.chunks]
    for kind in ("bm25", "dense", "hybrid"):
        assert kb.search(queries, 2, kind) == again.search(queries, 2, kind)
    top = [kb.chunks[row[0].index].doc_id for row in again.search(queries, 1, "hybrid")]
    assert top == ["refunds.md", "office.txt", "shipping.html"]

    (tmp_path / "docs" / "office.txt").write_text("Our office moved to Paris.\n")
    (tmp_path / "docs" / "faq.md").write_text("Questions are answered within a day.\n")
    (tmp_path / "docs" / "refunds.md").unlink()
    kb2, stats2 = build(read_documents(tmp_path / "docs"), tmp_path / "kb", Chunker(tok), progress=False)
    assert (stats2.unchanged, stats2.changed, stats2.added, stats2.removed) == (1, 1, 1, 1)
    assert stats2.chunks_embedded == 2
    assert len(list((tmp_path / "kb").glob("g-*"))) == 1, "the old generation is gone"
    fresh, _ = build(read_documents(tmp_path / "docs"), tmp_path / "kb-fresh", Chunker(tok), progress=False)
    assert np.allclose(KnowledgeBase.open(tmp_path / "kb").dense.vectors, fresh.dense.vectors, atol=1e-3)
    assert kb2.id == fresh.id


def test_failed_rebuild_leaves_the_previous_base_whole(tok, tmp_path, monkeypatch):
    from tailor.retrieval import kb as kb_module
    build(read_documents(write_docs(tmp_path / "docs")), tmp_path / "kb", Chunker(tok), progress=False)
    before = KnowledgeBase.open(tmp_path / "kb").id
    (tmp_path / "docs" / "new.md").write_text("A new page.\n")

    def broken(self, folder):
        raise OSError("disk full")
    monkeypatch.setattr(kb_module.LexicalIndex, "save", broken)
    with pytest.raises(OSError):
        build(read_documents(tmp_path / "docs"), tmp_path / "kb", Chunker(tok), progress=False)
    assert KnowledgeBase.open(tmp_path / "kb").id == before
    assert len(KnowledgeBase.open(tmp_path / "kb").chunks) == 3


def test_refuses_a_folder_that_is_not_a_knowledge_base(tok, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TailorError, match="not a knowledge base"):
        build([Document("a", "", "text.")], tmp_path / "mine", Chunker(tok), progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_ann_past_the_threshold_agrees_with_exact_search(tmp_path):
    from tailor.retrieval.search import DenseIndex
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 32))
    vecs = centers[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 32))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exact, ann = DenseIndex.build(vecs, ann_min_chunks=10**9), DenseIndex.build(vecs, ann_min_chunks=1000)
    assert exact.kind == "exact" and ann.kind == "faiss-ivf-sq8"
    q = vecs[:100] + 0.05 * rng.normal(size=(100, 32))
    agree = np.mean([len({h.index for h in a} & {h.index for h in b}) / 4
                     for a, b in zip(exact.search(q, 4), ann.search(q, 4))])
    assert agree > 0.9
    ann.save(tmp_path)
    assert DenseIndex.load(tmp_path).search(q[:5], 4) == ann.search(q[:5], 4)


# ---------------------------------------------------------------- fusion, citations, grounding


def test_rrf_against_a_hand_worked_example():
    dense = [Hit(1, 0.9, 1), Hit(2, 0.8, 2), Hit(3, 0.7, 3)]
    lexical = [Hit(3, 12.0, 1), Hit(1, 9.0, 2), Hit(4, 1.0, 3)]
    fused = rrf([dense, lexical], k=4)
    # 1: 1/61 + 1/62 = 0.032522; 3: 1/63 + 1/61 = 0.032266; 2: 1/62 = 0.016129; 4: 1/63 = 0.015873
    assert [h.index for h in fused] == [1, 3, 2, 4]
    assert [round(h.score, 6) for h in fused] == [0.032522, 0.032266, 0.016129, 0.015873]
    assert [h.rank for h in fused] == [1, 2, 3, 4]


def test_citation_parsing():
    assert parse_citations("Paris [1].", 4) == ([1], [])
    assert parse_citations("It is [1, 3] and [3][2].", 4) == ([1, 3, 2], [])
    assert parse_citations("See [12] and [0].", 4) == ([], [12, 0])
    assert parse_citations("a list [x] or [1.5]", 4) == ([], [])
    assert strip_citations("Paris [1, 2].") == "Paris."


def test_citation_and_retrieval_scores_by_their_rule():
    text = {"a#0": "The castle was called Afranji by the Normans.", "b#0": "Unrelated text about cheese."}
    rows = [(["a#0"], ["a#0", "b#0"], "Afranji"),         # supported citation, recall hit
            (["b#0"], ["a#0", "b#0"], "Afranji"),         # unsupported citation, a supporting passage missed
            ([], ["b#0"], "Afranji"),                     # nothing supports it: not in recall's rows
            (["a#0"], ["a#0"], "unknown")]                # unanswerable: left out
    s = citation_scores(rows, text.get, no_answer="unknown")
    assert s == {"citations": 2, "citation_precision": 0.5, "citation_recall": 0.5}
    assert supports("normans called it the afranji castle", "the Afranji castle")
    r = retrieval_scores([{"x"}, {"y", "z"}, set()], [["a", "x"], ["z", "b"], ["q"]], k=1)
    assert r == {"gold_rows": 2, "recall_at_k": 0.25, "hit_at_k": 0.5, "mrr": 0.75}


def test_helped_hurt_counts_rows_and_the_erased_share():
    closed = {"1": True, "2": True, "3": False, "4": False}
    arm = {"1": True, "2": False, "3": True, "4": False, "5": True}
    assert helped_hurt(closed, arm) == {"rows": 4, "helped": 1, "hurt": 1, "unchanged": 2, "erased_share": 0.5}
    assert item_correct("generate", "Paris [1].", "paris") and not item_correct("choice", "no", "yes")


def test_passage_budget_drops_least_relevant_first_and_counts(tok):
    from tailor.prompts import PromptBuilder
    from tailor.task import Example
    builder = PromptBuilder(tok, "generate", "Answer.", max_prompt_tokens=10_000)
    passages = [f"passage {i} " + "filler " * 30 for i in range(4)]
    full = builder.build(Example("q", "Question?", "a"), passages=passages)
    builder.max_prompt_tokens = full.n_tokens - 5
    cut = builder.build(Example("q", "Question?", "a"), passages=passages)
    assert cut.passages == passages[:3] and cut.passages_dropped == 1 and not cut.over_budget
    assert "[3] passage 2" in cut.text and "passage 3" not in cut.text


def test_bundled_boolq_rag_splits_by_passage():
    from tailor.datasets.bundled import load_task
    task = load_task("boolq-rag")
    gold = {name: {ex.meta["gold_passages"][0] for ex in rows} for name, rows in task.splits.items()}
    assert len(task.splits["test"]) == 300 and len(task.splits["dev"]) == 100
    assert not (gold["test"] & gold["train"]) and not (gold["test"] & gold["dev"]) and not (gold["dev"] & gold["train"])
    assert all(ex.input.startswith("Question: ") and len(ex.input) < 200 for ex in task.splits["test"]), "no passage in the input"
    assert task.knowledge == "boolq-rag"
