"""DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023) as a loss on the one training loop.

A pair is one Encoded example with two continuations (chosen, rejected) of one prompt: the
loop packs them into one row under the tree mask, so the prompt runs once for both sides. The
reference log-probabilities come either from the same forward with the adapter switched off
(peft's `disable_adapter()`: a fresh LoRA adapter starts as the base, so the reference is the
base) or precomputed once before training and kept with each example (`extra["ref"]`), which is
how the frozen SFT adapter is the reference when DPO continues an SFT arm.

With h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)):
    sigmoid: −log σ(β h)            (DPO)
    ipo:     (h − 1/(2β))²          (IPO, summed log-probabilities as in the paper)
plus, optionally, `sft_weight` × the chosen answer's mean token negative log-likelihood.
The implicit rewards β(log π − log π_ref) of both sides, their margin and whether the chosen one
wins are logged. Before any update π = π_ref, so h = 0 and the sigmoid loss is ln 2.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import TailorError
from ..train.data import Batch, Encoded, EncodeReport, pack
from ..train.losses import sequence_logprobs


def encode_pairs(builder, examples, seq_len: int, overlong: str = "drop") -> tuple[list[Encoded], EncodeReport]:
    """Each pair as prompt ids + [chosen ids, rejected ids], formatted by THE prompt builder and
    encoded as the engine encodes a prompt and its options. Over-long pairs are dropped and
    counted (or raise), never truncated."""
    from .data import pairs_of
    out, report = [], EncodeReport()
    for ex in pairs_of(examples):
        prompt = builder.build(ex)
        enc = Encoded(ex.id, builder.encode(prompt.text),
                      [builder.encode(builder.target_text(ex.target)),
                       builder.encode(builder.target_text(ex.meta["rejected"]))])
        if len(enc) > seq_len or prompt.over_budget:
            if overlong == "error":
                raise TailorError(f"pair '{ex.id}' has {len(enc)} tokens, over seq_len {seq_len} "
                                  "(raise seq_len, or set overlong: drop)")
            report.too_long.append(ex.id)
            continue
        report.prompt_tokens += len(enc.prompt)
        report.target_tokens += sum(map(len, enc.targets))
        out.append(enc)
    report.kept = len(out)
    if not out:
        raise TailorError(f"no preference pairs left (all {len(examples)} over seq_len {seq_len})")
    return out, report


def pair_index(batch: Batch) -> tuple[list[int], list[int]]:
    """Positions (in the batch's sequences) of each example's chosen and rejected continuation."""
    at = {seq: k for k, seq in enumerate(batch.sequences)}
    n = len(batch.examples)
    return [at[(i, 0)] for i in range(n)], [at[(i, 1)] for i in range(n)]


def reference_logprobs(model, batch: Batch) -> torch.Tensor:
    """Summed reference log-probabilities of the batch's sequences: precomputed ones where every
    example carries them, else this forward with the adapter switched off."""
    if all("ref" in ex.extra for ex in batch.examples):
        values = [0.0] * len(batch.sequences)
        for k, (i, j) in enumerate(batch.sequences):
            values[k] = batch.examples[i].extra["ref"][j]
        return torch.tensor(values, dtype=torch.float32)
    if not hasattr(model, "disable_adapter"):
        raise TailorError("DPO needs a reference: a peft adapter to switch off, or precomputed reference log-probs")
    with torch.no_grad(), model.disable_adapter():
        return sequence_logprobs(model, batch)


def dpo_terms(policy_c, policy_r, ref_c, ref_r, beta: float, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss and the implicit rewards of chosen and rejected."""
    reward_c, reward_r = policy_c - ref_c, policy_r - ref_r
    h = reward_c - reward_r
    if kind == "sigmoid":
        loss = -torch.nn.functional.logsigmoid(beta * h)
    elif kind == "ipo":
        loss = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise TailorError(f"DPO loss '{kind}' is not one of sigmoid, ipo")
    return loss, beta * reward_c.detach(), beta * reward_r.detach()


class DPOLoss:
    """The loss the loop calls on each micro-batch of pairs: summed over pairs (the loop divides
    by the step's pairs)."""

    def __init__(self, beta: float = 0.1, kind: str = "sigmoid", sft_weight: float = 0.0):
        if beta <= 0:
            raise TailorError(f"DPO beta must be > 0, got {beta}")
        self.beta, self.kind, self.sft_weight = beta, kind, sft_weight

    def units(self, examples: list[Encoded]) -> int:
        return len(examples)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        lp = sequence_logprobs(model, batch)
        ref = reference_logprobs(model, batch).to(lp.device, lp.dtype)
        c, r = pair_index(batch)
        loss, reward_c, reward_r = dpo_terms(lp[c], lp[r], ref[c], ref[r], self.beta, self.kind)
        logs = {"rewards_chosen": reward_c.sum().item(), "rewards_rejected": reward_r.sum().item(),
                "rewards_margin": (reward_c - reward_r).sum().item(),
                "rewards_accuracy": (reward_c > reward_r).float().sum().item(),
                "logps_chosen": lp[c].detach().sum().item(), "logps_rejected": lp[r].detach().sum().item()}
        total = loss.sum()
        if self.sft_weight:
            n_tokens = torch.tensor([len(ex.targets[0]) for ex in batch.examples], device=lp.device, dtype=lp.dtype)
            nll = (-lp[c] / n_tokens).sum()
            logs["sft_nll"] = nll.item()
            total = total + self.sft_weight * nll
        return total, logs


@torch.no_grad()
def precompute_reference(model, data: list[Encoded], pad_id: int, bf16: bool, row_len: int = 512,
                         micro_batch_tokens: int = 4096) -> None:
    """Stores each pair's reference log-probabilities (the model as it is now, in eval mode: a
    frozen SFT adapter) in `extra["ref"]`, computed with the loop's own packing and precision."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    row_len = max(row_len, max(len(e) for e in data))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        for batch in pack(data, row_len, pad_id, max(1, micro_batch_tokens // row_len)):
            with autocast:
                lp = sequence_logprobs(model, batch).float().tolist()
            for k, (i, j) in enumerate(batch.sequences):
                batch.examples[i].extra.setdefault("ref", [0.0] * len(batch.examples[i].targets))[j] = lp[k]
    finally:
        model.train(was_training)
