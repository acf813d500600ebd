"""`tailor tune EXPERIMENT --arm NAME --storage URL`: a worker of an arm's tuning study. Workers
(and the ladder, when it reaches the arm) share the study through its database; each runs trials on
the dev rows until the study's deadline and may join or leave at any time. No test row is read."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import out
from .numbers import COUNT


def tune(
    experiment: str = typer.Argument(..., help="an experiment YAML; the arm names its tune: settings"),
    arm: str = typer.Option(..., help="the arm whose study this worker joins (its name)"),
    storage: Optional[str] = typer.Option(None, help="the study's database URL: sqlite:///PATH on one machine, "
                                                     "postgresql://USER@HOST/DB across machines (default: the arm's "
                                                     "tune.storage)"),
    study: Optional[str] = typer.Option(None, help="the study's name (default: the arm's tune.study, or EXPERIMENT:ARM)"),
    worker: int = typer.Option(1, callback=COUNT, help="this worker's number: its sampler draws with the tune seed + N (the "
                                              "ladder is worker 0), so workers do not propose the same trials"),
    threads: Optional[int] = typer.Option(None, callback=COUNT, help="torch threads of this process (workers sharing a "
                                                            "machine: its cores divided between them)"),
    runs_dir: Optional[str] = typer.Option(None, help="override: where the worker's run directory goes"),
) -> None:
    """Join an arm's tuning study as a worker: trials on the dev rows until the study's budget is spent."""
    import dataclasses
    import os
    import socket

    from ..config import load_experiment
    from ..context import open_run
    from ..errors import TailorError
    from ..knobs import TuneOptions
    from ..schema import validate
    exp = load_experiment(experiment)
    found = next((a for a in exp.arms if a.name == arm), None)
    if found is None:
        raise TailorError(f"{experiment}: no arm named '{arm}' (arms: {', '.join(a.name for a in exp.arms)})")
    if found.tune is None:
        raise TailorError(f"{experiment}: arm '{arm}' is not tuned; give it (or the experiment) tune: settings")
    update = {k: v for k, v in (("storage", storage), ("study", study)) if v is not None}
    settings = validate(TuneOptions, {**found.tune.model_dump(exclude_none=True), **update}, "--storage/--study") \
        if update else found.tune
    if not settings.storage:
        raise TailorError("a worker shares its trials through a database: give --storage sqlite:///PATH (or "
                          "tune: {storage: ...} on the arm)")
    if runs_dir:
        exp.runs_dir = runs_dir
    if threads:
        import torch
        torch.set_num_threads(threads)
    from ..tune import tune_arm
    with open_run("tune", f"{exp.name}-{arm}", {**exp.to_json(), "worker": worker}, runs_dir=exp.runs_dir,
                  model=exp.model, dtype=exp.dtype, device=exp.device, task=exp.task,
                  task_options=exp.task_options.loader_options(exp.seed), seed=exp.seed, cache=exp.cache) as ctx:
        _, record = tune_arm(exp, dataclasses.replace(found, tune=settings), ctx, worker=worker)
        ctx.run.write_json("tuning.json", record.model_dump(mode="json"))
    if record.error:
        raise TailorError(f"tuning {arm}: {record.error}")
    mine = [t for t in record.trials if t.worker == f"{socket.gethostname()}:{os.getpid()}"]
    table = Table("trial", "options", "state", f"dev {record.metric}", "seconds",
                  title=f"this worker's {len(mine)} trials of study {record.study} ({len(record.trials)} trials in all, "
                        f"best: trial {record.best_trial}, dev {record.metric} {record.best_dev:.4f})")
    for t in mine:
        table.add_row(f"{t.number}{' (as written)' if t.default else ''}",
                      " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()),
                      t.state, "" if t.dev is None else f"{t.dev:.4f}", "" if t.seconds is None else f"{t.seconds:.0f}")
    out.print(table)
    out.print(f"run directory: {ctx.path}")
