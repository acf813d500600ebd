"""The report's sections, each a function from the results dict (through `View`) to an HTML
string. Every piece of user text is escaped here; only `curation.html` (Tailor's own curate
report) is embedded as it is."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..results import ArmResult, LadderResult
from . import fmt
from .fmt import DASH, esc
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


def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{anchor}" class="card"><h2>{esc(title)}</h2>{note_html}{body}</section>'


def _badge(status: str) -> str:
    cls = "ok" if status == "ok" else "bad"
    return f'<span class="badge {cls}">{esc(status)}</span>'


# ---------------------------------------------------------------- top of the page


def header(v: View) -> str:
    exp, task = v.results.experiment, v.results.task
    name = exp.name or task.get("name") or "experiment"
    failed = len(v.arms) - len(v.ok)
    chips = [("model", exp.model), ("task", exp.task or task.get("name")),
             ("kind", task.get("kind")), ("test rows", fmt.count(task.get("test_rows"))
                                          if task.get("test_rows") is not None else None),
             ("created", exp.created)]
    chip_html = "".join(f'<span class="chip"><b>{esc(k)}</b> {esc(val)}</span>'
                        for k, val in chips if val not in (None, ""))
    status = f"{len(v.arms)} arms · {len(v.ok)} finished" + (f" · {failed} failed" if failed else "")
    return (f'<header class="top"><div class="eyebrow">Tailor · adaptation ladder report</div>'
            f'<h1>{esc(name)}</h1><div class="chips">{chip_html}'
            f'<span class="chip status">{esc(status)}</span></div></header>')


def recommendation(v: View) -> str:
    rec = v.results.recommendation
    arm = next((a for a in v.arms if a.name == rec.arm), None)
    if not rec.text:
        body = '<p class="rec-text">No recommendation was made (no arm finished).</p>'
        return f'<section id="recommendation" class="rec none">{body}</section>'
    stats = ""
    if arm is not None:
        items = [(v.primary, fmt.metric(v.m(arm, v.primary))),
                 ("cost / 1k requests", fmt.money(v.c(arm, "cost_per_1k_requests"))),
                 ("prompt tokens / request", fmt.tokens(v.c(arm, "prompt_tokens_per_request"))),
                 ("latency p50", fmt.seconds(v.c(arm, "latency_p50_s"))),
                 ("train time", fmt.seconds(v.c(arm, "train_time_s")))]
        stats = '<dl class="stats">' + "".join(
            f"<div><dt>{esc(k)}</dt><dd>{esc(val)}</dd></div>" for k, val in items if val != DASH) + "</dl>"
    advice = v.results.advice or {}
    advice_html = ""
    if advice:
        arms = "".join(f'<span class="chip">{esc(a)}</span>' for a in advice.get("suggested_arms") or [])
        answers = advice.get("answers") or {}
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(val)}</td></tr>" for k, val in answers.items())
        advice_html = ('<div class="advice"><h3>Decision guide</h3>'
                       f'<p>{esc(advice.get("text", ""))}</p>'
                       + (f'<div class="chips"><b class="muted">suggested arms</b> {arms}</div>' if arms else "")
                       + (f'<details><summary>Answers to the decision questions</summary>'
                          f'<table class="kv">{rows}</table></details>' if rows else "") + "</div>")
    return (f'<section id="recommendation" class="rec"><div class="eyebrow">Recommendation</div>'
            f'<h2 class="rec-arm">{esc(rec.arm or DASH)}</h2>'
            f'<p class="rec-text">{esc(rec.text)}</p>{stats}{advice_html}</section>')


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


def comparison_table(v: View) -> str:
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
    head = "<th>arm</th><th>status</th>" + "".join(
        f'<th class="{cls}" title="{esc(titles.get(h, ""))}">{esc(fmt.metric_label(h) if h in titles else h)}</th>'
        for h, *_, cls in cols)
    rows = []
    for a in v.arms:
        rec = ' class="recommended"' if a.name == v.recommended else ""
        swatch = f'<i class="swatch" style="background:{v.colors[a.name]}"></i>'
        star = '<span class="star" title="recommended">★</span>' if a.name == v.recommended else ""
        method_html = f'<div class="method">{esc(a.method)}</div>' if a.method != a.name else ""
        name = esc(a.name).replace("_", "_<wbr>")  # long arm names wrap at underscores
        cells = [f'<td class="arm">{swatch}<b>{name}</b>{star}{method_html}</td>',
                 f"<td>{_badge(a.status)}</td>"]
        for h, get, show, _, cls in cols:
            x = get(a)
            text = esc(show(x))
            if h == v.primary and a.interval:   # the verdict's 95% interval, and the chance of being best
                text += (f'<div class="ci" title="95% interval; chance of being best">'
                         f'{a.interval[0]:.3f}–{a.interval[1]:.3f} · {a.p_best:.0%}</div>')
            if h == v.primary and baseline is not None and a is not baseline and x is not None:
                d = x - (v.m(baseline, v.primary) or 0)
                text += (f'<div class="delta" title="change vs {esc(baseline.name)}">'
                         f'{esc(fmt.points(d))}</div>')
            if h.startswith("forgetting") and _worst_forgetting(a)[1]:
                text += ' <span class="warn" title="significant drop on a general benchmark">⚠</span>'
            hit = " best" if best[h] is not None and x == best[h] else (" zero" if x == 0 else "")
            cells.append(f'<td class="{cls}{hit}">{text}</td>')
        rows.append(f"<tr{rec}>{''.join(cells)}</tr>")
        if not a.ok:
            reason = a.error or "no reason recorded"
            rows.append(f'<tr class="failure"><td colspan="{len(cols) + 2}"><b>{esc(a.name)} failed:</b> '
                        f'<code>{esc(fmt.clip(reason, 2000))}</code></td></tr>')
    price = fmt.num(exp.price_per_1k_tokens)
    notes = ["<b>Bold green</b> marks the best value among finished arms; the ★ row is the recommendation."]
    if any(a.interval for a in v.ok):
        notes.append(f"Under {esc(v.primary)}: its 95% interval and the arm's chance of being best (see How sure).")
    if baseline is not None and len(v.ok) > 1:
        notes.append(f"Small figures under {esc(v.primary)} are the change vs {esc(baseline.name)}.")
    if price is not None:
        notes.append(f"Cost assumes {esc(fmt.money(price))} per 1k tokens (prompt + generated).")
    if not priced:
        notes.append("No cost per request: set <code>price_per_1k_tokens</code> in the experiment.")
    timed = max((a.cost.latency_requests for a in v.ok), default=0)
    notes.append(f"Latency is what one caller waits: requests served one at a time, uncached, on this machine "
                 f"({timed} per arm); training cost is not part of cost per request.")
    for a in v.ok:
        for note, n in a.notes.items():
            notes.append(f"{esc(a.name)}: {esc(note)} ({n:,} rows).")
    if v.ok and not trained:
        notes.append("No arm trained weights (no training time, parameters or artifacts).")
    return _section("comparison", "Comparison of arms",
                    f'<div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead>'
                    f'<tbody>{"".join(rows)}</tbody></table></div>'
                    f'<p class="note">{" ".join(notes)}</p>' + _more_detail(v, shown))


HEADLINE = ("accuracy", "macro_f1", "ece", "rougeL", "chrf", "bleu", "exact_match")


def _headline_metrics(v: View, n: int = 3) -> list[str]:
    """The primary metric and the most telling others; the rest go under 'more detail' so the
    table stays readable with a generation task's half-dozen metrics."""
    rank = {k: i for i, k in enumerate(HEADLINE)}
    others = sorted(v.metric_keys[1:], key=lambda k: rank.get(k, len(rank)))
    return v.metric_keys[:1] + others[: n - 1]


def _more_detail(v: View, shown: list[str]) -> str:
    extra = [k for k in v.metric_keys if k not in shown]
    head = "".join(f'<th class="num" title="{esc(fmt.metric_title(k))}">{esc(fmt.metric_label(k))}</th>'
                   for k in extra)
    rows = "".join(
        f"<tr><td>{esc(a.name)}</td>"
        + "".join(f"<td class='num'>{esc(fmt.metric(v.m(a, k)))}</td>" for k in extra)
        + f"<td class='num'>{esc(fmt.count(v.c(a, 'train_tokens')))}</td>"
        f"<td class='num'>{esc(fmt.seconds(v.c(a, 'eval_wall_s')))}</td>"
        f"<td class='num'>{esc(fmt.seconds(v.c(a, 'batch_s_per_request')))}</td>"
        f"<td class='num'>{esc(fmt.pct(v.c(a, 'cached_share'), 0))}</td></tr>" for a in v.arms)
    what = ("all metrics, " if extra else "") + "training tokens, evaluation time, cache"
    return (f'<details><summary>More detail ({what})</summary>'
            f'<table class="grid small"><thead><tr><th>arm</th>{head}<th class="num">train tokens</th>'
            '<th class="num">eval wall time</th><th class="num" title="batched evaluation time per computed '
            'request: throughput, not what one caller waits">batched s / request</th>'
            '<th class="num">served from cache</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></details>")


# ---------------------------------------------------------------- charts


def charts(v: View) -> str:
    use_cost = any(v.c(a, "cost_per_1k_requests") for a in v.ok)
    x_key, x_title = (("cost_per_1k_requests", "cost per 1k requests") if use_cost
                      else ("prompt_tokens_per_request", "prompt tokens per request"))
    pts = [Point(a.name, v.c(a, x_key), v.m(a, v.primary), v.colors[a.name], a.name == v.recommended)
           for a in v.ok]
    plot = scatter(pts, x_title, v.primary)
    lat_rows = [(a.name, [v.c(a, "latency_p50_s"), v.c(a, "latency_p95_s")]) for a in v.ok]
    lat = hbars(lat_rows, [("p50", "#2563eb"), ("p95", "#93c5fd")], fmt.seconds,
                "latency per request")
    return ('<div class="two">'
            + _section("quality-cost", "Quality against cost", plot,
                       f"Up and to the left is better. The dashed line joins the arms no other arm "
                       f"beats on both {esc(v.primary)} and cost.")
            + _section("latency", "Latency per request", lat, "Median (p50) and tail (p95) of requests served one "
                       "at a time without the cache, prompt building and example selection included.")
            + "</div>")


def forgetting(v: View) -> str:
    arms = [a for a in v.arms if a.forgetting]
    if not arms:
        return ""
    plot_rows, rows = [], []
    for a in arms:
        for bench, r in a.forgetting.rows(with_mean=True):
            delta, lo, hi, drop = fmt.num(r.delta), fmt.num(r.ci_low), fmt.num(r.ci_high), r.significant_drop
            plot_rows.append((f"{a.name} · {bench}", delta, lo, hi, drop))
            verdict = ('<span class="badge bad">significant drop</span>' if drop
                       else '<span class="badge ok">no significant drop</span>')
            ci = f"{fmt.points(lo)} … {fmt.points(hi)}" if lo is not None and hi is not None else DASH
            rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(bench)}</td>"
                        f"<td class='num'>{esc(fmt.metric(r.base_accuracy))}</td>"
                        f"<td class='num'>{esc(fmt.metric(r.adapted_accuracy))}</td>"
                        f"<td class='num'>{esc(fmt.points(delta))}</td><td class='num'>{esc(ci)}</td>"
                        f"<td>{verdict}</td></tr>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>benchmark</th><th class="num">base</th>'
             '<th class="num">adapted</th><th class="num">change</th><th class="num">95% interval</th>'
             f'<th>verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return _section("forgetting", "Forgetting on general benchmarks",
                    f'<div class="two inner fit"><div>{table}</div><div>'
                    f'{intervals(plot_rows, "forgetting")}</div></div>',
                    "Accuracy of the adapted model minus the base model on the same general-benchmark items, "
                    "with a paired-bootstrap 95% interval; a drop is significant when the interval lies below zero.")


# ---------------------------------------------------------------- per-arm detail


def debugging(v: View) -> str:
    """`tailor debug`'s findings for each arm it was run on: failure clusters, training rows that
    teach the mistake, output kinds."""
    parts = []
    for name, d in v.results.debug.items():
        clusters = "".join(
            f"<tr><td>{esc(c['size'])}</td><td>{'<br>'.join(esc(fmt.clip(t, 140)) for t in c['typical'])}</td>"
            f"<td>{'<br>'.join(esc(f'{pair} ({n})') for pair, n in c['confusion'])}</td>"
            f"<td>{esc(c['nearby_training_rows'])}</td><td>{esc(c['teaching_the_mistake'])}</td>"
            f"<td>{_gap(c)}</td></tr>"
            for c in d.get("clusters", []))
        flagged = "".join(
            f"<tr><td><code>{esc(r['id'])}</code></td><td>{esc(fmt.clip(r['input'], 160))}</td><td>{esc(r['label'])}</td>"
            f"<td>{esc(r['suggested'])}</td><td>{esc(len(r['failures']))}</td><td>{esc(r['similarity'])}</td></tr>"
            for r in d.get("likely_label_errors", [])[:20])
        kinds = "".join(
            f"<tr><td>{esc(fmt.clip(k['kind'], 40))}</td><td>{fmt.pct(k['training_share'])}</td>"
            f"<td>{fmt.pct(k['gold_share'])}</td><td>{fmt.pct(k['predicted_share'])}</td>"
            f"<td>{'over-predicted ' if k['over_predicted'] else ''}{'over-taught' if k['over_taught'] else ''}</td></tr>"
            for k in d.get("output_kinds", []))
        parts.append(
            f"<h3>{esc(name)}: {esc(d['failures'])} of {esc(d['predictions'])} test rows failed</h3>"
            '<table class="grid"><thead><tr><th>failures</th><th>typical inputs</th><th>gold → predicted</th>'
            "<th>training rows nearby (median)</th><th>teach the mistake</th><th>coverage</th></tr></thead>"
            f"<tbody>{clusters}</tbody></table>"
            + ('<p class="note">Training rows whose label is the model\'s wrong answer on a near-identical test row '
               f"(cosine ≥ {esc(d['options']['near'])}): likely label errors or ambiguous guidance "
               f"({esc(len(d.get('likely_label_errors', [])))} in all; the first 20).</p>"
               '<table class="grid"><thead><tr><th>row</th><th>input</th><th>label</th><th>gold of the failure</th>'
               f"<th>failures</th><th>cosine</th></tr></thead><tbody>{flagged}</tbody></table>" if flagged else "")
            + '<table class="grid"><thead><tr><th>output kind</th><th>training</th><th>gold</th><th>predicted</th>'
            f"<th>flag</th></tr></thead><tbody>{kinds}</tbody></table>")
    if not parts:
        return ""
    return _section("debug", "Debugging the data from bad outputs", "".join(parts),
                    "Failures clustered by meaning, each with the training rows nearest to it (Meta's guide to "
                    "adapting LLMs: look at the failures, check whether the data teaches the same mistake, add "
                    "examples where it has none, check the balance of output kinds). "
                    "<code>tailor debug RUN --write-fixes FILE</code> writes the flagged rows for review.")


def _gap(cluster: dict) -> str:
    return f'<b class="warn">gap</b>: add about {esc(cluster["add"])}' if cluster["gap"] else DASH


def confusions(v: View) -> str:
    cards = []
    for a in v.ok:
        m, labels = a.confusion, a.labels or v.results.task.get("labels")
        if not m or not labels or len(m) != len(labels):
            continue
        head = "".join(f'<th title="{esc(l)}">{esc(fmt.clip(l, 12))}</th>' for l in labels)
        body = []
        for i, (gold, row) in enumerate(zip(labels, m)):
            total = sum(x for x in row if isinstance(x, (int, float))) or 1
            cells = []
            for j, n in enumerate(row):
                share = (fmt.num(n) or 0) / total
                rgb = "5,150,105" if i == j else "220,38,38"
                ink = "#fff" if share > 0.55 else "inherit"
                cells.append(f'<td style="background:rgba({rgb},{0.08 + 0.8 * share:.2f});color:{ink}" '
                             f'title="gold {esc(gold)}, predicted {esc(labels[j])}: {esc(n)} '
                             f'({share:.0%} of the row)">{esc(fmt.count(n))}</td>')
            body.append(f'<tr><th title="{esc(gold)}">{esc(fmt.clip(gold, 12))}</th>{"".join(cells)}</tr>')
        cards.append(f'<figure class="cm"><figcaption><i class="swatch" style="background:'
                     f'{v.colors[a.name]}"></i>{esc(a.name)} <span class="muted">'
                     f'{esc(fmt.metric(v.m(a, v.primary)))} {esc(v.primary)}</span></figcaption>'
                     f'<table><thead><tr><th class="corner">gold ↓<br>predicted →</th>{head}</tr></thead>'
                     f'<tbody>{"".join(body)}</tbody></table></figure>')
    if not cards:
        return ""
    return _section("confusion", "Confusion matrices", f'<div class="cms">{"".join(cards)}</div>',
                    "Rows are the gold label, columns the prediction; shading is the share of the row.")


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


def examples(v: View) -> str:
    ids, rows, preds = _pick_examples(v)
    if not ids:
        return ""
    arms = [a for a in v.arms if a.name in preds]
    exact = v.kind in ("classify", "choice")
    if exact:  # scored by exact label match, as evaluate.accuracy does
        def same(p, t):
            return p == t
    else:  # generation: exact_match's normalisation; anything else is neither right nor wrong
        from ..evaluate import normalize

        def same(p, t):
            return normalize(p) == normalize(t)
    head = "<th>input</th><th>target</th>" + "".join(
        f'<th><i class="swatch" style="background:{v.colors[a.name]}"></i>{esc(a.name)}</th>'
        for a in arms)
    body = []
    for key in ids:
        ex = rows[key]
        text, target = ex.input, ex.target
        cells = [(f'<td class="input" title="{esc(fmt.clip(text, 3000))}"><div class="id">{esc(key)}</div>'
                  f'{esc(fmt.clip(text, 280))}</td>'), f'<td class="target">{esc(fmt.clip(target, 400))}</td>']
        for a in arms:
            p = preds[a.name].get(key)
            if p is None:
                cells.append(f'<td class="muted">{DASH}</td>')
                continue
            p = fmt.as_text(p)
            right = same(p, target)
            cls = "hit" if right else ("miss" if exact else "")
            mark = "✓ " if right else ("✗ " if exact else "")
            cells.append(f'<td class="pred {cls}">{mark}{esc(fmt.clip(p, 400))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _section("examples", "Example predictions",
                    f'<div class="scroll"><table class="grid examples"><thead><tr>{head}</tr></thead>'
                    f'<tbody>{"".join(body)}</tbody></table></div>',
                    "Test inputs where the arms disagree are shown first.")


# ---------------------------------------------------------------- data and provenance


def data_check(v: View) -> str:
    task = v.results.task
    facts = [("task", task.get("name")), ("kind", task.get("kind")), ("rows", fmt.count(task.get("rows"))),
             ("train / dev / test", " / ".join(fmt.count(task.get(k)) for k in
                                              ("train_rows", "dev_rows", "test_rows"))),
             ("labels", ", ".join(map(str, task.get("labels") or [])) or None)]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(val)}</td></tr>"
                         for k, val in facts if val not in (None, "", DASH))
    parts = [f'<table class="kv">{facts_html}</table>', _label_counts(task.get("label_counts"))]
    notes = task.get("notes")
    if notes:
        items = notes if isinstance(notes, list) else [notes]
        parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in items) + "</ul>")
    cur = v.results.curation
    summary = cur.summary if cur else []
    if summary:
        srows = "".join(f"<tr><th>{esc(r[0])}</th><td>{esc(r[1] if len(r) > 1 else '')}</td></tr>"
                        for r in summary if isinstance(r, (list, tuple)) and r)
        parts.append(f'<h3>Data checks</h3><table class="kv">{srows}</table>')
    body = f'<div class="two inner">{"".join(parts[:2])}</div>{"".join(parts[2:])}'
    if cur and cur.html:
        body += f'<div class="curation">{cur.html}</div>'  # Tailor's own curate report, trusted
    elif not summary:
        body += '<p class="muted">No data check report was attached to this run.</p>'
    return _section("data", "Data", body)


def _label_counts(counts) -> str:
    if not isinstance(counts, dict) or not counts:
        return ""
    if all(isinstance(x, dict) for x in counts.values()):  # per split: {split: {label: n}}
        labels = list(dict.fromkeys(l for c in counts.values() for l in c))
        head = "".join(f"<th class='num'>{esc(l)}</th>" for l in labels)
        rows = "".join(f"<tr><th>{esc(s)}</th>" + "".join(
            f"<td class='num'>{esc(fmt.count(c.get(l)))}</td>" for l in labels) + "</tr>"
            for s, c in counts.items())
        return f'<table class="grid small"><thead><tr><th>split</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
    total = sum(fmt.num(x) or 0 for x in counts.values()) or 1
    bars = "".join(
        f'<div class="lc"><span class="lc-name" title="{esc(l)}">{esc(fmt.clip(l, 24))}</span>'
        f'<span class="lc-bar"><i style="width:{100 * (fmt.num(n) or 0) / total:.1f}%"></i></span>'
        f'<span class="lc-n">{esc(fmt.count(n))} · {(fmt.num(n) or 0) / total:.0%}</span></div>'
        for l, n in counts.items())
    return f'<div class="label-counts"><div class="muted">label balance</div>{bars}</div>'


def manifest(v: View) -> str:
    exp = v.results.experiment.model_dump(mode="json")
    text = json.dumps({"experiment": exp, "manifest": v.results.manifest}, indent=2, ensure_ascii=False, default=str)
    return _section("manifest", "Run manifest",
                    f"<details><summary>Versions, seeds, data hashes and settings of this run</summary>"
                    f"<pre>{esc(text)}</pre></details>")
