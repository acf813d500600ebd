"""Distillation losses on the one training loop (Hinton et al. 2015: soft targets at a
temperature T, the KL term scaled by T² so its gradients keep their size as T changes).

Every example carries in `extra` what its loss needs; its continuations are packed under the
loop's tree mask, so a prompt runs once for all of them. Each example weighs the same (the
loop's unit is the example), split between the teacher and the gold target by `alpha`:
a row with a gold target puts `alpha` on it and 1 - alpha on the teacher; an unlabelled row
learns from the teacher alone.

- label-set KL (classify, choice): the continuations are the options; the student's
  distribution over them is the softmax of each option's summed log-probability (the engine's
  own scoring), compared with the teacher's probabilities over the same options. Options are
  text, so teacher and student may tokenise them differently.
- top-k token KL (generate): continuation 0 is the teacher's answer; at each of its positions
  the teacher's top-k log-probabilities, renormalised over those k at T, against the student's
  log-softmax at T over the whole vocabulary, read at the same k ids (the sparse form of the
  full KL: mass the teacher puts outside its top k is dropped, not guessed).
- weighted cross-entropy (hard labels and gold): each continuation's mean token NLL times its
  weight (`extra["weights"]`).
"""

from __future__ import annotations

import torch

from ..train.data import Batch, Encoded
from ..train.losses import target_logits


def label_set_kl(student_scores: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher_T ‖ student_T) over one example's options (1-D tensors)."""
    t_log = torch.log(teacher_probs.clamp_min(1e-12)) / temperature
    t_log = t_log - torch.logsumexp(t_log, -1)
    s_log = torch.log_softmax(student_scores / temperature, -1)
    return temperature ** 2 * (t_log.exp() * (t_log - s_log)).sum(-1)


def topk_kl(student_logits: torch.Tensor, top_ids: torch.Tensor, top_lp: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · Σ_positions KL over each position's teacher top-k ([positions, vocab], [positions, k] ×2)."""
    t_log = top_lp / temperature
    t_log = t_log - torch.logsumexp(t_log, -1, keepdim=True)
    s_log = torch.log_softmax(student_logits.float() / temperature, -1).gather(-1, top_ids)
    return temperature ** 2 * (t_log.exp() * (t_log - s_log)).sum()


class DistillLoss:
    """Summed over the batch's examples; the loop divides by the step's examples."""

    def __init__(self, soft: str | None, temperature: float = 1.0):
        self.soft, self.temperature = soft, temperature   # soft: None (hard / gold), "labels" or "tokens"

    def units(self, examples: list[Encoded]) -> int:
        return len(examples)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = target_logits(model, batch).float()
        labels, owner = batch.labels.to(logits.device), batch.sequence.to(logits.device)
        token_lp = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
        n_seq = len(batch.sequences)
        seq_lp = torch.zeros(n_seq, device=logits.device).index_add_(0, owner, token_lp)
        seq_len = torch.zeros(n_seq, device=logits.device).index_add_(0, owner, torch.ones_like(token_lp))
        at = {s: k for k, s in enumerate(batch.sequences)}
        total, kd_sum, ce_sum = logits.new_zeros(()), 0.0, 0.0
        for i, ex in enumerate(batch.examples):
            seqs = [at[(i, j)] for j in range(len(ex.targets))]
            if self.soft == "labels":
                kd = label_set_kl(seq_lp[seqs], torch.tensor(ex.extra["teacher"], device=logits.device),
                                  self.temperature)
                gold = ex.extra.get("gold")
                ce = -torch.log_softmax(seq_lp[seqs], -1)[gold] if gold is not None else logits.new_zeros(())
                w_gold = ex.extra.get("alpha", 0.0) if gold is not None else 0.0
                loss = (1 - w_gold) * kd + w_gold * ce
            else:
                weights = ex.extra["weights"]
                nll = -seq_lp[seqs] / seq_len[seqs].clamp_min(1)
                loss = ce = sum(w * x for w, x in zip(weights, nll))
                kd = logits.new_zeros(())
                if self.soft == "tokens":   # continuation 0 is the teacher's answer
                    rows = (owner == seqs[0]).nonzero().squeeze(-1)
                    ids = torch.tensor(ex.extra["topk_ids"], device=logits.device)
                    lp = torch.tensor(ex.extra["topk_lp"], device=logits.device)
                    kd = topk_kl(logits[rows], ids, lp, self.temperature) / max(len(rows), 1)
                    # the teacher's weight goes to its soft targets, the rest stays on gold
                    loss = weights[0] * kd + sum(w * x for w, x in zip(weights[1:], nll[1:]))
            total = total + loss
            kd_sum += float(kd.detach())
            ce_sum += float(ce.detach())
        return total, {"kd": kd_sum, "ce": ce_sum}
