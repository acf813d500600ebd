"""The report's section for arms trained from graders' rewards (GRPO): each reward's mean over the
first and the last quarter of the training steps, kept apart by kind, with the answers' length.
A format reward that rises while correctness stays flat is a format fix, not a reasoning gain;
this is where the two are told apart. Read from the training history the arm's fit returned."""

from __future__ import annotations


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def rewards_section(v) -> dict | None:
    """The context of templates/rewards.html."""
    arms = [a for a in v.ok if (a.train or {}).get("rewards") and (a.train or {}).get("history")]
    if not arms:
        return None
    rows = []
    for a in arms:
        history = a.train["history"]
        q = max(1, len(history) // 4)
        first, last = history[:q], history[-q:]
        for r in a.train["rewards"] + [{"name": "total", "kind": "weighted sum", "weight": None}]:
            key = "reward" if r["name"] == "total" else f"reward/{r['name']}"
            start, end = _mean(first, key), _mean(last, key)
            rows.append({"arm": a.name, "name": r["name"], "kind": r.get("kind") or "", "weight": r.get("weight"),
                         "start": start, "end": end, "change": None if start is None or end is None else end - start,
                         "length_start": _mean(first, "response_length"), "length_end": _mean(last, "response_length"),
                         "steps": len(history)})
    return {"rows": rows}
