"""The report's verdict section: how sure the recommendation is (tailor.verdict through
tailor.decide). Every arm's primary metric with its 95% interval and its chance of being best,
the spread between seeds where an arm was fitted several times, and the paired differences on
the same rows against the best arm and against the closed-book baseline, each with its
interval, McNemar's exact test for accuracy, and the test rows that would separate the two."""

from __future__ import annotations

from .fmt import DASH
from .plots import intervals

CLAIMS = {
    "cheaper_non_inferior": "a cheaper arm shown not worse than the best by more than the tolerance",
    "best_separated": "the best arm, separated from every other",
    "best_not_separated": "the highest observed, not a shown winner: the data cannot separate it from every arm",
    "only_arm": "the only arm measured",
    "too_few_rows": "too few test rows for any claim",
    "reference_matched": "an open arm shown not worse than the closed model it is measured against, by more than the "
                         "tolerance",
    "reference_best": "the closed model measured as a reference is ahead: no open arm is shown within the tolerance of it",
}


def verdict_section(v) -> dict | None:
    """The context of templates/verdict.html."""
    rec = v.results.recommendation
    verdict = rec.verdict
    if not verdict:
        return None
    best_plot = [(f"{c['arm']} − {c['reference']}", c["diff"], c["lo"], c["hi"], c["separated"])
                 for c in verdict["versus_best"]]
    plot = intervals(best_plot, "paired differences against the best arm", axis=f"difference in {verdict['metric']} "
                     "(percentage points; red: separated)") if best_plot else ""
    return {"verdict": verdict, "confident": rec.confident, "plot": plot,
            "claim": CLAIMS.get(rec.claim or "", rec.claim or DASH)}
