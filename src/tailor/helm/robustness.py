"""Robustness (Liang et al. 2022, HELM, section 4.6): an arm measured again on its test rows with
each invariance perturbation applied to the input, through THE measurement path
(`tailor.measure.measure`: the arm's own prompts, shots, passages and engine), and compared row
by row with its clean measurement: the change in the primary metric with a paired bootstrap
interval. HELM's robustness figure is the worst case: a row counts as right only if it is right
clean and under every perturbation (per-row minimum of the scores)."""

from __future__ import annotations

from ..decide import row_scores
from ..measure import measure
from ..progress import console
from ..task import primary_metric
from .paired import paired_delta
from .perturb import perturb_rows


def robustness(adapted, task, rows, clean_predictions, options, *, cache=None, batch_size: int = 16,
               max_new_tokens: int = 64, progress: bool = True) -> dict:
    """`rows`: the test rows the arm was measured on, `clean_predictions` its predictions on them
    (in order); `options`: helm.options.RobustnessOptions. Returns the JSON kept in results.json."""
    n = min(options.rows or len(rows), len(rows))
    rows, clean = rows[:n], clean_predictions[:n]
    if [p.id for p in clean] != [r.id for r in rows]:
        raise ValueError("robustness: the clean predictions are not of the rows given")
    kind, metric = task.kind, primary_metric(task)
    base = row_scores(kind, clean)
    worst = list(base)
    out = {"metric": metric, "rows": n, "seed": options.seed, "typo_rate": options.typo_rate, "clean": sum(base) / n,
           "perturbations": {}}
    for name in options.perturbations:
        perturbed, changed = perturb_rows(rows, name, options.seed, options.typo_rate)
        console.print(f"  robustness: {name} ({changed} of {n} inputs changed)")
        m = measure(adapted, task, perturbed, cache=cache, batch_size=batch_size, max_new_tokens=max_new_tokens,
                    progress=progress, latency_requests=0)
        scores = row_scores(kind, m.predictions)
        worst = [min(a, b) for a, b in zip(worst, scores)]
        out["perturbations"][name] = {"changed": changed, **paired_delta(base, scores, seed=options.seed),
                                      "examples": [{"id": r.id, "input": r.input_text[:200],
                                                    "clean": c.prediction, "perturbed": p.prediction}
                                                   for r, c, p in zip(perturbed, clean, m.predictions)
                                                   if c.prediction != p.prediction][:3]}
    out["worst_case"] = paired_delta(base, worst, seed=options.seed)
    return out
