"""`tailor eval`: one method on one task, measured on a held-out split, into a run directory."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from .datasets import load_task
from .engine import ResultCache
from .errors import TailorError
from .evaluate import score_predictions
from .methods import make_method
from .models import load_base
from .runs import RunDir

log = logging.getLogger("tailor")


@dataclass
class EvalConfig:
    model: str = "smollm2-135m"
    task: str = "tweet-sentiment"
    method: str = "zero-shot"
    method_options: dict = field(default_factory=dict)
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 16
    max_new_tokens: int = 64
    cache: bool = True
    runs_dir: str = "runs"
    task_options: dict = field(default_factory=dict)
    adapter: str | None = None  # a training run directory: evaluate its trained model


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict:
    # The run's seed splits a task file (bundled tasks keep their fixed split, so every run
    # is measured on the same held-out rows).
    task = load_task(cfg.task, **{"seed": cfg.seed, **cfg.task_options})
    if cfg.split not in task.splits:
        raise TailorError(f"split '{cfg.split}' is not one of {list(task.splits)}")
    examples = task.splits[cfg.split][: cfg.limit] if cfg.limit else task.splits[cfg.split]
    method = make_method(cfg.method, cfg.method_options) if not cfg.adapter else None
    run = RunDir(cfg.runs_dir, "eval", f"{cfg.task.split('/')[-1]}-{'adapter' if cfg.adapter else cfg.method}")
    try:
        run.write_config(asdict(cfg))
        base = load_base(cfg.model, cfg.dtype, cfg.device)
        run.write_manifest(cfg.seed, {task.name: task.data_hash},
                           {"model": {"name": base.name, "weights_id": base.weights_id,
                                      "dtype": str(base.dtype), "device": str(base.device)},
                            "task": task.summary()})
        log.info("eval %s on %s (%d %s rows) with %s", cfg.method, task.name, len(examples), cfg.split, cfg.model)
        t0 = time.perf_counter()
        if cfg.adapter:
            from .export import load_adapted
            adapted = load_adapted(cfg.adapter, base)
        else:
            adapted = method.fit(task, base, run)
        engine = adapted.engine(ResultCache() if cfg.cache else None, batch_size=cfg.batch_size,
                                progress=progress)
        preds = adapted.predict(engine, task, examples, cfg.max_new_tokens)
        wall = time.perf_counter() - t0
        report = score_predictions(task, preds)
        result = {"task": task.name, "kind": task.kind, "method": adapted.method if cfg.adapter else cfg.method, "model": cfg.model,
                  "split": cfg.split, "rows": len(examples), "metrics": report.metrics,
                  "cost": {**report.cost, "wall_s": wall, "trainable_params": adapted.trainable_params,
                           "train_time_s": adapted.train_time_s},
                  "confusion": report.confusion, "labels": report.labels,
                  "run_dir": str(run.path)}
        run.write_json("metrics.json", result)
        run.write_jsonl("predictions.jsonl", (p.to_json() for p in preds))
        log.info("metrics %s", report.metrics)
        return result
    finally:
        run.close()
