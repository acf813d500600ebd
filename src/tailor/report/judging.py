"""The report's section on the ladder's judges (`metric: {grader, pairwise}`): how far each model
judge agrees with the rows people labelled, and each arm's pairwise result against the reference
arm with its position bias. A judge nobody checked against people decides nothing (Zheng et al.
2023, "Judging LLM-as-a-Judge"); a judge whose verdict flips with the order it reads the answers
in is measuring the order (the same paper's position bias); a win rate that follows length is
reported controlled for it (Dubois et al. 2024, length-controlled AlpacaEval)."""

from __future__ import annotations

FLIP_WARN = 0.25   # above this share of flipped pairs, the win rate says more about position than quality


def judging_section(v) -> dict | None:
    """The context of templates/judging.html."""
    j = v.results.judging
    if j is None or not (j.agreement or j.pairwise):
        return None
    agreement = [{**a.model_dump(), "judge_labels": sorted({k for row in (a.confusion or {}).values() for k in row})}
                 for a in j.agreement]
    return {"grader": j.grader, "agreement": agreement, "trusted_by_setting": j.trusted_by_setting,
            "pairwise_judge": j.pairwise_judge, "pairwise": j.pairwise, "flip_warn": FLIP_WARN}
