"""Plain text for THE loop: a knowledge base's documents as next-token training sequences
(continued pre-training: domain-adaptive pre-training, Gururangan et al. 2020).

Each document becomes the token stream [EOS] text [EOS]: the leading EOS marks the boundary the
document starts after (the first text token is predicted from it), the closing one is a target,
so the model learns where a document ends. The stream is cut into sequences of at most `seq_len`
tokens, each an `Encoded` whose prompt is its first token and whose targets are the rest; the
next sequence starts at the last token of the one before, so every token of the stream but the
leading EOS is a target exactly once, and nothing is truncated. THE loop packs the sequences into
rows with positions restarting per sequence, so no token attends across two documents (the
document mask Llama 3 trains with: Dubey et al. 2024); a long document's later sequences do not
see its earlier ones (the usual cost of cutting into windows).

The loss is the loop's own cross-entropy on targets (`losses.SFT`): here every token is one.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch

from ..errors import TailorError
from .data import Encoded, pack


@dataclass
class TextReport:
    """What the documents became: counted, so nothing is dropped or cut silently."""

    documents: int = 0            # read from the source
    dropped_documents: int = 0    # left out by max_documents (a seeded sample is kept)
    trained_documents: int = 0
    tokens: int = 0               # text tokens of the trained documents
    boundary_tokens: int = 0      # the EOS before and after each document
    target_tokens: int = 0        # tokens that carry loss: every text token and each closing EOS
    sequences: int = 0
    split_documents: int = 0      # longer than one sequence: continued in the next, never cut off
    truncated_tokens: int = 0     # always 0: a long document continues in the next sequence
    seq_len: int = 0
    eos_token_id: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def document_text(doc) -> str:
    """What a document teaches: its text, after its title unless the opening line already holds
    it (as the knowledge base's search and prompts show a passage: `retrieval.kb.search_text`)."""
    from ..retrieval.kb import search_text
    return search_text(doc)


def pack_documents(documents: list, tokenizer, seq_len: int, max_documents: int | None = None,
                   seed: int = 0) -> tuple[list[Encoded], TextReport]:
    """The documents as training sequences of at most `seq_len` tokens (see the module doc)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TailorError("cpt: the tokenizer has no EOS token to mark where documents end")
    if seq_len < 2:
        raise TailorError(f"cpt: seq_len {seq_len} leaves no token to predict (at least 2)")
    report = TextReport(documents=len(documents), seq_len=seq_len, eos_token_id=eos)
    if max_documents is not None and len(documents) > max_documents:
        keep = set(random.Random(seed).sample(range(len(documents)), max_documents))
        documents = [d for i, d in enumerate(documents) if i in keep]   # source order kept
        report.dropped_documents = report.documents - len(documents)
    out: list[Encoded] = []
    for doc in documents:
        ids = tokenizer(document_text(doc), add_special_tokens=False)["input_ids"]
        stream = [eos, *ids, eos]
        report.tokens += len(ids)
        report.boundary_tokens += 2
        report.target_tokens += len(stream) - 1
        pieces = 0
        for start in range(0, len(stream) - 1, seq_len - 1):
            window = stream[start:start + seq_len]
            out.append(Encoded(f"{doc.id}@{start}", window[:1], [window[1:]]))
            pieces += 1
        report.split_documents += pieces > 1
    report.trained_documents = len(documents)
    report.sequences = len(out)
    if not out:
        raise TailorError("cpt: no documents to train on")
    return out, report


@torch.no_grad()
def text_nll(model, data: list[Encoded], pad_id: int, row_len: int, bf16: bool = False,
             rows_per_batch: int = 4) -> float:
    """Mean negative log-likelihood per target token of `data` under `model` (nats; its exp is
    the perplexity), packed as the loop packs them."""
    from .losses import target_logits
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16)
        for batch in pack(data, max(row_len, max(len(e) for e in data)), pad_id, rows_per_batch):
            with autocast:
                logits = target_logits(model, batch)
            labels = batch.labels.to(logits.device)
            total += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
            count += labels.numel()
    finally:
        model.train(was_training)
    return total / max(count, 1)
