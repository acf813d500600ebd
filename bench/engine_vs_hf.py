"""Choice scoring: the engine vs a plain per-option Hugging Face forward loop.

Both score the same 300 tweet-sentiment test rows with smollm2-135m, on the same prompts from
THE prompt builder and the same options (`builder.target_text(label)`), in the same dtype:

- engine: `tailor.engine.Engine.score` (length-sorted batches, each prompt run once, its KV
  cache shared by the options, result cache off);
- plain HF: for every row and every option, one forward pass over prompt + option at batch
  size 1, summing the option tokens' log-probabilities from the full-sequence logits.

It checks that both pick the same label for every row and prints items/s and the ratio.
Run it alone (the CPU is shared):
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/engine_vs_hf.py [--rows 300] [--dtype auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


@torch.inference_mode()
def hf_loop(model, tok, prompts: list[str], options: list[list[str]]) -> list[list[float]]:
    """The baseline a user writes by hand: one forward per (prompt, option), batch size 1."""
    device = next(model.parameters()).device
    out = []
    for prompt, opts in zip(prompts, options):
        p = tok(prompt, add_special_tokens=False).input_ids
        row = []
        for option in opts:
            o = tok(option, add_special_tokens=False).input_ids
            logits = model(torch.tensor([p + o], device=device)).logits[0].float()
            logp = torch.log_softmax(logits[len(p) - 1:-1], -1)
            row.append(logp.gather(-1, torch.tensor(o, device=device)[:, None]).sum().item())
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--fp32-reference", action="store_true",
                    help="also score in fp32 (engine) and count how often each path agrees with it")
    args = ap.parse_args()

    from tailor.datasets import load_task
    from tailor.engine import Engine
    from tailor.models import load_base
    from tailor.prompts import builder_for

    task = load_task("tweet-sentiment")
    rows = task.splits["test"][: args.rows]
    base = load_base(args.model, dtype=args.dtype)
    builder = builder_for(task, base.tokenizer, base.model.config)
    prompts = [builder.build(ex).text for ex in rows]
    options = [[builder.target_text(label) for label in task.labels]] * len(rows)
    engine = Engine(base.model, base.tokenizer, base.weights_id, cache=None, batch_size=args.batch_size,
                    progress=False)
    prompt_tokens = sum(builder.count(p) for p in prompts)
    print(f"{args.model} {str(base.dtype).removeprefix('torch.')} on {base.device}, "
          f"{torch.get_num_threads()} threads; {len(rows)} rows x {len(task.labels)} options, "
          f"{prompt_tokens / len(rows):.1f} prompt tokens per row")

    engine.score(prompts[:8], options[:8])  # warm up both paths (allocator, kernels)
    hf_loop(base.model, base.tokenizer, prompts[:4], options[:4])

    t0 = time.perf_counter()
    ours = engine.score(prompts, options)
    t_engine = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = hf_loop(base.model, base.tokenizer, prompts, options)
    t_hf = time.perf_counter() - t0

    pick = lambda scores: max(range(len(scores)), key=scores.__getitem__)  # noqa: E731
    same = sum(pick(a.logprobs) == pick(b) for a, b in zip(ours, theirs))
    row_diff = [max(abs(x - y) for x, y in zip(a.logprobs, b)) for a, b in zip(ours, theirs)]
    diff = max(row_diff)
    # a disagreement is a rounding matter when the two paths' scores for that row differ by
    # more than the baseline's margin between its top two options
    flips = [(i, round(sorted(b)[-1] - sorted(b)[-2], 4), round(row_diff[i], 4))
             for i, (a, b) in enumerate(zip(ours, theirs)) if pick(a.logprobs) != pick(b)]
    acc = lambda picks: sum(task.labels[p] == ex.target for p, ex in zip(picks, rows)) / len(rows)  # noqa: E731

    print(f"\n{'path':<34} {'seconds':>8} {'items/s':>9} {'accuracy':>9}")
    print(f"{'engine (batched, shared prefix)':<34} {t_engine:>8.2f} {len(rows) / t_engine:>9.1f} "
          f"{acc([pick(a.logprobs) for a in ours]):>9.3f}")
    print(f"{'plain HF (per option, batch 1)':<34} {t_hf:>8.2f} {len(rows) / t_hf:>9.1f} "
          f"{acc([pick(b) for b in theirs]):>9.3f}")
    print(f"\nengine / plain HF throughput: {t_hf / t_engine:.2f}x")
    print(f"same prediction on {same}/{len(rows)} rows; max |logprob difference| {diff:.4f}"
          + (f"\ndiffering rows (row, baseline top-2 margin, row's max |difference|): {flips}" if flips else ""))
    if args.fp32_reference and base.dtype != torch.float32:
        base.model.float()
        ref = Engine(base.model, base.tokenizer, base.weights_id + ":fp32", None, progress=False).score(prompts, options)
        ref_picks = [pick(r.logprobs) for r in ref]
        print(f"agreement with fp32 (engine): engine {sum(pick(a.logprobs) == r for a, r in zip(ours, ref_picks))}"
              f"/{len(rows)}, plain HF {sum(pick(b) == r for b, r in zip(theirs, ref_picks))}/{len(rows)}; "
              f"fp32 accuracy {acc(ref_picks):.3f}")
    if any(margin > 2 * d for _, margin, d in flips):
        sys.exit("predictions differ beyond rounding")


if __name__ == "__main__":
    main()
