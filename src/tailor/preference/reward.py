"""A reward model: the base with LoRA adapters and a scalar head, trained with the Bradley–Terry
loss on preference pairs (InstructGPT, Ouyang et al. 2022: −log σ(r(x, c) − r(x, r) − margin)),
the score read at the last real token of each sequence (`engine.last_token_scores`).

The model is transformers' own sequence classifier for the base's architecture
(`AutoModelForSequenceClassification`, one label) over the base's frozen weight tensors, wrapped
by peft with task type SEQ_CLS, so the saved artifact is a standard PEFT adapter folder (LoRA
weights plus the trained `score` head) that `PeftModel.from_pretrained(AutoModelForSequenceClassification
.from_pretrained(base, num_labels=1), folder)` loads unchanged.
"""

from __future__ import annotations

import copy

import torch

from ..train.data import Batch, Encoded

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def reward_backbone(base, seed: int = 0):
    """A one-output sequence classifier sharing the base's frozen weight tensors (no second copy
    of the model in memory); a fresh head initialised as transformers initialises it."""
    from transformers import AutoModelForSequenceClassification

    from ..methods.base import frozen_copy
    config = copy.deepcopy(base.model.config)
    config.num_labels = 1
    config.pad_token_id = base.tokenizer.pad_token_id
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    prefix = model.base_model_prefix
    setattr(model, prefix, getattr(frozen_copy(base), prefix))
    g = torch.Generator().manual_seed(seed)
    dtype = next(getattr(model, prefix).parameters()).dtype
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(1, config.hidden_size, generator=g) * config.initializer_range)
    model.score = head.to(dtype=dtype, device=base.device)
    return model


def lora_targets(target_modules):
    # peft's "all-linear" would put LoRA on the score head too (a classifier has no output
    # embedding to exclude); the head trains whole (modules_to_save).
    return LINEAR if target_modules == "all-linear" else target_modules


def pair_scores(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and rejected sequence of every pair in a padded batch (one row per
    sequence, right-padded)."""
    from ..engine import last_token_scores
    from .dpo import pair_index
    device = next(model.parameters()).device
    scores = last_token_scores(model, batch.input_ids.to(device), batch.attention_mask.to(device)).float()
    c, r = pair_index(batch)
    return scores[c], scores[r]


class BradleyTerry:
    """−log σ(r_c − r_r − margin), summed over the micro-batch's pairs."""

    def __init__(self, margin: float = 0.0):
        self.margin = margin

    def units(self, examples: list[Encoded]) -> int:
        return len(examples)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        sc, sr = pair_scores(model, batch)
        loss = -torch.nn.functional.logsigmoid(sc - sr - self.margin).sum()
        return loss, {"accuracy": (sc > sr).float().sum().item(), "score_margin": (sc - sr).detach().sum().item(),
                      "score_chosen": sc.detach().sum().item(), "score_rejected": sr.detach().sum().item()}


def pairwise_accuracy(engine, builder, examples) -> dict:
    """Held-out pairwise accuracy of a reward model: the share of pairs whose chosen answer
    scores higher (ties count half), and the mean score margin."""
    from .data import pairs_of
    pairs = pairs_of(examples)
    prompts = [builder.build(ex).text for ex in pairs]
    chosen = engine.reward(prompts, [builder.target_text(ex.target) for ex in pairs])
    rejected = engine.reward(prompts, [builder.target_text(ex.meta["rejected"]) for ex in pairs])
    wins = [1.0 if c.score > r.score else 0.5 if c.score == r.score else 0.0 for c, r in zip(chosen, rejected)]
    return {"pairs": len(pairs), "accuracy": sum(wins) / len(wins),
            "mean_margin": sum(c.score - r.score for c, r in zip(chosen, rejected)) / len(pairs)}


def likelihood_preference(engine, builder, examples) -> dict:
    """Preference accuracy of a policy on pairs: the share whose chosen answer is more likely
    than the rejected one (summed log-probabilities; also per token), through the engine's
    choice scoring."""
    from .data import pairs_of
    pairs = pairs_of(examples)
    prompts = [builder.build(ex).text for ex in pairs]
    options = [[builder.target_text(ex.target), builder.target_text(ex.meta["rejected"])] for ex in pairs]
    scores = engine.score(prompts, options)
    raw = [s.logprobs[0] > s.logprobs[1] for s in scores]
    per_token = [s.mean_logprobs[0] > s.mean_logprobs[1] for s in scores]
    return {"pairs": len(pairs), "accuracy": sum(raw) / len(raw), "accuracy_per_token": sum(per_token) / len(raw),
            "mean_margin": sum(s.logprobs[0] - s.logprobs[1] for s in scores) / len(scores)}
