"""What a training arm optimises, as a function the one loop calls on each micro-batch (the
shape of torchtune's `_loss_step`): cross-entropy on target tokens here; distillation, reward and
preference losses live with their arms and use the same helpers.

A loss returns its value *summed* over the batch's units (target tokens, pairs, ...) and says,
through `units`, how many units a step holds: the loop divides by the step's total, so gradient
accumulation over micro-batches (and processes) gives the gradient of the step's mean.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .data import Batch, Encoded


class Loss(Protocol):
    def units(self, examples: list[Encoded]) -> int:
        """What one step's loss is the mean over, for these examples."""

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss summed over the batch's units, and sums of what to log (divided by units)."""


def target_logits(model, batch: Batch) -> torch.Tensor:
    """Logits of exactly the positions that predict a target token ([targets, vocab]): the
    vocabulary projection (49k wide) is computed for nothing else."""
    from ..engine import causal_lm_of, head_logits
    device = next(model.parameters()).device
    rows, cols = (t.to(device) for t in batch.select)
    causal = causal_lm_of(model)
    if batch.attention_mask is None or batch.attention_mask.dim() == 3:
        # a tree mask (several continuations of one prompt) goes in as booleans: True attends,
        # whatever dtype autocast gives the queries
        mask = None if batch.attention_mask is None else batch.attention_mask[:, None].to(device)
        hidden = causal.get_decoder()(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                                      attention_mask=mask, use_cache=False).last_hidden_state
        return head_logits(causal, hidden[rows, cols])
    # A soft prompt or prefix must run through PEFT's own forward; only the columns that predict
    # a target are projected onto the vocabulary (logits_to_keep as indices).
    keep = torch.unique(cols) + batch.soft_tokens
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                logits_to_keep=keep, use_cache=False)
    return out.logits[rows, torch.searchsorted(keep, cols + batch.soft_tokens)]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, labels.to(logits.device)[:, None]).squeeze(-1)


def sequence_logprobs(model, batch: Batch) -> torch.Tensor:
    """Summed log-probability of each continuation in the batch ([len(batch.sequences)])."""
    lp = token_logprobs(target_logits(model, batch), batch.labels)
    return torch.zeros(len(batch.sequences), device=lp.device).index_add_(0, batch.sequence.to(lp.device), lp)


class SFT:
    """Cross-entropy on the target tokens, the mean over the step's target tokens."""

    def units(self, examples: list[Encoded]) -> int:
        return sum(len(t) for ex in examples for t in ex.targets)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = target_logits(model, batch)
        return torch.nn.functional.cross_entropy(logits.float(), batch.labels.to(logits.device), reduction="sum"), {}
