"""The report's calibration section: for each arm with `calibrate` on (tailor.calibration), the
label prior it divided out and the share of each predicted label on the test rows before and
after, next to the gold shares, so a team sees whether calibration removed a lean or added one."""

from __future__ import annotations

from .fmt import esc


def _shares(d: dict, labels: list[str]) -> str:
    return " / ".join(f"{d.get(label, 0):.2f}" for label in labels)


def calibration_section(v) -> str:
    from .sections import _section
    arms = [a for a in v.ok if a.calibration]
    if not arms:
        return ""
    labels = list(arms[0].calibration.get("prior") or {})
    rows = []
    for a in arms:
        c, gold = a.calibration, None
        if a.confusion and a.labels:   # the gold shares: the confusion matrix's row sums
            totals = [sum(r) for r in a.confusion]
            n = sum(totals) or 1
            gold = {label: t / n for label, t in zip(a.labels, totals)}
        rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(c.get('method'))}</td>"
                    f"<td>{_shares(c.get('prior') or {}, labels)}</td><td>{_shares(c.get('shares_before') or {}, labels)}</td>"
                    f"<td>{_shares(c.get('shares_after') or {}, labels)}</td>"
                    f"<td>{_shares(gold, labels) if gold else '—'}</td><td>{c.get('changed', 0):,}</td></tr>")
    head = " / ".join(esc(label) for label in labels)
    table = ('<table class="grid"><thead><tr><th>arm</th><th>prior from</th>'
             f"<th>label prior ({head})</th><th>predicted before</th><th>predicted after</th><th>gold</th>"
             f"<th>answers changed</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    note = ("Contextual calibration (Zhao et al. 2021) divides out the label prior the prompt shows on content-free "
            "inputs; batch calibration (Zhou et al. 2023) the prior over training inputs. Measured when the arm is "
            "fitted and saved in its recipe, so serving and batch prediction apply the same correction. Shares are "
            "of the test rows; compare with the uncalibrated arm's accuracy, which is not always lower.")
    return _section("calibration", "Calibration: the label prior divided out", table, note)
