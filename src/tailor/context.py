"""The preamble every computing command shares, built once: the task, the run directory with
its resolved config and manifest, the base model (or just its tokenizer) and the result cache."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import status
from .runs import RunDir


@dataclass
class RunContext:
    run: RunDir
    task: object | None          # tailor.task.Task
    base: object | None          # tailor.models.Base
    tokenizer: object | None
    cache: object | None         # tailor.engine.ResultCache
    seed: int

    @property
    def path(self) -> Path:
        return self.run.path


@contextlib.contextmanager
def open_run(command: str, label: str, config: dict, *, runs_dir: str, model: str, dtype: str = "auto",
             device: str = "auto", task: str | None = None, task_options: dict | None = None, seed: int = 0,
             cache: bool = True, load: str = "model", reopen: str | Path | None = None,
             data_hashes: dict | None = None) -> Iterator[RunContext]:
    """`load`: "model" (the base), "tokenizer" (lengths only) or "none". The task is read before
    the run directory is made, so a bad task file leaves no empty run behind."""
    from .datasets import load_task
    loaded = load_task(task, **(task_options or {})) if task else None
    run = RunDir.reopen(reopen) if reopen else RunDir(runs_dir, command, label)
    live, error = status.start(run.path, command), "stopped"   # RUN/status.json, for tailor ui
    try:
        run.write_config(config)
        base = tokenizer = None
        info: dict = {"name": model}
        if load == "model":
            from .models import load_base
            base = load_base(model, dtype, device)
            tokenizer = base.tokenizer
            info.update(weights_id=base.weights_id, dtype=str(base.dtype), device=str(base.device),
                        params=base.n_params)
        elif load == "tokenizer":
            from .models import load_tokenizer
            tokenizer = load_tokenizer(model)
            info["tokenizer_only"] = True
        hashes = dict(data_hashes or {})
        if loaded is not None:
            hashes[loaded.name] = loaded.data_hash
        extra = {"model": info} | ({"task": loaded.summary()} if loaded is not None else {})
        run.write_manifest(seed, hashes, extra)
        result_cache = None
        if cache and load == "model":
            from .engine import ResultCache
            result_cache = ResultCache()
        yield RunContext(run, loaded, base, tokenizer, result_cache, seed)
        error = None
    except BaseException as e:
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise
    finally:
        status.end(live, error)
        run.close()
