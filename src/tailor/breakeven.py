"""Break-even: cost against traffic. A weight arm pays for training once and then serves short
prompts; a prompting arm pays nothing up front and more per request (its shots and passages).
With training paid off over a horizon of months, each arm's monthly cost at R requests a month is
    train_cost / months + R / 1000 x cost_per_1k_requests,
so a weight arm W becomes cheaper than a prompting arm P above
    R* = (train_cost_W / months) / ((cost_per_1k_P - cost_per_1k_W) / 1000)
requests a month, and never when it costs as much or more per request (Meta's guide to adapting
LLMs weighs exactly this: fine-tuning's up-front cost against shorter prompts at inference)."""

from __future__ import annotations

from .methods import METHODS
from .results import ArmResult, BreakEven

HORIZONS = (3, 6, 12)   # months over which training is paid off


def break_even(arms: list[ArmResult], requests_per_month: int | None) -> list[BreakEven]:
    """One row per (weight arm, prompting arm) pair of finished, priced arms. An external arm (a
    closed model's row) is left out: its tokens are priced at the open base's price, not its own."""
    ok = [a for a in arms if a.ok and a.cost.cost_per_1k_requests > 0
          and not (a.method in METHODS and METHODS[a.method].external)]
    trained = [a for a in ok if a.cost.train_cost > 0]
    prompting = [a for a in ok if a.cost.train_cost == 0]
    out = []
    for w in trained:
        for p in prompting:
            saving = (p.cost.cost_per_1k_requests - w.cost.cost_per_1k_requests) / 1000   # per request
            volumes = {m: (w.cost.train_cost / m / saving if saving > 0 else None) for m in HORIZONS}
            out.append(BreakEven(weight_arm=w.name, prompt_arm=p.name, train_cost=w.cost.train_cost,
                                 saving_per_1k=saving * 1000, requests_per_month=volumes,
                                 cheaper_now=requests_per_month is not None and saving > 0
                                 and requests_per_month > volumes[6]))
    return out


def sentence(rows: list[BreakEven], requests_per_month: int | None) -> str:
    """The pairs in plain English, at the 6-month horizon with 3 and 12 in brackets."""
    parts = []
    for r in rows:
        v = r.requests_per_month
        if v[6] is None:
            parts.append(f"{r.weight_arm} never becomes cheaper than {r.prompt_arm}: it costs as much or more per request")
            continue
        parts.append(f"{r.weight_arm} becomes cheaper than {r.prompt_arm} above {v[6]:,.0f} requests a month with its "
                     f"training paid off over 6 months (3 months: {v[3]:,.0f}; 12 months: {v[12]:,.0f})"
                     + (f"; at {requests_per_month:,} a month it already is" if r.cheaper_now else ""))
    return "; ".join(parts) + "." if parts else ""
