"""report.html: one self-contained file (inline CSS and SVG, no scripts, no fonts, no network),
because the machines Tailor runs on and the people who read its reports are often offline.
A Content-Security-Policy forbids every external load and every script, so a stray link shows
up as a console error in the browser test instead of silently phoning out, and user text that
escaped escaping (say, in an embedded section) cannot run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from .. import __version__
from ..errors import TailorError
from ..results import LadderResult
from ..utils import atomic_write_text
from . import sections
from .breakeven import breakeven_section
from .calibration import calibration_section
from .curves import curves_section
from .distill import distill_section
from .helm import bias_section, robustness_section
from .judging import judging_section
from .longdoc import longdoc_section
from .preference import preference_section
from .retrieval import retrieval_section
from .rewards import rewards_section
from .templating import render
from .tuning import tuning_section
from .verdict import verdict_section

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
       "script-src 'none'")


@dataclass(frozen=True)
class Part:
    """One part of the page below the menu: its template (under templates/), the function that
    builds the template's context from the `View` (None: the part is left out of this report), and
    the menu links (anchor, text) it adds when it is there."""
    template: str
    context: Callable[[sections.View], dict | None]
    nav: tuple[tuple[str, str], ...] = ()


# The page, in order. A new section: its template, its context function, and its entry here.
PARTS: list[Part] = [
    Part("recommendation.html", sections.recommendation, (("recommendation", "Recommendation"),)),
    Part("comparison.html", sections.comparison, (("comparison", "Comparison"),)),
    Part("verdict.html", verdict_section, (("verdict", "How sure"),)),
    Part("tuning.html", tuning_section, (("tuning", "Tuning"),)),
    Part("charts.html", sections.charts, (("quality-cost", "Quality vs cost"), ("latency", "Latency"))),
    Part("curves.html", curves_section, (("curves", "Learning curves"),)),
    Part("breakeven.html", breakeven_section, (("break-even", "Break-even"),)),
    Part("retrieval.html", retrieval_section, (("retrieval", "Retrieval"),)),
    Part("distill.html", distill_section, (("distill", "Distillation"),)),
    Part("longdoc.html", longdoc_section, (("longdoc", "Long documents"),)),
    Part("preference.html", preference_section, (("preference", "Preference"),)),
    Part("calibration.html", calibration_section, (("calibration", "Calibration"),)),
    Part("rewards.html", rewards_section, (("rewards", "Rewards"),)),
    Part("judging.html", judging_section, (("judging", "Judges"),)),
    Part("forgetting.html", sections.forgetting, (("forgetting", "Forgetting"),)),
    Part("robustness.html", robustness_section, (("robustness", "Robustness"),)),
    Part("bias.html", bias_section, (("bias", "Bias"),)),
    Part("confusion.html", sections.confusions, (("confusion", "Confusion"),)),
    Part("debug.html", sections.debugging, (("debug", "Debugging"),)),
    Part("examples.html", sections.examples, (("examples", "Examples"),)),
    Part("data.html", sections.data_check, (("data", "Data"),)),
    Part("manifest.html", sections.manifest, (("manifest", "Manifest"),)),
]


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
    parts, nav = [], []
    for part in PARTS:
        context = part.context(v)
        if context is None:
            continue
        parts.append(render(part.template, **context))
        nav += part.nav   # the menu links only the sections this report has, in the page's order
    page = render("report.html", csp=Markup(CSP),   # a constant with no double quote: kept literal
                  version=__version__, title=title, header=render("header.html", **sections.header(v)), nav=nav, parts=parts)
    return str(page) + "\n"
