"""`tailor bench`: a general suite on a model (optionally with a trained adapter), compared with
a reference (the base model, another model, or an earlier bench run), into a run directory."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..context import open_run
from ..errors import TailorError
from ..models import load_base
from .loaders import BENCHMARKS, load_benchmark
from .suite import compare, run_suite, suite_names

log = logging.getLogger("tailor")


@dataclass
class BenchConfig:
    model: str = "smollm2-135m"
    adapter: str | None = None      # a `tailor train` run directory (or its artifact folder)
    suite: str = "general"
    compare_to: str | None = None   # an earlier bench run dir / results.json, or a model
    size: int | None = None         # items per benchmark (default: each benchmark's fixed subset)
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 16
    cache: bool = True
    runs_dir: str = "runs"


def load_result(path: str | Path) -> dict | None:
    """The suite result saved by an earlier `tailor bench` (its run dir or results.json)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not (file.is_file() and file.suffix == ".json"):
        return None
    from ..jsonl import loads
    try:
        data = loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TailorError(f"{file}: not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise TailorError(f"{file}: invalid JSON ({e.msg} at line {e.lineno})") from None
    result = data.get("result", data) if isinstance(data, dict) else None
    if not (isinstance(result, dict) and "benchmarks" in result):
        raise TailorError(f"{file}: not a `tailor bench` result (no 'benchmarks' field)")
    from pydantic import ValidationError

    from ..schema import located_error
    try:   # typed as compare() and the table read it: an edited file is one error naming its field
        _Suite.model_validate(result)
    except ValidationError as e:
        raise located_error(e, _Suite, result, file, {}, ("result",) if "result" in data else ()) from None
    return result


class _Benchmark(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    n: Annotated[int, Field(ge=1)]
    accuracy: float
    ci_low: float
    ci_high: float
    ece: float
    chance: float
    wall_s: float
    cached_share: float
    items_hash: str
    correct: Annotated[str, Field(pattern=r"^[01]*$")]   # one 0/1 per item, paired with the other result's

    @model_validator(mode="after")
    def _one_per_item(self):
        if len(self.correct) != self.n:
            raise ValueError(f"{len(self.correct)} answers in 'correct' for n = {self.n} items")
        return self


class _Suite(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    suite: str
    weights_id: str
    wall_s: float
    items: int
    benchmarks: dict[str, _Benchmark]


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    names = suite_names(cfg.suite)
    reference = load_result(cfg.compare_to) if cfg.compare_to else None
    data_hashes = {n: load_benchmark(n, cfg.size, cfg.seed).data_hash for n in names}
    with open_run("bench", f"{cfg.suite}-{Path(cfg.adapter or cfg.model).name}", asdict(cfg), runs_dir=cfg.runs_dir,
                  model=cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed, cache=cfg.cache,
                  data_hashes=data_hashes) as ctx:
        base = ctx.base
        opts = dict(suite=cfg.suite, cache=ctx.cache if ctx.cache is not None else False, progress=progress,
                    sizes=cfg.size, seed=cfg.seed, batch_size=cfg.batch_size)
        if cfg.adapter:
            from ..methods import load_adapted
            adapted = load_adapted(cfg.adapter, base)
            log.info("bench: %s on %s", cfg.adapter, base.weights_id)
            result = run_suite(adapted.model, adapted.tokenizer, adapted.weights_id, **opts)
            result["label"] = f"{adapted.method} ({cfg.adapter})"
            if reference is None and not cfg.compare_to:
                # The natural reference of an adapter is its own base (cached after the first run).
                reference = run_suite(base.model, base.tokenizer, base.weights_id, **opts)
                reference["label"] = cfg.model
        else:
            result = run_suite(base.model, base.tokenizer, base.weights_id, **opts)
            result["label"] = cfg.model
        if cfg.compare_to and reference is None:
            other = load_base(cfg.compare_to, cfg.dtype, cfg.device)
            reference = run_suite(other.model, other.tokenizer, other.weights_id, **opts)
            reference["label"] = cfg.compare_to
        comparison = compare(reference, result) if reference else None
        out = {"result": result, "reference": reference, "comparison": comparison, "run_dir": str(ctx.path)}
        ctx.run.write_json("results.json", out)
        ctx.run.write_json("metrics.json", summary(out))
        return out


def summary(out: dict) -> dict:
    """The figures without per-item bits: what a person or a report reads."""
    def strip(result):
        return None if result is None else {
            **{k: v for k, v in result.items() if k != "benchmarks"},
            "benchmarks": {n: {k: v for k, v in r.items() if k != "correct"}
                           for n, r in result["benchmarks"].items()}}
    return {"result": strip(out["result"]), "reference": strip(out["reference"]),
            "comparison": out["comparison"], "chance": {n: b.chance for n, b in BENCHMARKS.items()}}
