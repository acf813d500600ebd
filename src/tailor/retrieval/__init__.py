"""Knowledge bases: documents read (documents.py), chunked by tokens on sentence boundaries
(chunking.py), indexed for BM25, dense and hybrid search (search.py, kb.py), retrieved for a
prompt (retriever.py) and measured (grounding.py). Importing this package loads no model."""

from .chunking import Chunk, Chunker
from .documents import Document, read_documents
from .kb import KnowledgeBase, build
from .retriever import Passage, Retriever

__all__ = ["Chunk", "Chunker", "Document", "KnowledgeBase", "Passage", "Retriever", "build", "read_documents"]
