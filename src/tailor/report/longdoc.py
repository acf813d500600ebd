"""The report's long-document section: every arm on the same rows with the model calls and tokens
each question cost, and for PEARL (Sun et al. 2023) arms the plans: validity, retries, fallbacks,
the mined action list and the demonstrations; for extraction, the context it saved."""

from __future__ import annotations


def longdoc_section(v) -> dict | None:
    """The context of templates/longdoc.html."""
    if not any(a.longdoc is not None for a in v.ok):
        return None
    rows = []
    for a in v.ok:
        d = a.longdoc
        rows.append({"a": a, "d": d, "calls": d.calls_per_question if d else 1.0,
                     "tokens": d.tokens_per_question if d else
                     a.cost.prompt_tokens_per_request + a.cost.completion_tokens_per_request})
    # each detail block renders the measurements an arm brought, whatever its method is called
    return {"primary": v.primary, "rows": rows,
            "pearl": [(a.name, a.longdoc.model_dump()) for a in v.ok if a.longdoc and getattr(a.longdoc, "actions", None)],
            "extract": [(a.name, a.longdoc.model_dump()) for a in v.ok
                        if a.longdoc and getattr(a.longdoc, "extraction", None)]}
