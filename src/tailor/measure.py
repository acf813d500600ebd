"""THE measurement path: one arm on a set of rows, the same way for the ladder, `tailor eval`
and `tailor train`. Quality comes from the batched run through the engine (cached); latency
from a few requests served one at a time without the cache, which is what a caller waits
(a batch's wall time says how long the batch took, not how long one request takes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .calibration import summary as calibration_summary
from .evaluate import Prediction, percentile, score_predictions
from .methods.base import method_class
from .preference.data import pairs_of
from .preference.reward import likelihood_preference
from .results import Cost
from .retrieval.grounding import summarize


@dataclass
class Measurement:
    predictions: list[Prediction]
    metrics: dict[str, float]
    confusion: list[list[int]] | None
    labels: list[str] | None
    cost: Cost
    notes: dict[str, int]   # the engine's counted fallbacks (e.g. a remote model scored by matching)
    retrieval: dict | None = None   # knowledge-base arms: retrieval, citations, abstention, its cost
    longdoc: dict | None = None     # long-document arms: plans, calls and tokens per question, compression
    calibration: dict | None = None  # a calibrated arm: its label prior, predicted-label shares before and after


def measure(adapted, task, rows, *, cache=None, batch_size: int = 16, max_new_tokens: int = 64,
            progress: bool = True, latency_requests: int = 8) -> Measurement:
    if method_class(adapted.method).scorer:   # a reward model judges pairs, it does not answer
        return measure_reward_model(adapted, rows, cache=cache, batch_size=batch_size, progress=progress)
    engine = adapted.engine(cache, batch_size=batch_size, progress=progress)
    retriever = adapted.passages
    if retriever is not None:   # timed on the batched queries only, not the one-at-a-time latency requests
        retriever.queries, retriever.seconds = 0, 0.0
    t0 = time.perf_counter()
    preds = adapted.predict(engine, task, rows, max_new_tokens)
    wall = time.perf_counter() - t0
    # read now: the one-at-a-time latency requests below predict again and measure only themselves
    longdoc = dict(adapted.measured) if hasattr(adapted, "measured") else None
    graded = {}
    if task.grader:
        from .graders import grade_predictions  # a model judge imports torch when it grades
        graded = grade_predictions(task, rows, preds)
    report = score_predictions(task, preds)
    if any(isinstance(r.meta.get("rejected"), str) for r in rows):   # preference pairs: the likelihood margin too
        report.metrics["preference_accuracy"] = likelihood_preference(engine, adapted.builder, rows)["accuracy"]
    grounding = None
    if retriever is not None:
        grounding = summarize(task, preds, retriever)
    computed = sum(not p.cached for p in preds)
    latencies = request_latencies(adapted, task, rows[:latency_requests], max_new_tokens)
    cost = Cost(**report.cost, eval_wall_s=wall, batch_s_per_request=wall / computed if computed else None,
                latency_p50_s=percentile(latencies, 0.5) if latencies else None,
                latency_p95_s=percentile(latencies, 0.95) if latencies else None,
                latency_requests=len(latencies))
    return Measurement(preds, report.metrics, report.confusion, report.labels, cost, {**engine.notes, **graded},
                       grounding, longdoc, calibration_summary(adapted.recipe.calibration, preds))


def measure_reward_model(adapted, rows, *, cache=None, batch_size: int = 16, progress: bool = True) -> Measurement:
    """THE measurement of a reward-model arm: it judges pairs, it does not answer, so its quality
    is held-out pairwise accuracy; each row's prediction is the side it scores higher."""
    pairs = pairs_of(rows)
    engine = adapted.engine(cache, batch_size=batch_size, progress=progress)
    b = adapted.builder
    t0 = time.perf_counter()
    prompts = [b.build(ex).text for ex in pairs]
    chosen = engine.reward(prompts, [b.target_text(ex.target) for ex in pairs])
    rejected = engine.reward(prompts, [b.target_text(ex.meta["rejected"]) for ex in pairs])
    wall = time.perf_counter() - t0
    preds = [Prediction(ex.id, "chosen" if c.score > r.score else "rejected", "chosen", c.prompt_tokens,
                        0, c.latency_s, c.cached and r.cached, probs={"chosen": c.score, "rejected": r.score})
             for ex, c, r in zip(pairs, chosen, rejected)]
    wins = [1.0 if c.score > r.score else 0.5 if c.score == r.score else 0.0 for c, r in zip(chosen, rejected)]
    metrics = {"pairwise_accuracy": sum(wins) / len(wins),
               "mean_margin": sum(c.score - r.score for c, r in zip(chosen, rejected)) / len(pairs)}
    computed = sum(not p.cached for p in preds)
    cost = Cost(requests=len(preds), prompt_tokens_per_request=sum(p.prompt_tokens for p in preds) / len(preds),
                eval_wall_s=wall, batch_s_per_request=wall / computed if computed else None,
                cached_share=1 - computed / len(preds))
    return Measurement(preds, metrics, None, None, cost, dict(engine.notes))


def request_latencies(adapted, task, rows, max_new_tokens: int = 64) -> list[float]:
    """Seconds from a request to its answer, each alone and uncached: prompt building and shot
    selection included, as a server would do them."""
    if not rows or not adapted.timed:   # answers read from a file (an external arm): nothing was asked
        return []
    engine = adapted.engine(None, batch_size=1, progress=False)
    adapted.predict(engine, task, rows[:1], max_new_tokens)   # warm-up: first calls pay one-time costs
    out = []
    for row in rows:
        t0 = time.perf_counter()
        adapted.predict(engine, task, [row], max_new_tokens)
        out.append(time.perf_counter() - t0)
    return out
