"""One arm, one task: `tailor eval` (a prompting arm, or a saved arm with --adapter) and `tailor
train` (one training arm, then its evaluation). The run directory is the arm's folder: its
recipe and weights load back with `tailor eval --adapter RUN`."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from .config import TrainRunConfig
from .context import open_run
from .errors import TailorError
from .measure import measure
from .methods.base import method_class

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
    latency_requests: int = 8
    cache: bool = True
    runs_dir: str = "runs"
    task_options: dict = field(default_factory=dict)
    adapter: str | None = None  # an arm folder (a train or eval run, a ladder's RUN/arms/NAME)


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict:
    from .methods import load_adapted, make_method, save_adapted
    method = make_method(cfg.method, cfg.method_options) if not cfg.adapter else None
    label = f"{cfg.task.split('/')[-1]}-{'adapter' if cfg.adapter else cfg.method}"
    # The run's seed splits a task file (bundled tasks keep their fixed split, so every run is
    # measured on the same held-out rows).
    with open_run("eval", label, asdict(cfg), runs_dir=cfg.runs_dir, model=cfg.model, dtype=cfg.dtype,
                  device=cfg.device, task=cfg.task, task_options={"seed": cfg.seed, **cfg.task_options},
                  seed=cfg.seed, cache=cfg.cache) as ctx:
        rows = _rows(ctx.task, cfg.split, cfg.limit)
        if cfg.adapter:
            adapted = load_adapted(cfg.adapter, ctx.base)
        else:
            adapted = method.fit(ctx.task, ctx.base, ctx.path, progress=progress, cache=ctx.cache)
            save_adapted(adapted, ctx.path)
        log.info("eval %s on %s (%d %s rows) with %s", adapted.method, ctx.task.name, len(rows), cfg.split, cfg.model)
        m = measure(adapted, ctx.task, rows, cache=ctx.cache, batch_size=cfg.batch_size,
                    max_new_tokens=cfg.max_new_tokens, progress=progress, latency_requests=cfg.latency_requests)
        result = {"task": ctx.task.name, "kind": ctx.task.kind, "method": adapted.method, "model": cfg.model,
                  "split": cfg.split, "rows": len(rows), "metrics": m.metrics,
                  "cost": m.cost.model_copy(update={"trainable_params": adapted.trainable_params,
                                                    "train_time_s": adapted.train_time_s}).model_dump(),
                  "confusion": m.confusion, "labels": m.labels, "notes": m.notes, "run_dir": str(ctx.path),
                  "arm_dir": str(adapted.artifact_dir) if adapted.artifact_dir else None}
        ctx.run.write_json("metrics.json", result)
        ctx.run.write_jsonl("predictions.jsonl", (p.to_json() for p in m.predictions))
        log.info("metrics %s", m.metrics)
        return result


def run_train(cfg: TrainRunConfig, method, resume: str | None = None, progress: bool = True) -> dict | None:
    """`method`: the validated training method (config.load_train_config). Under a launcher only
    rank 0 makes the run directory, saves the arm and evaluates it; the other ranks train and
    return None."""
    from .methods import save_adapted
    from .train.distributed import world
    if world().distributed:
        check_several_processes(cfg)
    if not world().is_main:
        return _train_on_rank(cfg, method, resume)
    reopen = _run_of_checkpoint(resume) if resume else None
    config = {**cfg.model_dump(), "options": method.model_dump()}
    with open_run("train", f"{cfg.task.split('/')[-1]}-{cfg.method}", config, runs_dir=cfg.runs_dir,
                  model=cfg.model, dtype=cfg.dtype, device=cfg.device, task=cfg.task,
                  task_options=cfg.task_options.loader_options(cfg.seed), seed=cfg.seed, cache=cfg.cache,
                  reopen=reopen) as ctx:
        adapted = method.fit(ctx.task, ctx.base, ctx.path, progress=progress, resume=resume,
                             cache=ctx.cache)
        save_adapted(adapted, ctx.path)
        train = adapted.recipe.train
        result = {"task": ctx.task.name, "method": cfg.method, "model": cfg.model, "run_dir": str(ctx.path),
                  "arm_dir": str(ctx.path), "weights_id": adapted.weights_id,
                  "trainable_params": adapted.trainable_params, "artifact_bytes": adapted.artifact_bytes,
                  "train_time_s": adapted.train_time_s, "train_tokens": adapted.train_tokens,
                  "final_loss": train["final_loss"], "padding_fraction": train["padding_fraction"],
                  "dropped_too_long": train["data"].get("dropped_too_long", 0), "steps": train["steps"],
                  "planned_steps": train["planned_steps"]}
        if cfg.eval_split:
            rows = _rows(ctx.task, cfg.eval_split, cfg.eval_limit)
            m = measure(adapted, ctx.task, rows, cache=ctx.cache, batch_size=cfg.batch_size,
                        max_new_tokens=cfg.max_new_tokens, progress=progress, latency_requests=cfg.latency_requests)
            result.update(split=cfg.eval_split, rows=len(rows), metrics=m.metrics, confusion=m.confusion,
                          labels=m.labels, notes=m.notes, cost=m.cost.model_dump())
            ctx.run.write_jsonl("predictions.jsonl", (p.to_json() for p in m.predictions))
            log.info("%s metrics %s", cfg.eval_split, m.metrics)
        ctx.run.write_json("metrics.json", result)
        return result


def check_several_processes(cfg: TrainRunConfig) -> None:
    if not method_class(cfg.method).runs_on_ranks:
        # e.g. PPO runs its own loop over rollouts, not the one the ranks share: every rank would train alone
        raise TailorError(f"a {cfg.method} arm trains in one process: drop --processes / the launcher")


def _train_on_rank(cfg: TrainRunConfig, method, resume: str | None) -> None:
    """A rank other than 0: the same task, base and fit as rank 0, writing nothing."""
    from .datasets import load_task
    from .models import load_base
    task = load_task(cfg.task, **cfg.task_options.loader_options(cfg.seed))
    method.fit(task, load_base(cfg.model, cfg.dtype, cfg.device), None, progress=False, resume=resume)


def _rows(task, split: str, limit: int | None):
    if split not in task.splits:
        raise TailorError(f"split '{split}' is not one of {list(task.splits)}")
    rows = task.splits[split]
    return rows[:limit] if limit else rows


def _run_of_checkpoint(resume: str):
    """The run directory a checkpoint belongs to: resuming continues there."""
    from pathlib import Path

    from .train.checkpoint import latest_checkpoint
    ckpt = latest_checkpoint(Path(resume))
    if ckpt is None:
        raise TailorError(f"{resume}: no checkpoint to resume from (expected checkpoints/latest.json)")
    return ckpt.parent.parent
