"""Retrieval: Tailor's knowledge base against its peers on the same queries, and at a million chunks.

Part 1, a real base: the bundled boolq-rag knowledge base (every BoolQ passage, ~13k chunks of
256 SmolLM2 tokens), queried with the 400 test and dev questions of boolq-rag, each of which names
its gold passage. Compared on recall@4 and queries/s, query embedding included for dense searches:
- Tailor hybrid (BM25 + MiniLM fused by reciprocal rank, k = 60), Tailor bm25, Tailor dense;
- bm25s alone (its defaults: English stopwords, k1 = 1.5, b = 0.75) over the same chunk texts;
- a plain numpy dense search (the same MiniLM vectors, a matrix product and argsort).
Build time (embeddings served from the cache: the embedding throughput is measured apart, on 256
chunks, uncached), size on disk and reopen time.

Part 2, synthetic: --synthetic chunks (1,000,000 by default) of Zipf-distributed words with
clustered random unit vectors (no embedding: a million MiniLM embeddings would take hours on two
cores). Each query is 8 words and a perturbed vector of one chunk, which is its gold. Build time,
index size, reopen time, per-query latency and recall@4 for BM25, exact dense and the faiss index
Tailor switches to past ANN_MIN_CHUNKS, and the exact-scan latency that sets that threshold.

Run alone (the CPU is shared):
    flock /tmp/tailor-cpu.lock timeout 3000 .venv/bin/python bench/retrieval.py [--synthetic 1000000]
Quick check: --synthetic 50000
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

K = 4


def recall(gold: list[set], found: list[list[str]], k: int = K) -> float:
    return sum(bool(g & set(f[:k])) for g, f in zip(gold, found)) / len(gold)


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def real_base(tmp: Path) -> tuple[list[tuple], dict]:
    import bm25s

    from tailor.datasets.bundled import load_task
    from tailor.datasets.knowledge import bundled_documents
    from tailor.methods.retrieval import open_retriever
    from tailor.models import load_base
    from tailor.retrieval import Chunker, KnowledgeBase, build
    from tailor.selectors import Embedder
    task = load_task("boolq-rag")
    base = load_base("smollm2-135m", device="cpu")
    kb = open_retriever(None, task, base, K, "hybrid").kb
    rows = task.splits["test"] + task.splits["dev"]
    queries = [ex.input_text for ex in rows]
    gold = [set(ex.meta["gold_passages"]) for ex in rows]
    doc_of = [c.doc_id for c in kb.chunks]
    texts = [c.text for c in kb.chunks]
    table = []

    for kind in ("hybrid", "bm25", "dense"):
        kb.search(queries[:4], K, kind)   # warm: the embedder loads once
        hits, s = timed(kb.search, queries, K, kind)
        table.append((f"tailor {kind}", recall(gold, [[doc_of[h.index] for h in row] for row in hits]),
                      len(queries) / s))

    peer = bm25s.BM25()
    peer.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    t0 = time.perf_counter()
    docs, _ = peer.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=K, show_progress=False)
    s = time.perf_counter() - t0
    table.append(("bm25s alone", recall(gold, [[doc_of[i] for i in row] for row in docs]), len(queries) / s))

    vectors = kb.dense.vectors
    embedder = Embedder()
    t0 = time.perf_counter()
    q = embedder.model.encode(queries, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    top = np.argsort(-(q @ vectors.T), axis=1)[:, :K]
    s = time.perf_counter() - t0
    table.append(("numpy dense", recall(gold, [[doc_of[i] for i in row] for row in top]), len(queries) / s))

    sample = texts[:256]
    _, embed_s = timed(lambda: embedder.model.encode([t + " " for t in sample], batch_size=64,
                                                     normalize_embeddings=True))
    folder = tmp / "boolq-kb"
    _, build_s = timed(lambda: build(bundled_documents("boolq-rag"), folder, Chunker(base.tokenizer), progress=False))
    _, open_s = timed(KnowledgeBase.open, folder)
    one = [timed(kb.search, [qq], K, "hybrid")[1] for qq in queries[:50]]
    info = {"chunks": len(kb.chunks), "queries": len(queries), "build_s_cached_embeddings": build_s,
            "embed_chunks_per_s": len(sample) / embed_s, "index_mb": dir_mb(folder), "open_s": open_s,
            "hybrid_ms_per_query_alone": 1000 * float(np.median(one))}
    return table, info


def synthetic(n: int, tmp: Path, seed: int = 0) -> dict:
    from tailor.retrieval.search import ANN_MIN_CHUNKS, DenseIndex, LexicalIndex
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    ranks = np.arange(1, len(vocab) + 1)
    p = 1 / ranks ** 1.1
    p /= p.sum()
    words = rng.choice(len(vocab), size=(n, 40), p=p)
    texts = [" ".join(vocab[row]) for row in words]
    dim, centers = 384, 2048
    c = rng.normal(size=(centers, dim)).astype(np.float32)
    vectors = c[rng.integers(0, centers, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n_q = 200
    gold = rng.choice(n, size=n_q, replace=False)
    q_text = [" ".join(vocab[rng.choice(words[g], size=8, replace=False)]) for g in gold]
    q_vec = vectors[gold] + 0.08 * rng.normal(size=(n_q, dim)).astype(np.float32)
    q_vec /= np.linalg.norm(q_vec, axis=1, keepdims=True)
    truth = [{int(g)} for g in gold]

    out = {"chunks": n}
    lexical, out["bm25_build_s"] = timed(LexicalIndex.build, texts)
    dense, out["ann_build_s"] = timed(lambda: DenseIndex.build(vectors, ann_min_chunks=min(ANN_MIN_CHUNKS, n)))
    folder = tmp / "synthetic"
    (folder / "bm25").mkdir(parents=True)
    lexical.save(folder / "bm25")
    dense.save(folder)
    out["index_mb"] = dir_mb(folder)
    out["build_s"] = out["bm25_build_s"] + out["ann_build_s"]
    _, out["open_s"] = timed(lambda: (LexicalIndex.load(folder / "bm25"), DenseIndex.load(folder)))
    for name, fn in (("bm25", lambda: lexical.search(q_text, K)), ("ann", lambda: dense.search(q_vec, K)),
                     ("exact", lambda: DenseIndex(vectors).search(q_vec, K))):
        hits, s = timed(fn)
        out[f"{name}_recall_at_4"] = recall(truth, [[h.index for h in row] for row in hits])
        out[f"{name}_ms_per_query"] = 1000 * s / n_q
    one = [timed(dense.search, q_vec[i:i + 1], K)[1] for i in range(50)]
    exact_one = [timed(DenseIndex(vectors).search, q_vec[i:i + 1], K)[1] for i in range(10)]
    out["ann_ms_one_query"] = 1000 * float(np.median(one))
    out["exact_ms_one_query"] = 1000 * float(np.median(exact_one))
    out["dense"] = dense.kind
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="tailor-bench-retrieval-"))
    try:
        table, info = real_base(tmp)
        print(f"boolq-rag knowledge base: {info['chunks']:,} chunks, {info['queries']} questions with gold passages")
        print(f"{'retriever':<16} {'recall@4':>9} {'queries/s':>10}")
        for name, r, qps in table:
            print(f"{name:<16} {r:>9.3f} {qps:>10.1f}")
        print(f"build {info['build_s_cached_embeddings']:.1f} s with cached embeddings; embedding "
              f"{info['embed_chunks_per_s']:.0f} chunks/s uncached ({info['chunks'] / info['embed_chunks_per_s']:.0f} s "
              f"for this base); {info['index_mb']:.1f} MB; reopen {info['open_s']:.2f} s; one hybrid query alone "
              f"{info['hybrid_ms_per_query_alone']:.1f} ms")
        syn = synthetic(args.synthetic, tmp)
        print(f"\nsynthetic: {syn['chunks']:,} chunks, dense search {syn['dense']}")
        print(f"build {syn['build_s']:.1f} s (bm25 {syn['bm25_build_s']:.1f}, faiss {syn['ann_build_s']:.1f}); "
              f"{syn['index_mb']:.0f} MB on disk; reopen {syn['open_s']:.1f} s")
        print(f"{'search':<8} {'recall@4':>9} {'ms/query (batch of 200)':>24}")
        for name in ("bm25", "ann", "exact"):
            print(f"{name:<8} {syn[name + '_recall_at_4']:>9.3f} {syn[name + '_ms_per_query']:>24.2f}")
        print(f"one query alone: faiss {syn['ann_ms_one_query']:.2f} ms, exact scan {syn['exact_ms_one_query']:.1f} ms")
        by = {name: (r, qps) for name, r, qps in table}
        print(json.dumps({
            "recall_at_4_hybrid": round(by["tailor hybrid"][0], 4), "recall_at_4_bm25": round(by["tailor bm25"][0], 4),
            "recall_at_4_dense": round(by["tailor dense"][0], 4), "recall_at_4_bm25s": round(by["bm25s alone"][0], 4),
            "recall_at_4_numpy_dense": round(by["numpy dense"][0], 4),
            "queries_per_s": round(by["tailor hybrid"][1], 1),
            "hybrid_vs_bm25s_recall": round(by["tailor hybrid"][0] / max(by["bm25s alone"][0], 1e-9), 3),
            "hybrid_vs_numpy_dense_recall": round(by["tailor hybrid"][0] / max(by["numpy dense"][0], 1e-9), 3),
            "build_s_10k": round(info["build_s_cached_embeddings"], 1), "index_mb_10k": round(info["index_mb"], 1),
            "chunks_real": info["chunks"], "synthetic_chunks": syn["chunks"],
            "build_s_1m": round(syn["build_s"], 1), "index_mb_1m": round(syn["index_mb"], 1),
            "open_s_1m": round(syn["open_s"], 2), "ann_ms_per_query_1m": round(syn["ann_ms_one_query"], 2),
            "exact_ms_per_query_1m": round(syn["exact_ms_one_query"], 1),
            "ann_recall_at_4_1m": round(syn["ann_recall_at_4"], 4), "bm25_recall_at_4_1m": round(syn["bm25_recall_at_4"], 4)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
