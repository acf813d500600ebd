"""LoRA trained on the curated vs the raw tweet-sentiment train set, same size budget, measured on
the same test split. Prints accuracy on the whole test split and on its rows that do not leak
from train (a model trained on raw data has seen near copies of the leaked ones).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/curate_vs_raw.py --examples 1000
"""

from __future__ import annotations

import argparse
import json
import time

from tailor.curate import CurateOptions, apply_fixes_logged, curate_task, curated_task
from tailor.datasets import load_task
from tailor.engine import ResultCache
from tailor.evaluate import score_predictions
from tailor.methods import METHODS, make_method
from tailor.models import load_base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=1000, help="train rows each arm sees (the size budget)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    if "lora" not in METHODS:
        raise SystemExit("the lora arm is not registered in tailor.methods.METHODS yet")
    raw = load_task("tweet-sentiment")
    base = load_base(args.model)
    report = curate_task(raw, tokenizer=base.tokenizer, options=CurateOptions())
    rows, log = apply_fixes_logged(raw, report)
    cur = curated_task(raw, rows)
    leaked = {a for d in (report.leakage["train-test"],) for a, _ in d["exact_pairs"] + d["near_pairs"]}
    print(f"raw train {len(raw.splits['train'])}, curated train {len(cur.splits['train'])}; fixes {log}")
    results = {}
    for name, task in (("raw", raw), ("curated", cur)):
        method = make_method("lora", {"max_train_examples": args.examples, "epochs": args.epochs,
                                      "seed": args.seed})
        t0 = time.perf_counter()
        adapted = method.fit(task, base, None, progress=False)
        engine = adapted.engine(ResultCache(), batch_size=32, progress=False)
        preds = adapted.predict(engine, task, task.splits["test"])
        clean = [p for p in preds if p.id not in leaked]
        results[name] = {"accuracy": score_predictions(task, preds).metrics["accuracy"],
                         "macro_f1": score_predictions(task, preds).metrics["macro_f1"],
                         "accuracy_unleaked": score_predictions(task, clean).metrics["accuracy"],
                         "test_rows": len(preds), "unleaked_rows": len(clean),
                         "train_rows_available": len(task.splits["train"]),
                         "train_time_s": round(adapted.train_time_s, 1), "wall_s": round(time.perf_counter() - t0, 1)}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps({"examples": args.examples, "epochs": args.epochs, "seed": args.seed, **results}, indent=1))


if __name__ == "__main__":
    main()
