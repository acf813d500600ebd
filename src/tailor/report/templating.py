"""The report's Jinja2 environment: the templates under `templates/` (read from the installed
package, as `tailor ui` reads its own), HTML autoescaped, so escaping user text is the engine's
job and not a call each section must remember, and `StrictUndefined`, so a template naming a
value its context lacks is an error, not an empty cell. Only HTML that Tailor writes itself (the
SVG charts of plots.py, the curate report) enters as `Markup`."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, Undefined, select_autoescape
from markupsafe import Markup, escape

from . import fmt


def _wbr(text) -> Markup:
    """A long arm name may wrap after each underscore (escaped first, then the break added)."""
    return Markup(str(escape(text)).replace("_", "_<wbr>"))


def _strict(fn):
    """A filter that fails on a missing value as `{{ x }}` does (fmt's formatters would make a dash
    of it, and format() a TypeError that names nothing)."""
    def filter_(value, *args):
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return fn(value, *args)
    return filter_


ENV = Environment(loader=PackageLoader("tailor.report", "templates"),
                  autoescape=select_autoescape(["html", "svg"], default_for_string=True),
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update({name: _strict(fn) for name, fn in dict(
    num=fmt.num, metric=fmt.metric, pct=fmt.pct, points=fmt.points, count=fmt.count, tokens=fmt.tokens, seconds=fmt.seconds,
    si=fmt.si, size=fmt.size, money=fmt.money, clip=fmt.clip, metric_label=fmt.metric_label,
    metric_title=fmt.metric_title, wbr=_wbr,
    f=format,   # {{ x|f("+.3f") }}: Python's format spec, exactly
).items()})
ENV.globals["DASH"] = fmt.DASH


def render(template: str, **context) -> Markup:
    """A template rendered: HTML, safe to place in another template as it is."""
    return Markup(ENV.get_template(template).render(**context))
