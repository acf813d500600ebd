"""Run a general suite on one model, and compare two results item by item (forgetting).

Every item goes through THE prompt builder and THE engine via `tailor.evaluate.predict`, scored
by the log-likelihood of each option (per token: `LENGTH_NORM`). Results are cached by the engine's result cache (keyed by
weights), so the base model's suite costs its minutes once and is near instant afterwards.

A result keeps, per benchmark, which items were right (a '0'/'1' string in item order) and a
hash of the item ids, so `compare` can pair two results on the same items without rerunning.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from ..engine import Engine, ResultCache
from ..errors import TailorError
from ..evaluate import ece, predict
from ..prompts import builder_for
from ..utils import sha256_text
from .loaders import BENCHMARKS, SUITES, load_benchmark
from .stats import bootstrap_ci, paired_bootstrap_delta, paired_bootstrap_mean_delta

log = logging.getLogger("tailor")
# Options are ranked by mean log-probability per token (the sum favours short options). On
# smollm2-135m (150 items each) it lifts MMLU from 0.21 to 0.29 and OpenBookQA from 0.27 to 0.34,
# and lowers none in the formats used here; lm-eval's acc_norm does the same per byte.
LENGTH_NORM = True


def suite_names(suite: str | list[str]) -> list[str]:
    """'general', one benchmark name, or a comma-separated list of benchmark names."""
    if isinstance(suite, list):
        names = suite
    elif suite in SUITES:
        names = SUITES[suite]
    else:
        names = [s.strip() for s in suite.split(",") if s.strip()]
    for name in names:
        if name not in BENCHMARKS:
            load_benchmark(name)  # raises the located reason (unknown, or why it is left out)
    if not names:
        raise TailorError(f"suite '{suite}' names no benchmark (suites: {', '.join(SUITES)})")
    return names


def suite_items(name: str, tokenizer, model_config=None, size: int | None = None, seed: int = 0):
    """(task, items, builder) of one benchmark: the fixed items and the one prompt builder that
    formats them. Everything that scores a suite (and bench/ cross-checks) starts here."""
    task = load_benchmark(name, size, seed)
    builder = builder_for(task, tokenizer, model_config)
    builder.list_options = BENCHMARKS[name].list_options
    return task, task.splits["test"], builder


def run_suite(model, tokenizer, weights_id: str, suite: str | list[str] = "general",
              cache: ResultCache | bool | None = None, progress: bool = True,
              sizes: dict[str, int] | int | None = None, seed: int = 0, batch_size: int = 16) -> dict:
    """Accuracy, 95% bootstrap interval and ECE per benchmark of the suite.

    cache: a ResultCache, None for the default shared one, or False for none.
    sizes: items per benchmark (an int for all, a dict per name); default: each benchmark's fixed
    subset size.
    Returns a JSON-serialisable dict: {suite, weights_id, seed, wall_s, items, benchmarks: {name:
    {n, accuracy, ci_low, ci_high, ece, chance, wall_s, cached_share, items_hash, correct}}}."""
    names = suite_names(suite)
    engine = Engine(model, tokenizer, weights_id, ResultCache() if cache is None else (cache or None),
                    batch_size=batch_size, progress=progress)
    results, t_all = {}, time.perf_counter()
    for name in names:
        size = sizes.get(name) if isinstance(sizes, dict) else sizes
        task, items, builder = suite_items(name, tokenizer, getattr(model, "config", None), size, seed)
        t0 = time.perf_counter()
        preds = predict(engine, builder, task, items, length_norm=LENGTH_NORM)
        wall = time.perf_counter() - t0
        correct = [p.prediction == p.target for p in preds]
        confidence = [max(p.probs.values()) for p in preds]
        low, high = bootstrap_ci(correct, seed=seed)
        results[name] = {
            "n": len(items), "accuracy": sum(correct) / len(items), "ci_low": low, "ci_high": high,
            "ece": ece(confidence, correct), "chance": BENCHMARKS[name].chance, "wall_s": wall,
            "cached_share": sum(p.cached for p in preds) / len(preds),
            "items_hash": sha256_text(json.dumps([e.id for e in items]))[:16],
            "correct": "".join("1" if c else "0" for c in correct),
            "notes": task.notes,
        }
        log.info("bench %s %s: accuracy %.3f [%.3f, %.3f] ece %.3f (%d items, %.1f s)", weights_id,
                 name, results[name]["accuracy"], low, high, results[name]["ece"], len(items), wall)
    return {"suite": suite if isinstance(suite, str) else ",".join(names), "weights_id": weights_id,
            "seed": seed, "wall_s": time.perf_counter() - t_all,
            "items": sum(r["n"] for r in results.values()), "benchmarks": results}


def _bits(result: dict, name: str) -> np.ndarray:
    return np.frombuffer(result["benchmarks"][name]["correct"].encode(), dtype=np.uint8) - ord("0")


def compare(base_result: dict, adapted_result: dict, level: float = 0.95) -> dict:
    """Per benchmark: adapted - base accuracy on the same items, its paired-bootstrap interval,
    `significant` (the interval excludes zero) and `significant_drop` (it lies below zero).
    `overall` is the mean delta over benchmarks with a stratified paired interval."""
    shared = [n for n in base_result["benchmarks"] if n in adapted_result["benchmarks"]]
    if not shared:
        raise TailorError("the two results share no benchmark")
    out, pairs = {}, []
    for name in shared:
        b, a = base_result["benchmarks"][name], adapted_result["benchmarks"][name]
        if b["items_hash"] != a["items_hash"]:
            raise TailorError(f"{name}: the two results were measured on different items "
                              f"(sizes {b['n']} and {a['n']}, or another seed); rerun with the same ones")
        x, y = _bits(base_result, name), _bits(adapted_result, name)
        delta, low, high = paired_bootstrap_delta(x, y, level)
        pairs.append((x, y))
        out[name] = {"n": b["n"], "base_accuracy": b["accuracy"], "adapted_accuracy": a["accuracy"],
                     "delta": delta, "ci_low": low, "ci_high": high,
                     "significant": bool(low > 0 or high < 0), "significant_drop": bool(high < 0),
                     "base_ece": b["ece"], "adapted_ece": a["ece"]}
    delta, low, high = paired_bootstrap_mean_delta(pairs, level)
    return {"base": base_result["weights_id"], "adapted": adapted_result["weights_id"], "level": level,
            "benchmarks": out,
            "overall": {"delta": delta, "ci_low": low, "ci_high": high,
                        "significant": bool(low > 0 or high < 0), "significant_drop": bool(high < 0)},
            "any_significant_drop": any(r["significant_drop"] for r in out.values())}
