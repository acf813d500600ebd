"""The report's distillation section: every student next to its teacher on the same test rows —
gold accuracy and its ratio to the teacher's, agreement with the teacher, the teacher's errors it
copied, its general-ability change, size, latency and serving cost, and what labelling cost — with
the imitation warning (Gudibande et al. 2023) where it fired."""

from __future__ import annotations

from . import fmt
from .fmt import DASH, esc
from .plots import hbars


def _compute_per_1k(arm, price_per_hour) -> float | None:
    """Serving compute per 1,000 requests: batched seconds per request at the machine's price."""
    s = arm.cost.batch_s_per_request
    return None if s is None or price_per_hour is None else s * 1000 / 3600 * price_per_hour


def distill_section(v) -> str:
    from .sections import _section
    students = [a for a in v.ok if a.imitation]
    if not students:
        return ""
    by_name = {a.name: a for a in v.arms}
    price = v.results.experiment.price_per_train_hour
    teachers = [by_name[n] for n in dict.fromkeys(a.imitation.get("teacher_arm") for a in students) if n in by_name]
    rows = [_row(t, None, v, price, _teacher_params(t.name, students)) for t in teachers]
    rows += [_row(a, a.imitation, v, price) for a in students]
    table = ('<table class="grid"><thead><tr><th>arm</th><th>learns from</th><th>parameters</th><th>train rows</th>'
             f"<th>{esc(v.primary)}</th><th>÷ teacher</th><th>agrees with teacher</th><th>teacher errors copied</th>"
             "<th>general change</th><th>latency p50</th><th>compute $ / 1k requests</th><th>labelling</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    warnings = "".join(f'<p class="warn">⚠ {esc(a.name)}: {esc(a.imitation["warning"])}</p>'
                       for a in students if a.imitation.get("warning"))
    style = _style(students)
    plot = hbars([(a.name, [fmt.num(a.metrics.get(v.primary)), a.imitation["agreement"]]) for a in students],
                 [(f"{v.primary} on gold", "#2a9d8f"), ("agreement with the teacher", "#e9c46a")],
                 lambda x: f"{x:.3f}", "gold accuracy against agreement with the teacher")
    note = ("Distillation trains a smaller student on a teacher's answers (hard labels) or its probabilities "
            "(soft labels: over the label set, or top-k token log-probabilities), often on extra rows the teacher "
            "labels; it serves cheaper. Imitation teaches style before content (Gudibande et al. 2023): a student "
            "can agree with its teacher while getting less right, so each is measured against gold, against the "
            "teacher's own errors, and on general benchmarks; the warning fires when agreement rises over the "
            "gold-only student while gold accuracy or general ability falls. Compute per 1,000 requests: batched "
            "seconds per request at the machine's hourly price.")
    return _section("distill", "Distillation and the imitation check", warnings + table + plot + style, note)


def _teacher_params(name: str, students) -> int | None:
    return next((a.train["distill"].get("teacher_params") for a in students
                 if a.imitation.get("teacher_arm") == name and (a.train or {}).get("distill")), None)


def _row(arm, im: dict | None, v, price, params: int | None = None) -> str:
    d = (arm.train or {}).get("distill") or {}
    student, labelling, data = d.get("student") or {}, d.get("labelling") or {}, (arm.train or {}).get("data") or {}
    params = student.get("params") if student else params
    size = fmt.si(params) + (f" ({student['params_ratio']:.2f}×)" if student.get("params_ratio") else "")
    learns = "teacher" if im is None else (d.get("labels") or DASH)
    rows = data.get("kept")
    unl = data.get("unlabelled")
    train_rows = DASH if rows is None else f"{rows:,}" + (f" ({unl:,} unlabelled)" if unl else "")
    general = arm.forgetting.overall.delta if arm.forgetting else None
    label_cost = DASH
    if labelling:
        label_cost = f"{fmt.seconds(labelling.get('wall_s'))} for {labelling.get('rows', 0):,} rows" + (
            " (shared)" if labelling.get("reused") else "")
    copied = DASH if im is None or im.get("copied_error_rate") is None else \
        f"{fmt.pct(im['copied_error_rate'])} of {im['teacher_errors']}"
    ratio = DASH if im is None or im.get("ratio") is None else f"{im['ratio']:.3f}"
    return (f"<tr><td>{esc(arm.name)}</td><td>{esc(learns)}</td><td>{esc(size)}</td><td>{esc(train_rows)}</td>"
            f"<td>{fmt.metric(arm.metrics.get(v.primary))}</td><td>{ratio}</td>"
            f"<td>{DASH if im is None else fmt.pct(im['agreement'])}</td><td>{esc(copied)}</td>"
            f"<td>{fmt.points(general)}</td><td>{fmt.seconds(arm.cost.latency_p50_s)}</td>"
            f"<td>{fmt.money(_compute_per_1k(arm, price))}</td><td>{esc(label_cost)}</td></tr>")


def _style(students) -> str:
    gen = [a for a in students if a.imitation.get("style")]
    if not gen:
        return ""
    body = "".join(
        f"<tr><td>{esc(a.name)}</td><td>{a.imitation['style']['length_ratio']:.2f}</td>"
        f"<td>{fmt.pct(a.imitation['style']['markers_agree'])}</td>"
        f"<td>{a.imitation['content']['rougeL_student_teacher']:.3f}</td>"
        f"<td>{a.imitation['content']['rougeL_student_gold']:.3f}</td>"
        f"<td>{a.imitation['content']['rougeL_teacher_gold']:.3f}</td></tr>" for a in gen)
    return ('<p class="note">Style against content: a student that copies the teacher\'s length and format '
            "markers but not its ROUGE-L against gold learned the style.</p>"
            '<table class="grid"><thead><tr><th>arm</th><th>length ÷ teacher</th><th>format markers as teacher</th>'
            "<th>ROUGE-L to teacher</th><th>ROUGE-L to gold</th><th>teacher's ROUGE-L to gold</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")
