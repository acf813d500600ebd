"""Contextual calibration's table: each arm of a calibration ladder (examples/calibration-ladder.yaml,
examples/calibration-tweet-ladder.yaml) reloaded from its saved folder and measured on the dev
split and on the ladder's test rows, with accuracy, rows, and the share of each predicted label
before and after the arm's label prior is divided out (Zhao et al. 2021).

The test rows replay the ladder's engine cache; the check that a reloaded arm predicts what the
ladder measured is part of the run (it stops on a difference).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/calibration.py RUN_DIR [RUN_DIR ...]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def shares(labels: list[str], preds: list[str]) -> dict[str, float]:
    return {label: round(sum(p == label for p in preds) / max(len(preds), 1), 3) for label in labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()

    from tailor.calibration import label_set
    from tailor.datasets import load_task
    from tailor.engine import ResultCache
    from tailor.ladder import slug
    from tailor.measure import measure
    from tailor.methods import load_adapted
    from tailor.models import load_base
    from tailor.results import read_results

    cache, out = ResultCache(), []
    for run in args.runs:
        result = read_results(run)
        base = load_base(result.experiment.model)
        task = load_task(result.experiment.task)
        labels = label_set(task)
        by_id = {ex.id: ex for ex in task.splits["test"]}
        ladder_preds = {}
        for arm in result.ok_arms:
            # split on "\n" only: splitlines() also breaks at U+2028, which tweets carry inside JSON strings
            lines = (Path(run) / f"predictions-{slug(arm.name)}.jsonl").read_text(encoding="utf-8").split("\n")
            ladder_preds[arm.name] = [json.loads(line) for line in lines if line]
        for arm in result.ok_arms:
            adapted = load_adapted(arm.arm_dir, base)
            test = [by_id[p["id"]] for p in ladder_preds[arm.name]]
            row = {"task": task.name, "arm": arm.name, "calibrate": (adapted.recipe.calibration or {}).get("method", "off")}
            if adapted.recipe.calibration:   # the saved prior, as probabilities
                row["prior"] = {k: round(math.exp(v), 4) for k, v in adapted.recipe.calibration["log_prior"].items()}
            for split, rows in (("dev", task.splits["dev"]), ("test", test)):
                m = measure(adapted, task, rows, cache=cache, progress=False, latency_requests=0)
                preds = [p.prediction for p in m.predictions]
                if split == "test" and preds != [p["prediction"] for p in ladder_preds[arm.name]]:
                    raise SystemExit(f"{arm.name}: the reloaded arm does not predict what the ladder measured")
                before = [p.uncalibrated or p.prediction for p in m.predictions]
                row[split] = {"rows": len(rows), "accuracy": round(m.metrics["accuracy"], 4),
                              "shares_before": shares(labels, before), "shares_after": shares(labels, preds)}
            out.append(row)
            print(f"{task.name:16} {arm.name:24} dev {row['dev']['accuracy']:.3f} (n={row['dev']['rows']})  "
                  f"test {row['test']['accuracy']:.3f} (n={row['test']['rows']})  "
                  f"test shares {row['test']['shares_before']} -> {row['test']['shares_after']}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
