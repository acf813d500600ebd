"""The report's verdict section: how sure the recommendation is (tailor.verdict through
tailor.decide). Every arm's primary metric with its 95% interval and its chance of being best,
the spread between seeds where an arm was fitted several times, and the paired differences on
the same rows against the best arm and against the closed-book baseline, each with its
interval, McNemar's exact test for accuracy, and the test rows that would separate the two."""

from __future__ import annotations

from .fmt import DASH, esc
from .plots import intervals

CLAIMS = {
    "cheaper_non_inferior": "a cheaper arm shown not worse than the best by more than the tolerance",
    "best_separated": "the best arm, separated from every other",
    "best_not_separated": "the highest observed, not a shown winner: the data cannot separate it from every arm",
    "only_arm": "the only arm measured",
    "too_few_rows": "too few test rows for any claim",
}


def _n(x, digits: int = 3) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _ci(lo, hi, signed: bool = False) -> str:
    if lo is None or hi is None:
        return DASH
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(lo)} to {f.format(hi)}"


def _rows(n) -> str:
    return DASH if n is None else f"{n:,}"


def _p(m) -> str:
    if not m:
        return DASH
    p = "&lt; 0.001" if m["p"] < 0.001 else f"{m['p']:.3f}"
    return f"{p} ({m['b']} vs {m['c']})"


def _seeds(a: dict) -> str:
    if a["seeds"] == 1:
        return "1"
    return f"{a['seeds']} ({_n(a['seed_min'])}–{_n(a['seed_max'])}, sd {_n(a['seed_sd'])})"


def verdict_section(v) -> str:
    from .sections import _section
    rec = v.results.recommendation
    verdict = rec.verdict
    if not verdict:
        return ""
    metric = verdict["metric"]
    arms = "".join(
        f"<tr><td>{esc(a['name'])}</td><td>{_n(a['mean'])}</td><td>{_ci(a['lo'], a['hi'])}</td>"
        f"<td>{a['p_best']:.0%}</td><td>{_seeds(a)}</td><td>{esc(a['interval'])}</td></tr>" for a in verdict["arms"])
    arm_table = ('<table class="grid"><thead><tr><th>arm</th>'
                 f"<th>{esc(metric)}</th><th>95% interval</th><th>chance of being best</th><th>seeds (spread)</th>"
                 f"<th>interval</th></tr></thead><tbody>{arms}</tbody></table>")

    def comparisons(key: str, title: str) -> tuple[str, list]:
        rows, plot = [], []
        for c in verdict[key]:
            rows.append(f"<tr><td>{esc(c['arm'])} − {esc(c['reference'])}</td><td>{c['diff']:+.3f}</td>"
                        f"<td>{_ci(c['lo'], c['hi'], True)}</td><td>{_p(c['mcnemar'])}</td>"
                        f"<td>{'yes' if c['separated'] else 'no'}</td><td>{'yes' if c['non_inferior'] else 'no'}</td>"
                        f"<td>{_rows(c['rows_to_separate'])}</td></tr>")
            plot.append((f"{c['arm']} − {c['reference']}", c["diff"], c["lo"], c["hi"], c["separated"]))
        if not rows:
            return "", []
        table = (f"<h3>{esc(title)}</h3><table class=\"grid\"><thead><tr><th>paired difference</th><th>difference</th>"
                 "<th>95% interval</th><th>McNemar p (discordant rows)</th><th>separated</th>"
                 f"<th>within {verdict['tolerance']:g} (non-inferior)</th><th>rows to separate</th></tr></thead>"
                 f"<tbody>{''.join(rows)}</tbody></table>")
        return table, plot

    best, best_plot = comparisons("versus_best", f"Against the best observed arm ({verdict['best']})")
    base, _ = comparisons("versus_baseline", f"Against the baseline ({verdict['baseline']})") \
        if verdict.get("baseline") else ("", [])
    plot = intervals(best_plot, "paired differences against the best arm", axis=f"difference in {metric} "
                     "(percentage points; red: separated)") if best_plot else ""
    claim = CLAIMS.get(rec.claim or "", rec.claim or DASH)
    body = (f'<p><b>{"A confident claim" if rec.confident else "Not a confident claim"}:</b> {esc(claim)}.</p>'
            f"<p>{esc(verdict.get('sentence', ''))}</p>{arm_table}{best}{plot}{base}")
    note = (f"Paired on the same {verdict['rows']:,} test rows. Intervals: Wilson's for one seed of right/wrong "
            f"answers, otherwise a percentile bootstrap over rows ({verdict['replicates']:,} draws; seeds too when an "
            "arm was fitted with several). Two arms are separated when the interval of their difference excludes 0 "
            "(and, for accuracy, McNemar's exact test agrees); the recommended arm is the cheapest shown not worse "
            "than the best by more than the tolerance (a non-inferiority test), else the best. Rows to separate: a "
            "normal-approximation estimate of the test rows a paired test at 80% power would need at the observed "
            "difference.")
    return _section("verdict", "How sure: intervals, paired differences, chance of being best", body, note)
