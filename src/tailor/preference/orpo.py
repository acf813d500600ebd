"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model")
as a loss on the one training loop, in the shape of TRL's `ORPOTrainer`.

One objective does SFT and preference at once, with no reference model: with P the
length-averaged probability of an answer (exp of its mean token log-probability) and
odds(y) = P / (1 − P),

    loss = NLL(chosen) + λ × −log σ(log odds(chosen) − log odds(rejected))

where NLL(chosen) is the chosen answer's mean token negative log-likelihood (per pair; TRL takes
the token mean over its batch). λ is `or_weight` (TRL's `ORPOConfig.beta`). Pairs are encoded
as DPO encodes them (`dpo.encode_pairs`: both answers under one prompt, one packed row).
"""

from __future__ import annotations

import torch

from ..errors import TailorError
from ..train.data import Batch, Encoded
from ..train.losses import sequence_logprobs
from .dpo import pair_index

# log(1 − P) is −inf at P = 1 (an answer the model is certain of, token by token): its mean
# log-probability is held this far below 0 inside that log, so the loss and gradient stay finite.
MAX_MEAN_LOGP = -1e-6


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P / (1 − P)) from log P, with log(1 − P) = log(−expm1(log P)) (accurate near P = 1)."""
    return mean_logp - torch.log(-torch.expm1(mean_logp.clamp(max=MAX_MEAN_LOGP)))


def orpo_terms(logp_c, logp_r, len_c, len_r, weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss, the chosen answer's NLL and the log odds ratio (detached), from summed
    log-probabilities and token counts of both answers."""
    mean_c, mean_r = logp_c / len_c, logp_r / len_r
    ratio = log_odds(mean_c) - log_odds(mean_r)
    nll = -mean_c
    return nll - weight * torch.nn.functional.logsigmoid(ratio), nll.detach(), ratio.detach()


class ORPOLoss:
    """The loss the loop calls on each micro-batch of pairs: summed over pairs (the loop divides
    by the step's pairs). Logged: the chosen answer's NLL, the log odds ratio, the share of pairs
    whose chosen answer has the higher odds, both answers' mean token log-probability."""

    def __init__(self, weight: float = 0.1):
        if weight <= 0:
            raise TailorError(f"orpo: or_weight must be > 0, got {weight} (0 is SFT on the chosen answers: method lora)")
        self.weight = weight

    def units(self, examples: list[Encoded]) -> int:
        return len(examples)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        lp = sequence_logprobs(model, batch)
        c, r = pair_index(batch)
        len_c = torch.tensor([len(ex.targets[0]) for ex in batch.examples], device=lp.device, dtype=lp.dtype)
        len_r = torch.tensor([len(ex.targets[1]) for ex in batch.examples], device=lp.device, dtype=lp.dtype)
        loss, nll, ratio = orpo_terms(lp[c], lp[r], len_c, len_r, self.weight)
        logs = {"nll": nll.sum().item(), "log_odds_ratio": ratio.sum().item(),
                "odds_accuracy": (ratio > 0).float().sum().item(),
                "logps_chosen": (lp[c].detach() / len_c).sum().item(),
                "logps_rejected": (lp[r].detach() / len_r).sum().item()}
        return loss.sum(), logs
