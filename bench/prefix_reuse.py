"""Prefix reuse in the decoder: generation with it against the same decoder with it off.

An arm's prompts start alike: its instruction and chat template, and for a few-shot arm its
fixed examples. The decoder reuses the keys and values of the start a prompt shares with its
adapter's remembered prompt (src/tailor/decode.py). Two arms, fitted for real, predict their task's
first --rows test rows through the arm's own prediction path (what `tailor predict` and the
ladder run), greedy, --max-new-tokens each, result cache off, with smollm2-135m:

- few-shot (k=4 fixed examples) on disflqa-rag: short questions after a long shared start;
- zero-shot on xsum: only the instruction and template are shared, before a ~500-token article.

The rows go in calls of --chunk rows, as `tailor predict` sends them (16, its batch size: each
call's rows join a fresh decoder together, and one row per adapter leads so the others reuse its
start), or all in one call as the ladder does (--chunk 64).

Each arm runs with reuse on and off (REUSE_MIN and LEAD_MIN set past any prompt), in alternating order,
--repeats times; the table gives the median seconds, prompt tokens reused, generated tokens/s, and how many
rows got the same text both ways (bf16 rounding may part a few: with --dtype fp32 every row
must).

Run it alone (the CPU is shared):
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/prefix_reuse.py [--rows 64] [--chunk 16] [--repeats 2]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ARMS = {"few-shot": ("disflqa-rag", {"k": 4}), "zero-shot": ("xsum", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 where the CPU has it (AMX, AVX-512 BF16), else fp32")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=16, help="rows per predict call (tailor predict: its batch size)")
    args = ap.parse_args()

    from tailor import decode
    from tailor.datasets import load_task
    from tailor.methods import make_method
    from tailor.models import load_base
    base = load_base(args.model, args.dtype)
    minimum, lead = decode.REUSE_MIN, decode.LEAD_MIN

    rows, texts = [], {}
    for arm, (task_name, options) in ARMS.items():
        task = load_task(task_name)
        adapted = make_method(arm, options).fit(task, base)
        examples = task.splits["test"][: args.rows]
        runs = {"on": [], "off": []}
        for rep in range(args.repeats):
            for mode in ("on", "off") if rep % 2 == 0 else ("off", "on"):   # neither always runs warm
                decode.REUSE_MIN, decode.LEAD_MIN = (minimum, lead) if mode == "on" else (1 << 30, 1 << 30)
                engine = adapted.engine(None, batch_size=args.batch_size, progress=False)
                t0 = time.perf_counter()
                preds = [p for i in range(0, len(examples), args.chunk)
                         for p in adapted.predict(engine, task, examples[i:i + args.chunk], args.max_new_tokens)]
                wall = time.perf_counter() - t0
                reused = engine.prompt_tokens["reused"]
                prompt = reused + engine.prompt_tokens["prefilled"]
                tokens = sum(p.completion_tokens for p in preds)
                runs[mode].append({"s": wall, "reused": reused, "prompt": prompt, "tokens": tokens})
                texts[arm, mode] = [p.prediction for p in preds]
                print(f"{arm} reuse {mode}, round {rep + 1}/{args.repeats}: {wall:.1f} s, {reused:,} of {prompt:,} "
                      "prompt tokens reused", file=sys.stderr, flush=True)
        for mode, rs in runs.items():
            s = statistics.median(r["s"] for r in rs)
            rows.append({"arm": arm, "task": task_name, "reuse": mode, "seconds": round(s, 2),
                         "prompt_tokens": rs[0]["prompt"], "reused_tokens": rs[0]["reused"],
                         "tokens_per_s": round(rs[0]["tokens"] / s, 1)})
        rows[-2]["same_text"] = rows[-1]["same_text"] = round(
            sum(a == b for a, b in zip(texts[arm, "on"], texts[arm, "off"])) / len(examples), 3)
    decode.REUSE_MIN, decode.LEAD_MIN = minimum, lead

    print(f"\n{'arm':<10} {'task':<12} {'reuse':<6} {'seconds':>8} {'prompt tok':>10} {'reused':>8} "
          f"{'gen tok/s':>9} {'same text':>9}")
    for r in rows:
        print(f"{r['arm']:<10} {r['task']:<12} {r['reuse']:<6} {r['seconds']:>8.2f} {r['prompt_tokens']:>10} "
              f"{r['reused_tokens']:>8} {r['tokens_per_s']:>9.1f} {r['same_text']:>9.3f}")
    by = {(r["arm"], r["reuse"]): r for r in rows}
    print(json.dumps({"rows": args.rows, "chunk": args.chunk, "model": args.model, "dtype": args.dtype,
                      "speedup": {arm: round(by[arm, "off"]["seconds"] / by[arm, "on"]["seconds"], 2) for arm in ARMS},
                      "reused_fraction": {arm: round(by[arm, "on"]["reused_tokens"] / by[arm, "on"]["prompt_tokens"], 3)
                                          for arm in ARMS},
                      "same_text": {arm: by[arm, "on"]["same_text"] for arm in ARMS}}))


if __name__ == "__main__":
    main()
