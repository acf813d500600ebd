"""`tailor index SOURCE --out KB_DIR`: a knowledge base for the rag and rag+lora arms."""

from __future__ import annotations

import typer
from rich.table import Table

from . import out
from .numbers import COUNT, COUNT0


def index(
    source: str = typer.Argument(..., metavar="SOURCE", help="a folder of .txt/.md/.html files, a .jsonl of "
                                                              "{id, title, text} records, or a bundled knowledge "
                                                              "base (boolq-rag, disflqa-rag)"),
    kb_dir: str = typer.Option(..., "--out", help="the knowledge base folder (rebuilt in place: only new or changed "
                                                  "documents are embedded again)"),
    model: str = typer.Option("smollm2-135m", help="the base model whose tokenizer counts chunk tokens"),
    chunk_tokens: int = typer.Option(256, callback=COUNT, help="tokens per chunk (the usual advice is 256-1024; a 135M model's "
                                               "prompt fits about four chunks of 256 beside the question)"),
    overlap_tokens: int = typer.Option(32, callback=COUNT0,
                                       help="tokens a chunk repeats from the previous one (10-20%% is usual)"),
    ann_min_chunks: int = typer.Option(200_000, callback=COUNT,
                                       help="from this many chunks on, dense search goes through a faiss "
                                            "index instead of an exact scan (bench/retrieval.py)"),
) -> None:
    """Build or update a knowledge base: chunks by tokens on sentence boundaries with overlap, BM25
    (bm25s) and MiniLM embeddings, a manifest of document hashes. Written atomically: a killed
    build leaves the previous knowledge base whole."""
    from ..datasets.knowledge import knowledge_documents
    from ..errors import TailorError
    from ..models import load_tokenizer
    from ..retrieval import Chunker, build
    docs = knowledge_documents(source)
    try:
        chunker = Chunker(load_tokenizer(model), chunk_tokens, overlap_tokens)
    except ValueError as e:
        raise TailorError(str(e)) from None
    kb, stats = build(docs, kb_dir, chunker, ann_min_chunks=ann_min_chunks, source=source)
    table = Table("knowledge base", str(kb.folder))
    for key, value in (("documents", stats.documents), ("unchanged (not re-embedded)", stats.unchanged),
                       ("added", stats.added), ("changed", stats.changed), ("removed", stats.removed),
                       ("chunks", stats.chunks), ("chunks embedded", stats.chunks_embedded),
                       ("chunks longer than the embedder's 256-token window", stats.embedder_truncated),
                       ("dense search", stats.dense), ("size", f"{stats.bytes / 1e6:.1f} MB"),
                       ("build time", f"{stats.build_s:.1f} s")):
        table.add_row(key, str(value))
    out.print(table)
