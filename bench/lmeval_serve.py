"""lm-evaluation-harness, unchanged and in its own virtual environment, scoring a multiple-choice
task against `tailor serve` on loopback, checked against Tailor's own scoring.

The task is written here as a local lm-eval task file over a local JSONL (no hub access): the
demo ladder's test rows, each row's prompt as the arm measured it (its instruction and chat
template already applied) and its options as the arm's target texts. lm-eval's
`local-completions` model sends token-id prompts with `echo`, `logprobs: 1`, `max_tokens: 1`
and sums each option's `token_logprobs`; `tailor serve` scores the text as sent with the
model's weights (the base's, or the adapter's: echo never wraps a prompt again). Two models:

- the base (`smollm2-135m`) over the zero-shot arm's prompts (a zero-shot arm is the base plus
  its prompt), against the engine's own option scores and the ladder's zero-shot predictions;
- the LoRA arm (`lora-640`) over its own prompts, against the engine's scores with the adapter
  and the ladder's lora-640 predictions.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/lmeval_serve.py \\
        --run /tmp/demo-runs/*-ladder-demo-tweet-sentiment --lmeval /work/lmeval-venv/bin/lm_eval

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: prompt
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_of(run: Path, arm: str, limit: int) -> list[dict]:
    rows = [json.loads(line) for line in (run / f"predictions-{arm}.jsonl").read_text().split("\n") if line.strip()]
    return rows[:limit]


def write_task(folder: Path, name: str, rows: list[dict], labels: list[str], options: list[str]) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "choices": options,
                                        "gold": labels.index(r["target"])}) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data))


def lmeval(lm_eval: str, task: str, folder: Path, model: str, url: str, tokenizer: Path, out: Path) -> tuple[dict, float]:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(folder / "hf-datasets")}
    cmd = [lm_eval, "run", "--model", "local-completions", "--tasks", task, "--include_path", str(folder),
           "--model_args", f"model={model},base_url={url}/v1/completions,tokenizer={tokenizer},"
                           "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1,timeout=600",
           "--batch_size", "16", "--output_path", str(out), "--log_samples"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"lm_eval failed ({done.returncode}):\n{done.stderr[-4000:]}")
    samples = next(out.rglob(f"samples_{task}_*.jsonl"))
    per_doc = {}
    for line in filter(None, samples.read_text().split("\n")):   # never splitlines(): U+2028 in a tweet
        s = json.loads(line)
        per_doc[s["doc"]["id"]] = [float(r[0]) for r in s["filtered_resps"]]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
    return {"acc": results["acc,none"], "lls": per_doc}, wall


def serve(base: str, adapters: dict, port: int, log: Path, dtype: str) -> subprocess.Popen:
    tailor = str(Path(sys.executable).with_name("tailor"))
    cmd = [tailor, "serve", "--base", base, "--port", str(port), "--dtype", dtype]
    cmd += [f"--adapter={n}={p}" for n, p in adapters.items()]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"tailor serve exited: {log.read_text()[-3000:]}")
            time.sleep(1)
    proc.terminate()
    sys.exit("tailor serve did not start in 300 s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True, help="a demo ladder run (arms/zero-shot, arms/lora-640)")
    ap.add_argument("--lmeval", default="/work/lmeval-venv/bin/lm_eval")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--base-arm", default="zero-shot")
    ap.add_argument("--adapter-arm", default="lora-640")
    # fp32 on both sides: in bf16 (what auto picks on a CPU with bf16 units, and what the ladder
    # ran) the server's padded echo batch and the engine's tree-masked option rows round differently
    ap.add_argument("--dtype", default="fp32")
    args = ap.parse_args()

    from tailor.engine import Engine
    from tailor.methods import load_adapted
    from tailor.methods.base import recipe_builder
    from tailor.models import load_base, model_dir
    from tailor.recipe import read_recipe

    run = args.run
    base_name = json.loads((run / "config.json").read_text())["model"]
    recipes = {a: read_recipe(run / "arms" / a)[0] for a in (args.base_arm, args.adapter_arm)}
    tmp = Path(tempfile.mkdtemp(prefix="lmeval-serve-"))
    base = load_base(base_name, args.dtype)
    cases = []   # (label in the table, served model, arm whose prompts and options are used)
    for served, arm in ((base_name, args.base_arm), (args.adapter_arm, args.adapter_arm)):
        labels = recipes[arm].labels
        builder = recipe_builder(recipes[arm], base.tokenizer)
        options = [builder.target_text(label) for label in labels]
        rows = rows_of(run, arm, args.rows)
        task = "tailor_" + arm.replace("-", "_")
        write_task(tmp, task, rows, labels, options)
        cases.append((served, arm, task, rows, labels, options))

    port = free_port()
    proc = serve(base_name, {args.adapter_arm: run / "arms" / args.adapter_arm}, port, tmp / "serve.log", args.dtype)
    measured = {}
    try:
        for served, arm, task, *_ in cases:
            measured[served] = lmeval(args.lmeval, task, tmp, served, f"http://127.0.0.1:{port}",
                                      model_dir(base_name), tmp / f"out-{arm}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    table, summary = [], {"rows": args.rows, "model": base_name, "dtype": args.dtype}
    for served, arm, _task, rows, labels, options in cases:
        got, wall = measured[served]
        if served == base_name:
            engine = Engine(base.model, base.tokenizer, base.weights_id, None, progress=False)
        else:
            engine = load_adapted(run / "arms" / arm, base).engine(None, progress=False)
        t0 = time.perf_counter()
        own = engine.score([r["prompt"] for r in rows], [options] * len(rows))
        own_s = time.perf_counter() - t0
        diffs = [abs(a - b) for r, s in zip(rows, own) for a, b in zip(got["lls"][r["id"]], s.logprobs)]
        own_pred = [labels[max(range(len(labels)), key=s.logprobs.__getitem__)] for s in own]
        lm_pred = [labels[max(range(len(labels)), key=got["lls"][r["id"]].__getitem__)] for r in rows]
        ladder_pred = [r["prediction"] for r in rows]
        own_acc = sum(p == r["target"] for p, r in zip(own_pred, rows)) / len(rows)
        ladder_acc = sum(p == r["target"] for p, r in zip(ladder_pred, rows)) / len(rows)
        # the ladder recorded each option's probability (softmax of the option log-likelihoods)
        prob_diff = max(abs(math.exp(ll - max(lls)) / sum(math.exp(x - max(lls)) for x in lls) - r["probs"][label])
                        for r in rows for lls in [got["lls"][r["id"]]] for label, ll in zip(labels, lls))
        row = {"served": served, "prompts_of": arm, "lmeval_acc": got["acc"], "tailor_acc": own_acc,
               "ladder_acc": ladder_acc, "max_abs_ll_diff": max(diffs), "mean_abs_ll_diff": sum(diffs) / len(diffs),
               "max_prob_diff_vs_ladder": prob_diff,
               "same_predictions_as_tailor": sum(a == b for a, b in zip(lm_pred, own_pred)),
               "same_predictions_as_ladder": sum(a == b for a, b in zip(lm_pred, ladder_pred)),
               "lmeval_wall_s": round(wall, 1), "tailor_score_s": round(own_s, 1)}
        table.append(row)
    print(f"lm-evaluation-harness local-completions against tailor serve, {args.rows} rows of {run.name}, "
          f"{args.dtype} (the ladder's predictions: as it ran)")
    head = ["served", "prompts_of", "lmeval_acc", "tailor_acc", "ladder_acc", "max_abs_ll_diff", "mean_abs_ll_diff",
            "max_prob_diff_vs_ladder", "same_predictions_as_tailor", "same_predictions_as_ladder", "lmeval_wall_s",
            "tailor_score_s"]
    print(" | ".join(head))
    for row in table:
        print(" | ".join(f"{row[h]:.3g}" if isinstance(row[h], float) else str(row[h]) for h in head))
    summary["models"] = table
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
