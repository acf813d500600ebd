"""The report's preference section, for a ladder on preference pairs: every arm's held-out
preference accuracy (a policy: the chosen answer more likely than the rejected one; a reward
model: the chosen answer scored higher), its answers' length (reward hacking shows as length
growth) and, for PPO arms, the reward and KL to the reference over training; and, when the ladder has a
`judge:` (a gold reward model trained on prompts the policies never saw; tailor.preference.judge),
every policy's judge reward, win rate and KL against the reference arm, length change, and for
PPO arms the judge's reward against KL over the saved checkpoints, the best one marked."""

from __future__ import annotations

from .fmt import DASH, esc


def _num(value) -> str:
    return DASH if value is None else f"{value:.3f}"


def preference_section(v) -> str:
    from .sections import _section
    arms = [a for a in v.ok if "preference_accuracy" in a.metrics or "pairwise_accuracy" in a.metrics]
    if not arms:
        return ""
    rows = []
    for a in arms:
        scorer = "pairwise_accuracy" in a.metrics
        hist = (a.train or {}).get("history") or []
        ppo = (f"reward {hist[0]['reward']:+.3f} → {hist[-1]['reward']:+.3f}, KL {hist[-1]['kl']:.3f}, "
               f"length {hist[0]['response_length']:.1f} → {hist[-1]['response_length']:.1f} "
               f"({len(hist)} iterations)") if hist else DASH
        rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(a.method)}</td>"
                    f"<td>{_num(a.metrics.get('pairwise_accuracy' if scorer else 'preference_accuracy'))}</td>"
                    f"<td>{'reward model (judges pairs)' if scorer else _num(a.metrics.get(v.primary))}</td>"
                    f"<td>{DASH if scorer else f'{a.cost.completion_tokens_per_request:.1f}'}</td>"
                    f"<td>{esc(ppo)}</td></tr>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>method</th><th>held-out preference accuracy</th>'
             f"<th>{esc(v.primary)}</th><th>answer tokens</th><th>PPO training (reward, KL to the reference)</th>"
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    note = esc("Preference accuracy: the share of held-out pairs (prompts never trained on) whose chosen answer the "
            "policy finds more likely than the rejected one (summed log-probabilities); for a reward model, the "
            "share it scores higher (Bradley–Terry, as InstructGPT: Ouyang et al. 2022). DPO: Rafailov et al. 2023; "
            "PPO with a per-token KL penalty: Schulman et al. 2017, Ouyang et al. 2022. Length growth with rising "
               "reward is the usual sign of reward hacking.")
    return _section("preference", "Preference alignment", table + _judged(v), note)


def _judged(v) -> str:
    """The judge's table (every graded policy) and, per PPO arm with checkpoints, its plot."""
    from .plots import Point, color, scatter
    arms = [a for a in v.ok if a.judge]
    if not arms:
        return ""
    j = arms[0].judge
    ref, base = j.reference or DASH, j.base or DASH
    rows = []
    for a in arms:
        g = a.judge
        change = DASH if g.length_change is None else f"{g.length_change:+.1f}"
        disjoint = {True: "yes", False: "no: shares training prompts", None: "unknown"}[g.disjoint]
        rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(a.method)}</td>"
                    f"<td>{_num(a.metrics.get('preference_accuracy'))}</td><td>{g.reward:+.3f}</td>"
                    f"<td>{_num(g.win_rate)}</td><td>{_num(g.kl)}</td><td>{g.length:.1f}</td><td>{change}</td>"
                    f"<td>{esc(disjoint)}</td></tr>")
    acc = DASH if j.judge_accuracy is None else f"{j.judge_accuracy:.3f}"
    html = (f'<h3>Graded by a gold reward model: {esc(j.judge)}</h3>'
            f'<p>{j.prompts} held-out prompts; the judge\'s own held-out pairwise accuracy {acc}.</p>'
            '<table class="grid"><thead><tr><th>arm</th><th>method</th><th>preference accuracy</th>'
            f"<th>judge reward (greedy)</th><th>win rate vs {esc(ref)} (ties ½)</th>"
            f"<th>KL to {esc(ref)} (nats / answer)</th><th>answer tokens</th><th>change vs {esc(base)}</th>"
            f"<th>judge on disjoint prompts</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    for a in [x for x in arms if x.judge.checkpoints]:
        cps = a.judge.checkpoints
        points = [Point("start" if c.step == 0 else f"step {c.step}", c.kl, c.reward,
                        color(1 if c.step == 0 else 0), c.best) for c in cps]
        best = next((c for c in cps if c.best), None)
        cells = "".join(f"<tr><td>{'start (' + esc(ref) + ')' if c.step == 0 else c.step}{' ★ best' if c.best else ''}</td>"
                        f"<td>{_num(c.kl)}</td><td>{c.reward:+.3f}</td><td>{_num(c.win_rate)}</td>"
                        f"<td>{c.length:.1f}</td><td>{_num(c.train_kl)}</td><td>{_num(c.proxy_reward)}</td></tr>"
                        for c in cps)
        html += (f"<h3>{esc(a.name)}: the judge's reward against KL over its checkpoints</h3>"
                 + scatter(points, f"KL to {ref} on held-out prompts (nats per answer)", "judge reward (greedy)",
                           log_x=False, frontier=False)
                 + '<table class="grid"><thead><tr><th>checkpoint</th><th>KL to the reference</th>'
                 "<th>judge reward</th><th>win rate</th><th>answer tokens</th><th>rollout KL (training)</th>"
                 f"<th>proxy reward (training)</th></tr></thead><tbody>{cells}</tbody></table>"
                 + (f"<p>Best checkpoint by the judge: step {best.step} (judge reward {best.reward:+.3f} at KL "
                    f"{_num(best.kl)}).</p>" if best else ""))
    note = esc("A policy trained against a reward model (PPO) or on the same preferences (DPO) can please that "
               "model more than it improves; Gao et al. 2023 (Scaling laws for reward model overoptimization) "
               "measure this with a separate gold reward model, and InstructGPT (Ouyang et al. 2022) grades with "
               "labelers who wrote none of the training comparisons. Here the judge is a reward model trained on "
               "other prompts than the policies (train_prompts: half-b against half-a). Per held-out prompt: the "
               "judge's reward of each arm's greedy answer, the win rate against the reference arm's answer (ties "
               "count half), and the KL to the reference, the mean over one temperature-1 sample per prompt of "
               "log π − log π_ref (summed over the answer's tokens). DPO: Rafailov et al. 2023. On a few dozen "
               "prompts, differences of a few points are noise.")
    return html + f'<p class="note">{note}</p>'

