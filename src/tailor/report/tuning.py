"""The report's tuning section (`tune:`; tailor.tune): for every tuned arm, the budget its trials
had on the dev rows, how many ran and were pruned, the arm as written (trial 0) against the best
trial on dev, the options chosen and the test metric of the arm so chosen; then each arm's trials."""

from __future__ import annotations

from .fmt import DASH


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items()) or DASH


def tuning_section(v) -> dict | None:
    """The context of templates/tuning.html."""
    tuned = [a for a in v.arms if a.tuning is not None]
    if not tuned:
        return None
    arms = []
    for a in tuned:
        t = a.tuning
        arms.append({
            "name": a.name, "t": t, "ok": a.ok, "test": a.metrics.get(v.primary), "params": _params(t.best_params),
            "pruned": sum(x.state == "pruned" and x.repeat_of is None for x in t.trials),
            "failed": sum(x.state == "failed" for x in t.trials),
            "repeats": sum(x.repeat_of is not None for x in t.trials),
            "moved": None if t.best_dev is None or t.default_dev is None else t.best_dev - t.default_dev,
            "space": ", ".join(f"{k} {_space(s)}" for k, s in t.knobs.items()),
            "trials": [(x, _params(x.params)) for x in t.trials]})
    return {"arms": arms, "primary": v.primary}


def _space(spec: dict) -> str:
    if "choices" in spec:
        return "{" + ", ".join(_value(c) for c in spec["choices"]) + "}"
    return f"[{_value(spec.get('low'))}, {_value(spec.get('high'))}]" + (" log" if spec.get("log") else "")
