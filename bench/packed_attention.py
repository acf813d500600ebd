"""Attention over packed training rows: Tailor's per-example path against sdpa over the rows.

For real packed batches (the training loop's packing; the first forward pass of each batch) of a
short-example task (tweet-sentiment, 16 and 64 examples a batch) and a long-example one (xsum, 8 a batch), one attention call of
smollm2-135m's shape (9 query heads, 3 key/value heads, head size 64), forward and backward in
bf16, timed three ways:
- `sdpa rows`: transformers' sdpa over the packed rows under the block-diagonal mask (the peer);
- `per example`: Tailor's per-example attention, forced;
- `tailor`: what Tailor runs, per example only where that computes fewer scores than the rows;
- `flex f+b`: transformers' flex attention (`flex_attention_forward` under the BlockMask that
  `create_causal_mask` builds from the restarting position ids, as the model would with
  `attn_implementation="flex_attention"`), compiled, as it is meant to run.
It also prints the scores each would compute (examples x longest^2 against rows x width^2).

torch refuses flex attention's backward on CPU (eager and compiled alike), so where `flex f+b`
cannot run its column says n/a, the reason is printed and goes into the JSON, and the forward
alone is timed instead, against sdpa's forward over the rows (`sdpa fwd`): flex eager (torch's
unfused reference path, which materialises every score) and compiled (inductor's CPU kernel;
the call after warm-up), with the one-time seconds of each layout's first compiled call
(`compile s`: compiling, or recompiling for the new shapes) and of building its BlockMask
(`mask s`: `create_block_mask` compiles too), both from a cold, temporary inductor cache.
Compiled as transformers compiles it, a new layout's shapes make dynamo recompile with dynamic
shapes; where that fails (it does on torch 2.13's CPU flex kernel: the generated C++ does not
build), the error is printed and the layouts from there on are compiled for their own shapes.
Flex's outputs are checked against sdpa's on every layout (`max|flex-sdpa|`, bf16 tolerance).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/packed_attention.py

Times are the best of 5 calls; the last line is one JSON object with `tailor` over `sdpa rows`
per layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import time
import warnings

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


def qkv(pos: torch.Tensor, grad: bool, seed: int = 0):
    rows, width = pos.shape
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(rows, h, width, DIM, generator=g, dtype=torch.bfloat16).requires_grad_(grad)
                 for h in (HEADS, KV_HEADS, KV_HEADS))


def best_fwd_ms(fn, pos: torch.Tensor, mask, tries: int = 5) -> tuple[float, float, torch.Tensor]:
    """Forward only, no grad: (first call s, best later call ms, output)."""
    q, k, v = qkv(pos, False)
    times = []
    with torch.no_grad():
        for _ in range(tries + 1):
            t = time.perf_counter()
            out, _ = fn(_Module(), q, k, v, mask, scaling=DIM ** -0.5, position_ids=pos)
            times.append(time.perf_counter() - t)
    return times[0], min(times[1:]) * 1e3, out


@contextlib.contextmanager
def flex_eager():
    """transformers' flex path with torch's uncompiled flex_attention in place of its compiled one."""
    import transformers.integrations.flex_attention as fa
    from torch.nn.attention.flex_attention import flex_attention
    compiled = fa.compile_friendly_flex_attention
    fa.compile_friendly_flex_attention = lambda q, k, v, training=False, **kw: flex_attention(q, k, v, **kw)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            yield
    finally:
        fa.compile_friendly_flex_attention = compiled


def flex_backward_error(flex_forward) -> dict:
    """{} where flex attention's backward runs, else why not: tried uncompiled on a small causal
    call, because a compiled call that raises leaves dynamo running flex_attention uncompiled
    from then on (the compiled timings after it would be eager ones)."""
    pos = torch.arange(128)[None]
    q, k, v = qkv(pos, True)
    try:
        with flex_eager():
            out, _ = flex_forward(_Module(), q, k, v, None, scaling=DIM ** -0.5, position_ids=pos)
            out.sum().backward()
        return {}
    except Exception as e:   # noqa: BLE001 (the failure is the finding)
        return {"eager": short_error(e)}


def short_error(e: Exception) -> str:
    """The exception's first line, and a compiler's first error line (inductor's carry pages of output)."""
    lines = str(e).splitlines() or [""]
    first = next((line.strip() for line in lines if " error: " in line), None)
    return f"{type(e).__name__}: {lines[0]}" + (f" ... {first}" if first else "")


def flex_block_mask(config, pos: torch.Tensor):
    """The BlockMask the model builds for packed rows: no attention mask, position ids that restart."""
    from transformers.masking_utils import create_causal_mask
    return create_causal_mask(config, torch.empty(*pos.shape, 1, dtype=torch.bfloat16), None, None, position_ids=pos)


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    from transformers import AutoConfig
    from transformers.integrations.flex_attention import flex_attention_forward
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from tailor.datasets import load_task
    from tailor.models import load_tokenizer, model_dir
    from tailor.prompts import builder_for
    from tailor.train import segment_attention as sa
    from tailor.train.data import encode_examples, pack
    from tailor.train.options import TrainConfig

    cfg, tok = TrainConfig(), load_tokenizer("smollm2-135m")
    flex_config = AutoConfig.from_pretrained(model_dir("smollm2-135m"))
    flex_config._attn_implementation = "flex_attention"
    cold_cache = tempfile.TemporaryDirectory(prefix="packed_attention_inductor_")
    stack = contextlib.ExitStack()
    stack.enter_context(temporary_cache_dir(cold_cache.name))   # compile seconds from a cold cache
    stack.callback(cold_cache.cleanup)
    flex_fb_error = flex_backward_error(flex_attention_forward)
    static_shapes = False   # set when compiling flex with dynamic shapes fails
    results = []
    print(f"{'layout':42}{'scores ratio':>13}{'sdpa rows':>11}{'per example':>13}{'tailor':>9}  {'tailor runs':12}"
          f"{'flex f+b':>9}{'sdpa fwd':>10}{'flex eager fwd':>16}{'flex comp fwd':>15}{'compile s':>11}"
          f"{'mask s':>8}{'max|flex-sdpa|':>16}")
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

            def force(pos=pos, forced=forced):
                sa._cache.update(ids=pos, heads=(HEADS, KV_HEADS), layout=forced)

            sdpa = best_ms(sdpa_attention_forward, pos, mask)
            per_example = best_ms(sa.segment_attention_forward, pos, mask, force)
            sa.take_counts()
            tailor = best_ms(sa.segment_attention_forward, pos, mask, sa._cache.clear)
            path = max(sa.take_counts().items(), key=lambda kv: kv[1])[0]

            t = time.perf_counter()
            flex_mask = flex_block_mask(flex_config, pos)
            mask_s = time.perf_counter() - t
            _, sdpa_fwd, ref = best_fwd_ms(sdpa_attention_forward, pos, mask)
            with flex_eager():
                _, eager_fwd, out_eager = best_fwd_ms(flex_attention_forward, pos, flex_mask)
            compile_error = None
            if not static_shapes:   # as transformers compiles it: recompiles go dynamic after a new shape
                try:
                    compile_s, compiled_fwd, out_compiled = best_fwd_ms(flex_attention_forward, pos, flex_mask)
                except Exception as e:   # noqa: BLE001 (the failure is the finding)
                    compile_error, static_shapes = short_error(e), True
                    torch._dynamo.reset()   # dynamo would run flex uncompiled after a failed compile
            if static_shapes:       # from the first failure on: compiled for each layout's own shapes
                with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
                    compile_s, compiled_fwd, out_compiled = best_fwd_ms(flex_attention_forward, pos, flex_mask)
            flex_fb = None if flex_fb_error else best_ms(flex_attention_forward, pos, flex_mask)   # compiled
            diff = max((o.float() - ref.float()).abs().max().item() for o in (out_eager, out_compiled))
            close = all(torch.allclose(o.float(), ref.float(), atol=2e-2, rtol=2e-2) for o in (out_eager, out_compiled))

            label = f"{name} x{batch}: {layout.n} ex in {pos.shape[0]} rows of {pos.shape[1]}"
            fb = f"{flex_fb:7.1f}ms" if flex_fb is not None else f"{'n/a':>9}"
            print(f"{label:42}{ratio:13.2f}{sdpa:9.1f}ms{per_example:11.1f}ms{tailor:7.1f}ms  {path:12}{fb}"
                  f"{sdpa_fwd:8.1f}ms{eager_fwd:14.1f}ms{compiled_fwd:13.1f}ms{compile_s:11.1f}{mask_s:8.1f}"
                  f"{diff:12.4f} {'ok' if close else 'FAIL'}{'  (static shapes)' if static_shapes else ''}",
                  flush=True)
            if compile_error:
                print(f"  flex compiled with dynamic shapes failed here, compiled per shape from here on: "
                      f"{compile_error}", flush=True)
            results.append({"task": name, "batch": batch, "rows": list(pos.shape), "examples": layout.n,
                            "longest": layout.length, "scores_ratio": round(ratio, 3), "sdpa_ms": round(sdpa, 2),
                            "per_example_ms": round(per_example, 2), "tailor_ms": round(tailor, 2), "path": path,
                            "speedup_vs_sdpa": round(sdpa / tailor, 3),
                            "flex_ms": None if flex_fb is None else round(flex_fb, 2),
                            "sdpa_fwd_ms": round(sdpa_fwd, 2), "flex_eager_fwd_ms": round(eager_fwd, 2),
                            "flex_compiled_fwd_ms": round(compiled_fwd, 2), "flex_compile_s": round(compile_s, 2),
                            "flex_mask_s": round(mask_s, 2), "flex_max_abs_diff_vs_sdpa": round(diff, 5),
                            "flex_matches_sdpa": close, "flex_compiled_shapes": "static" if static_shapes
                            else "transformers' default (dynamic after a new shape)",
                            "flex_compile_error": compile_error})
    if flex_fb_error:   # the compiled backward, once, last (see `flex_backward_error`)
        try:
            best_ms(flex_attention_forward, pos, flex_mask, tries=0)
            flex_fb_error["compiled"] = "runs"
        except Exception as e:   # noqa: BLE001 (the failure is the finding)
            flex_fb_error["compiled"] = short_error(e)
    stack.close()
    for how, error in flex_fb_error.items():
        print(f"flex f+b n/a ({how}): {error}")
    print("flex forward only, sdpa fwd / flex compiled fwd per layout: "
          + ", ".join(f"{r['sdpa_fwd_ms'] / r['flex_compiled_fwd_ms']:.2f}x" for r in results)
          + f"; one-time compile {sum(r['flex_compile_s'] + r['flex_mask_s'] for r in results):.1f} s in all "
          f"(first calls and BlockMasks, cold cache)")
    print(json.dumps({"layouts": results,
                      "min_speedup_vs_sdpa": min(r["speedup_vs_sdpa"] for r in results),
                      "max_speedup_vs_sdpa": max(r["speedup_vs_sdpa"] for r in results),
                      "flex": {"fwd_bwd_runs": not flex_fb_error, "fwd_bwd_error": flex_fb_error or None,
                               "torch": torch.__version__,
                               "matches_sdpa": all(r["flex_matches_sdpa"] for r in results),
                               "compile_s_total": round(sum(r["flex_compile_s"] + r["flex_mask_s"]
                                                            for r in results), 2)}}))


if __name__ == "__main__":
    main()
