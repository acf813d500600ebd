"""The verdict on real predictions: an A/A test and a planted effect.

A/A: 2 x PAIRS in-context arms on a real task, configured identically but for the seed of their
random shots (the method's own noise, as two runs of one arm would differ), each measured on
the same test rows; each pair goes through the ladder's verdict (tailor.decide) as a ladder of
two arms of equal cost. Counted: how often the pair is declared different (separated), and how
often the recommendation states a confident preference. Planted: the second arm of each pair
with 10 points of its wrong rows turned right (30 of 300 rows), against the first: how often it is
declared better. One base, loaded once; prints a table and, last, one JSON line.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/verdict_aa.py --pairs 20 --rows 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

from tailor.config import experiment_from_dict
from tailor.datasets import load_task
from tailor.decide import recommend
from tailor.measure import measure
from tailor.methods import make_method
from tailor.models import load_base
from tailor.results import ArmResult, Cost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="tweet-sentiment")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--planted", type=float, default=0.10, help="share of rows turned from wrong to right")
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = load_base(args.model)
    task = load_task(args.task, seed=0)
    test = task.splits["test"][: args.rows]
    exp = experiment_from_dict({"arms": ["zero-shot"], "tolerance": 0.02})
    runs = []
    for s in range(2 * args.pairs):
        adapted = make_method("icl", {"k": args.k, "selector": "random", "seed": s}).fit(task, base)
        m = measure(adapted, task, test, cache=None, progress=False, latency_requests=0)
        runs.append(m.predictions)
        print(f"arm seed {s}: accuracy {m.metrics['accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cost = Cost(first_month_cost=1.0, prompt_tokens_per_request=1, completion_tokens_per_request=1)
    aa, planted = [], []
    for i in range(args.pairs):
        a, b = runs[2 * i], runs[2 * i + 1]
        arms = [ArmResult(name="a", method="icl", metrics={"accuracy": 0.0}, cost=cost),
                ArmResult(name="b", method="icl", metrics={"accuracy": 0.0}, cost=cost.model_copy())]
        rec = recommend(arms, {"a": [a], "b": [b]}, task.kind, "accuracy", exp)
        c = rec.verdict["versus_best"][0]
        aa.append({"a": _acc(a), "b": _acc(b), "separated": c["separated"], "confident": rec.confident,
                   "claim": rec.claim, "p": (c["mcnemar"] or {}).get("p")})
        wrong = [j for j, p in enumerate(b) if p.prediction != p.target]
        turn = set(random.Random(i).sample(wrong, min(len(wrong), round(args.planted * len(b)))))
        better = [dataclasses.replace(p, prediction=p.target) if j in turn else p for j, p in enumerate(b)]
        rec = recommend([arms[0].model_copy(), arms[1].model_copy()], {"a": [a], "b": [better]}, task.kind,
                        "accuracy", exp)
        c = rec.verdict["versus_best"][0]
        planted.append({"a": _acc(a), "b": _acc(better), "best": rec.best_arm, "separated": c["separated"]})
    print(f"\n{'pair':>4} {'acc a':>6} {'acc b':>6} {'A/A separated':>14} {'confident':>9} {'planted b':>9} "
          f"{'declared better':>15}")
    for i, (x, y) in enumerate(zip(aa, planted)):
        print(f"{i:>4} {x['a']:>6.3f} {x['b']:>6.3f} {str(x['separated']):>14} {str(x['confident']):>9} "
              f"{y['b']:>9.3f} {str(y['best'] == 'b' and y['separated']):>15}")
    summary = {"model": args.model, "task": args.task, "pairs": args.pairs, "rows": len(test), "k": args.k,
               "aa_separated": sum(x["separated"] for x in aa) / args.pairs,
               "aa_confident_claims": sum(x["confident"] for x in aa) / args.pairs,
               "planted_points": args.planted,
               "planted_declared_better": sum(y["best"] == "b" and y["separated"] for y in planted) / args.pairs,
               "mean_accuracy": sum(_acc(r) for r in runs) / len(runs),
               "accuracy_range": [min(map(_acc, runs)), max(map(_acc, runs))], "wall_s": time.perf_counter() - t0}
    print(f"\nA/A: declared different in {summary['aa_separated']:.0%} of {args.pairs} pairs, a confident claim in "
          f"{summary['aa_confident_claims']:.0%}; planted +{args.planted:.0%}: declared better in "
          f"{summary['planted_declared_better']:.0%}")
    print(json.dumps(summary))


def _acc(preds) -> float:
    return sum(p.prediction == p.target for p in preds) / len(preds)


if __name__ == "__main__":
    main()
