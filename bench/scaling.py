"""Scaling on this box: LoRA on smollm2-135m, the same config and global batch, trained as
1 process x 2 threads (the CPU kernels on, the default; and off, the like-for-like loop) against
2 processes x 1 thread (`tailor train --processes 2`: gloo over loopback, kernels off by policy).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/scaling.py [--steps 24 --repeats 2]

Measured: real (non-padding) tokens/s of the training loop (train_tokens / train_time_s from the
run's metrics.json: model loading and process start are left out, and reported apart as wall
seconds). The configurations run in interleaved rounds and each keeps its fastest round (this
VM's throughput drifts from minute to minute). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {   # name -> (processes, threads per process, kernels)
    "1 process x 2 threads, kernels on": (1, 2, "auto"),
    "1 process x 2 threads, kernels off": (1, 2, "off"),
    "2 processes x 1 thread": (2, 1, "auto"),
}


def config_text(model: str, steps: int, kernels: str) -> str:
    return (f"model: {model}\ntask: tweet-sentiment\nmethod: lora\neval_split: null\n"
            f"options: {{steps: {steps}, batch_size: 16, max_train_examples: 1024, lr: 1.0e-3, log_every: 1, "
            f"kernels: '{kernels}'}}\n")


def run_once(work: Path, name: str, model: str, steps: int, round_: int) -> dict:
    processes, threads, kernels = CONFIGS[name]
    folder = work / f"{round_}-{processes}-{kernels}"
    folder.mkdir()
    config = folder / "train.yaml"
    config.write_text(config_text(model, steps, kernels))
    cmd = [str(Path(sys.executable).parent / "tailor"), "train", str(config), "--runs-dir", str(folder / "runs")]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    (run,) = (folder / "runs").iterdir()
    m = json.loads((run / "metrics.json").read_text())
    return {"tokens_per_s": m["train_tokens"] / m["train_time_s"], "train_time_s": m["train_time_s"],
            "train_tokens": m["train_tokens"], "final_loss": m["final_loss"], "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tailor-scaling-"))
    rounds: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for r in range(args.repeats):
        for name in CONFIGS:
            rounds[name].append(run_once(work, name, args.model, args.steps, r))
            print(f"round {r + 1} {name}: {rounds[name][-1]['tokens_per_s']:.0f} tok/s", file=sys.stderr)
    best = {name: max(runs, key=lambda x: x["tokens_per_s"]) for name, runs in rounds.items()}
    print(f"{args.model}, LoRA, {args.steps} steps of 16 examples, best of {args.repeats} interleaved rounds")
    print(f"{'configuration':<38}{'tokens/s':>10}{'train s':>9}{'wall s':>8}{'final loss':>12}  all rounds tok/s")
    for name, b in best.items():
        every = " ".join(f"{x['tokens_per_s']:.0f}" for x in rounds[name])
        print(f"{name:<38}{b['tokens_per_s']:>10.0f}{b['train_time_s']:>9.1f}{b['wall_s']:>8.1f}{b['final_loss']:>12.4f}"
              f"  {every}")
    names = list(CONFIGS)
    two = best[names[2]]["tokens_per_s"]
    print(json.dumps({"bench": "scaling", "model": args.model, "steps": args.steps, "repeats": args.repeats,
                      "tokens_per_s": {n: round(b["tokens_per_s"], 1) for n, b in best.items()},
                      "two_processes_vs_one_kernels_on": round(two / best[names[0]]["tokens_per_s"], 3),
                      "two_processes_vs_one_kernels_off": round(two / best[names[1]]["tokens_per_s"], 3)}))


if __name__ == "__main__":
    main()
