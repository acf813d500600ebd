"""The curation section of the HTML report: self-contained (inline style and SVG, no assets)."""

from __future__ import annotations

import html

STYLE = """<style>
.tailor-curation{font:14px/1.45 system-ui,sans-serif;color:#222}
.tailor-curation table{border-collapse:collapse;margin:.4em 0 1em}
.tailor-curation td,.tailor-curation th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
.tailor-curation th{background:#f4f4f4}
.tailor-curation .block{color:#b00020;font-weight:600}
.tailor-curation .ok{color:#1b5e20}
.tailor-curation .mono{font-family:ui-monospace,monospace;font-size:12px}
.tailor-curation .muted{color:#666}
</style>"""


def render_section(report) -> str:
    c = report.counts()
    parts = [f'<section class="tailor-curation">{STYLE}<h2>Data curation: {escape(report.task["name"])}</h2>']
    reasons = report.blocking()
    if reasons:
        parts.append("".join(f'<p class="block">&#9888; {escape(r)}</p>' for r in reasons))
    else:
        parts.append('<p class="ok">No leakage or conflicts above the limits.</p>')
    parts.append(_table(["finding", "value"], report.summary_rows()))
    parts.append(_duplicates(report))
    parts.append(_conflicts(report))
    if report.lengths:
        parts.append(_lengths(report.lengths))
    if report.balance and report.balance.get("kind") == "labels":
        parts.append(_balance(report.balance))
    if report.noise and report.noise["list"]:
        parts.append(_noise(report.noise))
    if report.augmentation and report.augmentation["samples"]:
        rows = [(s["source_id"], s["source"], s["input"]) for s in report.augmentation["samples"]]
        parts.append("<h3>Synthetic paraphrases (samples)</h3>" + _table(["source", "original", "paraphrase"], rows))
    parts.append(f'<p class="muted">{c["rows"]} rows checked in {report.timings.get("total", 0.0):.1f} s.</p></section>')
    return "\n".join(parts)


def _table(header, rows) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _duplicates(report) -> str:
    rows = []
    for split, d in report.duplicates.items():
        rows.append((split, d["rows"], d["exact"], d["near"]))
    leak = [(k.replace("-", " -> "), d["rows"], d["exact"], d["near"], f"{d['share']:.1%}")
            for k, d in report.leakage.items()]
    return ("<h3>Duplicates and leakage</h3>" + _table(["split", "rows", "exact duplicates", "near duplicates"], rows)
            + _table(["held-out rows matching an earlier split", "rows", "exact", "near", "share"], leak))


def _conflicts(report) -> str:
    groups = report.conflicts["list"][:15]
    if not groups:
        return ""
    rows = [(g["kind"], g["rows"], ", ".join(f"{k} x{v}" for k, v in g["targets"].items()), g["input"][:160])
            for g in groups]
    return "<h3>Conflicting targets (largest groups)</h3>" + _table(["input match", "rows", "targets", "example input"], rows)


def _lengths(L: dict) -> str:
    edges, counts = L["histogram"]["edges"], L["histogram"]["counts"]
    w, h, top = 480, 120, max(max(counts), 1)
    bw = w / len(counts)
    bars = []
    for i, n in enumerate(counts):
        bh = h * n / top
        over = edges[i] >= L["max_tokens"]
        bars.append(f'<rect x="{i * bw:.1f}" y="{h - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" '
                    f'fill="{"#c62828" if over else "#1565c0"}"><title>{edges[i]}-{edges[i + 1]} tokens: {n} rows</title></rect>')
    x = w * L["max_tokens"] / max(edges[-1], 1)
    svg = (f'<svg width="{w}" height="{h + 16}" viewBox="0 0 {w} {h + 16}" role="img">{"".join(bars)}'
           f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}" stroke="#000" stroke-dasharray="3"/>'
           f'<text x="0" y="{h + 13}" font-size="11">0</text>'
           f'<text x="{w - 40}" y="{h + 13}" font-size="11">{edges[-1]} tok</text></svg>')
    p = L["policies"]
    pol = [("drop", p["drop"]["rows"], p["drop"]["tokens_lost"], "row skipped"),
           ("truncate end", p["truncate_end"]["rows"], p["truncate_end"]["tokens_lost"],
            f"answer lost in {p['truncate_end']['answer_lost']}, cut in {p['truncate_end']['answer_cut']}"),
           ("truncate input", p["truncate_input"]["rows"], p["truncate_input"]["tokens_lost"],
            f"{p['truncate_input']['unsaveable']} cannot fit even with no input")]
    stats = [(k, *(L[k].get(q, "") for q in ("min", "p50", "p90", "p95", "p99", "max")))
             for k in ("prompt", "answer", "total")]
    return (f"<h3>Lengths in tokens (max {L['max_tokens']})</h3>{svg}"
            + _table(["", "min", "p50", "p90", "p95", "p99", "max"], stats)
            + _table(["policy for the " + str(L["over"]) + " rows over the limit", "rows", "tokens lost", "effect"], pol))


def _balance(b: dict) -> str:
    rows = []
    for r in b["labels"]:
        bar = f'<svg width="120" height="10"><rect width="{120 * r["share"]:.1f}" height="10" fill="#1565c0"/>' \
              f'<line x1="{120 * r["expected"]:.1f}" x2="{120 * r["expected"]:.1f}" y1="0" y2="10" stroke="#000"/></svg>'
        rows.append(f"<tr><td>{escape(r['label'])}</td><td>{r['count']}</td><td>{r['share']:.1%}</td>"
                    f"<td>{r['expected']:.1%}</td><td>{bar}</td><td>{'&#9888;' if r['flagged'] else ''}</td></tr>")
    return ("<h3>Label balance (train)</h3><table><tr><th>label</th><th>rows</th><th>share</th><th>expected</th>"
            "<th></th><th></th></tr>" + "".join(rows) + "</table>")


def _noise(n: dict) -> str:
    if n["kind"] == "disagreement":
        rows = [(c["id"], c["input"], c["label"], c["model_label"], f"{c['model_prob']:.2f}") for c in n["list"][:25]]
        head = ["id", "input", "label", "model says", "model p"]
    else:
        rows = [(c["id"], c["input"], c["label"], f"{c['mean_logprob']:.2f}") for c in n["list"][:25]]
        head = ["id", "input", "output", "mean log-prob"]
    note = f'<p class="muted">{escape(n.get("caveat", ""))}</p>' if n.get("caveat") else ""
    return "<h3>Rows to review (the model disagrees)</h3>" + note + _table(head, rows)


def escape(x) -> str:
    return html.escape(str(x), quote=True)
