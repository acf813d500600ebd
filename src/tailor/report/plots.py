"""Inline SVG charts written by hand, so the report needs no plotting library and no
network: a labelled scatter, grouped horizontal bars, and an interval (dot + whisker) plot.
All text goes through `esc`: labels come from user data. A chart is returned as `Markup`, HTML
Tailor wrote, which the report's templates place as it is."""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup

from .fmt import esc

PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
           "#65a30d", "#4b5563", "#ea580c")
AXIS, GRID, INK, MUTED = "#9ca3af", "#eef0f3", "#1f2937", "#6b7280"
CHAR_W = 6.6  # average glyph width in px at the 12px chart font, for layout estimates


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass
class Point:
    label: str
    x: float
    y: float
    color: str
    highlight: bool = False  # the recommended arm: ringed and starred


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, t = [], first
    while t <= hi + step * 1e-9:
        out.append(round(t, 12))
        t += step
    return out


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
                  f'role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg" '
                  f'font-size="12" fill="{INK}">' + "".join(body) + "</svg>")   # str + str, then Markup


def scatter(points: list[Point], x_title: str, y_title: str, log_x: bool | None = None,
            frontier: bool = True, width: int = 600, height: int = 360) -> Markup:
    """Quality (y) against cost (x), one labelled dot per arm. `log_x=None` picks a log axis
    when the costs span more than 20x. `frontier` draws the cheapest-for-its-quality arms."""
    pts = [p for p in points if p.x is not None and p.y is not None]
    if not pts:
        return Markup('<p class="muted">No arm has both a cost and a quality figure to plot.</p>')
    left, right, top, bottom = 64, 28, 18, 50
    pw, ph = width - left - right, height - top - bottom
    xs, ys = [p.x for p in pts], [p.y for p in pts]
    if log_x is None:
        log_x = min(xs) > 0 and max(xs) / min(xs) > 20
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_lo, x_hi = fx(min(xs)), fx(max(xs))
    pad = (x_hi - x_lo) * 0.08 or (abs(x_hi) * 0.5 if not log_x else 0.5) or 1.0
    x_lo, x_hi = x_lo - pad, x_hi + pad
    if not log_x and min(xs) >= 0:
        x_lo = max(x_lo, 0.0)
    y_lo, y_hi = min(ys), max(ys)
    ypad = (y_hi - y_lo) * 0.12 or 0.05
    y_lo, y_hi = y_lo - ypad, y_hi + ypad
    if min(ys) >= 0:
        y_lo = max(y_lo, 0.0)
    if max(ys) <= 1:
        y_hi = min(y_hi, 1.0)

    def sx(v):
        return left + (fx(v) - x_lo) / (x_hi - x_lo) * pw

    def sy(v):
        return top + ph - (v - y_lo) / (y_hi - y_lo) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="{GRID}"/>']
    for t in nice_ticks(y_lo, y_hi):
        if y_lo <= t <= y_hi:
            y = sy(t)
            body.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                        f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">'
                        f'{_tick_label(t)}</text>')
    x_ticks = ([10 ** e for e in range(math.floor(x_lo), math.ceil(x_hi) + 1)] if log_x
               else nice_ticks(x_lo, x_hi))
    if log_x and len(x_ticks) < 3:  # a short log range: add 2x and 5x ticks so it reads
        x_ticks = sorted(m * t for t in x_ticks for m in (1, 2, 5))
    for t in x_ticks:
        if x_lo <= fx(t) <= x_hi:
            x = sx(t)
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="{GRID}"/>'
                        f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle" fill="{MUTED}">'
                        f'{_tick_label(t)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" fill="{MUTED}">'
                f'{esc(x_title)}{" (log scale)" if log_x else ""}</text>'
                f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle" '
                f'fill="{MUTED}">{esc(y_title)}</text>')
    if frontier and len(pts) > 1:
        best, line = -math.inf, []
        for p in sorted(pts, key=lambda p: (p.x, -p.y)):
            if p.y > best:
                best = p.y
                line.append(f"{sx(p.x):.1f},{sy(p.y):.1f}")
        if len(line) > 1:
            body.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{AXIS}" '
                        f'stroke-width="1.5" stroke-dasharray="5 4"/>')
    # dots are obstacles for labels too, so a label never hides another arm's dot
    placed = [(sx(p.x) - 6, sy(p.y) - 6, sx(p.x) + 6, sy(p.y) + 6) for p in pts]
    labels = []
    for p in sorted(pts, key=lambda p: p.highlight):  # the highlighted dot is drawn last, on top
        x, y = sx(p.x), sy(p.y)
        r = 7 if p.highlight else 5.5
        if p.highlight:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r + 4}" fill="none" '
                        f'stroke="{p.color}" stroke-width="2" opacity="0.45"/>')
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{p.color}" stroke="#fff" '
                    f'stroke-width="1.5"><title>{esc(p.label)}: {p.y:.3f} at {_tick_label(p.x)}'
                    f'</title></circle>')
    for p in sorted(pts, key=lambda p: (not p.highlight, -p.y)):  # the recommendation's label first
        text = ("★ " if p.highlight else "") + p.label
        labels.append(_label(text, sx(p.x), sy(p.y), 7 if p.highlight else 5.5, p.color,
                             left, left + pw, top, top + ph, placed, p.highlight))
    body.extend(labels)
    return _svg(width, height, body, f"{y_title} against {x_title}")


def _label(text, x, y, r, c, x_min, x_max, y_min, y_max, placed, bold) -> str:
    """Put a point's label beside it where it overlaps no earlier label or dot (greedy: right,
    then left, then further up or down); a label moved off its dot gets a thin leader line."""
    w = len(text) * CHAR_W + (8 if bold else 0)
    choice = None
    for dy in (0, -14, 14, -28, 28, -42, 42, -56, 56):
        for right_side in (True, False):
            tx = x + r + 6 if right_side else x - r - 6
            box_x = tx if right_side else tx - w
            if box_x < x_min + 2 or box_x + w > x_max - 2:
                continue
            ty = y + 4 + dy
            if ty - 11 < y_min or ty + 3 > y_max:
                continue
            box = (box_x, ty - 11, box_x + w, ty + 3)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                choice = (tx, ty, right_side, box)
                break
        if choice:
            break
    if choice is None:  # crowded: keep it beside the dot even if it overlaps
        right_side = x + r + 6 + w <= x_max
        tx = x + r + 6 if right_side else x - r - 6
        ty = min(max(y + 4, y_min + 12), y_max - 4)
        choice = (tx, ty, right_side, (tx if right_side else tx - w, ty - 11, (tx + w if right_side else tx), ty + 3))
    tx, ty, right_side, box = choice
    placed.append(box)
    leader = ""
    if abs(ty - (y + 4)) > 1:
        lx = box[0] - 1 if right_side else box[2] + 1
        leader = (f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{lx:.1f}" y2="{ty - 4:.1f}" stroke="{c}" '
                  f'stroke-width="0.8" opacity="0.7"/>')
    anchor = "start" if right_side else "end"
    weight = ' font-weight="600"' if bold else ""
    return (f'{leader}<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}"{weight} '
            f'paint-order="stroke" stroke="#fff" stroke-width="3">{esc(text)}</text>')


def hbars(rows: list[tuple[str, list[float | None]]], series: list[tuple[str, str]],
          fmt, title: str, width: int = 600) -> Markup:
    """Grouped horizontal bars: one group per row label, one bar per series (name, colour)."""
    values = [v for _, vs in rows for v in vs if v is not None]
    if not values:
        return Markup('<p class="muted">No figures to plot.</p>')
    label_w = min(200, max(60, int(max(len(r[0]) for r in rows) * CHAR_W) + 16))
    bar_h, gap = 12, 4
    group_h = len(series) * (bar_h + gap) + 12
    top, left, right = 28, label_w, 80
    height = top + group_h * len(rows) + 8
    pw = width - left - right
    hi = max(values) or 1.0
    body = []
    lx = left
    for name, c in series:  # legend
        body.append(f'<rect x="{lx}" y="6" width="12" height="12" rx="2" fill="{c}"/>'
                    f'<text x="{lx + 17}" y="16" fill="{MUTED}">{esc(name)}</text>')
        lx += 17 + len(name) * CHAR_W + 18
    for i, (label, vs) in enumerate(rows):
        gy = top + i * group_h
        mid = gy + (group_h - 12) / 2
        body.append(f'<text x="{left - 10}" y="{mid + 4:.1f}" text-anchor="end">{esc(label)}</text>')
        for j, ((name, c), v) in enumerate(zip(series, vs)):
            y = gy + j * (bar_h + gap)
            if v is None:
                body.append(f'<text x="{left + 4}" y="{y + 10}" fill="{MUTED}">n/a</text>')
                continue
            w = max(1.0, v / hi * pw)
            body.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" fill="{c}">'
                        f'<title>{esc(label)} {esc(name)}: {esc(fmt(v))}</title></rect>'
                        f'<text x="{left + w + 6:.1f}" y="{y + 10}" fill="{MUTED}">{esc(fmt(v))}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{top - 4}" y2="{height - 8}" stroke="{AXIS}"/>')
    return _svg(width, height, body, title)


def intervals(rows: list[tuple[str, float, float | None, float | None, bool]], title: str,
              width: int = 600, axis: str = "change vs base model (percentage points)") -> Markup:
    """Dot-and-whisker plot of signed changes (in 0-1 units, drawn as percentage points) around
    zero; rows are (label, delta, ci_low, ci_high, flagged). Flagged rows are drawn in red."""
    vals = [v for r in rows for v in r[1:4] if v is not None]
    if not vals:
        return Markup('<p class="muted">No figures to plot.</p>')
    label_w = min(240, max(80, int(max(len(r[0]) for r in rows) * CHAR_W) + 16))
    left, right, top, row_h = label_w, 24, 12, 26
    height = top + row_h * len(rows) + 36
    pw = width - left - right
    lim = max(abs(v) for v in vals) * 1.15 or 0.01
    lo, hi = -lim, lim

    def sx(v):
        return left + (v - lo) / (hi - lo) * pw

    body = []
    for t in nice_ticks(lo * 100, hi * 100, 6):
        x = sx(t / 100)
        if left <= x <= left + pw:
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 30}" stroke="{GRID}"/>'
                        f'<text x="{x:.1f}" y="{height - 16}" text-anchor="middle" fill="{MUTED}">'
                        f'{t:+g}</text>')
    body.append(f'<line x1="{sx(0):.1f}" x2="{sx(0):.1f}" y1="{top}" y2="{height - 30}" stroke="{AXIS}"/>'
                f'<text x="{left + pw / 2}" y="{height - 2}" text-anchor="middle" fill="{MUTED}">'
                f'{esc(axis)}</text>')
    for i, (label, delta, ci_lo, ci_hi, flagged) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        c = "#dc2626" if flagged else "#2563eb"
        body.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{esc(label)}</text>')
        if ci_lo is not None and ci_hi is not None:
            body.append(f'<line x1="{sx(ci_lo):.1f}" x2="{sx(ci_hi):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                        f'stroke="{c}" stroke-width="2" opacity="0.6"/>')
        if delta is not None:
            body.append(f'<circle cx="{sx(delta):.1f}" cy="{y:.1f}" r="5" fill="{c}">'
                        f'<title>{esc(label)}: {100 * delta:+.1f} pt</title></circle>')
    return _svg(width, height, body, title)
