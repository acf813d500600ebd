"""Learning curves: an arm refitted on 1/8, 1/4 and 1/2 of its labelled training rows (seeded
samples, the same steps and options otherwise), each measured on the ladder's test rows with a
95% interval, and a saturating power law fitted through the points,
    metric(n) = a - b * n^-c   (b, c > 0: more rows help, less and less),
the usual shape of learning curves (Hestness et al. 2017, "Deep Learning Scaling is Predictable,
Empirically"). Its value at twice the rows says whether labelling more is worth it; with four
points and their noise it is an extrapolation, and the report says so."""

from __future__ import annotations

import dataclasses

import numpy as np

from .decide import row_scores
from .progress import console
from .results import ArmResult, CurvePoint, LearningCurve
from .verdict import ArmScores, verdict


def learning_curves(arms: list[ArmResult], predictions: dict, exp, ctx, test, progress: bool, run_arm) -> None:
    """Fills `learning_curve` of each arm `exp.learning_curve.arms` names that finished.
    `run_arm(exp, arm, ctx, test, progress, budget_s)` is the ladder's own fit-and-measure."""
    from .train.loop import train_pool
    by_name = {a.name: a for a in arms}
    specs = {a.name: a for a in exp.arms}
    for name in exp.learning_curve.arms:
        result = by_name.get(name)
        if result is None or not result.ok or not predictions.get(name):
            console.print(f"  [yellow]learning curve:[/] {name} did not finish; no curve")
            continue
        arm = specs[name]
        full = len(train_pool(ctx.task, arm.options))
        points = []
        for fraction in sorted(exp.learning_curve.fractions):
            n = max(1, round(fraction * full))
            console.print(f"  learning curve: {name} on {n:,} of {full:,} rows")
            smaller = dataclasses.replace(arm, name=f"{name}.rows{n}",
                                          options=arm.options.model_copy(update={"max_train_examples": n}))
            r, adapted, preds = run_arm(exp, smaller, ctx, test, progress, None)
            del adapted
            if not r.ok:
                result.notes["curve_points_failed"] = result.notes.get("curve_points_failed", 0) + 1
                continue
            points.append(_point(n, preds, ctx.task.kind, exp, r.cost.train_time_s))
        points.append(_point(full, predictions[name][0], ctx.task.kind, exp, result.cost.train_time_s))
        result.learning_curve = fit_curve(points)


def _point(rows: int, preds, kind: str, exp, train_time_s: float) -> CurvePoint:
    scores = row_scores(kind, preds)
    if len(scores) < 2:
        return CurvePoint(rows=rows, metric=float(np.mean(scores)), train_time_s=train_time_s)
    v = verdict([ArmScores("arm", scores, 0.0)], metric="m", tolerance=exp.tolerance, seed=exp.seed)
    a = v.arms[0]
    return CurvePoint(rows=rows, metric=a.mean, lo=a.lo, hi=a.hi, train_time_s=train_time_s)


def fit_curve(points: list[CurvePoint]) -> LearningCurve:
    """Least squares of a - b * n^-c over a grid of c (for each c, a and b are linear)."""
    ns = np.array([p.rows for p in points], dtype=float)
    ys = np.array([p.metric for p in points], dtype=float)
    if len(set(ns)) < 3:
        return LearningCurve(points=points)
    best = None
    for c in np.linspace(0.05, 2.0, 196):
        x = ns ** -c
        design = np.stack([np.ones_like(x), -x], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, ys, rcond=None)
        if b <= 0:   # a curve that falls with more rows is not a learning curve: keep looking
            continue
        err = float(np.sum((design @ np.array([a, b]) - ys) ** 2))
        if best is None or err < best[0]:
            best = (err, float(a), float(b), float(c))
    if best is None:
        return LearningCurve(points=points)
    _, a, b, c = best
    return LearningCurve(points=points, fit={"a": a, "b": b, "c": c},
                         predicted_at_double=a - b * (2 * ns.max()) ** -c)


def sentence(name: str, curve: LearningCurve, metric: str) -> str:
    first, last = curve.points[0], curve.points[-1]
    text = f"{name}: {metric} {first.metric:.3f} at {first.rows:,} rows, {last.metric:.3f} at {last.rows:,}"
    if curve.predicted_at_double is None:
        return text + " (no rising curve fits these points)."
    gain = curve.predicted_at_double - last.metric
    return text + (f"; the fitted curve puts {2 * last.rows:,} rows at {curve.predicted_at_double:.3f} "
                   f"({gain:+.3f}, an extrapolation from {len(curve.points)} points).")
