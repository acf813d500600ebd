"""The report's calibration section: for each arm with `calibrate` on (tailor.calibration), the
label prior it divided out and the share of each predicted label on the test rows before and
after, next to the gold shares, so a team sees whether calibration removed a lean or added one."""

from __future__ import annotations


def _shares(d: dict, labels: list[str]) -> str:
    return " / ".join(f"{d.get(label, 0):.2f}" for label in labels)


def calibration_section(v) -> dict | None:
    """The context of templates/calibration.html."""
    arms = [a for a in v.ok if a.calibration]
    if not arms:
        return None
    labels = list(arms[0].calibration.get("prior") or {})
    rows = []
    for a in arms:
        c, gold = a.calibration, None
        if a.confusion and a.labels:   # the gold shares: the confusion matrix's row sums
            totals = [sum(r) for r in a.confusion]
            n = sum(totals) or 1
            gold = {label: t / n for label, t in zip(a.labels, totals)}
        rows.append({"name": a.name, "method": c.get("method"), "prior": _shares(c.get("prior") or {}, labels),
                     "before": _shares(c.get("shares_before") or {}, labels),
                     "after": _shares(c.get("shares_after") or {}, labels),
                     "gold": _shares(gold, labels) if gold else "—", "changed": c.get("changed", 0)})
    return {"labels": labels, "rows": rows}
