"""Number and text formatting for the report. Every function accepts None / NaN / junk and
returns a dash, because results.json of a failed or partial arm has holes."""

from __future__ import annotations

import html
import math

DASH = "—"
# Metrics where a smaller value is better; everything else in `metrics` is higher-is-better.
LOWER_IS_BETTER = {"ece", "brier", "loss", "perplexity", "ter", "wer", "cer"}


def metric_label(key: str) -> str:
    """Column header for a metric: readable, with an arrow where lower is better."""
    label = {"macro_f1": "macro F1", "ece": "ECE", "rougeL": "ROUGE\u2011L", "rouge1": "ROUGE\u20111",
             "rouge2": "ROUGE\u20112", "bleu": "BLEU", "chrf": "chrF", "rougeS4": "ROUGE\u2011S4",
             "rougeS": "ROUGE\u2011S*"}.get(key, key.replace("_", " "))
    return label + (" ↓" if key in LOWER_IS_BETTER else "")


def metric_title(key: str) -> str:
    explain = {"ece": "expected calibration error: how far confidence is from accuracy",
               "macro_f1": "F1 averaged over labels, each label weighted equally"}.get(key, key)
    return explain + ("; lower is better" if key in LOWER_IS_BETTER else "; higher is better")


def esc(value) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes): for the SVG charts drawn
    in Python; the templates escape what they show themselves."""
    return html.escape("" if value is None else str(value), quote=True)


def num(value) -> float | None:
    """A finite float, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def metric(value) -> str:
    x = num(value)
    if x is None:
        return DASH
    return f"{x:.3f}" if abs(x) <= 1.5 else f"{x:,.2f}"


def pct(value, digits: int = 1) -> str:
    x = num(value)
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def points(value) -> str:
    """A 0-1 difference as signed percentage points."""
    x = num(value)
    return DASH if x is None else f"{100 * x:+.1f} pt"


def count(value, digits: int = 0) -> str:
    x = num(value)
    if x is None:
        return DASH
    return f"{x:,.{digits}f}" if digits or x != int(x) else f"{int(x):,}"


def tokens(value) -> str:
    x = num(value)
    if x is None:
        return DASH
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def seconds(value) -> str:
    x = num(value)
    if x is None:
        return DASH
    if x == 0:
        return "0"
    if x < 1:
        return f"{x * 1000:.0f} ms" if x >= 0.01 else f"{x * 1000:.1f} ms"
    if x < 60:
        return f"{x:.1f} s"
    if x < 3600:
        return f"{int(x // 60)}m {int(x % 60):02d}s"
    return f"{int(x // 3600)}h {int(x % 3600 // 60):02d}m"


def si(value) -> str:
    """1234567 -> 1.23M (parameter counts)."""
    x = num(value)
    if x is None:
        return DASH
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.0f}"


def size(value) -> str:
    """Bytes -> 12.3 MB (decimal units, as disks and downloads show them)."""
    x = num(value)
    if x is None:
        return DASH
    for unit, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= s:
            return f"{x / s:.3g} {unit}"
    return f"{x:.0f} B"


def money(value) -> str:
    """A cost in the experiment's price unit; enough digits to tell cheap arms apart."""
    x = num(value)
    if x is None:
        return DASH
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def as_text(value) -> str:
    """An example input or target as plain text: chat messages become 'role: content' lines."""
    if value is None:
        return ""
    if isinstance(value, list):
        lines = []
        for m in value:
            if isinstance(m, dict):
                lines.append(f"{m.get('role', '?')}: {m.get('content', '')}")
            else:
                lines.append(str(m))
        return "\n".join(lines)
    return str(value)
