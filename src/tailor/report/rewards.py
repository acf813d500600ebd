"""The report's section for arms trained from graders' rewards (GRPO): each reward's mean over the
first and the last quarter of the training steps, kept apart by kind, with the answers' length.
A format reward that rises while correctness stays flat is a format fix, not a reasoning gain;
this is where the two are told apart. Read from the training history the arm's fit returned."""

from __future__ import annotations

from .fmt import esc


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def _num(x: float | None, d: int = 3) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def rewards_section(v) -> str:
    from .sections import _section
    arms = [a for a in v.ok if (a.train or {}).get("rewards") and (a.train or {}).get("history")]
    if not arms:
        return ""
    rows = []
    for a in arms:
        history = a.train["history"]
        q = max(1, len(history) // 4)
        first, last = history[:q], history[-q:]
        for r in a.train["rewards"] + [{"name": "total", "kind": "weighted sum", "weight": None}]:
            key = "reward" if r["name"] == "total" else f"reward/{r['name']}"
            start, end = _mean(first, key), _mean(last, key)
            change = None if start is None or end is None else end - start
            rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(r['name'])}</td><td>{esc(r.get('kind') or '')}</td>"
                        f"<td>{'' if r.get('weight') is None else esc(r['weight'])}</td><td>{_num(start)}</td>"
                        f"<td>{_num(end)}</td><td>{'—' if change is None else f'{change:+.3f}'}</td>"
                        f"<td>{_num(_mean(first, 'response_length'), 1)} → {_num(_mean(last, 'response_length'), 1)}</td>"
                        f"<td>{len(history)}</td></tr>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>reward</th><th>kind</th><th>weight</th>'
             "<th>first quarter</th><th>last quarter</th><th>change</th><th>answer tokens</th><th>steps</th>"
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    note = ("Means of each reward over the first and the last quarter of the training steps, on the training "
            "prompts (the test rows are in the comparison above). A format reward that rises while the "
            "correctness reward stays flat is a format fix, not a reasoning gain; a rise within a few steps' "
            "noise is no rise. Every step's values are in the arm's train_metrics.jsonl.")
    return _section("rewards", "Rewards during training: which one moved", table, note)
