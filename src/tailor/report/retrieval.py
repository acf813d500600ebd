"""The report's retrieval section: for every arm that read passages, how well the retriever found
the gold passage, what the context did to each row against the closed-book zero-shot arm
(helped, hurt), what it cost (prompt tokens, retrieval time, index size), citations and
abstention for generate tasks, and the closed-book probe of trained arms."""

from __future__ import annotations

from . import fmt
from .plots import hbars


def retrieval_section(v) -> dict | None:
    """The context of templates/retrieval.html."""
    arms = [a for a in v.ok if a.retrieval is not None or a.versus_closed_book is not None]
    if not any(a.retrieval is not None for a in arms):
        return None
    rows = [(a, a.retrieval, a.versus_closed_book or {}, (a.retrieval.closed_book or {}).get(v.primary) if a.retrieval
             else None) for a in arms]
    baseline = next((a.versus_closed_book["baseline"] for a in arms if a.versus_closed_book), None)
    plot = hbars([(a.name, [_frac(a, "helped"), _frac(a, "hurt")]) for a in arms if a.versus_closed_book],
                 [("helped (wrong → right)", "#2a9d8f"), ("hurt (right → wrong)", "#e76f51")],
                 lambda x: fmt.pct(x), f"rows helped and hurt against {baseline}") if baseline else ""
    grounding = [a for a in arms if a.retrieval is not None and (a.retrieval.citations is not None
                                                                  or a.retrieval.unanswerable is not None)]
    return {"rows": rows, "primary": v.primary, "plot": plot, "grounding": grounding, "baseline": baseline,
            "kb": next(a.retrieval for a in arms if a.retrieval is not None)}


def _frac(arm, key: str) -> float | None:
    h = arm.versus_closed_book
    return h[key] / h["rows"] if h and h.get("rows") else None
