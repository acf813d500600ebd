"""The ladder's recommendation as a statistical claim: every arm's per-row primary score on the
same test rows (each seed of an arm fitted with several) goes to `tailor.verdict`, which gives
each arm its interval and probability of being best, the paired differences against the best and
against the closed-book baseline, and the recommendation with how sure it is."""

from __future__ import annotations

import json

from .evaluate import rouge_pair
from .methods import METHODS
from .results import ArmResult, Recommendation
from .verdict import ArmScores, verdict

REPLICATES = 2000   # bootstrap draws: the Monte Carlo error of a 95% bound is about 0.005 at 300 rows


def row_scores(kind: str, predictions) -> list[float]:
    """Each row's primary metric, whose mean is the arm's: 1/0 for a label or choice, ROUGE-L F1
    for generated text; a task's grader's score where the rows were graded (tailor.graders). What the
    paired tests resample."""
    if predictions and all(getattr(p, "grade", None) is not None for p in predictions):
        return [float(p.grade) for p in predictions]
    if kind in ("classify", "choice"):
        return [float(p.prediction == p.target) for p in predictions]
    return [rouge_pair(p.prediction, p.target)["rougeL"]["f1"] for p in predictions]


def recommend(arms: list[ArmResult], predictions: dict[str, list[list]], kind: str, metric: str, exp) -> Recommendation:
    """`predictions`: per arm, one list of predictions per seed, all on the same test rows."""
    ok = [a for a in arms if a.ok and metric in a.metrics and predictions.get(a.name)]
    if not ok:
        return Recommendation(text="Every arm failed; see the errors in the table and log.txt.")
    ids = [p.id for p in predictions[ok[0].name][0]]
    if len(ids) < 2:
        best = max(ok, key=lambda a: a.metrics[metric])
        return Recommendation(arm=best.name, best_arm=best.name, claim="too_few_rows", text=(
            f"{best.name} has the highest {metric} on {len(ids)} test row; one row supports no claim about which "
            "arm is better: measure on more rows (task_options.test)."))
    scored = []
    for a in ok:
        runs = predictions[a.name]
        if any([p.id for p in run] != ids for run in runs):   # cannot happen in one ladder: say so if it does
            raise ValueError(f"arm {a.name} was measured on other rows than {ok[0].name}")
        scored.append(ArmScores(a.name, [row_scores(kind, run) for run in runs], a.cost.first_month_cost))
    # the closed-book baseline; a result read back may name a method this Tailor does not have
    baseline = next((a.name for a in ok if a.method in METHODS and METHODS[a.method].bare), None)
    # a model answered outside Tailor (a closed model's row) is measured and compared, never recommended:
    # Tailor cannot build it (unless it is all there is)
    reference = [a.name for a in ok if a.method in METHODS and METHODS[a.method].external]
    v = verdict(scored, metric=metric, tolerance=exp.tolerance, baseline=baseline, replicates=REPLICATES,
                seed=exp.seed, reference=reference if len(reference) < len(ok) else ())
    for a in ok:
        s = v.arm(a.name)
        a.interval = [s.lo, s.hi]
        a.p_best = s.p_best
        if s.seeds > 1:
            a.seed_means = list(s.seed_means)
    pick = next(a for a in ok if a.name == v.recommended)
    seeded = [a.name for a in ok if a.name in (v.best, v.recommended) and len(predictions[a.name]) == 1
              and a.method in METHODS and "seed" in METHODS[a.method].model_fields]
    c = pick.cost
    tokens = c.prompt_tokens_per_request + c.completion_tokens_per_request
    text = (v.sentence() + f" {pick.name} uses {tokens:.0f} tokens per request and costs about "
            f"${c.first_month_cost:.2f} in its first month at {exp.requests_per_month:,} requests"
            + (f" (training {c.train_time_s:.0f} s included)." if c.train_time_s else "."))
    if seeded:   # a second fit or shot draw can differ by more than the rows show (seeds: N measures it)
        text += (f" {' and '.join(dict.fromkeys(seeded))} ran one seed: the intervals cover the test rows, not the "
                 "spread between fits or shot draws (give the arm seeds: N to measure it).")
    return Recommendation(arm=pick.name, best_arm=v.best, text=text, claim=v.claim,
                          confident=v.claim in ("cheaper_non_inferior", "best_separated", "only_arm",
                                                "reference_matched"),
                          verdict=json.loads(json.dumps(v.to_json())))   # as results.json reads back (lists)
