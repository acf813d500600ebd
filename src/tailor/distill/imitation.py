"""The imitation check. Gudibande et al. (2023) found that models trained to imitate a stronger
one learn its style before its content: they sound like the teacher while being less accurate,
and the gap shows only against gold answers and general ability, not against the teacher. So for
every distilled arm, on the ladder's test rows:

- agreement with the teacher next to accuracy on gold, and the ratio of student to teacher accuracy;
- how often the student copies the teacher's *wrong* answers (of the rows the teacher gets wrong,
  the share where the student gives the same wrong answer);
- generate tasks: style agreement (answer length, format markers such as list bullets, line
  breaks, a closing full stop) against content agreement (ROUGE-L against gold, and against the teacher);
- the general-suite change (the ladder's forgetting measurement).

A warning is raised when an arm agrees more with the teacher than the gold-only student does
while its gold accuracy or its general ability is lower: it learned the style, not the task.
"""

from __future__ import annotations

import re

from ..evaluate import normalize, rouge

MARKERS = {"bullets": re.compile(r"^\s*([-*•]|\d+[.)])\s", re.M), "line breaks": re.compile(r"\n"),
           "full stop at the end": re.compile(r"[.!?]\s*$"), "colon": re.compile(r":")}
TOLERANCE = 0.005   # accuracy differences below this are ties (one row in 200)


def _same(kind: str, a: str, b: str) -> bool:
    return a == b if kind in ("classify", "choice") else normalize(a) == normalize(b)


def imitation(kind: str, student: list, teacher: list, metric: str, student_metric: float | None,
              teacher_metric: float | None) -> dict:
    """Student and teacher predictions (evaluate.Prediction) on the same rows, compared."""
    by_id = {p.id: p for p in teacher}
    pairs = [(s, by_id[s.id]) for s in student if s.id in by_id]
    agree = sum(_same(kind, s.prediction, t.prediction) for s, t in pairs)
    wrong = [(s, t) for s, t in pairs if not _same(kind, t.prediction, t.target)]
    copied = sum(_same(kind, s.prediction, t.prediction) for s, t in wrong)
    out = {"rows": len(pairs), "metric": metric, "agreement": agree / max(len(pairs), 1),
           "student": student_metric, "teacher": teacher_metric,
           "ratio": student_metric / teacher_metric if student_metric is not None and teacher_metric else None,
           "teacher_errors": len(wrong), "copied_errors": copied,
           "copied_error_rate": copied / len(wrong) if wrong else None}
    if kind == "generate" and pairs:
        s_text, t_text = [s.prediction for s, _ in pairs], [t.prediction for _, t in pairs]
        gold = [t.target for _, t in pairs]
        s_len, t_len = sum(len(x.split()) for x in s_text), sum(len(x.split()) for x in t_text)
        out["style"] = {"length_ratio": s_len / max(t_len, 1),
                        "markers_agree": sum(_markers(a) == _markers(b) for a, b in zip(s_text, t_text)) / len(pairs)}
        out["content"] = {"rougeL_student_gold": rouge(s_text, gold)["rougeL"],
                          "rougeL_teacher_gold": rouge(t_text, gold)["rougeL"],
                          "rougeL_student_teacher": rouge(s_text, t_text)["rougeL"]}
    return out


def _markers(text: str) -> frozenset:
    return frozenset(name for name, pattern in MARKERS.items() if pattern.search(text))


def warnings_for(arms: list) -> None:
    """Sets `imitation["warning"]` on distilled arms that agree more with the teacher than the
    gold-only student of the same ladder while scoring lower on gold or on general ability."""
    reference = next((a for a in arms if a.imitation and a.options.get("labels") == "gold"), None)
    if reference is None:
        return
    ref = reference.imitation
    ref_general = reference.forgetting.overall.delta if reference.forgetting else None
    for arm in arms:
        im = arm.imitation
        if not im or arm is reference or im["agreement"] <= ref["agreement"]:
            continue
        reasons = []
        if im["student"] is not None and ref["student"] is not None and im["student"] < ref["student"] - TOLERANCE:
            reasons.append(f"{im['metric']} {im['student']:.3f} < {ref['student']:.3f} of the gold-only {reference.name}")
        general = arm.forgetting.overall.delta if arm.forgetting else None
        if general is not None and ref_general is not None and general < ref_general - TOLERANCE:
            reasons.append(f"general ability {general:+.3f} < {ref_general:+.3f}")
        if reasons:
            im["warning"] = (f"agrees more with the teacher ({im['agreement']:.3f} vs {ref['agreement']:.3f}) while "
                             + " and ".join(reasons) + ": it learned the teacher's style, not the task "
                             "(Gudibande et al. 2023)")
