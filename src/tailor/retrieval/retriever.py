"""What a RAG arm's recipe names as its retriever (`{kb, kb_id, k, retriever}`) and the callable it
becomes: examples in, the top-k passages of each out, timed and counted."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TailorError
from .kb import KnowledgeBase, search_text


@dataclass(frozen=True)
class Passage:
    id: str         # the chunk id, "DOC_ID#POSITION"
    doc_id: str
    text: str       # what the prompt shows
    score: float


class Retriever:
    def __init__(self, kb: KnowledgeBase, k: int = 4, kind: str = "hybrid"):
        self.kb, self.k, self.kind = kb, k, kind
        self.queries, self.seconds = 0, 0.0

    def spec(self) -> dict:
        return {"kb": str(self.kb.folder), "kb_id": self.kb.id, "k": self.k, "retriever": self.kind,
                "chunks": len(self.kb.chunks), "dense": self.kb.dense.kind}

    @classmethod
    def from_spec(cls, spec: dict) -> Retriever:
        folder = Path(spec["kb"])
        kb = KnowledgeBase.open(folder)
        if kb.id != spec.get("kb_id"):
            raise TailorError(f"{folder}: the knowledge base changed since this arm was measured "
                              f"(content {kb.id}, the arm's {spec.get('kb_id')}); rebuild the arm or point it at the old base")
        return cls(kb, spec["k"], spec["retriever"])

    def search(self, queries: list[str], k: int | None = None) -> list[list[Passage]]:
        t0 = time.perf_counter()
        hits = self.kb.search(queries, k or self.k, self.kind)
        self.seconds += time.perf_counter() - t0
        self.queries += len(queries)
        return [[Passage(c.id, c.doc_id, search_text(c), h.score) for h in row for c in (self.kb.chunk(h),)]
                for row in hits]

    def __call__(self, examples) -> list[list[Passage]]:
        return self.search([ex.input_text for ex in examples])

    @property
    def ms_per_query(self) -> float | None:
        return 1000 * self.seconds / self.queries if self.queries else None
