"""The report's main sections: each a function from the `View` to its template's context (None:
the section is left out), rendered by `templates/NAME.html`. The templates escape every piece of
user text; only `curation.html` (Tailor's own curate report) and the SVG charts of plots.py are
embedded as they are (`Markup`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from markupsafe import Markup

from ..results import ArmResult, LadderResult
from . import fmt
from .fmt import DASH
from .plots import Point, color, hbars, intervals, scatter

N_EXAMPLES = 8


@dataclass
class View:
    """What every section needs, computed once from the typed ladder result."""
    results: LadderResult
    arms: list[ArmResult] = field(default_factory=list)
    ok: list[ArmResult] = field(default_factory=list)
    primary: str = "accuracy"
    metric_keys: list[str] = field(default_factory=list)
    colors: dict[str, str] = field(default_factory=dict)
    recommended: str | None = None
    kind: str = ""

    @classmethod
    def of(cls, results: LadderResult) -> View:
        keys = list(dict.fromkeys(k for a in results.arms for k in a.metrics))
        primary = results.primary_metric
        keys = [primary] + [k for k in keys if k != primary]
        return cls(results, results.arms, results.ok_arms, primary, keys,
                   {a.name: color(i) for i, a in enumerate(results.arms)}, results.recommendation.arm,
                   results.task.get("kind") or "")

    def m(self, arm: ArmResult, key: str):
        return fmt.num(arm.metrics.get(key))

    def c(self, arm: ArmResult, key: str):
        return fmt.num(getattr(arm.cost, key, None)) if arm.ok else None


# ---------------------------------------------------------------- top of the page


def header(v: View) -> dict:
    exp, task = v.results.experiment, v.results.task
    failed = len(v.arms) - len(v.ok)
    chips = [("model", exp.model), ("task", exp.task or task.get("name")),
             ("kind", task.get("kind")), ("test rows", fmt.count(task.get("test_rows"))
                                          if task.get("test_rows") is not None else None),
             ("created", exp.created)]
    return {"name": exp.name or task.get("name") or "experiment",
            "chips": [(k, val) for k, val in chips if val not in (None, "")],
            "status": f"{len(v.arms)} arms · {len(v.ok)} finished" + (f" · {failed} failed" if failed else "")}


def recommendation(v: View) -> dict:
    rec = v.results.recommendation
    arm = next((a for a in v.arms if a.name == rec.arm), None)
    stats = None
    if arm is not None:
        items = [(v.primary, fmt.metric(v.m(arm, v.primary))),
                 ("cost / 1k requests", fmt.money(v.c(arm, "cost_per_1k_requests"))),
                 ("prompt tokens / request", fmt.tokens(v.c(arm, "prompt_tokens_per_request"))),
                 ("latency p50", fmt.seconds(v.c(arm, "latency_p50_s"))),
                 ("train time", fmt.seconds(v.c(arm, "train_time_s")))]
        stats = [(k, val) for k, val in items if val != DASH]
    advice = v.results.advice or {}
    return {"rec": rec, "stats": stats, "advice": advice, "suggested": advice.get("suggested_arms") or [],
            "answers": list((advice.get("answers") or {}).items())}


# ---------------------------------------------------------------- the comparison table


def _worst_forgetting(arm: ArmResult):
    worst = arm.forgetting.worst() if arm.forgetting else None
    return (None, False) if worst is None else (worst[1].delta, worst[1].significant_drop)


def _times(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor


def _best(values: list[float | None], lower: bool) -> float | None:
    vals = [x for x in values if x is not None]
    if len(vals) < 2:
        return None
    return min(vals) if lower else max(vals)


def comparison(v: View) -> dict:
    exp = v.results.experiment
    per_month = fmt.num(exp.requests_per_month)
    has_forgetting = any(a.forgetting for a in v.arms)
    # (header, getter, formatter, lower_is_better or None = no highlight, css class)
    shown = _headline_metrics(v)
    cols = [(k, (lambda a, k=k: v.m(a, k)), fmt.metric, k in fmt.LOWER_IS_BETTER,
             "metric primary" if k == v.primary else "metric") for k in shown]
    titles = {k: fmt.metric_title(k) for k in shown}
    if has_forgetting:
        cols.append(("forgetting (worst)", lambda a: _worst_forgetting(a)[0], fmt.points, None, "num"))
    cols += [
        ("prompt tokens / req", lambda a: v.c(a, "prompt_tokens_per_request"), fmt.tokens, None, "num"),
        ("generated tokens / req", lambda a: v.c(a, "completion_tokens_per_request"), fmt.tokens, None, "num"),
        ("latency p50", lambda a: v.c(a, "latency_p50_s"), fmt.seconds, True, "num"),
        ("latency p95", lambda a: v.c(a, "latency_p95_s"), fmt.seconds, True, "num"),
        ("train time", lambda a: v.c(a, "train_time_s"), fmt.seconds, None, "num"),
        ("trainable params", lambda a: v.c(a, "trainable_params"), fmt.si, None, "num"),
        ("artifact", lambda a: v.c(a, "artifact_bytes"), fmt.size, None, "num"),
        ("cost / 1k req", lambda a: v.c(a, "cost_per_1k_requests"), fmt.money, True, "num"),
    ]
    training = ("train time", "trainable params", "artifact")
    trained = any(get(a) for h, get, *_ in cols if h in training for a in v.ok)
    if v.ok and not trained:  # a prompting-only ladder: three columns of zeros say nothing
        cols = [c for c in cols if c[0] not in training]
    priced = any(v.c(a, "cost_per_1k_requests") is not None for a in v.arms)
    if not priced:  # no price in the experiment: a column of dashes; the note says why
        cols = [c for c in cols if c[0] != "cost / 1k req"]
    if per_month and priced:
        cols.append((f"cost / month ({fmt.si(per_month)} req)",
                     lambda a: _times(v.c(a, "cost_per_1k_requests"), per_month / 1000),
                     fmt.money, True, "num"))
    best = {h: (_best([get(a) for a in v.ok], low) if low is not None else None)
            for h, get, _, low, _ in cols}
    baseline = v.ok[0] if v.ok else None
    head = [{"cls": cls, "title": titles.get(h, ""), "label": fmt.metric_label(h) if h in titles else h}
            for h, *_, cls in cols]
    rows = []
    for a in v.arms:
        cells = []
        for h, get, show, _, cls in cols:
            x = get(a)
            hit = " best" if best[h] is not None and x == best[h] else (" zero" if x == 0 else "")
            cell = {"cls": cls + hit, "text": show(x), "ci": None, "delta": None,
                    "warn": h.startswith("forgetting") and _worst_forgetting(a)[1]}
            if h == v.primary and a.interval:   # the verdict's 95% interval, and the chance of being best
                cell["ci"] = f"{a.interval[0]:.3f}–{a.interval[1]:.3f} · {a.p_best:.0%}"
            if h == v.primary and baseline is not None and a is not baseline and x is not None:
                cell["delta"] = fmt.points(x - (v.m(baseline, v.primary) or 0))
            cells.append(cell)
        rows.append({"arm": a, "recommended": a.name == v.recommended, "colour": v.colors[a.name], "cells": cells,
                     "error": a.error or "no reason recorded"})
    extra = [k for k in v.metric_keys if k not in shown]
    detail = [(a.name, [fmt.metric(v.m(a, k)) for k in extra]
               + [fmt.count(v.c(a, "train_tokens")), fmt.seconds(v.c(a, "eval_wall_s")),
                  fmt.seconds(v.c(a, "batch_s_per_request")), fmt.pct(v.c(a, "cached_share"), 0)]) for a in v.arms]
    return {"head": head, "rows": rows, "baseline": baseline.name if baseline is not None else None,
            "primary": v.primary, "n_ok": len(v.ok), "intervals": any(a.interval for a in v.ok),
            "price": fmt.num(exp.price_per_1k_tokens), "priced": priced, "trained": trained,
            "timed": max((a.cost.latency_requests for a in v.ok), default=0),
            "arm_notes": [(a.name, note, n) for a in v.ok for note, n in a.notes.items()],
            "extra": extra, "detail": detail}


HEADLINE = ("accuracy", "macro_f1", "ece", "rougeL", "chrf", "bleu", "exact_match")


def _headline_metrics(v: View, n: int = 3) -> list[str]:
    """The primary metric and the most telling others; the rest go under 'more detail' so the
    table stays readable with a generation task's half-dozen metrics."""
    rank = {k: i for i, k in enumerate(HEADLINE)}
    others = sorted(v.metric_keys[1:], key=lambda k: rank.get(k, len(rank)))
    return v.metric_keys[:1] + others[: n - 1]


# ---------------------------------------------------------------- charts


def charts(v: View) -> dict:
    use_cost = any(v.c(a, "cost_per_1k_requests") for a in v.ok)
    x_key, x_title = (("cost_per_1k_requests", "cost per 1k requests") if use_cost
                      else ("prompt_tokens_per_request", "prompt tokens per request"))
    pts = [Point(a.name, v.c(a, x_key), v.m(a, v.primary), v.colors[a.name], a.name == v.recommended)
           for a in v.ok]
    lat_rows = [(a.name, [v.c(a, "latency_p50_s"), v.c(a, "latency_p95_s")]) for a in v.ok]
    return {"primary": v.primary, "scatter": scatter(pts, x_title, v.primary),
            "latency": hbars(lat_rows, [("p50", "#2563eb"), ("p95", "#93c5fd")], fmt.seconds, "latency per request")}


def forgetting(v: View) -> dict | None:
    arms = [a for a in v.arms if a.forgetting]
    if not arms:
        return None
    plot_rows, rows = [], []
    for a in arms:
        for bench, r in a.forgetting.rows(with_mean=True):
            delta, lo, hi, drop = fmt.num(r.delta), fmt.num(r.ci_low), fmt.num(r.ci_high), r.significant_drop
            plot_rows.append((f"{a.name} · {bench}", delta, lo, hi, drop))
            ci = f"{fmt.points(lo)} … {fmt.points(hi)}" if lo is not None and hi is not None else DASH
            rows.append({"arm": a.name, "bench": bench, "base": r.base_accuracy, "adapted": r.adapted_accuracy,
                         "delta": delta, "ci": ci, "drop": drop})
    return {"rows": rows, "plot": intervals(plot_rows, "forgetting")}


# ---------------------------------------------------------------- per-arm detail


def debugging(v: View) -> dict | None:
    """`tailor debug`'s findings for each arm it was run on: failure clusters, training rows that
    teach the mistake, output kinds."""
    return {"arms": list(v.results.debug.items())} if v.results.debug else None


def confusions(v: View) -> dict | None:
    matrices = []
    for a in v.ok:
        m, labels = a.confusion, a.labels or v.results.task.get("labels")
        if not m or not labels or len(m) != len(labels):
            continue
        rows = []
        for i, (gold, row) in enumerate(zip(labels, m)):
            total = sum(x for x in row if isinstance(x, (int, float))) or 1
            cells = []
            for j, n in enumerate(row):
                share = (fmt.num(n) or 0) / total
                rgb = "5,150,105" if i == j else "220,38,38"
                ink = "#fff" if share > 0.55 else "inherit"
                cells.append({"style": f"background:rgba({rgb},{0.08 + 0.8 * share:.2f});color:{ink}",
                              "label": labels[j], "n": n, "share": share})
            rows.append((gold, cells))
        matrices.append({"name": a.name, "colour": v.colors[a.name], "metric": v.m(a, v.primary), "labels": labels,
                         "rows": rows})
    return {"matrices": matrices, "primary": v.primary} if matrices else None


def _pick_examples(v: View) -> tuple[list[str], dict, dict]:
    """Example ids to show (where the arms disagree first), their rows, and arm -> id -> prediction."""
    rows, preds, order = {}, {}, []
    for a in v.arms:
        for ex in a.examples:
            if ex.id not in rows:
                rows[ex.id] = ex
                order.append(ex.id)
            preds.setdefault(a.name, {})[ex.id] = ex.prediction
    def disagree(key):
        return len({str(p.get(key)) for p in preds.values() if key in p}) > 1
    chosen = sorted(order, key=lambda k: (not disagree(k), order.index(k)))[:N_EXAMPLES]
    return sorted(chosen, key=order.index), rows, preds


def examples(v: View) -> dict | None:
    ids, rows, preds = _pick_examples(v)
    if not ids:
        return None
    arms = [a for a in v.arms if a.name in preds]
    exact = v.kind in ("classify", "choice")
    if exact:  # scored by exact label match, as evaluate.accuracy does
        def same(p, t):
            return p == t
    else:  # generation: exact_match's normalisation; anything else is neither right nor wrong
        from ..evaluate import normalize

        def same(p, t):
            return normalize(p) == normalize(t)
    shown = []
    for key in ids:
        ex = rows[key]
        cells = []
        for a in arms:
            p = preds[a.name].get(key)
            if p is None:
                cells.append(None)
                continue
            p = fmt.as_text(p)
            right = same(p, ex.target)
            cells.append({"cls": "hit" if right else ("miss" if exact else ""),
                          "mark": "✓ " if right else ("✗ " if exact else ""), "text": p})
        shown.append({"id": key, "input": ex.input, "target": ex.target, "preds": cells})
    return {"arms": [(a.name, v.colors[a.name]) for a in arms], "rows": shown}


# ---------------------------------------------------------------- data and provenance


def data_check(v: View) -> dict:
    task = v.results.task
    facts = [("task", task.get("name")), ("kind", task.get("kind")), ("rows", fmt.count(task.get("rows"))),
             ("train / dev / test", " / ".join(fmt.count(task.get(k)) for k in
                                              ("train_rows", "dev_rows", "test_rows"))),
             ("labels", ", ".join(map(str, task.get("labels") or [])) or None)]
    notes = task.get("notes")
    cur = v.results.curation
    summary = cur.summary if cur else []
    return {"facts": [(k, val) for k, val in facts if val not in (None, "", DASH)],
            **_label_counts(task.get("label_counts")),
            "notes": (notes if isinstance(notes, list) else [notes]) if notes else [],
            "summary": [r for r in summary if isinstance(r, (list, tuple)) and r],
            # Tailor's own curate report, trusted
            "curation_html": Markup(cur.html) if cur and cur.html else None}


def _label_counts(counts) -> dict:
    if not isinstance(counts, dict) or not counts:
        return {"split_counts": None, "bars": None}
    if all(isinstance(x, dict) for x in counts.values()):  # per split: {split: {label: n}}
        labels = list(dict.fromkeys(l for c in counts.values() for l in c))
        rows = [(s, [fmt.count(c.get(l)) for l in labels]) for s, c in counts.items()]
        return {"split_counts": {"labels": labels, "rows": rows}, "bars": None}
    total = sum(fmt.num(x) or 0 for x in counts.values()) or 1
    return {"split_counts": None,
            "bars": [{"label": l, "n": n, "width": 100 * (fmt.num(n) or 0) / total, "share": (fmt.num(n) or 0) / total}
                     for l, n in counts.items()]}


def manifest(v: View) -> dict:
    exp = v.results.experiment.model_dump(mode="json")
    return {"text": json.dumps({"experiment": exp, "manifest": v.results.manifest}, indent=2, ensure_ascii=False,
                               default=str)}

