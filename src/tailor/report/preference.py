"""The report's preference section, for a ladder on preference pairs: every arm's held-out
preference accuracy (a policy: the chosen answer more likely than the rejected one; a reward
model: the chosen answer scored higher), its answers' length (reward hacking shows as length
growth) and, for PPO arms, the reward and KL to the reference over training. A win rate judged
by a gold reward model needs one trained on disjoint prompts: bench/preference_alignment.py
measures it."""

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
    return _section("preference", "Preference alignment", table, note)
