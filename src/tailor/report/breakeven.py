"""The report's break-even section (tailor.breakeven): each arm's monthly cost against traffic,
training paid off over 6 months, on log axes, and the volumes at which each weight arm becomes
cheaper than each prompting arm over 3, 6 and 12 months."""

from __future__ import annotations

import math

from markupsafe import Markup

from ..breakeven import sentence
from .fmt import esc
from .plots import AXIS, GRID, MUTED, _svg, _tick_label

MONTHS = 6


def _costs(v):
    """(name, colour, train cost, cost per 1k) of the priced arms."""
    return [(a.name, v.colors[a.name], a.cost.train_cost, a.cost.cost_per_1k_requests)
            for a in v.ok if a.cost.cost_per_1k_requests > 0]


def _plot(arms, lo: float, hi: float, width: int = 600, height: int = 340) -> Markup:
    left, right, top, bottom = 70, 130, 16, 48
    pw, ph = width - left - right, height - top - bottom
    xs = [lo * (hi / lo) ** (i / 60) for i in range(61)]
    monthly = {n: [t / MONTHS + r / 1000 * c for r in xs] for n, _, t, c in arms}
    ymin = min(min(ys) for ys in monthly.values())
    ymax = max(max(ys) for ys in monthly.values())
    ly0, ly1 = math.log10(max(ymin, 1e-6)), math.log10(max(ymax, ymin * 10, 1e-5))

    def sx(r):
        return left + (math.log10(r) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * pw

    def sy(y):
        return top + ph - (math.log10(max(y, 1e-6)) - ly0) / (ly1 - ly0) * ph

    body = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        r = 10 ** e
        if lo <= r <= hi:
            body.append(f'<line x1="{sx(r):.1f}" x2="{sx(r):.1f}" y1="{top}" y2="{top + ph}" stroke="{GRID}"/>'
                        f'<text x="{sx(r):.1f}" y="{top + ph + 16}" text-anchor="middle" fill="{MUTED}">'
                        f'{_tick_label(r)}</text>')
    for e in range(math.floor(ly0), math.ceil(ly1) + 1):
        y = 10 ** e
        if ly0 <= e <= ly1:
            body.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="{GRID}"/>'
                        f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" fill="{MUTED}">${_tick_label(y)}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="{AXIS}"/>'
                f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" fill="{MUTED}">requests per month</text>')
    for name, colour, _, _ in arms:
        pts = " ".join(f"{sx(r):.1f},{sy(y):.1f}" for r, y in zip(xs, monthly[name]))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2">'
                    f"<title>{esc(name)}</title></polyline>"
                    f'<text x="{left + pw + 6}" y="{sy(monthly[name][-1]) + 4:.1f}" fill="{colour}">{esc(name)}</text>')
    return _svg(width, height, body, f"monthly cost against requests per month, training over {MONTHS} months")


def breakeven_section(v) -> dict | None:
    """The context of templates/breakeven.html."""
    rows = v.results.break_even
    arms = _costs(v)
    if not rows or len(arms) < 2:
        return None
    per_month = v.results.experiment.requests_per_month or 100_000
    volumes = [x for r in rows for x in r.requests_per_month.values() if x]
    lo = max(1.0, min([per_month / 100, *volumes]) / 3)
    hi = max([per_month * 10, *volumes]) * 3
    return {"sentence": sentence(rows, v.results.experiment.requests_per_month), "plot": _plot(arms, lo, hi),
            "rows": rows}
