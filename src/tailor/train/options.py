"""The options every training arm shares (each arm adds its own). Light: reading an experiment
file validates them without importing torch."""

from __future__ import annotations

from typing import Literal

from ..errors import TailorError
from ..schema import Options


class TrainConfig(Options):
    steps: int = 0                 # optimiser steps; 0 = derive from epochs (or the budget)
    epochs: float = 1.0
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    schedule: Literal["cosine", "linear", "constant"] = "cosine"   # after warmup
    min_lr_ratio: float = 0.1
    batch_size: int = 16           # examples per optimiser step
    micro_batch_tokens: int = 4096  # tokens per forward pass (gradient accumulation beyond)
    seq_len: int = 1024            # longest example allowed; longer ones follow `overlong`
    pack_len: int = 256            # packed row length (attention cost per token grows with it)
    pack: bool = True
    overlong: Literal["drop", "error"] = "drop"   # drop: counted and reported
    max_train_examples: int | None = 2000
    # all, or one half of the train prompts (preference/data.py `prompt_half`): policies on one,
    # the ladder's judge reward model on the other
    train_prompts: Literal["all", "half-a", "half-b"] = "all"
    max_grad_norm: float = 1.0
    precision: Literal["auto", "bf16", "fp32"] = "auto"   # auto: bf16 where the hardware has it
    grad_checkpointing: bool = False
    # Tailor's CPU training kernels (train/kernels.py): auto = all of them on a single-process CPU
    # run; on | off; or a list of the ones to use (attention, lora, dropout)
    kernels: Literal["auto", "on", "off"] | list[Literal["attention", "lora", "dropout"]] = "auto"
    seed: int = 0
    eval_every: int = 0            # dev evaluation every N steps (0: only at the end if patience)
    eval_examples: int = 200
    patience: int = 0              # evals without improvement before stopping (0: never stop)
    load_best: bool = True
    save_every: int = 0            # checkpoint every N steps (0: none except the best)
    keep_checkpoints: int = 1
    log_every: int = 10
    report_to: list[Literal["tensorboard", "mlflow", "trackio"]] = []
    budget_minutes: float | None = None   # wall-clock budget for training: sizes the steps to fit

    def grade(self, task, rows, preds) -> None:
        """Sets each dev prediction's `grade` when the task's primary metric is a grader (tailor.graders).
        THE loop imports no grader (a model judge is an arm, and the loop knows none): the family of
        an arm that trains supplies this (methods/finetune._Trained)."""
        if task.grader:
            raise TailorError(f"{task.name}: the primary metric is a grader, and {type(self).__name__} cannot grade "
                              "its dev answers; set eval_every: 0 and patience: 0")

    def train_options(self) -> dict:
        return {name: getattr(self, name) for name in TrainConfig.model_fields}
