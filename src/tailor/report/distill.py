"""The report's distillation section: every student next to its teacher on the same test rows —
gold accuracy and its ratio to the teacher's, agreement with the teacher, the teacher's errors it
copied, its general-ability change, size, latency and serving cost, and what labelling cost — with
the imitation warning (Gudibande et al. 2023) where it fired."""

from __future__ import annotations

from . import fmt
from .fmt import DASH
from .plots import hbars


def _compute_per_1k(arm, price_per_hour) -> float | None:
    """Serving compute per 1,000 requests: batched seconds per request at the machine's price."""
    s = arm.cost.batch_s_per_request
    return None if s is None or price_per_hour is None else s * 1000 / 3600 * price_per_hour


def distill_section(v) -> dict | None:
    """The context of templates/distill.html."""
    students = [a for a in v.ok if a.imitation]
    if not students:
        return None
    by_name = {a.name: a for a in v.arms}
    price = v.results.experiment.price_per_train_hour
    teachers = [by_name[n] for n in dict.fromkeys(a.imitation.get("teacher_arm") for a in students) if n in by_name]
    rows = [_row(t, None, v, price, _teacher_params(t.name, students)) for t in teachers]
    rows += [_row(a, a.imitation, v, price) for a in students]
    plot = hbars([(a.name, [fmt.num(a.metrics.get(v.primary)), a.imitation["agreement"]]) for a in students],
                 [(f"{v.primary} on gold", "#2a9d8f"), ("agreement with the teacher", "#e9c46a")],
                 lambda x: f"{x:.3f}", "gold accuracy against agreement with the teacher")
    return {"primary": v.primary, "rows": rows, "plot": plot,
            "warnings": [(a.name, a.imitation["warning"]) for a in students if a.imitation.get("warning")],
            "style": [a for a in students if a.imitation.get("style")]}


def _teacher_params(name: str, students) -> int | None:
    return next((a.train["distill"].get("teacher_params") for a in students
                 if a.imitation.get("teacher_arm") == name and (a.train or {}).get("distill")), None)


def _row(arm, im: dict | None, v, price, params: int | None = None) -> dict:
    d = (arm.train or {}).get("distill") or {}
    student, labelling, data = d.get("student") or {}, d.get("labelling") or {}, (arm.train or {}).get("data") or {}
    params = student.get("params") if student else params
    rows = data.get("kept")
    unl = data.get("unlabelled")
    label_cost = DASH
    if labelling:
        label_cost = f"{fmt.seconds(labelling.get('wall_s'))} for {labelling.get('rows', 0):,} rows" + (
            " (shared)" if labelling.get("reused") else "")
    return {"name": arm.name, "learns": "teacher" if im is None else (d.get("labels") or DASH),
            "size": fmt.si(params) + (f" ({student['params_ratio']:.2f}×)" if student.get("params_ratio") else ""),
            "train_rows": DASH if rows is None else f"{rows:,}" + (f" ({unl:,} unlabelled)" if unl else ""),
            "metric": arm.metrics.get(v.primary),
            "ratio": DASH if im is None or im.get("ratio") is None else f"{im['ratio']:.3f}",
            "agreement": DASH if im is None else fmt.pct(im["agreement"]),
            "copied": DASH if im is None or im.get("copied_error_rate") is None else
            f"{fmt.pct(im['copied_error_rate'])} of {im['teacher_errors']}",
            "general": arm.forgetting.overall.delta if arm.forgetting else None,
            "latency": arm.cost.latency_p50_s, "compute": _compute_per_1k(arm, price), "label_cost": label_cost}
