"""Forgetting after LoRA vs full fine-tuning: train both arms on the same task with the same data
and steps, run the general suite on base and on each trained model (same items), and print the
paired deltas side by side.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/forgetting.py --steps 40 --size 300

The base model's suite comes from the engine cache after its first run. The last printed line is
one JSON object: per arm the task accuracy, per benchmark the delta with its paired 95% interval
and the significant-drop flag, and the mean delta.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tailor.benchmarks import compare, run_suite
from tailor.datasets import load_task
from tailor.engine import ResultCache
from tailor.evaluate import score_predictions
from tailor.methods import make_method
from tailor.models import load_base
from tailor.runs import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="tweet-sentiment")
    ap.add_argument("--arms", default="lora,full")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=None, help="items per benchmark (default: the suite's)")
    ap.add_argument("--task-rows", type=int, default=300, help="test rows for the task accuracy")
    ap.add_argument("--runs-dir", default="runs")
    args = ap.parse_args()
    torch.set_num_threads(2)

    base = load_base(args.model)
    task = load_task(args.task)
    test = task.splits["test"][: args.task_rows]
    cache = ResultCache()
    t0 = time.perf_counter()
    base_suite = run_suite(base.model, base.tokenizer, base.weights_id, cache=cache, sizes=args.size)
    print(f"base suite: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = {}
    for arm in args.arms.split(","):
        run = RunDir(args.runs_dir, "train", f"forgetting-{arm}")
        try:
            opts = {"steps": args.steps, "batch_size": args.batch_size, "seed": 0}
            adapted = make_method(arm, opts).fit(task, base, run.path, progress=False)
            preds = adapted.predict(adapted.engine(cache, progress=False), task, test)
            task_acc = score_predictions(task, preds).metrics["accuracy"]
            suite = run_suite(adapted.model, adapted.tokenizer, adapted.weights_id, cache=cache,
                              sizes=args.size)
            cmp = compare(base_suite, suite)
            rows[arm] = {"task_accuracy": task_acc, "train_time_s": adapted.train_time_s,
                         "trainable_params": adapted.trainable_params, "run_dir": str(run.path),
                         "mean_delta": cmp["overall"],
                         "deltas": {n: {k: r[k] for k in ("base_accuracy", "adapted_accuracy", "delta",
                                                          "ci_low", "ci_high", "significant_drop")}
                                    for n, r in cmp["benchmarks"].items()}}
            run.write_json("forgetting.json", {"base": base_suite, "adapted": suite, "comparison": cmp})
        finally:
            run.close()
        print(f"{arm}: task accuracy {task_acc:.3f}, trained {adapted.train_time_s:.0f} s", flush=True)
        del adapted

    names = list(base_suite["benchmarks"])
    head = f"{'benchmark':14s} {'base':>6s}" + "".join(f" | {arm + ' delta [95% CI]':>28s}" for arm in rows)
    print(head)
    for n in names:
        line = f"{n:14s} {100 * base_suite['benchmarks'][n]['accuracy']:6.1f}"
        for r in rows.values():
            d = r["deltas"][n]
            flag = " DROP" if d["significant_drop"] else ""
            line += f" | {100 * d['delta']:+6.1f} [{100 * d['ci_low']:+5.1f}, {100 * d['ci_high']:+5.1f}]{flag:5s}"
        print(line)
    line = f"{'mean':14s} {'':6s}"
    for r in rows.values():
        m = r["mean_delta"]
        flag = " DROP" if m["significant_drop"] else ""
        line += f" | {100 * m['delta']:+6.1f} [{100 * m['ci_low']:+5.1f}, {100 * m['ci_high']:+5.1f}]{flag:5s}"
    print(line)
    print(json.dumps({"steps": args.steps, "size": args.size, "task": args.task, "arms": rows}))


if __name__ == "__main__":
    main()
