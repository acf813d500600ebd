"""The report's tuning section (`tune:`; tailor.tune): for every tuned arm, the budget its trials
had on the dev rows, how many ran and were pruned, the arm as written (trial 0) against the best
trial on dev, the options chosen and the test metric of the arm so chosen; then each arm's trials."""

from __future__ import annotations

from .fmt import DASH, esc


def _n(x, digits: int = 3) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _params(params: dict) -> str:
    return ", ".join(f"{esc(k)}={esc(_value(v))}" for k, v in params.items()) or DASH


def tuning_section(v) -> str:
    from .sections import _section
    tuned = [a for a in v.arms if a.tuning is not None]
    if not tuned:
        return ""
    rows, details = [], []
    for a in tuned:
        t = a.tuning
        pruned = sum(x.state == "pruned" and x.repeat_of is None for x in t.trials)
        failed = sum(x.state == "failed" for x in t.trials)
        repeats = sum(x.repeat_of is not None for x in t.trials)
        moved = None if t.best_dev is None or t.default_dev is None else t.best_dev - t.default_dev
        rows.append(
            f"<tr><td>{esc(a.name)}</td><td>{t.budget_minutes:g} min</td><td>{t.seconds / 60:.1f} min</td>"
            f"<td>{len(t.trials)} ({pruned} pruned{f', {failed} failed' if failed else ''}"
            f"{f', {repeats} repeats' if repeats else ''})</td>"
            f"<td>{t.trials_per_minute:.2f}</td><td>{_n(t.default_dev)}</td><td>{_n(t.best_dev)}</td>"
            f"<td>{DASH if moved is None else f'{moved:+.3f}'}</td><td>{_params(t.best_params)}</td>"
            f"<td>{_n(a.metrics.get(v.primary)) if a.ok else 'failed'}</td></tr>")
        if t.error:
            rows.append(f'<tr><td></td><td colspan="9" class="muted">tuning failed: {esc(t.error)}; the arm was measured '
                        "as written</td></tr>")
        trials = "".join(
            f"<tr><td>{x.number}{' (as written)' if x.default else ''}{' ★' if x.number == t.best_trial else ''}</td>"
            f"<td>{_params(x.params)}</td><td>{esc(x.state)}"
            f"{f' at {x.reached:,}' if x.reached is not None else ''}"
            f"{f' (repeat of {x.repeat_of})' if x.repeat_of is not None else ''}</td><td>{_n(x.dev)}</td>"
            f"<td>{_n(x.seconds, 0)}</td><td>{esc(x.worker or DASH)}</td><td>{esc((x.error or '')[:160])}</td></tr>"
            for x in t.trials)
        space = ", ".join(f"{esc(k)} {esc(_space(s))}" for k, s in t.knobs.items())
        details.append(
            f"<details><summary>{esc(a.name)}: {len(t.trials)} trials, study {esc(t.study)}"
            f"{f' in {esc(t.storage)}' if t.storage else ''}, stopped by {esc(t.stopped or DASH)}</summary>"
            f'<p class="note">Space: {space}. Pruner: {esc(t.pruner)}. Dev: {t.dev_rows:,} rows, {esc(t.metric)}.</p>'
            '<table class="grid"><thead><tr><th>trial</th><th>options</th><th>state</th>'
            f"<th>dev {esc(t.metric)}</th><th>seconds</th><th>worker</th><th>error</th></tr></thead>"
            f"<tbody>{trials}</tbody></table></details>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>budget</th><th>took</th><th>trials</th>'
             f"<th>trials a minute</th><th>dev {esc(v.primary)}: as written</th><th>dev: best trial</th><th>moved</th>"
             f"<th>options chosen</th><th>test {esc(v.primary)}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    note = ("Each tuned arm had the same wall-clock budget of trials. A trial fits the arm on the train rows and is "
            "measured on the dev rows (trials see no test row); the sampler is optuna's TPE (Bergstra et al. 2011), "
            "and a trial that trails at the rung (halfway through training, or half the dev rows) is pruned by "
            "successive halving (Jamieson & Talwalkar 2016) or Hyperband (Li et al. 2018). Trial 0 is the arm as "
            "written; the best trial's options are the arm, measured once on the test rows. A pruned trial's dev "
            "value is the one at its rung. No trial starts after the budget; one started before it finishes. The best "
            "of many trials on a small dev split flatters itself (its dev gain is biased upwards): the test column is "
            "the honest measure.")
    return _section("tuning", "Tuning: an equal budget on dev", table + "".join(details), note)


def _space(spec: dict) -> str:
    if "choices" in spec:
        return "{" + ", ".join(_value(c) for c in spec["choices"]) + "}"
    return f"[{_value(spec.get('low'))}, {_value(spec.get('high'))}]" + (" log" if spec.get("log") else "")
