"""The two searches a knowledge base runs and their fusion.

- lexical: BM25 (bm25s, Lù 2024), English stopwords removed, Snowball-stemmed (PyStemmer);
- dense: cosine over the bundled all-MiniLM-L6-v2 embeddings (the embedder the in-context
  selectors use): exact matrix products for small bases, and an inverted-file index from faiss
  (8-bit scalar-quantised vectors) past `ANN_MIN_CHUNKS`, so a base of a million chunks fits one
  machine (bench/retrieval.py measures both);
- hybrid: reciprocal rank fusion, score = sum over the lists of 1 / (k + rank), k = 60
  (Cormack et al. 2009).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RRF_K = 60
# An exact scan grows with the base: 54 ms a query at a million chunks on two cores (about 11 ms
# at this threshold), where the faiss index answers in 0.7 ms with the same recall@4 on
# bench/retrieval.py's synthetic set. Below it exact search is fast enough and needs no training.
ANN_MIN_CHUNKS = 200_000


@dataclass(frozen=True)
class Hit:
    index: int      # the chunk's row in the knowledge base
    score: float
    rank: int       # 1-based


# What decides the lexical index's terms: a base built with other terms must be rebuilt.
LEXICAL = {"library": "bm25s", "stopwords": "en", "stemmer": "snowball-english", "version": 1}


@functools.cache
def _stemmer():
    import Stemmer
    return Stemmer.Stemmer("english").stemWords


def bm25_tokens(texts: list[str]) -> list[list[str]]:
    import bm25s
    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


class LexicalIndex:
    def __init__(self, retriever):
        self.retriever = retriever

    @classmethod
    def build(cls, texts: list[str]) -> LexicalIndex:
        import bm25s
        retriever = bm25s.BM25()
        retriever.index(bm25_tokens(texts), show_progress=False)
        return cls(retriever)

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s
        return cls(bm25s.BM25.load(str(folder), mmap=True, show_progress=False, verbosity=0))

    @property
    def size(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        k = min(k, self.size)
        if not queries or k <= 0:
            return [[] for _ in queries]
        docs, scores = self.retriever.retrieve(bm25_tokens(queries), k=k, show_progress=False, n_threads=1)
        # A query with no indexed word scores 0 everywhere: no lexical evidence, no hits.
        return [[Hit(int(d), float(s), r) for r, (d, s) in enumerate(zip(ds, ss), 1) if s > 0]
                for ds, ss in zip(docs, scores)]


class DenseIndex:
    """Unit vectors (float16 on disk) searched exactly, or through faiss IVF past ANN_MIN_CHUNKS."""

    def __init__(self, vectors: np.ndarray, ann=None):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ann = ann

    @classmethod
    def build(cls, vectors: np.ndarray, ann_min_chunks: int = ANN_MIN_CHUNKS, seed: int = 0) -> DenseIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return cls(vectors, build_ivf(vectors, seed) if len(vectors) >= ann_min_chunks else None)

    @property
    def kind(self) -> str:
        return "faiss-ivf-sq8" if self.ann is not None else "exact"

    def save(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self.vectors.astype(np.float16), allow_pickle=False)
        if self.ann is not None:
            import faiss
            faiss.write_index(self.ann, str(folder / "dense.faiss"))

    @classmethod
    def load(cls, folder: Path) -> DenseIndex:
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        ann = None
        if (folder / "dense.faiss").is_file():
            import faiss
            ann = faiss.read_index(str(folder / "dense.faiss"))
            ann.nprobe = _nprobe(ann.nlist)
        return cls(vectors, ann)

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        k = min(k, len(self.vectors))
        if len(queries) == 0 or k <= 0:
            return [[] for _ in queries]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.ann is not None:
            scores, idx = self.ann.search(queries, k)
        else:
            sims = queries @ self.vectors.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            part = np.take_along_axis(sims, idx, 1)
            order = np.argsort(-part, axis=1, kind="stable")
            idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(part, order, 1)
        return [[Hit(int(i), float(s), r) for r, (i, s) in enumerate(zip(ii, ss), 1) if i >= 0]
                for ii, ss in zip(idx, scores)]


def build_ivf(vectors: np.ndarray, seed: int = 0):
    """An inverted-file index over 8-bit quantised vectors: 4 sqrt(n) lists, trained on a sample."""
    import faiss
    n, dim = vectors.shape
    nlist = max(int(4 * math.sqrt(n)), 16)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False)
    index.train(vectors[np.sort(sample)])
    index.add(vectors)
    index.nprobe = _nprobe(nlist)
    return index


def _nprobe(nlist: int) -> int:
    return max(nlist // 64, 8)


def rrf(rankings: list[list[Hit]], k: int, rrf_k: int = RRF_K) -> list[Hit]:
    """Reciprocal rank fusion of several rankings of one query: the top `k` by sum 1/(rrf_k + rank);
    ties keep the order of first appearance (the first ranking's order first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for hit in ranking:
            scores[hit.index] = scores.get(hit.index, 0.0) + 1.0 / (rrf_k + hit.rank)
    order = sorted(scores, key=lambda i: -scores[i])   # sorted() is stable: ties keep first appearance
    return [Hit(i, scores[i], r) for r, i in enumerate(order[:k], 1)]
