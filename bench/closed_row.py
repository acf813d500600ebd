"""The closed model's row on a real ladder: a saved arm's predictions (a finished run's
predictions-ARM.jsonl, standing in for a closed model a team is leaving) written as OpenAI Batch API
output lines (custom_id = the row id, the answer in response.body.choices[0].message.content, its
tokens in usage), then a ladder of zero-shot, a LoRA arm and that `external` arm on the same test
rows: each arm's accuracy with its interval and chance of being best, the closed row's tokens, and
the recommendation's sentence. Prints a table and, last, one JSON line.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/closed_row.py \
        --predictions /tmp/demo-runs3/RUN/predictions-lora-640.jsonl --steps 20 --runs-dir /tmp/closed-runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tailor.config import experiment_from_dict
from tailor.jsonl import read_jsonl
from tailor.ladder import run_ladder


def batch_output(predictions: Path, out: Path) -> int:
    """A predictions file as the Batch API's output file would hold the same answers."""
    lines = []
    for no, p in read_jsonl(predictions):
        usage = {"prompt_tokens": p["prompt_tokens"], "completion_tokens": p["completion_tokens"],
                 "total_tokens": p["prompt_tokens"] + p["completion_tokens"]}
        body = {"object": "chat.completion", "model": "closed", "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": p["prediction"]}}]}
        lines.append({"id": f"batch_req_{no}", "custom_id": p["id"], "error": None,
                      "response": {"status_code": 200, "request_id": f"req_{no}", "body": body}})
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return len(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--predictions", required=True, help="a finished run's predictions-ARM.jsonl on the same task")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="tweet-sentiment")
    ap.add_argument("--steps", type=int, default=20, help="the open LoRA arm's steps (batch 16)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--runs-dir", default="/tmp/closed-runs")
    args = ap.parse_args()
    t0 = time.perf_counter()
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    answers = Path(args.runs_dir) / "closed-batch-output.jsonl"
    n = batch_output(Path(args.predictions), answers)
    exp = experiment_from_dict({
        "name": "closed-row", "model": args.model, "task": args.task, "limit": args.limit, "runs_dir": args.runs_dir,
        "forgetting": False, "continue_on_data_problems": True, "latency_requests": 4,
        "arms": ["zero-shot", {"name": f"lora-{args.steps * 16}", "method": "lora", "steps": args.steps,
                               "batch_size": 16},
                 {"name": "closed", "method": "external", "completions": str(answers)}]}, "closed-row")
    result = run_ladder(exp, progress=False)
    metric = result.primary_metric
    print(f"\n{'arm':14} {metric:>9} {'95% CI':>15} {'P(best)':>8} {'tok/req':>8} {'train s':>8}  notes")
    rows = []
    for a in result.arms:
        c = a.cost
        ci = f"{a.interval[0]:.3f}-{a.interval[1]:.3f}" if a.interval else ""
        print(f"{a.name:14} {a.metrics.get(metric, float('nan')):9.3f} {ci:>15} {a.p_best or 0:8.2f} "
              f"{c.prompt_tokens_per_request + c.completion_tokens_per_request:8.0f} {c.train_time_s:8.0f}  {a.notes or ''}")
        rows.append({"arm": a.name, "method": a.method, metric: a.metrics.get(metric), "interval": a.interval,
                     "p_best": a.p_best, "tokens_per_request": c.prompt_tokens_per_request + c.completion_tokens_per_request,
                     "train_s": c.train_time_s, "notes": a.notes, "error": a.error})
    print(f"\nrecommendation ({result.recommendation.claim}): {result.recommendation.text}\n")
    print(json.dumps({"bench": "closed_row", "task": args.task, "model": args.model, "test_rows": result.experiment.test_rows,
                      "closed_lines": n, "arms": rows, "recommended": result.recommendation.arm,
                      "claim": result.recommendation.claim, "text": result.recommendation.text,
                      "run_dir": result.run_dir, "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
