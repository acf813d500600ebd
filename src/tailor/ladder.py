"""The adaptation ladder: several arms on one task, each measured on the SAME test rows through
the one measurement path, compared on quality and cost, with a recommendation.

Cheapest first (Meta's guide to adapting LLMs): prompting arms cost nothing to build but pay per
request for longer prompts; trained arms pay once for training and then serve short prompts.
Every arm is saved as it was measured (RUN/arms/NAME: recipe, pool, weights), so the winner can
be evaluated again, batch-predicted or served without guessing how it was prompted.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from pathlib import Path

from . import status
from .breakeven import break_even
from .config import Arm, Experiment
from .context import RunContext, open_run
from .decide import recommend
from .errors import TailorError
from .measure import measure
from .methods.base import method_class
from .progress import console
from .results import (
    ArmResult,
    Curation,
    ExampleRow,
    ExperimentInfo,
    Forgetting,
    Judging,
    LadderResult,
    LongDoc,
    PairwiseJudged,
    Retrieval,
    SeedRun,
)
from .run_file import check_arms
from .task import primary_metric
from .trackers import check_installed, log_finished

log = logging.getLogger("tailor")


def run_ladder(exp: Experiment, progress: bool = True, run_dir: str | Path | None = None) -> LadderResult:
    """`run_dir`: a run directory made beforehand (`tailor run DATA_FILE` writes its plan there first)."""
    t_start = time.perf_counter()
    check_installed(exp.report_to)   # a tracker asked for but missing is refused before any work
    with open_run("ladder", exp.name, exp.to_json(), runs_dir=exp.runs_dir, model=exp.model, dtype=exp.dtype,
                  device=exp.device, task=exp.task, task_options=exp.task_options.loader_options(exp.seed),
                  seed=exp.seed, cache=exp.cache, reopen=run_dir) as ctx:
        task = ctx.task
        judging = None
        if exp.metric is not None:   # a grader ranks every arm; a model judge in it is checked against people first
            from .graders.agreement import gate_task_judge
            checks = gate_task_judge(task, exp.metric.grader, trust=exp.metric.trust_judge,
                                     threshold=exp.metric.min_agreement, base=ctx.base)
            judging = Judging(grader=task.grader["name"], agreement=checks,
                              trusted_by_setting=exp.metric.trust_judge and not all(c.trusted for c in checks))
        test = task.splits["test"][: exp.limit] if exp.limit else task.splits["test"]
        console.print(f"[bold]Ladder[/] {exp.name}: {len(exp.arms)} arms on {task.name} "
                      f"({len(test)} test rows), model {exp.model} -> {ctx.path}")
        for note in task.notes:
            console.print(f"[yellow]{task.name}:[/] {note}")
        for note in check_arms(exp, task):   # an external arm's answers cover every test row, or nothing runs
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        curation = _check_data(exp, ctx)
        arms, base_general, base_bias, predictions = [], None, None, {}
        for i, arm in enumerate(exp.arms, 1):
            console.print(f"[bold cyan]arm {i}/{len(exp.arms)}[/] {arm.name} ({arm.method})")
            status.current().arm(i, len(exp.arms), arm.name, arm.method)   # RUN/status.json, for tailor ui
            from .methods.preference import chained
            arm = chained(arm, arms)   # after: / reward_model: an earlier arm, by name
            tuning = None
            if arm.tune:   # the same budget of trials on dev chooses its options (tailor.tune); test rows unseen
                from .tune import tune_arm
                arm, tuning = tune_arm(exp, arm, ctx, progress)
            budget_s = _budget_share(exp, exp.arms[i - 1:], time.perf_counter() - t_start)
            if budget_s is not None:
                budget_s /= arm.seeds
            result, adapted, preds = _run_arm(exp, arm, ctx, test, progress, budget_s)
            result.tuning = tuning
            predictions[arm.name] = [preds] if preds is not None else []
            if arm.seeds > 1 and result.ok:
                predictions[arm.name] += _more_seeds(result, exp, arm, ctx, test, progress, budget_s)
            if exp.forgetting and result.ok and result.changes_weights and not getattr(arm.options, "scorer", False):
                base_general = _forgetting(result, adapted, ctx, base_general, progress, exp.forgetting_size)
            if result.ok and not getattr(arm.options, "scorer", False) and (exp.robustness or exp.bias):
                base_bias = _helm(result, adapted, exp, ctx, test, preds, base_bias, progress)
            del adapted  # frees a trained model before the next arm trains
            arms.append(result)
            _print_arm(result, primary_metric(task))
            status.current().arm_done(result.name, result.method, result.ok, primary_metric(task),
                                      result.metrics.get(primary_metric(task)))
        if exp.learning_curve:
            from .curves import learning_curves
            learning_curves(arms, predictions, exp, ctx, test, progress, _run_arm)
        first = {name: runs[0] if runs else None for name, runs in predictions.items()}
        _versus_closed_book(arms, first, task.kind)
        _imitation(arms, first, exp, ctx, test, progress)
        if exp.metric is not None and exp.metric.pairwise:   # an LLM judge's A/B, both orders (tailor.graders.agreement)
            from .graders.agreement import pairwise_arms
            pairs = pairwise_arms(exp.metric.pairwise, first, test, exp.metric.versus, base=ctx.base)
            ctx.run.write_json("pairwise.json", pairs)
            judging.pairwise_judge = exp.metric.pairwise
            judging.pairwise = [PairwiseJudged(arm=name, **p) for name, p in pairs.items()]
            for name, p in pairs.items():
                console.print(f"  pairwise {name} vs {p['versus']}: win rate {p['win_rate']:.3f} [95% {p['win_lo']:.3f}, "
                              f"{p['win_hi']:.3f}], length-controlled {p['lc_win_rate']:.3f}, winner flips with the "
                              f"order in {p['flips']:.0%} of pairs")
        if exp.judge:   # a gold reward model grades the policies (tailor.preference.judge)
            from .preference.judge import judge_ladder
            judge_ladder(arms, exp, ctx, test, progress)
        results = LadderResult(
            experiment=ExperimentInfo(name=exp.name, model=exp.model, task=task.name,
                                      created=time.strftime("%Y-%m-%d %H:%M:%S"), test_rows=len(test),
                                      price_per_1k_tokens=exp.price_per_1k_tokens,
                                      price_per_train_hour=exp.price_per_train_hour,
                                      requests_per_month=exp.requests_per_month, tolerance=exp.tolerance,
                                      budget_minutes=exp.budget_minutes),
            task=task.summary(), curation=curation, primary_metric=primary_metric(task), arms=arms,
            recommendation=recommend(arms, predictions, task.kind, primary_metric(task), exp), advice=_advice(exp),
            break_even=break_even(arms, exp.requests_per_month), judging=judging,
            manifest=ctx.run.read_json("manifest.json"), run_dir=str(ctx.path))
        results.wall_s = time.perf_counter() - t_start
        ctx.run.write_json("results.json", results.to_json())
        if exp.report:
            results.report = _write_report(results, ctx)
            ctx.run.write_json("results.json", results.to_json())
        log_finished(ctx.path, exp.report_to, exp.runs_dir)
        return results


def _budget_share(exp: Experiment, remaining: list[Arm], elapsed_s: float) -> float | None:
    """An arm's share of what is left of the experiment's budget: what remains, split evenly
    over the training arms still to run (prompting arms are not cut, only counted in the time)."""
    if not exp.budget_minutes or not remaining[0].options.changes_weights:
        return None
    training = sum(a.options.changes_weights for a in remaining)
    share = max(0.0, exp.budget_minutes * 60 - elapsed_s) / training
    console.print(f"  budget: {share / 60:.1f} min of the experiment's remaining "
                  f"{max(0.0, exp.budget_minutes * 60 - elapsed_s) / 60:.1f} for this arm", highlight=False)
    return max(share, 1.0)


def _run_arm(exp: Experiment, arm: Arm, ctx: RunContext, test, progress: bool, budget_s: float | None):
    from . import fits
    from .methods.base import copy_artifact, save_adapted
    out = ArmResult(name=arm.name, method=arm.method, options=arm.options.model_dump())
    t0 = time.perf_counter()
    folder = ctx.path / "arms" / slug(arm.name)
    try:
        method = arm.options
        reused = None
        if method.changes_weights:
            key = fits.fit_key(method, ctx.task, ctx.base.weights_id, budget_s)
            reused = fits.reuse(key, ctx.base) if exp.reuse_fits else None
        if reused is not None:
            adapted = reused
            out.fit_reused_from = str(adapted.artifact_dir)
            console.print(f"  reusing the identical fit in {adapted.artifact_dir}")
            copy_artifact(adapted, folder)
        else:
            adapted = method.fit(ctx.task, ctx.base, folder, progress=progress, budget_s=budget_s,
                                     cache=ctx.cache)
            save_adapted(adapted, folder)
            if method.changes_weights:
                fits.remember(key, folder)
        fitted = time.perf_counter()
        m = measure(adapted, ctx.task, test, cache=ctx.cache, batch_size=exp.batch_size,
                    max_new_tokens=exp.max_new_tokens, progress=progress, latency_requests=exp.latency_requests)
        closed_book = _closed_book_probe(adapted, exp, ctx, test, progress)
    except TailorError as e:
        return out.model_copy(update={"status": "failed", "error": str(e)}), None, None
    except Exception as e:  # one broken arm must not sink the others; the log keeps the trace
        log.error("arm %s failed:\n%s", arm.name, traceback.format_exc())
        return out.model_copy(update={"status": "failed", "error": f"{type(e).__name__}: {e}"}), None, None
    finally:
        log.info("arm %s finished in %.1f s", arm.name, time.perf_counter() - t0)
    ctx.run.write_jsonl(f"predictions-{slug(arm.name)}.jsonl", (p.to_json() for p in m.predictions))
    tokens = m.cost.prompt_tokens_per_request + m.cost.completion_tokens_per_request
    cost = m.cost.model_copy(update={
        "fit_wall_s": fitted - t0, "train_time_s": adapted.train_time_s, "train_tokens": adapted.train_tokens,
        "trainable_params": adapted.trainable_params, "artifact_bytes": adapted.artifact_bytes,
        "cost_per_1k_requests": tokens * exp.price_per_1k_tokens * _size_factor(arm.options, adapted, ctx.base),
        "train_cost": adapted.train_time_s / 3600 * exp.price_per_train_hour})
    cost.first_month_cost = cost.train_cost + exp.requests_per_month / 1000 * cost.cost_per_1k_requests
    by_id = {ex.id: ex for ex in test}
    examples = [ExampleRow(id=p.id, input=by_id[p.id].input_text[:500], target=p.target, prediction=p.prediction)
                for p in m.predictions[:8]]
    result = out.model_copy(update={
        "metrics": m.metrics, "cost": cost, "confusion": m.confusion, "labels": m.labels, "examples": examples,
        "notes": m.notes, "changes_weights": type(arm.options).changes_weights, "weights_id": adapted.weights_id,
        "arm_dir": str(adapted.artifact_dir) if adapted.artifact_dir else None, "train": adapted.recipe.train,
        "retrieval": Retrieval(**m.retrieval, closed_book=closed_book) if m.retrieval else None,
        "longdoc": LongDoc(**m.longdoc) if m.longdoc else None, "calibration": m.calibration})
    return result, adapted, m.predictions


def _size_factor(method, adapted, base) -> float:
    """The token price is the base's; an arm that serves a model of its own (a distilled student)
    pays in proportion to its parameters, as the compute per token does (about 2 FLOPs per
    parameter)."""
    if not type(method).own_model or not base.n_params:
        return 1.0
    return sum(p.numel() for p in adapted.model.parameters()) / base.n_params


def _closed_book_probe(adapted, exp: Experiment, ctx: RunContext, test, progress: bool) -> dict | None:
    """A weight-changing arm that reads passages, scored again without them: how much of its
    answer comes from the context and how much it memorised."""
    import dataclasses

    if adapted.passages is None or not method_class(adapted.method).changes_weights:
        return None
    console.print("  closed-book probe: the same rows without passages")
    m = measure(dataclasses.replace(adapted, passages=None), ctx.task, test, cache=ctx.cache,
                batch_size=exp.batch_size, max_new_tokens=exp.max_new_tokens, progress=progress, latency_requests=0)
    return m.metrics


def _versus_closed_book(arms: list[ArmResult], predictions: dict[str, list | None], kind: str) -> None:
    """Per row, every arm against the first closed-book zero-shot arm: helped, hurt, unchanged
    (context can erase a small model's right answers, and an average hides it)."""
    from .retrieval.grounding import helped_hurt, item_correct
    correct = {name: None if preds is None else {p.id: item_correct(kind, p.prediction, p.target) for p in preds}
               for name, preds in predictions.items()}
    base = next((a for a in arms if a.ok and method_class(a.method).bare), None)
    if base is None or not correct.get(base.name):
        return
    for arm in arms:
        if arm.ok and arm is not base and correct.get(arm.name) is not None:
            arm.versus_closed_book = {"baseline": base.name, **helped_hurt(correct[base.name], correct[arm.name])}


def _imitation(arms: list[ArmResult], predictions: dict[str, list | None], exp: Experiment, ctx: RunContext, test,
               progress: bool) -> None:
    """The imitation check of every arm that learned from a teacher (tailor.distill.imitation):
    the teacher's answers on the same rows, from its own arm of this ladder or measured here."""
    from .distill.imitation import imitation, warnings_for
    metric = primary_metric(ctx.task)
    by_dir = {str(Path(a.arm_dir).resolve()): a.name for a in arms if a.ok and a.arm_dir}
    for arm in arms:
        teacher = arm.options.get("teacher")
        if not arm.ok or not teacher:
            continue
        name = by_dir.get(str(Path(teacher).resolve()))
        if name is None:   # a teacher from outside the ladder: measured on the same rows
            from .methods import load_adapted
            console.print(f"  imitation check: measuring the teacher {teacher} on the test rows")
            predictions[teacher] = measure(load_adapted(teacher, ctx.base), ctx.task, test, cache=ctx.cache,
                                           batch_size=exp.batch_size, max_new_tokens=exp.max_new_tokens,
                                           progress=progress, latency_requests=0).predictions
            name = teacher
        score = next((a.metrics.get(metric) for a in arms if a.name == name), None)
        arm.imitation = imitation(ctx.task.kind, predictions[arm.name], predictions[name], metric,
                                  arm.metrics.get(metric), score)
        arm.imitation["teacher_arm"] = name
    warnings_for(arms)
    for arm in arms:
        if arm.imitation and arm.imitation.get("warning"):
            console.print(f"[yellow]imitation check:[/] {arm.name} {arm.imitation['warning']}")


def _more_seeds(result: ArmResult, exp: Experiment, arm: Arm, ctx: RunContext, test, progress: bool,
                budget_s: float | None) -> list[list]:
    """Seeds 2..N of an arm with `seeds: N`, each fitted and measured on the same rows, saved as
    arms/NAME.seedK; the arm itself (the first seed) is what is served. A failed seed is counted."""
    import dataclasses
    runs = []
    for k in range(1, arm.seeds):
        seed = arm.options.seed + k
        console.print(f"  seed {k + 1}/{arm.seeds} (seed {seed})")
        again = dataclasses.replace(arm, name=f"{arm.name}.seed{k}", options=arm.options.model_copy(update={"seed": seed}))
        r, adapted, preds = _run_arm(exp, again, ctx, test, progress, budget_s)
        del adapted
        if not r.ok:
            result.notes["seeds_failed"] = result.notes.get("seeds_failed", 0) + 1
            console.print(f"  [yellow]seed {seed} failed:[/] {r.error}")
            continue
        result.seed_runs.append(SeedRun(seed=seed, metrics=r.metrics, arm_dir=r.arm_dir,
                                        train_time_s=r.cost.train_time_s))
        runs.append(preds)
    return runs


def _check_data(exp: Experiment, ctx: RunContext) -> Curation | None:
    """Curation before any compute: leakage or conflicts above their limits stop the run."""
    if not exp.curate:
        return None
    from .curate import CurateOptions, curate_task
    report = curate_task(ctx.task, tokenizer=ctx.tokenizer,
                         options=CurateOptions(max_leakage=exp.max_leakage, max_conflicts=exp.max_conflicts))
    ctx.run.write_json("curation.json", report.to_json())
    problems = report.blocking()
    for p in problems:
        console.print(f"[yellow]data check:[/] {p}")
    if problems and not exp.continue_on_data_problems:
        raise TailorError(f"data checks found problems ({'; '.join(problems)}); fix the data, or set "
                          "continue_on_data_problems: true to run anyway")
    return Curation(summary=[list(r) for r in report.summary_rows()], html=report.html_section(), problems=problems)


def _forgetting(result: ArmResult, adapted, ctx: RunContext, base_general, progress, size):
    """The general suite on the base (once per ladder; its scores are engine-cached across runs)
    and on the adapted arm, paired item by item."""
    from .benchmarks import compare, run_suite
    console.print(f"  forgetting: general suite on {'the base and ' if base_general is None else ''}{result.name}")
    options = {"cache": ctx.cache if ctx.cache is not None else False, "progress": progress, "sizes": size}
    if base_general is None:
        base_general = run_suite(ctx.base.model, ctx.base.tokenizer, ctx.base.weights_id, **options)
    after = run_suite(adapted.model, adapted.tokenizer, adapted.weights_id, **options)
    result.forgetting = Forgetting.model_validate(compare(base_general, after))
    return base_general


def _helm(result: ArmResult, adapted, exp: Experiment, ctx: RunContext, test, preds, base_bias, progress):
    """HELM's robustness (the arm on perturbed test inputs, through the measurement path) and bias
    probes (the base once per ladder; a weight-changing arm against it on the same items)."""
    if exp.robustness:
        from .helm.robustness import robustness
        result.robustness = robustness(adapted, ctx.task, test, preds, exp.robustness, cache=ctx.cache,
                                       batch_size=exp.batch_size, max_new_tokens=exp.max_new_tokens, progress=progress)
    if exp.bias:
        from .engine import Engine
        from .helm.bias import compare, probe_model, summary
        from .remote import RemoteEngine, RemoteModel
        if base_bias is None:
            console.print("  bias probes: the base")
            cls = RemoteEngine if isinstance(ctx.base.model, RemoteModel) else Engine   # as Adapted.engine picks
            base_bias = probe_model(cls(ctx.base.model, ctx.base.tokenizer, ctx.base.weights_id, ctx.cache,
                                        batch_size=exp.batch_size, progress=progress), exp.bias)
        if method_class(result.method).external:   # a model outside Tailor: its weights are neither the base's nor at hand
            result.bias = None
        elif result.changes_weights:
            console.print(f"  bias probes: {result.name}")
            after = probe_model(adapted.engine(ctx.cache, batch_size=exp.batch_size, progress=progress), exp.bias)
            result.bias = {"weights": "own", "probes": compare(base_bias, after, exp.bias.seed)}
        else:   # the probes score sentences without an arm's prompt: its weights are the base's
            result.bias = {"weights": "base", "base": summary(base_bias),
                           "counts": {p: r["counts"] for p, r in base_bias.items()}}
    return base_bias


def _advice(exp: Experiment) -> dict | None:
    if not exp.advice:
        return None
    from .advise import advise
    return advise(exp.advice)


def _write_report(results: LadderResult, ctx: RunContext) -> dict:
    from .report import write_report
    html = write_report(results, ctx.path)
    out = {"html": str(html)}
    try:
        from .report.browser import find_chromium, screenshot
        if find_chromium():
            screenshot(html, ctx.path / "report.png")
            out["screenshot"] = str(ctx.path / "report.png")
    except Exception as e:  # a missing browser must not lose the results; say so
        out["screenshot_error"] = str(e)
        log.warning("screenshot failed: %s", e)
    return out


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _print_arm(result: ArmResult, metric: str) -> None:
    if not result.ok:
        console.print(f"  [red]failed[/]: {result.error}", highlight=False)
        return
    c = result.cost
    if metric not in result.metrics:   # a scorer (reward model): its own metrics
        console.print("  " + "  ".join(f"{k} {v:.3f}" for k, v in result.metrics.items()), highlight=False)
        return
    console.print(f"  {metric} {result.metrics[metric]:.3f}  "
                  f"{c.prompt_tokens_per_request:.0f}+{c.completion_tokens_per_request:.0f} tok/req  "
                  f"train {c.train_time_s:.0f} s  eval {c.eval_wall_s:.0f} s", highlight=False)
