"""The ladder's HTML report (one self-contained file) and a headless-Chromium helper that
checks it renders and takes its screenshot.

How the page is made: `html.render_html` builds a `sections.View` of the ladder result once, then
walks `html.PARTS`, the page's sections in order. Each part names a Jinja2 template under
`templates/` and a context function `View -> dict | None` (None leaves the section out of this
report, and its menu link with it). The environment (`templating.py`) autoescapes HTML and is
strict about undefined values: user text is escaped by the template, never by hand, and a value a
template names but its context lacks is an error. Numbers are formatted by fmt's functions, which
templates have as filters (`{{ x|metric }}`, `{{ x|pct }}`, `{{ x|f("+.3f") }}`); shared pieces
(the section card, a status badge, a colour swatch) are macros in `templates/macros.html`. The SVG
charts are drawn in Python (plots.py) from numbers, escape the labels they draw, and enter the
templates as `Markup`, as the curate report's own HTML does.

Adding a section (three small pieces):
1. `templates/NAME.html`: `{% from "macros.html" import card %}` and
   `{% call card("anchor", "Title", "The note: what it measures, with its sources.") %}...{% endcall %}`;
   the anchor is the section's id.
2. A context function in a module of this package (`NAME.py`, or beside a kin in sections.py):
   `def NAME_section(v) -> dict | None` returning the rows and figures the template shows (plain
   values, or a chart from plots.py), or None when the ladder has nothing for it.
3. One entry in `html.PARTS`, where it belongs on the page:
   `Part("NAME.html", NAME_section, (("anchor", "Menu text"),))`.
Then check it in tests/test_report.py against a hand-made `LadderResult`, as the others are.
"""

from .browser import console_errors, dump_dom, find_chromium, render, render_url, screenshot
from .html import render_html, write_report

__all__ = ["console_errors", "dump_dom", "find_chromium", "render", "render_html", "render_url", "screenshot",
           "write_report"]
