"""`tailor train CONFIG.yaml`: one fine-tuning arm on one task, into a run directory, then an
evaluation of the trained model on a held-out split through the engine.

CONFIG.yaml:

    model: smollm2-135m          # bundled model, local HF folder or hub id
    task: tweet-sentiment         # bundled task or a task file (task_options go to the loader)
    method: lora                  # full | lora | qlora | prompt-tuning | prefix | ia3 | bitfit
    options: {r: 16, steps: 120, batch_size: 16, lr: 1e-3}
    eval_split: test              # null: no evaluation after training
    eval_limit: null
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import TailorError

log = logging.getLogger("tailor")


@dataclass
class TrainRunConfig:
    model: str = "smollm2-135m"
    task: str = "tweet-sentiment"
    method: str = "lora"
    options: dict = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)
    dtype: str = "auto"
    device: str = "auto"
    eval_split: str | None = "test"
    eval_limit: int | None = None
    batch_size: int = 16
    cache: bool = True
    runs_dir: str = "runs"
    seed: int = 0


def load_config(path: str | Path, overrides: dict | None = None) -> TrainRunConfig:
    from ..config import checked_fields, read_yaml_mapping
    raw = checked_fields(TrainRunConfig, read_yaml_mapping(path), path)
    raw.update(overrides or {})
    return TrainRunConfig(**raw)


def _run_of_checkpoint(resume: str) -> Path:
    """The run directory a checkpoint belongs to: resuming continues there."""
    from .checkpoint import latest_checkpoint
    ckpt = latest_checkpoint(Path(resume))
    if ckpt is None:
        raise TailorError(f"{resume}: no checkpoint to resume from (expected checkpoints/latest.json)")
    return ckpt.parent.parent


def run_train(cfg: TrainRunConfig, resume: str | None = None, progress: bool = True) -> dict:
    from ..datasets import load_task
    from ..engine import ResultCache
    from ..evaluate import score_predictions
    from ..methods import make_method
    from ..models import load_base
    from ..runs import RunDir
    options = dict(cfg.options)
    if resume:
        options["resume"] = str(resume)
    options.setdefault("seed", cfg.seed)
    options.setdefault("progress", progress)
    method = make_method(cfg.method, options)
    if not hasattr(method, "train_options"):
        raise TailorError(f"method '{cfg.method}' does not train; use tailor eval --method {cfg.method}")
    task = load_task(cfg.task, **cfg.task_options)
    run = (RunDir.reopen(_run_of_checkpoint(resume)) if resume
           else RunDir(cfg.runs_dir, "train", f"{cfg.task.split('/')[-1]}-{cfg.method}"))
    try:
        run.write_config({**asdict(cfg), "options": dataclasses.asdict(method)})
        base = load_base(cfg.model, cfg.dtype, cfg.device)
        run.write_manifest(cfg.seed, {task.name: task.data_hash},
                           {"model": {"name": base.name, "weights_id": base.weights_id, "dtype": str(base.dtype),
                                      "device": str(base.device)}, "task": task.summary()})
        adapted = method.fit(task, base, run)
        result = {"task": task.name, "method": cfg.method, "model": cfg.model, "run_dir": str(run.path),
                  "artifact_dir": str(adapted.artifact_dir), "weights_id": adapted.weights_id,
                  "trainable_params": adapted.trainable_params, "artifact_bytes": adapted.artifact_bytes,
                  "train_time_s": adapted.train_time_s, "train_tokens": adapted.train_tokens,
                  "final_loss": adapted.info["train"]["final_loss"],
                  "padding_fraction": adapted.info["train"]["padding_fraction"],
                  "dropped_too_long": adapted.info["train"]["data"]["dropped_too_long"]}
        if cfg.eval_split:
            examples = task.splits[cfg.eval_split]
            examples = examples[: cfg.eval_limit] if cfg.eval_limit else examples
            t0 = time.perf_counter()
            engine = adapted.engine(ResultCache() if cfg.cache else None, batch_size=cfg.batch_size, progress=progress)
            preds = adapted.predict(engine, task, examples)
            report = score_predictions(task, preds)
            result.update(split=cfg.eval_split, rows=len(examples), metrics=report.metrics,
                          confusion=report.confusion, labels=report.labels, eval_s=time.perf_counter() - t0)
            run.write_jsonl("predictions.jsonl", (p.to_json() for p in preds))
            log.info("%s metrics %s", cfg.eval_split, report.metrics)
        run.write_json("metrics.json", result)
        return result
    finally:
        run.close()
