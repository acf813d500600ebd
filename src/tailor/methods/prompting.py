"""Prompting arms: no training, only what goes into the prompt."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import TailorError
from ..models import Base
from ..prompts import builder_for
from ..task import Example, Task
from .base import Adapted


@dataclass
class ZeroShot:
    """The instruction and the input, nothing else: the floor every other arm must beat."""

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        return Adapted("zero-shot", base.model, base.tokenizer, base.weights_id,
                       builder_for(task, base.tokenizer, base.model.config))


@dataclass
class FewShot:
    """k fixed training examples, drawn once with a seed (label-balanced for classification),
    shown before every input."""

    k: int = 4
    seed: int = 0
    balanced: bool = True

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        shots = fixed_shots(task, self.k, self.seed, self.balanced)
        return Adapted("few-shot", base.model, base.tokenizer, base.weights_id,
                       builder_for(task, base.tokenizer, base.model.config),
                       shots_for=lambda ex: shots, info={"shot_ids": [s.id for s in shots]})


def fixed_shots(task: Task, k: int, seed: int, balanced: bool) -> list[Example]:
    pool = _train_pool(task)
    rng = random.Random(seed)
    if not (balanced and task.kind == "classify" and task.labels):
        return rng.sample(pool, min(k, len(pool)))
    by_label = {label: [ex for ex in pool if ex.target == label] for label in task.labels}
    for items in by_label.values():
        rng.shuffle(items)
    shots, i = [], 0
    while len(shots) < min(k, len(pool)):
        label = task.labels[i % len(task.labels)]
        if by_label[label]:
            shots.append(by_label[label].pop())
        i += 1
        if i > 10 * k + len(task.labels) and not any(by_label.values()):
            break
    rng.shuffle(shots)
    return shots


@dataclass
class ICL:
    """In-context learning with examples chosen per input (seed 000's dynamic example
    selection). The pool is a seeded sample of the train split, embedded once and cached."""

    k: int = 4
    selector: str = "similarity"
    pool_size: int = 2000
    seed: int = 0
    mmr_lambda: float = 0.5
    ngram: int = 1
    token_budget: int = 600

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from ..select import Selector
        pool = _train_pool(task)
        if self.pool_size and len(pool) > self.pool_size:
            pool = random.Random(self.seed).sample(pool, self.pool_size)
        builder = builder_for(task, base.tokenizer, base.model.config)
        # The tokens one shot adds: its input and answer plus the turn markers around them.
        overhead = builder.count(builder.render([{"role": "user", "content": ""}]))

        def shot_tokens(ex: Example) -> int:
            return builder.count(ex.input_text) + builder.count(builder.target_text(ex.target)) + overhead

        selector = Selector(pool, self.selector, self.k, self.seed, self.mmr_lambda, self.ngram,
                            self.token_budget, shot_tokens, task.labels)
        return Adapted("icl", base.model, base.tokenizer, base.weights_id, builder, shots_for=selector,
                       info={"selector": self.selector, "pool": len(pool)})


def _train_pool(task: Task) -> list[Example]:
    """Shots come from the train split only: falling back to all rows would show the model
    test rows with their answers."""
    pool = list(task.splits.get("train") or [])
    if not pool:
        raise TailorError(f"{task.name}: the train split is empty, so there are no examples to show")
    return pool
