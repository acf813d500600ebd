"""The adaptation ladder: several arms on one task, each measured on the SAME test rows through
the one engine, compared on quality and cost, with a recommendation.

Cheapest first (seeds 000, 002, 004): prompting arms cost nothing to build but pay per request
for longer prompts; trained arms pay once for training and then serve short prompts.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from .config import Arm, Experiment
from .datasets import load_task
from .engine import ResultCache
from .errors import TailorError
from .evaluate import score_predictions
from .methods import make_method
from .models import Base, load_base
from .progress import console
from .runs import RunDir
from .utils import atomic_write_json, cache_dir, sha256_text

log = logging.getLogger("tailor")

PRIMARY = {"classify": "accuracy", "choice": "accuracy", "generate": "rougeL"}


def run_ladder(exp: Experiment, progress: bool = True) -> dict:
    task = load_task(exp.task, **{"seed": exp.seed, **exp.task_options})  # bundled tasks keep their split
    test = task.splits["test"][: exp.limit] if exp.limit else task.splits["test"]
    run = RunDir(exp.runs_dir, "ladder", exp.name)
    t_start = time.perf_counter()
    try:
        run.write_config(asdict(exp))
        console.print(f"[bold]Ladder[/] {exp.name}: {len(exp.arms)} arms on {task.name} "
                      f"({len(test)} test rows), model {exp.model} -> {run.path}")
        for note in task.notes:
            console.print(f"[yellow]{task.name}:[/] {note}")
        curation = _check_data(exp, task, run)
        base = load_base(exp.model, exp.dtype, exp.device)
        manifest = {"model": {"name": base.name, "weights_id": base.weights_id, "dtype": str(base.dtype),
                              "device": str(base.device), "params": base.n_params},
                    "task": task.summary()}
        run.write_manifest(exp.seed, {task.name: task.data_hash}, manifest)
        cache = ResultCache() if exp.cache else None
        arms, base_general = [], None
        for i, arm in enumerate(exp.arms, 1):
            console.print(f"[bold cyan]arm {i}/{len(exp.arms)}[/] {arm.name} ({arm.method})")
            result = _run_arm(exp, arm, task, test, base, cache, run, progress)
            if exp.forgetting and result["status"] == "ok" and result["changes_weights"]:
                base_general = _forgetting(result, base, base_general, cache, progress, exp.forgetting_size)
            result.pop("adapted", None)  # frees a trained model before the next arm trains
            arms.append(result)
            _print_arm(result, PRIMARY[task.kind])
        results = {
            "experiment": {"name": exp.name, "model": exp.model, "task": task.name,
                           "created": time.strftime("%Y-%m-%d %H:%M:%S"), "test_rows": len(test),
                           "price_per_1k_tokens": exp.price_per_1k_tokens,
                           "price_per_train_hour": exp.price_per_train_hour,
                           "requests_per_month": exp.requests_per_month, "tolerance": exp.tolerance},
            "task": task.summary(), "curation": curation, "primary_metric": PRIMARY[task.kind],
            "arms": arms, "recommendation": recommend(arms, PRIMARY[task.kind], exp),
            "advice": _advice(exp), "manifest": _read(run, "manifest.json"),
            "wall_s": time.perf_counter() - t_start, "run_dir": str(run.path),
        }
        run.write_json("results.json", results)
        if exp.report:
            results["report"] = _write_report(results, run)
        return results
    finally:
        run.close()


def _run_arm(exp: Experiment, arm: Arm, task, test, base: Base, cache, run: RunDir, progress) -> dict:
    out = {"name": arm.name, "method": arm.method, "options": arm.options, "status": "ok", "error": None}
    t0 = time.perf_counter()
    try:
        method = make_method(arm.method, arm.options)
        key = _fit_key(exp, arm, task, base)
        adapted = _reuse_fit(key, base) if exp.reuse_fits else None
        if adapted is None:
            adapted = method.fit(task, base, run)
            _remember_fit(key, adapted)
        else:
            out["fit_reused_from"] = str(adapted.artifact_dir)
            console.print(f"  reusing the identical fit in {adapted.artifact_dir}")
        fitted = time.perf_counter()
        engine = adapted.engine(cache, batch_size=exp.batch_size, progress=progress)
        preds = adapted.predict(engine, task, test, exp.max_new_tokens)
        report = score_predictions(task, preds)
    except TailorError as e:
        return {**out, "status": "failed", "error": str(e)}
    except Exception as e:  # one broken arm must not sink the others; the log keeps the trace
        log.error("arm %s failed:\n%s", arm.name, traceback.format_exc())
        return {**out, "status": "failed", "error": f"{type(e).__name__}: {e}"}
    finally:
        log.info("arm %s finished in %.1f s", arm.name, time.perf_counter() - t0)
    run.write_jsonl(f"predictions-{_slug(arm.name)}.jsonl", (p.to_json() for p in preds))
    tokens = report.cost["prompt_tokens_per_request"] + report.cost["completion_tokens_per_request"]
    cost = {**report.cost, "eval_wall_s": time.perf_counter() - fitted, "fit_wall_s": fitted - t0,
            "train_time_s": adapted.train_time_s, "train_tokens": adapted.train_tokens,
            "trainable_params": adapted.trainable_params, "artifact_bytes": adapted.artifact_bytes,
            "cost_per_1k_requests": tokens * exp.price_per_1k_tokens,
            "train_cost": adapted.train_time_s / 3600 * exp.price_per_train_hour}
    cost["first_month_cost"] = cost["train_cost"] + exp.requests_per_month / 1000 * cost["cost_per_1k_requests"]
    by_id = {ex.id: ex for ex in test}
    examples = [{"id": p.id, "input": by_id[p.id].input_text[:500], "target": p.target,
                 "prediction": p.prediction} for p in preds[:8]]
    return {**out, "metrics": report.metrics, "cost": cost, "confusion": report.confusion,
            "labels": report.labels, "examples": examples, "forgetting": None,
            "changes_weights": adapted.trainable_params > 0, "weights_id": adapted.weights_id,
            "artifact_dir": str(adapted.artifact_dir) if adapted.artifact_dir else None,
            "adapted": adapted}


def _fit_key(exp: Experiment, arm: Arm, task, base: Base) -> str:
    """Same base weights, method, options, data, seed and training code: the same trained weights (training is
    deterministic), so a second run of an experiment need not train again."""
    return sha256_text(json.dumps([base.weights_id, arm.method, arm.options, task.data_hash, exp.seed,
                                   _training_code_hash()], sort_keys=True, default=str))


def _training_code_hash() -> str:
    """The training code is part of what a fit is: after a change to the loop or the arms
    (dropout, precision, packing) an earlier fit is not the identical one any more."""
    root = Path(__file__).parent
    files = sorted((root / "train").glob("*.py")) + [root / "methods" / "finetune.py", root / "prompts.py"]
    return sha256_text("".join(f.read_text(encoding="utf-8") for f in files))[:16]


def _reuse_fit(key: str, base: Base):
    memo = cache_dir("fits") / f"{key}.json"
    if not memo.exists():
        return None
    folder = json.loads(memo.read_text())["artifact"]
    try:
        from .export import load_adapted
        return load_adapted(folder, base)
    except (TailorError, OSError) as e:  # the run directory was deleted or moved: train again
        log.warning("cannot reuse fit %s (%s); training again", folder, e)
        return None


def _remember_fit(key: str, adapted) -> None:
    if adapted.artifact_dir:
        atomic_write_json(cache_dir("fits") / f"{key}.json", {"artifact": str(Path(adapted.artifact_dir).resolve())})


def recommend(arms: list[dict], metric: str, exp: Experiment) -> dict:
    ok = [a for a in arms if a["status"] == "ok"]
    if not ok:
        return {"arm": None, "text": "Every arm failed; see the errors in the table and log.txt."}
    best = max(ok, key=lambda a: a["metrics"][metric])
    good = [a for a in ok if a["metrics"][metric] >= best["metrics"][metric] - exp.tolerance]
    pick = min(good, key=lambda a: (a["cost"]["first_month_cost"], a["cost"]["trainable_params"]))
    m = lambda a: a["metrics"][metric]
    tok = lambda a: a["cost"]["prompt_tokens_per_request"] + a["cost"]["completion_tokens_per_request"]
    text = (f"{pick['name']} reaches {metric} {m(pick):.3f}"
            + (f", the best of {len(ok)} arms." if pick is best else
               f", within {exp.tolerance:.2f} of the best ({best['name']}, {m(best):.3f}), at lower cost.")
            + f" It uses {tok(pick):.0f} tokens per request and costs about "
            f"${pick['cost']['first_month_cost']:.2f} in its first month at {exp.requests_per_month:,} requests"
            + (f" (training {pick['cost']['train_time_s']:.0f} s included)." if pick["cost"]["train_time_s"] else "."))
    cheaper = [a for a in ok if a["cost"]["first_month_cost"] < pick["cost"]["first_month_cost"]]
    if cheaper:
        c = min(cheaper, key=lambda a: a["cost"]["first_month_cost"])
        text += (f" The cheaper {c['name']} (${c['cost']['first_month_cost']:.2f}) loses "
                 f"{m(pick) - m(c):.3f} {metric}.")
    return {"arm": pick["name"], "best_arm": best["name"], "text": text}


def _check_data(exp: Experiment, task, run: RunDir) -> dict | None:
    """Curation before any compute: leakage or conflicts above threshold stop the run."""
    if not exp.curate:
        return None
    from .curate import curate_task
    from .models import load_tokenizer
    report = curate_task(task, tokenizer=load_tokenizer(exp.model))
    run.write_json("curation.json", report.to_json())
    problems = report.blocking(max_leakage=exp.max_leakage, max_conflicts=exp.max_conflicts)
    for p in problems:
        console.print(f"[yellow]data check:[/] {p}")
    if problems and not exp.continue_on_data_problems:
        raise TailorError(f"data checks found problems ({'; '.join(problems)}); fix the data, or set "
                          "continue_on_data_problems: true to run anyway")
    return {"summary": [list(r) for r in report.summary_rows()], "html": report.html_section(),
            "problems": problems}


def _forgetting(result: dict, base: Base, base_general, cache, progress, size):
    """The general suite on the base (once per ladder; its scores are engine-cached across runs)
    and on the adapted arm, paired item by item."""
    from .benchmarks import compare, run_suite
    console.print(f"  forgetting: general suite on {'the base and ' if base_general is None else ''}{result['name']}")
    options = {"cache": cache if cache is not None else False, "progress": progress, "sizes": size}  # no cache: none
    if base_general is None:
        base_general = run_suite(base.model, base.tokenizer, base.weights_id, **options)
    adapted = result["adapted"]
    after = run_suite(adapted.model, adapted.tokenizer, adapted.weights_id, **options)
    result["forgetting"] = compare(base_general, after)
    return base_general


def _advice(exp: Experiment) -> dict | None:
    if not exp.advice:
        return None
    from .advise import advise
    return advise(exp.advice)


def _write_report(results: dict, run: RunDir) -> dict:
    from .report import write_report
    html = write_report(results, run.path)
    out = {"html": str(html)}
    try:
        from .report.browser import find_chromium, screenshot
        if find_chromium():
            screenshot(html, run.path / "report.png")
            out["screenshot"] = str(run.path / "report.png")
    except Exception as e:  # a missing browser must not lose the results; say so
        out["screenshot_error"] = str(e)
        log.warning("screenshot failed: %s", e)
    return out


def _read(run: RunDir, name: str) -> dict:
    return json.loads(run.file(name).read_text())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _print_arm(result: dict, metric: str) -> None:
    if result["status"] != "ok":
        console.print(f"  [red]failed[/]: {result['error']}")
        return
    c = result["cost"]
    console.print(f"  {metric} {result['metrics'][metric]:.3f}  "
                  f"{c['prompt_tokens_per_request']:.0f}+{c['completion_tokens_per_request']:.0f} tok/req  "
                  f"train {c['train_time_s']:.0f} s  eval {c['eval_wall_s']:.0f} s")
