"""Documents cut into chunks by tokens of the base model's tokenizer, on sentence boundaries,
with overlap. Each chunk keeps its document id, title, character offsets and position.

Defaults: 256 tokens with 32 of overlap (12.5%). The usual advice is 256-1024 tokens with
10-20% overlap; a 135M model's useful prompt is about 2k tokens, and four passages of 256 leave
room for the question and the instruction (see `tailor index --help`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .documents import Document

CHUNK_TOKENS = 256
OVERLAP_TOKENS = 32
# A sentence ends at . ! ? (optionally followed by closing quotes or brackets) before
# whitespace, or at a blank line; a line break inside a paragraph is not a boundary.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)|\n\s*\n")


@dataclass
class Chunk:
    id: str          # "DOC_ID#POSITION"
    doc_id: str
    title: str
    text: str
    start: int       # character offsets into the document's text
    end: int
    position: int    # 0-based, within the document
    n_tokens: int

    def to_json(self) -> dict:
        return asdict(self)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (whitespace between them belongs to none)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if text[start:end].strip():
            spans.append(_strip(text, start, end))
        start = end
    if text[start:].strip():
        spans.append(_strip(text, start, len(text)))
    return spans


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class Chunker:
    def __init__(self, tokenizer, chunk_tokens: int = CHUNK_TOKENS, overlap_tokens: int = OVERLAP_TOKENS):
        if chunk_tokens < 8:
            raise ValueError("chunk_tokens must be at least 8")
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError("overlap_tokens must be at least 0 and below chunk_tokens")
        self.tok, self.size, self.overlap = tokenizer, chunk_tokens, overlap_tokens

    def spec(self) -> dict:
        """What decides the chunks: a rebuild with another spec re-chunks and re-embeds everything."""
        return {"tokenizer": tokenizer_id(self.tok), "chunk_tokens": self.size, "overlap_tokens": self.overlap,
                "version": 1}

    def chunks(self, doc: Document) -> list[Chunk]:
        text = doc.text
        offsets = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        token_ends = [e for _, e in offsets]
        pieces = []   # (start, end, tokens): sentences, and token windows of the overlong ones
        for s, e in sentence_spans(text):
            n = _tokens_in(token_ends, s, e)
            pieces += [(s, e, n)] if n <= self.size else self._windows(offsets, s, e)
        out: list[Chunk] = []
        i = 0
        while i < len(pieces):
            j, used = i, 0
            while j < len(pieces) and (used + pieces[j][2] <= self.size or j == i):
                used += pieces[j][2]
                j += 1
            start, end = pieces[i][0], pieces[j - 1][1]
            out.append(Chunk(f"{doc.id}#{len(out)}", doc.id, doc.title, text[start:end], start, end, len(out), used))
            if j >= len(pieces):
                break
            # The next chunk repeats the last whole sentences of this one, up to `overlap` tokens, so
            # a fact split across a boundary is whole in one of the two; it always moves forward.
            back, k = 0, j
            while k - 1 > i and back + pieces[k - 1][2] <= self.overlap:
                k -= 1
                back += pieces[k][2]
            i = k
        return out

    def _windows(self, offsets, s: int, e: int) -> list[tuple[int, int, int]]:
        """A sentence longer than a chunk, cut at token boundaries into windows of `size` tokens."""
        inside = [(max(a, s), min(b, e)) for a, b in offsets if b > s and a < e]
        out = []
        for k in range(0, len(inside), self.size):
            part = inside[k:k + self.size]
            out.append((part[0][0], part[-1][1], len(part)))
        return out or [(s, e, 0)]


def tokenizer_id(tok) -> str:
    """A content id of the tokenizer (its vocabulary and rules), not of the folder it came from:
    two bases that share a tokenizer share their knowledge bases."""
    from ..utils import sha256_text
    backend = getattr(tok, "backend_tokenizer", None)
    return sha256_text(backend.to_str() if backend is not None else repr(sorted(tok.get_vocab().items())))[:16]


def _tokens_in(token_ends: list[int], s: int, e: int) -> int:
    import bisect
    return max(bisect.bisect_right(token_ends, e) - bisect.bisect_right(token_ends, s), 1)
