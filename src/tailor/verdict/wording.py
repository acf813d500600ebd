"""The verdict in plain English. Every "better" or "worse" here is behind a separated comparison
(its interval excludes 0, and McNemar agrees where it applies); every "within the tolerance"
behind a passed non-inferiority test. What the data cannot tell apart is said to be so."""

from __future__ import annotations

# `v` below is a core.Verdict and `c` a core.Comparison, read by attribute: core imports this module
# (Verdict.sentence), so this one names no type of core's and the two stay free of an import cycle.


def signed(x: float) -> str:
    s = f"{x:+.3f}"
    return "+0.000" if s == "-0.000" else s


def about(n: int) -> str:
    """A row count rounded to two significant figures: these are estimates, not exact needs."""
    if n < 100:
        return f"{n:,}"
    digits = len(str(n)) - 2
    return f"{round(n, -digits):,}"


def p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def interval(v, lo: float, hi: float, sign: bool = True) -> str:
    f = signed if sign else (lambda x: f"{x:.3f}")
    return f"{v.confidence:.0%} CI {f(lo)} to {f(hi)}"


def evidence(v, c, flip: bool = False) -> str:
    """'95% CI -0.031 to +0.055; McNemar p = 0.610, 40 vs 44 discordant rows' for a comparison,
    of arm - reference, or of reference - arm when flipped."""
    text = interval(v, -c.hi, -c.lo) if flip else interval(v, c.lo, c.hi)
    if c.mcnemar is not None:
        b, d = (c.mcnemar.c, c.mcnemar.b) if flip else (c.mcnemar.b, c.mcnemar.c)
        text += f"; McNemar {p_value(c.mcnemar.p)}, {b} vs {d} discordant rows"
    return text


def level(x: float) -> str:
    """A tolerance as written: 0.02, not 0.020."""
    return f"{x:.3f}".rstrip("0").rstrip(".") if x else "0"


def sentence(v) -> str:
    best = v.arm(v.best)
    m = v.metric
    own = f"{m} {best.mean:.3f} ({interval(v, best.lo, best.hi, sign=False)})"
    if v.claim == "only_arm":
        return f"{best.name} is the only arm: {own} on {v.rows:,} rows."
    tol = level(v.tolerance)
    one_sided = f"one-sided {v.confidence:.0%} lower bound"
    cheaper = [c for c in v.versus_best if v.arm(c.arm).cost < best.cost and c.arm not in v.reference]

    if v.claim in ("reference_matched", "reference_best"):
        return _reference_best(v, best, own, tol, one_sided) + _against_baseline(v)
    if v.claim == "cheaper_non_inferior":
        pick = v.arm(v.recommended)
        c = v.comparison(pick.name, best.name)
        text = (f"{pick.name} is recommended: it costs less than the best observed arm, {best.name} ({m} {pick.mean:.3f} "
                f"vs {best.mean:.3f}), and is shown to be at most {tol} worse (difference {signed(c.diff)}, "
                f"{one_sided} {signed(c.lower_one_sided)} > -{tol}).")
        if c.separated:
            text += f" {best.name} is better by {-c.diff:.3f} ({evidence(v, c, flip=True)}), a difference within the tolerance."
        else:
            text += f" The two cannot be told apart on these {v.rows:,} rows ({evidence(v, c)})."
    elif v.claim == "best_separated":
        nxt = v.versus_best[0]
        text = (f"{best.name} is better than every other arm on {m}: {best.mean:.3f} "
                f"({interval(v, best.lo, best.hi, sign=False)}), ahead of the next, {nxt.arm}, by {-nxt.diff:.3f} "
                f"({evidence(v, nxt, flip=True)}); its chance of being best is {best.p_best:.2f}.")
        clause = _no_cheaper(v, cheaper, tol, one_sided)
        text += f" {clause[0].upper()}{clause[1:]}"
    else:   # best_not_separated
        text = _tie(v, best) + f" {best.name} has the highest {m}, {best.mean:.3f} " \
            f"({interval(v, best.lo, best.hi, sign=False)}), and is kept as the highest observed, not a shown winner"
        text += f": {_no_cheaper(v, cheaper, tol, one_sided)}" if cheaper else "; no other arm costs less."
    return text + _against_baseline(v) + _against_reference(v)


def _reference_best(v, best, own: str, tol: str, one_sided: str) -> str:
    """The best observed arm is a reference (measured for comparison, not a choice): how close the
    arms that are choices come to it, and which of them is recommended."""
    pick = v.arm(v.recommended)
    c = v.comparison(pick.name, best.name)
    text = f"{best.name}, a reference and not one of the arms to choose from, has the highest {own}."
    if v.claim == "reference_matched":
        text += (f" {pick.name} is recommended: it is shown to be at most {tol} worse than {best.name} ({v.metric} "
                 f"{pick.mean:.3f}, difference {signed(c.diff)}, {one_sided} {signed(c.lower_one_sided)} > -{tol});")
        text += (f" {best.name} is better by {-c.diff:.3f} ({evidence(v, c, flip=True)}), within the tolerance."
                 if c.separated else f" the two cannot be told apart on these {v.rows:,} rows ({evidence(v, c)}).")
        return text
    gap = (f"{best.name} is better by {-c.diff:.3f} ({evidence(v, c, flip=True)})" if c.separated else
           f"the two cannot be told apart on these {v.rows:,} rows (difference {signed(c.diff)}, {evidence(v, c)})")
    need = c.rows_for_non_inferiority
    how = (f"; about {about(need)} rows would show it at this difference, an estimate" if need and need > v.rows
           else "; no number of rows would show it at this difference" if need is None else "")
    return (text + f" The closest arm to choose, {pick.name} ({v.metric} {pick.mean:.3f}, "
            f"{interval(v, pick.lo, pick.hi, sign=False)}), is recommended as the best of them: {gap}. It is not shown "
            f"to be within {tol} of {best.name} ({one_sided} {signed(c.lower_one_sided)}{how}); chance of being best: "
            f"{best.name} {best.p_best:.2f}, {pick.name} {pick.p_best:.2f}.")


def _against_reference(v) -> str:
    """The recommended arm against each reference that is not the best (the best is spoken of above)."""
    out = ""
    for ref in v.reference:
        c = v.comparison(v.recommended, ref)
        r = v.arm(ref)
        what = (f"{'better' if c.diff > 0 else 'worse'} by {abs(c.diff):.3f} ({evidence(v, c, flip=c.diff < 0)})"
                if c.separated else f"not shown different ({signed(c.diff)}, {evidence(v, c)})")
        out += f" Against the reference {ref} ({v.metric} {r.mean:.3f}): {v.recommended} is {what}."
    return out


def _tie(v, best) -> str:
    close = sorted((v.comparison(a, best.name) for a in v.contenders), key=lambda c: -c.diff)
    if not close:   # every pair separates, but the best's share of replicates is low
        return (f"{best.name} is ahead of every other arm pair by pair, but its chance of being best is only "
                f"{best.p_best:.2f} (below {v.confidence:.2f}), so no arm is shown to be the best.")
    first = close[0]
    if len(close) == 1:
        text = (f"{best.name} and {first.arm} cannot be told apart on these {v.rows:,} rows "
                f"(difference {signed(-first.diff)}, {evidence(v, first, flip=True)})")
    else:
        parts = [f"{c.arm} ({signed(-c.diff)}, {interval(v, -c.hi, -c.lo)})" for c in close]
        text = (f"{best.name} cannot be told apart from {', '.join(parts[:-1])} or {parts[-1]} "
                f"on these {v.rows:,} rows")
    n = first.rows_to_separate
    if n is None:
        text += f"; their observed difference is 0, so no number of rows would separate {best.name} from {first.arm}."
    elif n > v.rows:
        text += (f"; about {about(n)} rows would separate {best.name} from {first.arm} at this difference "
                 f"(a normal-approximation estimate for {v.power:.0%} power).")
    else:
        text += (f"; at this difference {v.rows:,} rows are at the edge of separating {best.name} from {first.arm} "
                 f"(the normal approximation asks for about {about(n)}).")
    chances = ", ".join(f"{a.name} {a.p_best:.2f}" for a in sorted(v.arms, key=lambda a: -a.p_best)[:3])
    return text + f" Chance of being best: {chances}."


def _no_cheaper(v, cheaper: list, tol: str, one_sided: str) -> str:
    """A clause (lower case, no leading space) on the cheaper arms that failed non-inferiority."""
    if not cheaper:
        return "no other arm costs less."
    c = max(cheaper, key=lambda c: c.lower_one_sided)
    need = c.rows_for_non_inferiority
    how = (f"; about {about(need)} rows would show it at this difference, an estimate" if need and need > v.rows
           else "; no number of rows would show it at this difference" if need is None else "")
    return f"no cheaper arm is shown to be within {tol} of it (closest: {c.arm}, {one_sided} {signed(c.lower_one_sided)}{how})."


def _against_baseline(v) -> str:
    if v.baseline is None or v.recommended == v.baseline:
        return ""
    c = v.comparison(v.recommended, v.baseline)
    if c.separated:
        word = "better" if c.diff > 0 else "worse"
        return f" Against the baseline {v.baseline}: {word} by {abs(c.diff):.3f} ({evidence(v, c, flip=c.diff < 0)})."
    return f" Against the baseline {v.baseline}: not shown different ({signed(c.diff)}, {evidence(v, c)})."
