"""Attention over packed training rows: Tailor's per-example path against sdpa over the rows.

For real packed batches (the training loop's packing; the first forward pass of each batch) of a short-example task (tweet-sentiment,
16 and 64 examples a batch) and a long-example one (xsum, 8 a batch), one attention call of
smollm2-135m's shape (9 query heads, 3 key/value heads, head size 64), forward and backward in
bf16, timed three ways:
- `sdpa rows`: transformers' sdpa over the packed rows under the block-diagonal mask (the peer);
- `per example`: Tailor's per-example attention, forced;
- `tailor`: what Tailor runs, per example only where that computes fewer scores than the rows.
It also prints the scores each would compute (examples x longest^2 against rows x width^2).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/packed_attention.py

Times are the best of 5 calls; the last line is one JSON object with `tailor` over `sdpa rows`
per layout.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

HEADS, KV_HEADS, DIM = 9, 3, 64
CASES = [("tweet-sentiment", 16), ("tweet-sentiment", 64), ("xsum", 8)]


class _Module:   # what transformers' sdpa function reads from the attention module
    is_causal, training = True, True
    num_key_value_groups = HEADS // KV_HEADS


def block_mask(pos: torch.Tensor) -> torch.Tensor:
    seg = (pos == 0).cumsum(1)
    causal = torch.ones(pos.shape[1], pos.shape[1], dtype=torch.bool).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def best_ms(fn, pos: torch.Tensor, mask: torch.Tensor, before=lambda: None, tries: int = 5) -> float:
    rows, width = pos.shape
    q = torch.randn(rows, HEADS, width, DIM, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(rows, KV_HEADS, width, DIM, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    best = float("inf")
    for _ in range(tries + 1):   # the first call warms up
        before()
        t = time.perf_counter()
        out, _ = fn(_Module(), q, k, v, mask, scaling=DIM ** -0.5, position_ids=pos)
        out.backward(torch.ones_like(out))
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from tailor.datasets import load_task
    from tailor.models import load_tokenizer
    from tailor.prompts import builder_for
    from tailor.train import segment_attention as sa
    from tailor.train.data import encode_examples, pack
    from tailor.train.loop import TrainConfig

    cfg, tok = TrainConfig(), load_tokenizer("smollm2-135m")
    results = []
    print(f"{'layout':42}{'scores ratio':>13}{'sdpa rows':>11}{'per example':>13}{'tailor':>9}  tailor runs")
    for name, batch in CASES:
        task = load_task(name)
        enc, _ = encode_examples(builder_for(task, tok), random.Random(0).sample(task.splits["train"], 2 * batch),
                                 cfg.seq_len)
        for i in range(0, len(enc) - batch + 1, batch):
            examples = enc[i:i + batch]
            row_len = max(cfg.pack_len, max(len(e) for e in examples))   # as the training loop packs
            pos = pack(examples, row_len, 0, max(1, cfg.micro_batch_tokens // row_len))[0].position_ids
            mask, layout = block_mask(pos), sa._Layout(pos, HEADS, KV_HEADS)
            ratio = layout.n * layout.length ** 2 / (pos.shape[0] * pos.shape[1] ** 2)
            forced = sa._Layout(pos, HEADS, KV_HEADS, always=True)
            forced.cheaper = True

            def force():
                sa._cache.update(ids=pos, heads=(HEADS, KV_HEADS), layout=forced)

            sdpa = best_ms(sdpa_attention_forward, pos, mask)
            per_example = best_ms(sa.segment_attention_forward, pos, mask, force)
            sa.take_counts()
            tailor = best_ms(sa.segment_attention_forward, pos, mask, sa._cache.clear)
            path = max(sa.take_counts().items(), key=lambda kv: kv[1])[0]
            label = f"{name} x{batch}: {layout.n} ex in {pos.shape[0]} rows of {pos.shape[1]}"
            print(f"{label:42}{ratio:13.2f}{sdpa:9.1f}ms{per_example:11.1f}ms{tailor:7.1f}ms  {path}", flush=True)
            results.append({"task": name, "batch": batch, "rows": list(pos.shape), "examples": layout.n,
                            "longest": layout.length, "scores_ratio": round(ratio, 3), "sdpa_ms": round(sdpa, 2),
                            "per_example_ms": round(per_example, 2), "tailor_ms": round(tailor, 2), "path": path,
                            "speedup_vs_sdpa": round(sdpa / tailor, 3)})
    print(json.dumps({"layouts": results,
                      "min_speedup_vs_sdpa": min(r["speedup_vs_sdpa"] for r in results),
                      "max_speedup_vs_sdpa": max(r["speedup_vs_sdpa"] for r in results)}))


if __name__ == "__main__":
    main()
