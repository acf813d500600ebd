"""Calibrating an arm that picks one of a fixed set of labels: contextual calibration (Zhao et al.
2021, "Calibrate Before Use: Improving Few-Shot Performance of Language Models") and a batch prior
(Zhou et al. 2023, "Batch Calibration").

A model asked to pick a label leans towards some labels whatever the input says: the majority or
the last label of the shots, a label whose words are common, a shorter label. Contextual
calibration measures that lean with the arm's own prompt (instruction, shots, passages) and a
content-free input ("N/A", "", "[MASK]") in place of the row's text: the label probabilities,
normalised over the labels and averaged over those inputs, are the prior p_cf. A prediction then
divides it out (W = diag(p_cf)^-1, b = 0): argmax over labels of log p(label | x) - log p_cf(label).

`batch`: the prior is the mean label probability over a batch of real inputs (Zhou et al. 2023).
The paper takes the test batch itself; here the batch is `rows` training inputs (their labels are
never read), drawn when the arm is fitted, because a server answering one request has no batch
and what is served must be what was measured.

Either prior is measured once, when the arm is fitted, and saved in its recipe (`calibration`:
method, the inputs it was measured on, `log_prior` per label); measurement, `tailor predict` and
the server subtract the same numbers.
"""

from __future__ import annotations

import math
import random

from .errors import TailorError
from .prompts import assemble
from .task import Example

CONTENT_FREE = ("N/A", "", "[MASK]")   # Zhao et al. 2021's content-free inputs


def label_set(task) -> list[str]:
    """The labels a prior is measured over: a classify task's labels, or the one option set every
    row of a choice task shares (yes/no, A-D). Choice rows with options of their own have no
    label prior to divide out, and are refused."""
    if task.kind == "classify":
        if not task.labels:
            raise TailorError(f"{task.name}: calibrate needs the task's labels")
        return list(task.labels)
    if task.kind != "choice":
        raise TailorError(f"calibrate applies to classify and choice tasks; {task.name} is a {task.kind} task "
                          "(set calibrate: off)")
    sets = {frozenset(ex.choices or ()) for ex in task.examples}
    if len(sets) != 1 or not next(iter(sets)):
        raise TailorError(f"{task.name}: calibrate needs one option set shared by every row (yes/no, A-D); "
                          f"its rows have {len(sets)} different ones (set calibrate: off)")
    return list(task.examples[0].choices)


def log_prior(label_logprobs: list[list[float]], labels: list[str]) -> dict[str, float]:
    """From each input's log-probabilities of `labels`: the mean of their probabilities
    normalised over the labels (Zhao et al. average p_cf over the content-free inputs), as log
    probabilities that sum to one in probability. Computed in log space: a label hundreds of
    nats less likely than another must keep a finite prior, not underflow to log(0)."""
    if not label_logprobs:
        raise TailorError("calibrate: no inputs to measure the label prior on")
    normalised = [[lp - _logsumexp(lps) for lp in lps] for lps in label_logprobs]
    mean = [_logsumexp([row[j] for row in normalised]) - math.log(len(normalised)) for j in range(len(labels))]
    z = _logsumexp(mean)
    return {label: lp - z for label, lp in zip(labels, mean)}


def calibrated(options: list[str], logprobs: list[float], prior: dict[str, float]) -> list[float]:
    """Each option's log-probability with the prior divided out: log p(option | x) - log p_cf(option)."""
    missing = next((o for o in options if o not in prior), None)
    if missing is not None:
        raise TailorError(f"option '{missing}' has no calibrated prior: the arm was calibrated on the labels "
                          f"{sorted(prior)}")
    return [lp - prior[o] for o, lp in zip(options, logprobs)]


def measure_prior(adapted, task, method: str, *, cache=None, rows: int = 64, seed: int = 0,
                  batch_size: int = 16) -> dict:
    """The arm's label prior, through its own prompts (shots chosen for, and passages retrieved
    for, each calibration input as for any row) and the engine, batched; returned as the recipe's
    `calibration` field."""
    labels = label_set(task)
    choices = labels if task.kind == "choice" else None
    if method == "contextual":
        inputs = [Example(f"content-free-{i}", text, "", choices) for i, text in enumerate(CONTENT_FREE)]
        measured_on = {"content_free": list(CONTENT_FREE)}
    elif method == "batch":
        pool = list(task.splits.get("train") or [])
        if not pool:
            raise TailorError(f"{task.name}: calibrate: batch measures its prior on training inputs, and the train "
                              "split is empty")
        spec = adapted.recipe.shots   # a fixed shot is not asked about itself (its answer is in the prompt)
        shown = set(spec.ids) if spec is not None and spec.selector == "fixed" else set()
        pool = [ex for ex in pool if ex.id not in shown]
        picked = random.Random(seed).sample(pool, min(rows, len(pool)))
        # labels never read: the targets are blanked, options kept in the row's own order
        inputs = [Example(ex.id, ex.input, "", ex.choices) for ex in picked]
        measured_on = {"rows": [ex.id for ex in picked]}
    else:
        raise TailorError(f"calibrate: unknown method '{method}' (off, contextual or batch)")
    prompts, _ = assemble(adapted.builder, inputs, adapted.shots, adapted.passages)
    options = [ex.choices or labels for ex in inputs]
    engine = adapted.engine(cache, batch_size=batch_size, progress=False)
    scores = engine.score([p.text for p in prompts], [[adapted.builder.target_text(o) for o in opts] for opts in options])
    # per input, the log-probabilities in `labels` order (a choice row may list its options in another order)
    per_input = [[dict(zip(opts, s.logprobs))[label] for label in labels] for opts, s in zip(options, scores)]
    return {"method": method, **measured_on, "labels": labels, "log_prior": log_prior(per_input, labels)}


def summary(calibration: dict | None, predictions) -> dict | None:
    """What calibration did on these rows: the prior, and the share of each predicted label
    before and after it (how far the predictions lean towards one label), and the rows it changed."""
    if not calibration:
        return None
    labels = calibration["labels"]
    before = [p.uncalibrated for p in predictions]
    after = [p.prediction for p in predictions]
    n = max(len(predictions), 1)

    def shares(preds: list) -> dict[str, float]:
        return {label: sum(p == label for p in preds) / n for label in labels}

    return {"method": calibration["method"], "rows": len(predictions),
            "prior": {label: math.exp(lp) for label, lp in calibration["log_prior"].items()},
            "shares_before": shares(before), "shares_after": shares(after),
            "changed": sum(b != a for b, a in zip(before, after))}


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))
