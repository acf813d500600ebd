"""report.html: one self-contained file (inline CSS and SVG, no scripts, no fonts, no network),
because the machines Tailor runs on and the people who read its reports are often offline.
A Content-Security-Policy forbids every external load and every script, so a stray link shows
up as a console error in the browser test instead of silently phoning out, and user text that
escaped escaping (say, in an embedded section) cannot run."""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..errors import TailorError
from ..results import LadderResult
from ..utils import atomic_write_text
from . import sections
from .breakeven import breakeven_section
from .calibration import calibration_section
from .curves import curves_section
from .distill import distill_section
from .fmt import esc
from .helm import bias_section, robustness_section
from .longdoc import longdoc_section
from .preference import preference_section
from .retrieval import retrieval_section
from .rewards import rewards_section
from .tuning import tuning_section
from .verdict import verdict_section

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
       "script-src 'none'")


def write_report(results: LadderResult, out_dir: str | Path) -> Path:
    """Write `out_dir/report.html` from a ladder's typed result (see `results.read_results`)."""
    if not isinstance(results, LadderResult):
        raise TailorError(f"report: expected a ladder result, got {type(results).__name__}")
    path = Path(out_dir) / "report.html"
    atomic_write_text(path, render_html(results))
    return path


def render_html(results: LadderResult) -> str:
    v = sections.View.of(results)
    title = f"{results.experiment.name or results.task.get('name') or 'experiment'} · Tailor report"
    body = [sections.header(v), _nav(v), sections.recommendation(v), sections.comparison_table(v),
            verdict_section(v), tuning_section(v), sections.charts(v), curves_section(v), breakeven_section(v),
            retrieval_section(v), distill_section(v), longdoc_section(v), preference_section(v),
            calibration_section(v), rewards_section(v), sections.forgetting(v), robustness_section(v), bias_section(v),
            sections.confusions(v),
            sections.debugging(v), sections.examples(v),
            sections.data_check(v), sections.manifest(v)]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="Tailor {esc(__version__)}">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            + "".join(b for b in body if b)
            + f'<footer>Written by Tailor {esc(__version__)}. This file is self-contained: '
            f"it loads nothing from the network.</footer></main></body></html>\n")


def _nav(v: sections.View) -> str:
    links = [("recommendation", "Recommendation"), ("comparison", "Comparison")]
    if v.results.recommendation.verdict:
        links.append(("verdict", "How sure"))
    if any(a.tuning for a in v.arms):
        links.append(("tuning", "Tuning"))
    links += [("quality-cost", "Quality vs cost"), ("latency", "Latency")]
    if any(a.calibration for a in v.ok):
        links.append(("calibration", "Calibration"))
    if any(a.learning_curve for a in v.ok):
        links.append(("curves", "Learning curves"))
    if v.results.break_even:
        links.append(("break-even", "Break-even"))
    if any(a.retrieval for a in v.ok):
        links.append(("retrieval", "Retrieval"))
    if any(a.imitation for a in v.ok):
        links.append(("distill", "Distillation"))
    if any(a.longdoc for a in v.ok):
        links.append(("longdoc", "Long documents"))
    if any("preference_accuracy" in a.metrics or "pairwise_accuracy" in a.metrics for a in v.ok):
        links.append(("preference", "Preference"))
    if any((a.train or {}).get("rewards") and (a.train or {}).get("history") for a in v.ok):
        links.append(("rewards", "Rewards"))
    if any(a.forgetting for a in v.arms):
        links.append(("forgetting", "Forgetting"))
    if any(a.robustness for a in v.ok):
        links.append(("robustness", "Robustness"))
    if any(a.bias for a in v.ok):
        links.append(("bias", "Bias"))
    if any(a.confusion for a in v.ok):
        links.append(("confusion", "Confusion"))
    if v.results.debug:
        links.append(("debug", "Debugging"))
    if any(a.examples for a in v.arms):
        links.append(("examples", "Examples"))
    links += [("data", "Data"), ("manifest", "Manifest")]
    return '<nav>' + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in links) + "</nav>"


CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f5f6f8; --card:#fff;
  --accent:#2563eb; --good:#047857; --good-bg:#ecfdf5; --bad:#b91c1c; --bad-bg:#fef2f2; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.45;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans",
  Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 24px 40px; }
h1 { font-size: 28px; margin: 2px 0 10px; letter-spacing: -0.01em; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 18px 0 8px; }
a { color: var(--accent); text-decoration: none; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 11px; font-weight: 600;
  color: var(--muted); }
.muted { color: var(--muted); }
.note { color: var(--muted); font-size: 12.5px; margin: -4px 0 12px; }
.card > .note:last-child, .card > p.note:last-of-type { margin: 10px 0 0; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.chip { background: #fff; border: 1px solid var(--line); border-radius: 999px; padding: 2px 10px;
  font-size: 12.5px; }
.chip b { color: var(--muted); font-weight: 500; margin-right: 2px; }
.chip.status { background: #eef2ff; border-color: #c7d2fe; }
nav { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 18px 0 16px; padding: 8px 0;
  border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); font-size: 13px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 20px; margin: 0 0 16px; box-shadow: 0 1px 2px rgba(16,24,40,.04); min-width: 0; }
.rec { background: linear-gradient(180deg, #f0fdf4, #fff); border: 1px solid #bbf7d0;
  border-left: 5px solid #16a34a; border-radius: 10px; padding: 18px 22px; margin: 0 0 16px; }
.rec.none { background: #fff; border-color: var(--line); border-left-color: var(--muted); }
.rec-arm { font-size: 26px; margin: 2px 0 6px; color: #14532d; }
.rec-text { font-size: 15.5px; max-width: 920px; margin: 0 0 14px; }
.stats { display: flex; flex-wrap: wrap; gap: 10px; margin: 0; }
.stats div { background: #fff; border: 1px solid #d1fae5; border-radius: 8px; padding: 6px 14px; }
.stats dt { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
.stats dd { margin: 0; font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.advice { margin-top: 14px; padding-top: 10px; border-top: 1px dashed #bbf7d0; }
.advice h3 { margin-top: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; }
table.grid { width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
table.grid th { text-align: left; font-weight: 600; color: var(--muted); font-size: 11px;
  text-transform: uppercase; letter-spacing: .03em; padding: 6px 7px; border-bottom: 2px solid var(--line);
  vertical-align: bottom; line-height: 1.25; }
table.grid td { padding: 8px 7px; border-bottom: 1px solid var(--line); vertical-align: top; }
table.grid.small { width: auto; min-width: 50%; }
th.num, th.metric { text-align: right; }
td.num, td.metric { text-align: right; white-space: nowrap; }
td.metric.primary { font-weight: 600; font-size: 14px; }
td.best { color: var(--good); font-weight: 700; }
td.zero { color: #b6bcc6; }
tr.recommended td { background: #f0fdf4; }
tr.recommended td.arm { box-shadow: inset 4px 0 0 #16a34a; }
td.arm { min-width: 150px; max-width: 210px; overflow-wrap: break-word; }
.method { color: var(--muted); font-size: 12px; margin-left: 16px; }
.delta, .ci { color: var(--muted); font-size: 11px; font-weight: 400; }
.star { color: #16a34a; margin-left: 5px; }
.warn { color: #d97706; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
.badge { display: inline-block; border-radius: 999px; padding: 1px 9px; font-size: 12px; font-weight: 600; }
.badge.ok { background: var(--good-bg); color: var(--good); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
tr.failure td { background: var(--bad-bg); color: var(--bad); font-size: 12.5px; }
tr.failure code { white-space: pre-wrap; word-break: break-word; color: #7f1d1d; }
details summary { cursor: pointer; color: var(--accent); font-size: 13px; margin: 10px 0 6px; }
pre { background: #f8fafc; border: 1px solid var(--line); border-radius: 8px; padding: 12px;
  overflow: auto; max-height: 520px; white-space: pre-wrap; word-break: break-word; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.two.inner { gap: 28px; align-items: start; }
.two.fit { grid-template-columns: auto 1fr; }
.two.inner > table { justify-self: start; }
.badge { white-space: nowrap; }
svg.chart { width: 100%; max-width: 680px; height: auto; display: block; }
.cms { display: flex; flex-wrap: wrap; gap: 14px 22px; }
figure.cm { margin: 0; }
figure.cm figcaption { font-weight: 600; margin-bottom: 6px; }
figure.cm table { font-size: 12.5px; font-variant-numeric: tabular-nums; }
figure.cm th { font-weight: 500; color: var(--muted); padding: 3px 6px; text-align: right; }
figure.cm thead th { text-align: center; }
figure.cm th.corner { font-size: 10.5px; font-weight: 400; }
figure.cm td { width: 46px; height: 30px; text-align: center; border: 2px solid #fff; border-radius: 4px; }
table.examples td.input { min-width: 280px; max-width: 440px; white-space: pre-wrap; word-break: break-word; }
table.examples td.target { font-weight: 600; }
table.examples .id { color: var(--muted); font-size: 11px; }
td.pred.hit { color: var(--good); background: var(--good-bg); }
td.pred.miss { color: var(--bad); background: var(--bad-bg); }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); padding: 4px 18px 4px 0;
  vertical-align: top; white-space: nowrap; }
table.kv td { padding: 4px 0; }
.label-counts .muted { font-size: 12px; margin-bottom: 4px; }
.lc { display: grid; grid-template-columns: 140px 1fr 110px; gap: 10px; align-items: center; margin: 3px 0; }
.lc-bar { background: #f1f5f9; border-radius: 4px; height: 12px; overflow: hidden; }
.lc-bar i { display: block; height: 100%; background: #60a5fa; }
.lc-n { color: var(--muted); font-size: 12.5px; font-variant-numeric: tabular-nums; }
ul.notes { margin: 12px 0 0; padding-left: 20px; color: var(--muted); }
.curation { margin-top: 16px; padding-top: 4px; border-top: 1px solid var(--line); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
@media (max-width: 900px) { .two { grid-template-columns: 1fr; } }
@media print { body { background: #fff; } .card, .rec { break-inside: avoid; box-shadow: none; } }
"""
