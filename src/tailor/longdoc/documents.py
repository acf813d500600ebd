"""One document of a knowledge base: which document a question is about, its text stitched back
from its chunks, and search among its own chunks only (a question about one story must not be
answered from another). Search is the RAG feature's: BM25 and dense, fused by reciprocal rank."""

from __future__ import annotations

from ..errors import DataError
from ..retrieval.kb import KnowledgeBase
from ..retrieval.search import Hit, rrf

DOC_FIELDS = ("document", "doc_id")


def document_of(example, source: str = "the task") -> str:
    """The knowledge-base document a row is about: its `document` field, else its one gold passage."""
    for f in DOC_FIELDS:
        if isinstance(example.meta.get(f), str) and example.meta[f]:
            return example.meta[f]
    gold = example.meta.get("gold_passages") or []
    if len(gold) == 1:
        return gold[0]
    raise DataError(source, f"row '{example.id}' names no document (give each row a 'document' field with the id "
                    "of its document in the knowledge base)", field="document")


class Documents:
    def __init__(self, kb: KnowledgeBase, kind: str = "hybrid"):
        self.kb, self.kind = kb, kind
        self.rows: dict[str, list[int]] = {}
        for i, c in enumerate(kb.chunks):
            self.rows.setdefault(c.doc_id, []).append(i)
        self._text: dict[str, str] = {}

    def check(self, doc_id: str, row_id: str = "") -> list[int]:
        if doc_id not in self.rows:
            raise DataError(self.kb.folder, f"row '{row_id}': document '{doc_id}' is not in this knowledge base "
                            f"({len(self.rows)} documents)", field="document")
        return self.rows[doc_id]

    def of(self, example, source: str = "the task") -> str:
        """The document `example` is about, checked to be in this knowledge base."""
        doc = document_of(example, source)
        self.check(doc, example.id)
        return doc

    def chunks(self, doc_id: str) -> list[str]:
        return [self.kb.chunks[i].text for i in self.check(doc_id)]

    def text(self, doc_id: str) -> str:
        """The document, its overlapping chunks stitched back by their character offsets."""
        if doc_id not in self._text:
            out, end = "", 0
            for i in self.check(doc_id):
                c = self.kb.chunks[i]
                if c.start >= end:
                    out += ("\n" if out else "") + c.text
                else:
                    out += c.text[end - c.start:]
                end = max(end, c.end)
            self._text[doc_id] = out
        return self._text[doc_id]

    def search(self, doc_id: str, queries: list[str], k: int) -> list[list[int]]:
        """For each query, the k best chunks (knowledge-base rows) of `doc_id`, in rank order; a
        document with k chunks or fewer returns all of them in reading order."""
        rows = self.check(doc_id)
        if len(rows) <= k or not queries:
            return [list(rows) for _ in queries]
        inside = set(rows)
        out = []
        vecs = self.kb.embed(queries) if self.kind != "bm25" else None
        lexical = self.kb.lexical.search(queries, self.kb.lexical.size) if self.kind != "dense" else None
        for qi in range(len(queries)):
            rankings = []
            if lexical is not None:
                kept = [h for h in lexical[qi] if h.index in inside]
                rankings.append([Hit(h.index, h.score, r) for r, h in enumerate(kept, 1)])
            if vecs is not None:
                sims = self.kb.dense.vectors[rows] @ vecs[qi]
                order = sorted(range(len(rows)), key=lambda j: -float(sims[j]))
                rankings.append([Hit(rows[j], float(sims[j]), r) for r, j in enumerate(order, 1)])
            fused = [h.index for h in rrf(rankings, k)]
            # no lexical or dense evidence at all (bm25 on a query of stopwords): the opening chunks
            fused += [r for r in rows if r not in fused][:k - len(fused)]
            out.append(fused)
        return out
