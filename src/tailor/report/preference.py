"""The report's preference section, for a ladder on preference pairs: every arm's held-out
preference accuracy (a policy: the chosen answer more likely than the rejected one; a reward
model: the chosen answer scored higher), its answers' length (reward hacking shows as length
growth) and, for PPO arms, the reward and KL to the reference over training; and, when the ladder has a
`judge:` (a gold reward model trained on prompts the policies never saw; tailor.preference.judge),
every policy's judge reward, win rate and KL against the reference arm, length change, and for
PPO arms the judge's reward against KL over the saved checkpoints, the best one marked."""

from __future__ import annotations

from .plots import Point, color, scatter


def preference_section(v) -> dict | None:
    """The context of templates/preference.html: every arm's held-out preference accuracy, and the
    judge's table (every graded policy) and, per PPO arm with checkpoints, its plot."""
    arms = [a for a in v.ok if "preference_accuracy" in a.metrics or "pairwise_accuracy" in a.metrics]
    if not arms:
        return None
    judged = [a for a in v.ok if a.judge]
    checkpoints = []
    for a in [x for x in judged if x.judge.checkpoints]:
        cps = a.judge.checkpoints
        ref = judged[0].judge.reference or "—"
        points = [Point("start" if c.step == 0 else f"step {c.step}", c.kl, c.reward,
                        color(1 if c.step == 0 else 0), c.best) for c in cps]
        plot = scatter(points, f"KL to {ref} on held-out prompts (nats per answer)", "judge reward (greedy)",
                       log_x=False, frontier=False)
        checkpoints.append((a.name, plot, cps, next((c for c in cps if c.best), None)))
    return {"primary": v.primary, "rows": [(a, "pairwise_accuracy" in a.metrics, (a.train or {}).get("history") or [])
                                           for a in arms],
            "judged": judged, "checkpoints": checkpoints}
