"""Model-in-the-loop labelling: does a LoRA arm trained on a small gold core gain from the rows it
labels itself with confidence?

Meta's guide to adapting LLMs describes growing a training set with the model in the loop: a
model trained on a curated core labels a larger set, and only its confident labels are kept.
This measures that loop on the bundled tweet-sentiment task (smollm2-135m by default):

1. from the train split, with a seeded shuffle: GOLD (--gold rows, labelled) and HELD (--held
   other rows whose labels are hidden from the pipeline and kept aside only to grade);
2. a LoRA arm trained on GOLD only (the demo's recipe: batch 16, one pass over the rows, so 40
   steps for 640 rows), saved as an arm folder;
3. HELD written as an input file without labels and pre-labelled by that arm through
   `tailor.label.label_file(..., keep_above=--threshold)` (result cache off); the kept rows'
   labels are graded against the hidden ones by id;
4. a second LoRA arm, same recipe, trained on GOLD + the kept rows with the model's labels, its
   steps sized to one pass too (ceil(rows / 16));
5. an equal-steps control: a third LoRA arm on GOLD only, trained for as many steps as the
   gold+kept arm (so more than one pass over GOLD), which separates the kept rows' gain from the
   gain of training longer;
6. all three arms measured on the same first --test test rows through `tailor.measure.measure`.

It prints a table (arm, train rows, steps, train s, test accuracy, macro F1) and the labelling
line; the last line is one JSON object. Run it alone (the CPU is shared):
    flock /tmp/tailor-cpu.lock timeout 2400 .venv/bin/python bench/label_loop.py [--gold 640] [--held 2000]
        [--threshold 0.7] [--test 300] [--model smollm2-135m]
Quick check: --model tiny-test --gold 32 --held 64 --test 20
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def with_train(task, train: list):
    """`task` with `train` as its train split and the same dev and test rows."""
    from tailor.task import Task
    dev, test = task.splits["dev"], task.splits["test"]
    return Task(task.name, task.kind, task.instruction, [*train, *dev, *test], labels=task.labels,
                metrics=list(task.metrics), source=task.source, splits={"train": list(train), "dev": dev, "test": test})


def fit_arm(task, base, rows: int, args, folder: Path, steps: int | None = None):
    """A LoRA arm on the task's train split in batches of `args.batch_size`: `steps` steps, by
    default one pass over its `rows` rows."""
    from tailor.methods import make_method, save_adapted
    steps = steps or max(1, math.ceil(rows / args.batch_size))
    method = make_method("lora", {"steps": steps, "batch_size": args.batch_size, "seed": args.seed,
                                  "max_train_examples": None})
    adapted = method.fit(task, base, folder, progress=False)
    save_adapted(adapted, folder)
    return adapted, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--gold", type=int, default=640, help="labelled train rows the first arm learns from")
    ap.add_argument("--held", type=int, default=2000, help="other train rows, labels hidden, for the arm to label")
    ap.add_argument("--threshold", type=float, default=0.7, help="keep a model label whose confidence is at least this")
    ap.add_argument("--test", type=int, default=300, help="first N test rows both arms are measured on")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--keep", default=None, help="folder to keep the arms and the review in (default: a temp folder)")
    args = ap.parse_args()

    import torch

    from tailor.datasets import load_task
    from tailor.label import label_file
    from tailor.measure import measure
    from tailor.models import load_base
    from tailor.task import Example

    task = load_task("tweet-sentiment")
    train = sorted(task.splits["train"], key=lambda e: e.id)
    if args.gold + args.held > len(train):
        sys.exit(f"--gold {args.gold} + --held {args.held} is more than the {len(train)} train rows")
    random.Random(args.seed).shuffle(train)
    gold, held = train[:args.gold], train[args.gold:args.gold + args.held]
    hidden = {ex.id: ex.target for ex in held}
    test_rows = task.splits["test"][:args.test]
    base = load_base(args.model, dtype=args.dtype)
    print(f"{args.model} {str(base.dtype).removeprefix('torch.')} on {base.device}, {torch.get_num_threads()} threads; "
          f"gold {len(gold)}, held {len(held)} (labels hidden), test {len(test_rows)}, threshold {args.threshold}",
          flush=True)

    with tempfile.TemporaryDirectory(prefix="label-loop-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)

        gold_task = with_train(task, gold)
        t0 = time.perf_counter()
        arm_gold, steps_gold = fit_arm(gold_task, base, len(gold), args, work / "arm-gold")
        wall_gold = time.perf_counter() - t0
        print(f"gold-only arm: {steps_gold} steps, {arm_gold.train_time_s:.0f} s training", flush=True)

        inputs = work / "held.jsonl"   # the pipeline sees ids and texts only
        inputs.write_text("".join(json.dumps({"id": ex.id, "text": ex.input}, ensure_ascii=False) + "\n"
                                  for ex in held), encoding="utf-8")
        assert all("label" not in json.loads(line) for line in inputs.read_text(encoding="utf-8").split("\n") if line)
        t0 = time.perf_counter()
        summary = label_file(work / "arm-gold", inputs, work / "review.jsonl", keep_above=args.threshold,
                             model=args.model, dtype=args.dtype, cache=False, runs_dir=str(work / "runs"),
                             progress=False, batch_size=args.batch_size)
        label_s = time.perf_counter() - t0
        review = [json.loads(line) for line in (work / "review.jsonl").read_text(encoding="utf-8").split("\n") if line]
        assert sorted(r["id"] for r in review) == sorted(hidden), "the review does not hold every held row once"
        assert all("gold" not in r for r in review), "the pipeline saw the hidden labels"
        kept = [r for r in review if r["kept"]]
        right = lambda rs: sum(r["label"] == hidden[r["id"]] for r in rs) / len(rs) if rs else None  # noqa: E731
        kept_share, kept_acc, all_acc = len(kept) / len(review), right(kept), right(review)
        print(f"labelled {len(review)} rows in {label_s:.1f} s ({len(review) / label_s:.1f} rows/s); kept "
              f"{len(kept)} ({100 * kept_share:.1f}%) at confidence >= {args.threshold}; flagged kept {summary['kept']}",
              flush=True)

        confs = sorted(r["confidence"] for r in review)
        quantile = lambda q: confs[min(len(confs) - 1, int(q * len(confs)))]  # noqa: E731
        conf_summary = {"p10": quantile(0.1), "p50": quantile(0.5), "p90": quantile(0.9), "max": confs[-1],
                        "mean": summary["mean_confidence"]}
        # what other thresholds would have kept, from the same labels (no retraining)
        sweep = [{"threshold": t, "kept_share": sum(c >= t for c in confs) / len(confs),
                  "kept_label_accuracy": right([r for r in review if r["confidence"] >= t])}
                 for t in sorted({0.5, 0.6, 0.7, 0.8, 0.9, args.threshold})]
        by_id = {ex.id: ex for ex in held}
        # the kept rows carry the model's label, never the hidden one
        kept_examples = [Example(r["id"], by_id[r["id"]].input, r["label"], meta=dict(by_id[r["id"]].meta))
                         for r in kept]
        plus_task = with_train(task, gold + kept_examples)
        t0 = time.perf_counter()
        arm_plus, steps_plus = fit_arm(plus_task, base, len(gold) + len(kept), args, work / "arm-gold-plus-kept")
        wall_plus = time.perf_counter() - t0
        print(f"gold+kept arm: {steps_plus} steps, {arm_plus.train_time_s:.0f} s training", flush=True)
        t0 = time.perf_counter()   # the control: gold only, as many steps as gold+kept
        arm_equal, steps_equal = fit_arm(gold_task, base, len(gold), args, work / "arm-gold-equal-steps",
                                         steps=steps_plus)
        wall_equal = time.perf_counter() - t0
        print(f"gold-only equal-steps arm: {steps_equal} steps, {arm_equal.train_time_s:.0f} s training", flush=True)

        results = {}
        for name, adapted, rows, steps, wall in (
                ("gold-only", arm_gold, len(gold), steps_gold, wall_gold),
                ("gold-only=steps", arm_equal, len(gold), steps_equal, wall_equal),
                ("gold+kept", arm_plus, len(gold) + len(kept), steps_plus, wall_plus)):
            m = measure(adapted, task, test_rows, cache=None, latency_requests=0, progress=False)
            results[name] = {"train_rows": rows, "steps": steps, "train_s": adapted.train_time_s, "fit_wall_s": wall,
                             "accuracy": m.metrics["accuracy"], "macro_f1": m.metrics["macro_f1"],
                             "eval_s": m.cost.eval_wall_s}

    print(f"\n{'arm':<16} {'train rows':>10} {'steps':>6} {'train s':>8} {'test acc':>9} {'macro F1':>9}")
    for name, r in results.items():
        print(f"{name:<16} {r['train_rows']:>10} {r['steps']:>6} {r['train_s']:>8.0f} {r['accuracy']:>9.3f} "
              f"{r['macro_f1']:>9.3f}")
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"\nlabelling: {len(review)} held rows in {label_s:.1f} s; kept {len(kept)} ({100 * kept_share:.1f}%) at "
          f">= {args.threshold}; label accuracy kept {fmt(kept_acc)}, all {fmt(all_acc)}")
    print(f"kept labels (model) {dict(sorted(Counter(r['label'] for r in kept).items()))}; hidden labels of the kept "
          f"{dict(sorted(Counter(hidden[r['id']] for r in kept).items()))}; held (hidden) "
          f"{dict(sorted(Counter(hidden.values()).items()))}")
    print("model confidence on the held rows: " + ", ".join(f"{k} {v:.3f}" for k, v in conf_summary.items()))
    print("threshold sweep (same labels): " + "; ".join(
        f">= {t['threshold']}: kept {100 * t['kept_share']:.1f}%, accuracy {fmt(t['kept_label_accuracy'])}" for t in sweep))
    delta = results["gold+kept"]["accuracy"] - results["gold-only"]["accuracy"]
    delta_equal = results["gold+kept"]["accuracy"] - results["gold-only=steps"]["accuracy"]
    print(f"test accuracy gold+kept - gold-only: {100 * delta:+.1f} points; gold+kept - gold-only at equal steps "
          f"({steps_plus}): {100 * delta_equal:+.1f} points; on {len(test_rows)} rows")
    r4 = lambda x: None if x is None else round(x, 4)  # noqa: E731
    print(json.dumps({
        "model": args.model, "gold_rows": len(gold), "held_rows": len(held), "threshold": args.threshold,
        "test_rows": len(test_rows), "kept_rows": len(kept), "kept_share": r4(kept_share),
        "kept_label_accuracy": r4(kept_acc), "all_label_accuracy": r4(all_acc), "label_s": round(label_s, 1),
        "steps_gold_only": steps_gold, "steps_gold_only_equal_steps": steps_equal, "steps_gold_plus_kept": steps_plus,
        "train_s_gold_only": round(results["gold-only"]["train_s"], 1),
        "train_s_gold_only_equal_steps": round(results["gold-only=steps"]["train_s"], 1),
        "train_s_gold_plus_kept": round(results["gold+kept"]["train_s"], 1),
        "accuracy_gold_only": r4(results["gold-only"]["accuracy"]),
        "accuracy_gold_only_equal_steps": r4(results["gold-only=steps"]["accuracy"]),
        "accuracy_gold_plus_kept": r4(results["gold+kept"]["accuracy"]),
        "macro_f1_gold_only": r4(results["gold-only"]["macro_f1"]),
        "macro_f1_gold_only_equal_steps": r4(results["gold-only=steps"]["macro_f1"]),
        "macro_f1_gold_plus_kept": r4(results["gold+kept"]["macro_f1"]), "delta": r4(delta),
        "delta_equal_steps": r4(delta_equal),
        "confidence": {k: r4(v) for k, v in conf_summary.items()},
        "sweep": [{k: r4(v) for k, v in t.items()} for t in sweep]}))


if __name__ == "__main__":
    main()
