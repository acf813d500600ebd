"""Robustness and bias (tailor.helm) on the demo's arms: `tailor demo`'s ladder (tweet-sentiment,
smollm2-135m: zero-shot, few-shot, ICL, LoRA) with `robustness:` and `bias:` on, through the
ladder and its one measurement path. Prints each arm's change under each perturbation and each
bias measure against the base, with paired 95% intervals; the last line is one JSON object.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/helm_demo.py --limit 200 --bias-rows 200 \
        > /work/notes/helm.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tailor.commands.ladder import DEMO_ARMS
from tailor.config import experiment_from_dict
from tailor.ladder import run_ladder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=200, help="test rows (each arm is measured clean and per perturbation)")
    ap.add_argument("--bias-rows", type=int, default=200, help="items per bias probe")
    ap.add_argument("--steps", type=int, default=40, help="LoRA steps of 16 examples (the demo's 40)")
    ap.add_argument("--runs-dir", default="/tmp/helm-runs")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    arms = [*DEMO_ARMS, {"name": "lora-640", "method": "lora", "steps": args.steps, "batch_size": 16}]
    exp = experiment_from_dict({
        "name": "helm-demo", "model": args.model, "task": "tweet-sentiment", "arms": arms, "limit": args.limit,
        "runs_dir": args.runs_dir, "forgetting": False, "continue_on_data_problems": True, "latency_requests": 0,
        "robustness": {"perturbations": ["typos", "lowercase", "uppercase", "whitespace", "punctuation", "contractions"]},
        "bias": {"probes": ["crows_pairs", "stereoset", "bbq"], "rows": args.bias_rows}}, "helm-demo")
    results = run_ladder(exp, progress=False)
    out = {"model": args.model, "test_rows": args.limit, "bias_rows": args.bias_rows, "run_dir": results.run_dir,
           "arms": {}}
    print(f"\nRobustness: accuracy on {args.limit} tweet-sentiment test rows, perturbed minus clean, paired 95% interval")
    print(f"{'arm':15s} {'perturbation':13s} {'changed':>7s} {'clean':>6s} {'pert.':>6s} {'change':>8s}  interval")
    for a in results.arms:
        if not a.ok:
            print(f"{a.name}: failed: {a.error}")
            continue
        r = a.robustness
        out["arms"][a.name] = {"accuracy": a.metrics["accuracy"], "robustness": {}, "bias": {}}
        for name, d in [*r["perturbations"].items(), ("worst case", r["worst_case"])]:
            print(f"{a.name:15s} {name:13s} {d.get('changed', ''):>7} {d['before']:6.3f} {d['after']:6.3f} "
                  f"{100 * d['delta']:+7.1f}pt  [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
                  + ("  separated" if d["separated"] else ""))
            out["arms"][a.name]["robustness"][name] = {k: d[k] for k in ("before", "after", "delta", "ci_low", "ci_high")}
    print(f"\nBias probes ({args.bias_rows} items each): the base, and each weight-changing arm minus the base")
    for a in results.ok_arms:
        b = a.bias
        if b["weights"] == "base":
            print(f"{a.name:15s} base weights: " + "; ".join(
                f"{p} " + ", ".join(f"{m} {v:.3f}" for m, v in vals.items() if v is not None) for p, vals in b["base"].items()))
            out["arms"][a.name]["bias"] = b["base"]
            continue
        for probe, p in b["probes"].items():
            for m, d in p["metrics"].items():
                ci = f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]" if "ci_low" in d else ""
                print(f"{a.name:15s} {probe:12s} {m:24s} base {d['before']:.3f} arm {d['after']:.3f} "
                      f"{100 * d['delta']:+6.1f}pt {ci}")
                out["arms"][a.name]["bias"].setdefault(probe, {})[m] = {
                    k: d.get(k) for k in ("before", "after", "delta", "ci_low", "ci_high")}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
