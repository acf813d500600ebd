"""`tailor bench`: a general suite on a model (optionally with a trained adapter), compared with
a reference (the base model, another model, or an earlier bench run), into a run directory."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

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
    return result


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
