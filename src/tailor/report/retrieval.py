"""The report's retrieval section: for every arm that read passages, how well the retriever found
the gold passage, what the context did to each row against the closed-book zero-shot arm
(helped, hurt), what it cost (prompt tokens, retrieval time, index size), citations and
abstention for generate tasks, and the closed-book probe of trained arms."""

from __future__ import annotations

from . import fmt
from .fmt import DASH, esc
from .plots import hbars


def _ms(value) -> str:
    return DASH if value is None else f"{value:.1f} ms"


def _share(value) -> str:
    return DASH if value is None else fmt.pct(value)


def retrieval_section(v) -> str:
    from .sections import _section
    arms = [a for a in v.ok if a.retrieval is not None or a.versus_closed_book is not None]
    if not any(a.retrieval is not None for a in arms):
        return ""
    rows = []
    for a in arms:
        r, h = a.retrieval, a.versus_closed_book or {}
        closed = (r.closed_book or {}).get(v.primary) if r else None
        rows.append(
            f"<tr><td>{esc(a.name)}</td><td>{esc(r.retriever if r else 'none (closed book)')}</td>"
            f"<td>{fmt.num(a.metrics.get(v.primary)):.3f}</td>"
            f"<td>{DASH if closed is None else f'{closed:.3f}'}</td>"
            f"<td>{_share(r.recall_at_k) if r else DASH}</td><td>{_share(r.mrr) if r else DASH}</td>"
            f"<td>{esc(h.get('helped', DASH))}</td><td>{esc(h.get('hurt', DASH))}</td>"
            f"<td>{_share(h.get('erased_share'))}</td>"
            f"<td>{a.cost.prompt_tokens_per_request:.0f}</td><td>{_ms(r.ms_per_query) if r else DASH}</td>"
            f"<td>{esc(r.passages_dropped) if r else DASH}</td></tr>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>retriever</th>'
             f"<th>{esc(v.primary)}</th><th>closed-book probe</th><th>recall@k</th><th>MRR</th>"
             "<th>helped</th><th>hurt</th><th>right answers erased</th><th>prompt tokens / request</th>"
             "<th>retrieval / query</th><th>passages dropped</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    baseline = next((a.versus_closed_book["baseline"] for a in arms if a.versus_closed_book), None)
    plot = hbars([(a.name, [_frac(a, "helped"), _frac(a, "hurt")]) for a in arms if a.versus_closed_book],
                 [("helped (wrong → right)", "#2a9d8f"), ("hurt (right → wrong)", "#e76f51")],
                 lambda x: fmt.pct(x), f"rows helped and hurt against {baseline}") if baseline else ""
    extra = _grounding(arms)
    kb = next(a.retrieval for a in arms if a.retrieval is not None)
    note = (f"Knowledge base <code>{esc(kb.kb)}</code>: {kb.kb_chunks:,} chunks, {kb.kb_bytes / 1e6:.1f} MB, dense "
            f"search {esc(kb.dense)}. Helped and hurt compare each row with the closed-book zero-shot arm "
            f"({esc(baseline or 'none in this ladder')}): context can erase a small model's right answers, which an "
            "average hides. The closed-book probe scores a trained arm again without passages: how much of its "
            "answer it memorised. Meta's guide to adapting LLMs puts retrieval before fine-tuning when the "
            "knowledge changes or answers must be traced to a source; RAFT (Zhang et al. 2024) trains on "
            "retrieved context with distractors.")
    return _section("retrieval", "Retrieval and grounding", table + plot + extra, note)


def _frac(arm, key: str) -> float | None:
    h = arm.versus_closed_book
    return h[key] / h["rows"] if h and h.get("rows") else None


def _grounding(arms) -> str:
    rows = [a for a in arms if a.retrieval is not None and (a.retrieval.citations is not None
                                                              or a.retrieval.unanswerable is not None)]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{esc(a.name)}</td><td>{esc(a.retrieval.citations if a.retrieval.citations is not None else DASH)}</td>"
        f"<td>{_share(a.retrieval.citation_precision)}</td><td>{_share(a.retrieval.citation_recall)}</td>"
        f"<td>{_share(a.retrieval.abstained_when_unanswerable)}</td>"
        f"<td>{_share(a.retrieval.abstained_when_answerable)}</td></tr>" for a in rows)
    return ('<p class="note">A citation [n] counts when passage n holds the gold answer (as whole words) or half '
            "of its key words; abstention: an unanswerable row must get the task's no-answer output.</p>"
            '<table class="grid"><thead><tr><th>arm</th><th>citations</th><th>citation precision</th>'
            "<th>citation recall</th><th>abstained when unanswerable</th><th>abstained when answerable</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")
