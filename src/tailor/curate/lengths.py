"""Lengths in tokens under the chosen model's tokenizer and chat template, and what each
truncation policy would do to the rows over the training length.

Prompts come from THE prompt builder: `builder.render(builder.messages(ex))` is exactly
`builder.build(ex).text` for an example without shots (build also counts it one row at a time;
here the whole corpus is encoded in one batch call of the same tokenizer, which is ~10x faster
and gives the same ids: tests/test_curate.py checks it). The answer is
`builder.target_text(target)`, as the training loop encodes it.
"""

from __future__ import annotations

import numpy as np

from ..prompts import PromptBuilder
from ..task import Example

PERCENTILES = (50, 90, 95, 99)


def encode_lengths(builder: PromptBuilder, texts: list[str]) -> list[int]:
    """Token counts of many texts: distinct texts are encoded once, in one batch."""
    distinct = list(dict.fromkeys(texts))
    backend = getattr(builder.tok, "backend_tokenizer", None)
    if backend is not None:
        counts = [len(e.ids) for e in backend.encode_batch(distinct, add_special_tokens=False)]
    else:  # a slow (pure Python) tokenizer
        counts = [len(ids) for ids in builder.tok(distinct, add_special_tokens=False).input_ids]
    by_text = dict(zip(distinct, counts))
    return [by_text[t] for t in texts]


def token_lengths(rows: list[tuple[str, Example]], builder: PromptBuilder, max_tokens: int) -> dict:
    prompts = [builder.render(builder.messages(ex)) for _, ex in rows]
    prompt_n = np.array(encode_lengths(builder, prompts), dtype=np.int64)
    answer_n = np.array(encode_lengths(builder, [builder.target_text(ex.target) for _, ex in rows]),
                        dtype=np.int64)
    # What the prompt costs around the input itself (instruction, turn markers): a row whose
    # answer plus this overhead exceeds the budget cannot be saved by shortening its input.
    overhead = builder.count(builder.render(builder.messages(Example("", "", ""))))
    total = prompt_n + answer_n
    over = total > max_tokens
    excess = np.maximum(total - max_tokens, 0)
    over_idx = np.flatnonzero(over)
    budget = builder.max_prompt_tokens
    out = {
        "max_tokens": int(max_tokens), "prompt_overhead": int(overhead),
        "prompt_budget": budget,
        "prompt": _stats(prompt_n), "answer": _stats(answer_n), "total": _stats(total),
        "histogram": _histogram(total, max_tokens),
        "by_split": {},
        "over": int(over.sum()),
        "over_ids": [[rows[i][1].id, rows[i][0], int(total[i])] for i in over_idx],
        "over_prompt_budget": int((prompt_n > budget).sum()) if budget else 0,
        "policies": {
            # The training loop's default: the row is skipped, all its tokens lost.
            "drop": {"rows": int(over.sum()), "tokens_lost": int(total[over].sum())},
            # Cut the end of the sequence: the answer comes last, so it goes first.
            "truncate_end": {"rows": int(over.sum()), "tokens_lost": int(excess.sum()),
                             "answer_lost": int((over & (excess >= answer_n)).sum()),
                             "answer_cut": int((over & (excess > 0) & (excess < answer_n)).sum())},
            # Cut the input and keep the answer: fails when overhead + answer alone is too long.
            "truncate_input": {"rows": int(over.sum()), "tokens_lost": int(excess.sum()),
                               "unsaveable": int((over & (overhead + answer_n > max_tokens)).sum())},
        },
    }
    for split in ("train", "dev", "test"):
        mask = np.array([s == split for s, _ in rows], dtype=bool)
        if mask.any():
            out["by_split"][split] = {"rows": int(mask.sum()), "over": int((over & mask).sum()),
                                      "tokens": int(total[mask].sum())}
    out["_per_row"] = {ex.id: (int(p), int(a)) for (_, ex), p, a in zip(rows, prompt_n, answer_n)}
    return out


def _stats(values: np.ndarray) -> dict:
    if not len(values):
        return {}
    out = {"min": int(values.min()), "mean": round(float(values.mean()), 1), "max": int(values.max())}
    out.update({f"p{p}": int(np.percentile(values, p)) for p in PERCENTILES})
    return out


def _histogram(values: np.ndarray, max_tokens: int, bins: int = 20) -> dict:
    top = max(int(values.max()) if len(values) else 1, max_tokens)
    edges = np.linspace(0, top, bins + 1).round().astype(int)
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def truncate_input(ex: Example, builder: PromptBuilder, prompt_tokens: int, answer_tokens: int,
                   max_tokens: int) -> Example | None:
    """The example with its (text) input shortened so prompt + answer fit, or None if it cannot."""
    if not isinstance(ex.input, str):
        return None
    excess = prompt_tokens + answer_tokens - max_tokens
    ids = builder.encode(ex.input)
    keep = len(ids) - excess - 1  # one spare token: re-encoding at the cut can merge differently
    if keep <= 0:
        return None
    from dataclasses import replace
    text = builder.tok.decode(ids[:keep])
    short = replace(ex, input=text, meta={**ex.meta, "truncated_from_tokens": prompt_tokens + answer_tokens})
    if builder.count(builder.build(short).text) + answer_tokens > max_tokens:
        return None
    return short
