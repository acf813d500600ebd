"""Training data: examples formatted by THE prompt builder, encoded exactly as the engine encodes
them at inference, then packed into rows without cross-example attention.

An encoded example is prompt ids + target ids, each encoded separately (the engine scores an
option by encoding the prompt and the option separately too), so the ids a model is trained on
are the ids it is asked about later. Only target ids carry loss.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import torch

from ..errors import TailorError
from ..prompts import PromptBuilder
from ..task import Example

log = logging.getLogger("tailor")


@dataclass
class Encoded:
    """One training example: a prompt and one continuation (SFT) or several continuations of the
    same prompt (a chosen and a rejected answer). `extra` holds what a loss needs besides the
    tokens (a teacher's scores, a reference log-probability)."""

    id: str
    prompt: list[int]
    targets: list[list[int]]
    extra: dict = field(default_factory=dict)

    @property
    def target(self) -> list[int]:
        return self.targets[0]

    def __len__(self) -> int:
        return len(self.prompt) + sum(map(len, self.targets))


@dataclass
class EncodeReport:
    kept: int = 0
    too_long: list[str] = field(default_factory=list)  # ids of examples over the budget
    empty_target: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    target_tokens: int = 0

    def to_json(self) -> dict:
        return {"kept": self.kept, "dropped_too_long": len(self.too_long),
                "dropped_too_long_ids": self.too_long[:50], "dropped_empty_target": len(self.empty_target),
                "prompt_tokens": self.prompt_tokens, "target_tokens": self.target_tokens}


def encode_examples(builder: PromptBuilder, examples: list[Example], seq_len: int,
                    overlong: str = "drop", extra_tokens: int = 0,
                    passages: list[list[str]] | None = None) -> tuple[list[Encoded], EncodeReport]:
    """Formats and encodes every example (with its passages, for an arm trained on retrieved
    context). Examples longer than `seq_len` (plus `extra_tokens` of soft prompt, if any) are
    never truncated: they are dropped and counted, or raise when `overlong == "error"`."""
    if overlong not in ("drop", "error"):
        raise TailorError(f"overlong policy '{overlong}' is not one of drop, error")
    out, report = [], EncodeReport()
    for i, ex in enumerate(examples):
        prompt = builder.build(ex, passages=passages[i] if passages else ())
        enc = Encoded(ex.id, builder.encode(prompt.text), [builder.encode(builder.target_text(ex.target))])
        if not ex.target.strip():
            report.empty_target.append(ex.id)
            continue
        if len(enc) + extra_tokens > seq_len or prompt.over_budget:
            if overlong == "error":
                raise TailorError(f"example '{ex.id}' has {len(enc)} tokens, over seq_len {seq_len} "
                                  "(raise seq_len, or set overlong: drop to skip such examples)")
            report.too_long.append(ex.id)
            continue
        report.prompt_tokens += len(enc.prompt)
        report.target_tokens += len(enc.target)
        out.append(enc)
    report.kept = len(out)
    if report.too_long:
        log.warning("%d of %d training examples are longer than seq_len=%d and were dropped (not truncated)",
                    len(report.too_long), len(examples), seq_len)
    if not out:
        raise TailorError(f"no training examples left (all {len(examples)} over seq_len {seq_len} or empty)")
    return out, report


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a pure function of (seed, epoch), so a resumed run sees
    exactly the order an uninterrupted run would have seen."""
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def step_examples(data: list[Encoded], batch_size: int, seed: int, step: int) -> list[Encoded]:
    """The examples optimiser step `step` (0-based) consumes. Epochs are concatenated; a step
    never straddles two epochs (the last step of an epoch may be smaller)."""
    per_epoch = (len(data) + batch_size - 1) // batch_size
    epoch, k = divmod(step, per_epoch)
    order = epoch_order(len(data), seed, epoch)
    return [data[i] for i in order[k * batch_size:(k + 1) * batch_size]]


@dataclass
class Batch:
    """One forward pass worth of rows. `select` holds (row, position) of every hidden state that
    predicts a target token, `labels` the token it predicts and `sequence` which continuation it
    belongs to (an index into `sequences`: (example index in `examples`, continuation index)),
    so a loss can sum log-probabilities per sequence."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None   # None (packed by position ids), [rows, width] or [rows, width, width]
    select: tuple[torch.Tensor, torch.Tensor]
    labels: torch.Tensor
    sequence: torch.Tensor
    sequences: list[tuple[int, int]]
    examples: list[Encoded]
    real_tokens: int
    padded_tokens: int
    soft_tokens: int = 0                  # virtual tokens a prompt-learning model prepends (padded rows)


def pack(examples: list[Encoded], seq_len: int, pad_id: int, max_rows: int) -> list[Batch]:
    """First-fit-decreasing packing into rows of at most `seq_len` tokens. With one continuation
    per example, positions restart at 0 for every example and no attention mask is passed:
    transformers then builds a block-diagonal causal mask from the position ids. With several
    continuations of a prompt, rows carry the tree mask of `tailor.tree` (each continuation
    sees its prompt and itself). Rows are trimmed to the longest row of their batch; that is
    the only padding."""
    rows = _first_fit(examples, seq_len)
    # Balance: the fewest rows at seq_len, refilled at the smallest capacity that still needs no
    # more rows, so the rows of a batch end up about equally long (little padding to trim).
    total = sum(len(e) for e in examples)
    for capacity in range(-(-total // len(rows)), seq_len, 8):
        balanced = _first_fit(examples, capacity)
        if len(balanced) <= len(rows):
            rows = balanced
            break
    return [_packed_batch(rows[i:i + max_rows], pad_id) for i in range(0, len(rows), max_rows)]


def _first_fit(examples: list[Encoded], capacity: int) -> list[list[Encoded]]:
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for ex in sorted(examples, key=len, reverse=True):
        for r, free in enumerate(room):
            if len(ex) <= free:
                rows[r].append(ex)
                room[r] -= len(ex)
                break
        else:
            rows.append([ex])
            room.append(capacity - len(ex))
    return rows


def _packed_batch(rows: list[list[Encoded]], pad_id: int) -> Batch:
    from ..tree import tree_rows
    examples = [ex for row in rows for ex in row]
    tree = any(len(ex.targets) > 1 for ex in examples)
    t = tree_rows([[(ex.prompt, ex.targets) for ex in row] for row in rows], pad_id, mask=tree)
    sequences = [(i, j) for i, ex in enumerate(examples) for j in range(len(ex.targets))]
    return Batch(t.ids, t.positions, t.allowed, (t.rows, t.cols), t.labels, t.sequence, sequences, examples,
                 t.real_tokens, t.ids.numel() - t.real_tokens)


def padded(examples: list[Encoded], pad_id: int, max_rows: int, soft_tokens: int = 0) -> list[Batch]:
    """One sequence per row, right-padded, length-sorted: for methods that must see each
    sequence alone (a soft prompt or prefix is prepended to every sequence). An example with
    several continuations takes one row for each, all in the same batch (a pairwise loss needs
    both sides of a pair together)."""
    examples = sorted(examples, key=len)
    chunks, chunk = [], []
    for ex in examples:
        if chunk and sum(len(e.targets) for e in chunk) + len(ex.targets) > max_rows:
            chunks.append(chunk)
            chunk = []
        chunk.append(ex)
    chunks.append(chunk)
    return [_padded_batch(c, pad_id, soft_tokens) for c in chunks]


def _padded_batch(examples: list[Encoded], pad_id: int, soft_tokens: int) -> Batch:
    seqs = [(i, j) for i, ex in enumerate(examples) for j in range(len(ex.targets))]
    lengths = [len(examples[i].prompt) + len(examples[i].targets[j]) for i, j in seqs]
    width = max(lengths)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    sel_r, sel_p, labels, owner = [], [], [], []
    for r, (i, j) in enumerate(seqs):
        prompt, target = examples[i].prompt, examples[i].targets[j]
        ids[r, :lengths[r]] = torch.tensor(prompt + target)
        mask[r, :lengths[r]] = 1
        sel_r += [r] * len(target)
        sel_p += range(len(prompt) - 1, len(prompt) - 1 + len(target))
        labels += target
        owner += [r] * len(target)
    return Batch(ids, None, mask, (torch.tensor(sel_r), torch.tensor(sel_p)), torch.tensor(labels),
                 torch.tensor(owner), seqs, examples, sum(lengths), len(seqs) * width - sum(lengths), soft_tokens)
