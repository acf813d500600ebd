"""THE measurement path: one arm on a set of rows, the same way for the ladder, `tailor eval`
and `tailor train`. Quality comes from the batched run through the engine (cached); latency
from a few requests served one at a time without the cache, which is what a caller waits
(a batch's wall time says how long the batch took, not how long one request takes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .evaluate import Prediction, percentile, score_predictions
from .results import Cost


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


def measure(adapted, task, rows, *, cache=None, batch_size: int = 16, max_new_tokens: int = 64,
            progress: bool = True, latency_requests: int = 8) -> Measurement:
    from .methods.base import method_class
    if getattr(method_class(adapted.method), "scorer", False):   # a reward model judges pairs, it does not answer
        from .preference.reward import measure_reward_model
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
    report = score_predictions(task, preds)
    if any(isinstance(r.meta.get("rejected"), str) for r in rows):   # preference pairs: the likelihood margin too
        from .preference.reward import likelihood_preference
        report.metrics["preference_accuracy"] = likelihood_preference(engine, adapted.builder, rows)["accuracy"]
    grounding = None
    if retriever is not None:
        from .retrieval.grounding import summarize
        grounding = summarize(task, preds, retriever)
    computed = sum(not p.cached for p in preds)
    latencies = request_latencies(adapted, task, rows[:latency_requests], max_new_tokens)
    cost = Cost(**report.cost, eval_wall_s=wall, batch_s_per_request=wall / computed if computed else None,
                latency_p50_s=percentile(latencies, 0.5) if latencies else None,
                latency_p95_s=percentile(latencies, 0.95) if latencies else None,
                latency_requests=len(latencies))
    return Measurement(preds, report.metrics, report.confusion, report.labels, cost, dict(engine.notes), grounding,
                       longdoc)


def request_latencies(adapted, task, rows, max_new_tokens: int = 64) -> list[float]:
    """Seconds from a request to its answer, each alone and uncached: prompt building and shot
    selection included, as a server would do them."""
    if not rows:
        return []
    engine = adapted.engine(None, batch_size=1, progress=False)
    adapted.predict(engine, task, rows[:1], max_new_tokens)   # warm-up: first calls pay one-time costs
    out = []
    for row in rows:
        t0 = time.perf_counter()
        adapted.predict(engine, task, [row], max_new_tokens)
        out.append(time.perf_counter() - t0)
    return out
