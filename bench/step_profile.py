"""Where a LoRA training step's time goes, and the MFU that bounds.

`train_vs_trl.py` reports MFU (model FLOP/s over a plain large bf16 matmul's FLOP/s) and the
ceiling of the body's matmuls at a step's shapes. This script splits a real step of the same
training run (the LoRA arm's `fit`, the bench's data and settings) by operator, with
torch.profiler over a few steps after warm-up, and prints:
- each kind of operator's share of the step (matmuls; casts and copies; gathers and scatters;
  softmax; dropout's random draws; other operators; time outside any operator) and the operator
  calls per step;
- the MFU bound: the MFU this step would reach if everything that is not a matmul cost nothing
  and the matmuls ran as they do in the step (model FLOPs of a step over its matmuls' time).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/step_profile.py [--examples 160]

Shares come from the profiler's self times, which add a few microseconds to every operator (the
small ones look a little heavier than they are); the MFU and tokens/s come from an unprofiled
run first, and move with this VM's speed of the moment (`train_vs_trl.py` takes the best of rounds).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(__file__))
from dtype_matmul import bf16_peak_flops  # noqa: E402
from train_vs_trl import LORA, tailor_arm, tailor_setup, train_flops  # noqa: E402

KINDS = {
    "matmul": {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"},
    "casts and copies": {"aten::copy_", "aten::clone", "aten::_to_copy"},
    "gathers and scatters": {"aten::index_select", "aten::scatter_add_", "aten::index_put_",
                             "aten::_index_put_impl_", "aten::index", "aten::index_add_", "aten::gather"},
    "softmax": {"aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax",
                "aten::_log_softmax_backward_data"},
    "dropout draws": {"aten::uniform_", "aten::log1p", "aten::cumsum_", "aten::bernoulli_"},
}


def kind_of(name: str) -> str:
    if not name.startswith("aten::"):   # time spent outside any operator: Python, the autograd engine
        return "Python and autograd engine"
    return next((k for k, names in KINDS.items() if name in names), "other operators (elementwise, norms, ...)")


def fit(task, base, batch: int, profiler=None) -> dict:
    hook = None
    if profiler is not None:   # one profiler step per optimiser step: the schedule counts training steps
        from torch.optim.optimizer import register_optimizer_step_post_hook
        hook = register_optimizer_step_post_hook(lambda *a: profiler.step())
    try:
        return tailor_arm(batch).fit(task, base).info["train"]   # a fresh adapter over the shared frozen base
    finally:
        if hook is not None:
            hook.remove()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--active", type=int, default=4, help="profiled steps (after 3 skipped and 1 warm-up)")
    args = p.parse_args()
    if args.examples // args.batch < 4 + args.active:
        p.error(f"--examples {args.examples} gives {args.examples // args.batch} steps; the profile skips 4 and "
                f"records {args.active}: give at least {args.batch * (4 + args.active)}")
    torch.set_num_threads(os.cpu_count() or 1)
    from torch.profiler import ProfilerActivity, profile, schedule

    task, base, enc, _ = tailor_setup(args.examples)
    mean_len = sum(len(e) for e in enc) / len(enc)
    peaks = [bf16_peak_flops(fresh=True)]
    t = fit(task, base, args.batch)
    peaks.append(bf16_peak_flops(fresh=True))
    flops = train_flops(t["train_tokens"], t["target_tokens"], mean_len, LORA["r"])
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=3, warmup=1, active=args.active)) as prof:
        fit(task, base, args.batch, prof)
    peak = max(peaks + [bf16_peak_flops(fresh=True)])   # this VM's speed drifts: the best measurement
    self_us, calls = defaultdict(float), 0
    for event in prof.key_averages():
        self_us[kind_of(event.key)] += event.self_cpu_time_total
        calls += event.count if event.key.startswith("aten::") else 0
    mfu = flops / t["train_time_s"] / peak
    total = sum(self_us.values())
    shares = {k: v / total for k, v in sorted(self_us.items(), key=lambda kv: -kv[1])}
    # the model FLOPs of an average step over the time its matmuls take in the profiled steps
    bound = flops / t["steps"] / (self_us["matmul"] / 1e6 / args.active) / peak
    print(f"LoRA step, smollm2-135m, tweet-sentiment, batch {args.batch}, r={LORA['r']} all-linear, bf16, "
          f"{torch.get_num_threads()} threads: {t['train_tokens'] / t['train_time_s']:.0f} tokens/s unprofiled, "
          f"MFU {mfu:.3f} (bf16 peak {peak / 1e9:.0f} GFLOP/s)")
    for k, share in shares.items():
        print(f"  {k:44}{100 * share:6.1f}%")
    print(f"{calls / args.active:.0f} aten operator calls per step (nested calls included); with everything but the "
          f"matmuls free, MFU {bound:.2f}")
    print(json.dumps({"mfu": mfu, "matmul_share": shares["matmul"], "mfu_bound_matmuls_only": bound,
                      "op_calls_per_step": calls / args.active, "shares": shares}))


if __name__ == "__main__":
    main()
