"""The report's learning-curve section (tailor.curves): each curved arm's metric against its
labelled training rows (log axis), with 95% intervals and the fitted saturating power law, and a
sentence on what twice the rows would give (an extrapolation)."""

from __future__ import annotations

import math

from markupsafe import Markup

from ..curves import sentence
from .fmt import esc
from .plots import AXIS, GRID, MUTED, _svg, _tick_label, nice_ticks


def _plot(curves, width: int = 600, height: int = 320) -> Markup:
    left, right, top, bottom = 60, 110, 16, 46
    pw, ph = width - left - right, height - top - bottom
    rows = [p.rows for _, _, c in curves for p in c.points]
    lo_x, hi_x = math.log2(min(rows)) - 0.3, math.log2(max(rows) * 2) + 0.3
    ys = [y for _, _, c in curves for p in c.points for y in (p.metric, p.lo, p.hi) if y is not None]
    ys += [c.predicted_at_double for _, _, c in curves if c.predicted_at_double is not None]
    lo_y, hi_y = min(ys), max(ys)
    pad = (hi_y - lo_y) * 0.1 or 0.05
    lo_y, hi_y = lo_y - pad, hi_y + pad

    def sx(n):
        return left + (math.log2(n) - lo_x) / (hi_x - lo_x) * pw

    def sy(y):
        return top + ph - (y - lo_y) / (hi_y - lo_y) * ph

    body = []
    for t in nice_ticks(lo_y, hi_y, 5):
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="{GRID}"/>'
                    f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="{MUTED}">{_tick_label(t)}</text>')
    for e in range(math.ceil(lo_x), math.floor(hi_x) + 1):
        body.append(f'<text x="{sx(2 ** e):.1f}" y="{top + ph + 16}" text-anchor="middle" fill="{MUTED}">'
                    f'{_tick_label(2 ** e)}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="{AXIS}"/>'
                f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" fill="{MUTED}">'
                "labelled training rows (log scale)</text>")
    for name, colour, c in curves:
        for p in c.points:
            if p.lo is not None:
                body.append(f'<line x1="{sx(p.rows):.1f}" x2="{sx(p.rows):.1f}" y1="{sy(p.lo):.1f}" y2="{sy(p.hi):.1f}" '
                            f'stroke="{colour}" opacity="0.6"/>')
            body.append(f'<circle cx="{sx(p.rows):.1f}" cy="{sy(p.metric):.1f}" r="4" fill="{colour}">'
                        f"<title>{esc(name)}: {p.metric:.3f} at {p.rows:,} rows</title></circle>")
        if c.fit:
            a, b, k = c.fit["a"], c.fit["b"], c.fit["c"]
            n0, n1 = c.points[0].rows, 2 * c.points[-1].rows
            xs = [n0 * (n1 / n0) ** (i / 40) for i in range(41)]
            pts = " ".join(f"{sx(n):.1f},{sy(a - b * n ** -k):.1f}" for n in xs)
            body.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-dasharray="4 3"/>')
        body.append(f'<text x="{left + pw + 6}" y="{sy(c.points[-1].metric) + 4:.1f}" fill="{colour}">{esc(name)}</text>')
    return _svg(width, height, body, "learning curves")


def curves_section(v) -> dict | None:
    """The context of templates/curves.html."""
    curves = [(a.name, v.colors[a.name], a.learning_curve) for a in v.ok if a.learning_curve]
    if not curves:
        return None
    return {"sentences": [sentence(name, c, v.primary) for name, _, c in curves], "plot": _plot(curves)}
