"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization") as a
loss on the one training loop, in the shape of TRL's `KTOTrainer`.

KTO learns from single completions marked desirable or undesirable (thumbs up/down), not from
pairs. With r = log π(y|x) − log π_ref(y|x) for a row's own completion and the reference point
z0 = max(0, mean over mismatched rows of log π(y'|x) − log π_ref(y'|x)), detached:

    desirable:    desirable_weight   × (1 − σ(β (r − z0)))
    undesirable:  undesirable_weight × (1 − σ(β (z0 − r)))

the mean over a step's rows. z0 estimates KL(π ‖ π_ref) from completions of *other* prompts
(y' answers another row's prompt), as TRL does by shifting the completions of a batch by one;
here each row's mismatched completion is fixed once, by a seeded rotation over rows of different
prompts, and both continuations share the prompt under the tree mask (one packed row). z0 is the
mean over the micro-batch's rows (TRL: over a device's batch). Before any update π = π_ref, so
r = z0 = 0 and every row's loss is half its weight.

Rows come from thumbs up/down files (`data.thumbs`) or from pairs, each pair read as one
desirable (chosen) and one undesirable (rejected) row, as TRL's `unpair_preference_dataset` does.
A completion labelled both ways for one prompt is refused; a row repeating an earlier one (an
article's faithful summary in several pairs) is kept, as TRL keeps it, and counted. The
reference is the base with the adapter switched off, or precomputed log-probabilities (a frozen
SFT adapter), through DPO's `reference_logprobs` and `precompute_reference`.
"""

from __future__ import annotations

import random

import torch

from ..errors import TailorError
from ..train.data import Batch, Encoded, EncodeReport
from ..train.losses import sequence_logprobs
from .dpo import pair_index, reference_logprobs


def kto_rows(examples) -> tuple[list[tuple], int]:
    """(example, row id, completion, desirable) for every row, and how many rows repeat an
    earlier (prompt, completion, label)."""
    from .data import prompt_key, thumbs
    rows, labels, repeated = [], {}, 0
    for ex in examples:
        if isinstance(ex.meta.get("rejected"), str):
            found = [(ex, f"{ex.id}:chosen", ex.target, True), (ex, f"{ex.id}:rejected", ex.meta["rejected"], False)]
        elif thumbs(ex) is not None:
            found = [(ex, ex.id, ex.meta["completion"], thumbs(ex))]
        else:
            raise TailorError(f"kto: example '{ex.id}' is neither a thumbs up/down row (prompt, completion, label) "
                              "nor a pair (prompt, chosen, rejected)")
        for row in found:
            key = (ex.meta.get("prompt_key") or prompt_key(ex.input), row[2].strip())
            if key in labels and labels[key][1] != row[3]:
                raise TailorError(f"kto: row '{row[1]}' marks a completion {'desirable' if row[3] else 'undesirable'} "
                                  f"that row '{labels[key][0]}' marks {'desirable' if labels[key][1] else 'undesirable'} "
                                  "for the same prompt")
            repeated += key in labels
            labels.setdefault(key, (row[1], row[3]))
            rows.append(row)
    if not rows:
        raise TailorError("kto: no rows to train on")
    return rows, repeated


def mismatched(keys: list[str], seed: int) -> list[int]:
    """For each row, another row whose prompt differs: its completion is this row's KL sample.
    Rows are shuffled (seeded) and each takes the next row in that order with another prompt,
    TRL's shift-by-one over a batch, made to skip rows of the same prompt."""
    n = len(keys)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out = [0] * n
    for p, i in enumerate(order):
        j = next((order[(p + d) % n] for d in range(1, n) if keys[order[(p + d) % n]] != keys[i]), None)
        if j is None:
            raise TailorError("kto: every row has the same prompt, but the reference point z0 is estimated from "
                              "completions of other prompts; add rows of at least one other prompt")
        out[i] = j
    return out


def encode_kto(builder, examples, seq_len: int, overlong: str = "drop",
               seed: int = 0) -> tuple[list[Encoded], EncodeReport, dict]:
    """Each row as prompt ids + [its completion, a mismatched completion], formatted by THE prompt
    builder and encoded as the engine encodes a prompt and its options; `extra["desirable"]`.
    Over-long rows are dropped and counted (or raise), never truncated."""
    from .data import prompt_key
    rows, repeated = kto_rows(examples)
    keys = [ex.meta.get("prompt_key") or prompt_key(ex.input) for ex, *_ in rows]
    other = mismatched(keys, seed)
    answers = [builder.encode(builder.target_text(text)) for _, _, text, _ in rows]
    out, report, kept = [], EncodeReport(), {True: 0, False: 0}
    for k, (ex, row_id, _, desirable) in enumerate(rows):
        prompt = builder.build(ex)
        enc = Encoded(row_id, builder.encode(prompt.text), [answers[k], answers[other[k]]], {"desirable": desirable})
        if len(enc) > seq_len or prompt.over_budget:
            if overlong == "error":
                raise TailorError(f"kto row '{row_id}' has {len(enc)} tokens with its mismatched completion, over "
                                  f"seq_len {seq_len} (raise seq_len, or set overlong: drop)")
            report.too_long.append(row_id)
            continue
        report.prompt_tokens += len(enc.prompt)
        report.target_tokens += sum(map(len, enc.targets))
        kept[desirable] += 1
        out.append(enc)
    report.kept = len(out)
    if not out:
        raise TailorError(f"kto: no rows left (all {len(rows)} over seq_len {seq_len})")
    return out, report, {"desirable": kept[True], "undesirable": kept[False], "repeated_rows": repeated}


def kto_terms(policy, reference, policy_kl, reference_kl, desirable, beta: float, desirable_weight: float,
              undesirable_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row loss, the implicit rewards β r (detached) and z0, from summed log-probabilities of
    each row's completion and of its mismatched completion under the policy and the reference."""
    z0 = (policy_kl - reference_kl).mean().clamp(min=0).detach()
    r = policy - reference
    loss = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))))
    return loss, beta * r.detach(), z0


class KTOLoss:
    """The loss the loop calls on each micro-batch of rows: summed over rows (the loop divides by
    the step's rows). Logged: z0 (`kl`), the implicit rewards of each kind summed and the share of
    desirable rows (`rewards_desirable / desirable` is their mean reward)."""

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
        if beta <= 0 or desirable_weight <= 0 or undesirable_weight <= 0:
            raise TailorError(f"kto: beta and the weights must be > 0, got {beta}, {desirable_weight}, "
                              f"{undesirable_weight}")
        self.beta, self.desirable_weight, self.undesirable_weight = beta, desirable_weight, undesirable_weight

    def units(self, examples: list[Encoded]) -> int:
        return len(examples)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        lp = sequence_logprobs(model, batch)
        ref = reference_logprobs(model, batch).to(lp.device, lp.dtype)
        own, kl = pair_index(batch)   # continuation 0: the row's completion; 1: its mismatched one
        desirable = torch.tensor([ex.extra["desirable"] for ex in batch.examples], device=lp.device)
        loss, rewards, z0 = kto_terms(lp[own], ref[own], lp[kl].detach(), ref[kl], desirable, self.beta,
                                      self.desirable_weight, self.undesirable_weight)
        n = len(batch.examples)
        logs = {"kl": z0.item() * n, "desirable": desirable.float().sum().item(),
                "rewards_desirable": rewards[desirable].sum().item(),
                "rewards_undesirable": rewards[~desirable].sum().item()}
        return loss.sum(), logs
