"""Trainable parameters and artifact bytes of every fine-tuning arm on one model (one training
step each: both depend on the arm's configuration, not on how long it trains).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/arm_sizes.py [--model smollm2-135m]

The last line is one JSON object: {arm: {trainable_params, artifact_bytes} or {error}}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tailor.datasets import load_task
from tailor.errors import TailorError
from tailor.methods import make_method, save_adapted
from tailor.methods.finetune import FINETUNE_METHODS
from tailor.models import load_base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    task = load_task("tweet-sentiment")
    base = load_base(args.model)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in FINETUNE_METHODS:
            folder = Path(tmp) / arm
            try:
                adapted = make_method(arm, {"steps": 1, "batch_size": 4, "max_train_examples": 16}).fit(
                    task, base, folder, progress=False)
                save_adapted(adapted, folder)
                sizes[arm] = {"trainable_params": adapted.trainable_params, "artifact_bytes": adapted.artifact_bytes}
            except TailorError as e:  # e.g. qlora where bitsandbytes cannot run: shown, not hidden
                sizes[arm] = {"error": str(e)}
            print(f"{arm:14}", json.dumps(sizes[arm]), flush=True)
    print(json.dumps(sizes))


if __name__ == "__main__":
    main()
