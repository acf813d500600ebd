"""The report's long-document section: every arm on the same rows with the model calls and tokens
each question cost, and for PEARL (Sun et al. 2023) arms the plans: validity, retries, fallbacks,
the mined action list and the demonstrations; for extraction, the context it saved."""

from __future__ import annotations

from . import fmt
from .fmt import DASH, esc


def _n(value, digits: int = 1) -> str:
    x = fmt.num(value)
    return DASH if x is None else f"{x:,.{digits}f}"


def longdoc_section(v) -> str:
    from .sections import _section
    if not any(a.longdoc is not None for a in v.ok):
        return ""
    rows = []
    for a in v.ok:
        d = a.longdoc
        calls = d.calls_per_question if d else 1.0
        tokens = d.tokens_per_question if d else a.cost.prompt_tokens_per_request + a.cost.completion_tokens_per_request
        rows.append(
            f"<tr><td>{esc(a.name)}</td><td>{esc(a.method)}</td><td>{fmt.metric(a.metrics.get(v.primary))}</td>"
            f"<td>{fmt.metric(a.metrics.get('exact_match'))}</td><td>{_n(calls)}</td><td>{_n(tokens, 0)}</td>"
            f"<td>{fmt.pct(d.plans_valid) if d else DASH}</td><td>{fmt.pct(d.plans_valid_first_try) if d else DASH}</td>"
            f"<td>{_n(d.mean_retries, 2) if d else DASH}</td>"
            f"<td>{esc(d.plan_fallbacks) if d and d.plan_fallbacks is not None else DASH}</td>"
            f"<td>{_n(d.context_tokens_per_question, 0) if d else DASH}</td>"
            f"<td>{fmt.pct(d.context_saved) if d else DASH}</td><td>{esc(d.planner) if d and d.planner else DASH}</td></tr>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>method</th>'
             f"<th>{esc(fmt.metric_label(v.primary))}</th><th>exact match</th><th>model calls / question</th>"
             "<th>tokens / question</th><th>plans valid</th><th>valid first try</th><th>mean retries</th>"
             "<th>fallback plans</th><th>context tokens / question</th><th>context saved</th><th>planner</th>"
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    # each detail block renders the measurements an arm brought, whatever its method is called
    details = "".join(_pearl(a) for a in v.ok if a.longdoc and getattr(a.longdoc, "actions", None))
    details += "".join(_extract(a) for a in v.ok if a.longdoc and getattr(a.longdoc, "extraction", None))
    note = ("Every arm on the same test rows. Model calls and tokens count every engine request a question needed: "
            "for pearl the planner's attempts (a plan that fails the parser goes back with the error, counted as a "
            "retry; one still invalid runs the fallback plan, counted) and one call per executed step. PEARL (Sun et "
            "al. 2023) mines actions from training questions, plans per question and executes the plan over the "
            "document; extraction replaces the document with schema-checked JSON records (lossy compression), and "
            "context saved is 1 − shown context tokens / document tokens. Arms without their own row of counts make "
            "one call per question.")
    return _section("longdoc", "Long documents: plans, calls and compression", table + details, note)


def _pearl(a) -> str:
    d = a.longdoc.model_dump()
    actions = "".join(f"<li><code>{esc(x['name'])}({esc(', '.join(x['params']))})</code>: {esc(x['meaning'])} "
                      f"<span class=\"muted\">({esc(x.get('source'))}{_votes(x)})</span></li>"
                      for x in d.get("actions", []))
    m = d.get("mining") or {}
    mining = (f"mined from {m.get('questions', 0)} training questions: {m.get('parsed', 0)} well-formed proposals, "
              f"{m.get('unparsed', 0)} replies without one, {m.get('known', 0)} repeating a starting action, "
              f"{m.get('merged', 0)} duplicates merged, {m.get('kept', 0)} kept, {m.get('dropped', 0)} dropped")
    demo = d.get("demonstrations") or {}
    demos = (f"plan demonstrations: {esc(demo.get('source', DASH))} ({esc(demo.get('reached_answer', 0))} of "
             f"{esc(demo.get('questions', 0))} executed training plans reached the answer; {esc(demo.get('used', 0))} shown)")
    errors = "".join(f"<li><code>{esc(e)}</code></li>" for e in d.get("plan_errors") or [])
    plans = "".join(f"<pre>{esc(p)}</pre>" for p in d.get("example_plans") or [])
    return (f"<h3>{esc(a.name)}: actions</h3><ul>{actions}</ul><p class=\"note\">{esc(mining)}. {demos}. "
            f"Mean plan length {_n(d.get('mean_steps'))} steps; {esc(d.get('empty_step_outputs', 0))} empty step outputs."
            "</p>" + (f"<h3>commonest plan errors</h3><ul>{errors}</ul>" if errors else "")
            + (f"<h3>valid plans (first three)</h3>{plans}" if plans else ""))


def _votes(action: dict) -> str:
    return f", proposed for {action['votes']} questions" if action.get("votes") else ""


def _proposal(d: dict) -> str:
    p = d.get("proposal")
    if not p:
        return ""
    votes = p.get("votes") or {}
    fields = "".join(f"<li><code>{esc(n)}</code>: {esc(m)}"
                     + (f" (asked for by {esc(votes[n])})" if n in votes else "") + "</li>"
                     for n, m in (p.get("meanings") or {}).items())
    return (f"<p class=\"note\">The schema was proposed by {esc(p.get('model'))}, one field per training question "
            f"over {esc(p.get('documents'))} documents: of {esc(p.get('questions'))} replies, "
            f"{esc(p.get('not_fields'))} named no field and {esc(p.get('copied_example'))} repeated the worked "
            f"example; {esc(p.get('fields_kept'))} fields kept, {esc(p.get('over_limit'))} over the limit"
            + (", so the default schema ran" if p.get("fallback") else "")
            + ". It is unconfirmed: review the arm's proposed-schema.yaml and pass it as schema_file.</p>"
            + (f"<ul>{fields}</ul>" if fields and not p.get("fallback") else ""))


def _extract(a) -> str:
    d = a.longdoc.model_dump()
    x = d.get("extraction") or {}
    return (f"<h3>{esc(a.name)}: extraction</h3>" + _proposal(d) + f"<p class=\"note\">schema {esc(d.get('schema'))}: "
            f"{esc(x.get('documents', 0))} documents, {esc(x.get('calls', 0))} extraction calls "
            f"({esc(x.get('prompt_tokens', 0) + x.get('completion_tokens', 0))} tokens, built once per document), "
            f"{esc(x.get('records_valid', 0))} valid records of {esc(x.get('lines', 0))} output lines "
            f"({esc(x.get('invalid_json', 0))} not JSON, {esc(x.get('invalid_schema', 0))} rejected by the schema, "
            f"{esc(x.get('records_merged', 0))} merged by name); {_n(d.get('records_per_document'))} records per "
            f"document; {esc(x.get('documents_without_records', 0))} documents without a valid record fell back to "
            f"their opening; {esc(d.get('records_over_budget', 0))} records left out over the context budget.</p>")
