"""Rows of prompts with their continuations: [prompt | continuation 1 | continuation 2 | ...].

One prompt and several continuations of it (a classifier's options, a chosen and a rejected
answer) share one row: every continuation attends to its prompt and to its own earlier tokens,
and its positions restart where the prompt ends, so the prompt runs once however many
continuations it has. The engine scores options this way and the training loop trains pairs
this way; a row may also hold several such groups (packing), which never attend to each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Group = tuple[list[int], list[list[int]]]   # prompt ids, continuation ids


@dataclass
class TreeRows:
    ids: torch.Tensor                 # [rows, width]
    positions: torch.Tensor           # [rows, width]
    allowed: torch.Tensor | None      # [rows, width, width] bool: query may attend to key
    rows: torch.Tensor                # per continuation token: its row
    cols: torch.Tensor                # ... the position whose hidden state predicts it
    labels: torch.Tensor              # ... the token itself
    sequence: torch.Tensor            # ... which continuation it belongs to (0 .. n_sequences-1)
    n_sequences: int
    real_tokens: int


def tree_rows(rows: list[list[Group]], pad_id: int, offset: int = 0, mask: bool = True) -> TreeRows:
    """`offset`: positions start there (after a prefix every row shares, already in a cache).
    mask=False builds no attention mask: valid only where every group has one continuation,
    and then positions that restart at 0 for each group tell attention where groups end
    (transformers builds the block-diagonal mask from them)."""
    width = max(sum(len(p) + sum(map(len, conts)) for p, conts in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.zeros((len(rows), width, width), dtype=torch.bool) if mask else None
    causal = torch.ones(width, width, dtype=torch.bool).tril() if mask else None
    sel_row, sel_col, labels, owner = [], [], [], []
    n_seq = real = 0
    for r, row in enumerate(rows):
        at, last = 0, offset
        for prompt, conts in row:
            n = len(prompt)
            ids[r, at:at + n] = torch.tensor(prompt)
            pos[r, at:at + n] = torch.arange(offset, offset + n)
            if mask:
                allowed[r, at:at + n, at:at + n] = causal[:n, :n]
            start, at = at, at + n
            for cont in conts:
                m = len(cont)
                ids[r, at:at + m] = torch.tensor(cont)
                pos[r, at:at + m] = torch.arange(offset + n, offset + n + m)
                if mask:
                    allowed[r, at:at + m, start:start + n] = True
                    allowed[r, at:at + m, at:at + m] = causal[:m, :m]
                # the prompt's last position predicts a continuation's first token, the
                # continuation's own positions the rest
                sel_row += [r] * m
                sel_col += [start + n - 1] + list(range(at, at + m - 1))
                labels += cont
                owner += [n_seq] * m
                n_seq += 1
                last = offset + n + m
                at += m
        real += at
        # Padding continues the row's last group: nothing attends to it and it starts no group
        # of its own (a group of its own would be padded to the longest one by per-example
        # attention); it sees itself only, so no row of the mask is empty (NaN).
        pos[r, at:] = torch.arange(last, last + width - at)
        if mask:
            pad = torch.arange(at, width)
            allowed[r, pad, pad] = True
    return TreeRows(ids, pos, allowed, torch.tensor(sel_row, dtype=torch.long), torch.tensor(sel_col, dtype=torch.long),
                    torch.tensor(labels, dtype=torch.long), torch.tensor(owner, dtype=torch.long), n_seq, real)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype, prefix: int = 0) -> torch.Tensor:
    """[rows, 1, width, prefix + width] in `dtype`: 0 where allowed, the dtype's minimum
    elsewhere; a shared prefix of `prefix` cached tokens is visible to every query."""
    mask = allowed[:, None]
    if prefix:
        mask = torch.cat([torch.ones(*mask.shape[:3], prefix, dtype=torch.bool), mask], -1)
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)
