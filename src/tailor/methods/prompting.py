"""Prompting arms: no training, only what goes into the prompt. Their recipe is the whole arm:
the instruction, and the shots (fixed ones, or the pool an in-context selector picks from)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ..calibration import label_set, measure_prior
from ..errors import TailorError
from ..knobs import choices
from ..recipe import Recipe, ShotSpec
from ..schema import Options
from ..task import Example, Task
from .base import Adapted, Method, base_recipe, recipe_builder

SelectorKind = Literal["similarity", "mmr", "ngram", "balanced", "budget", "random"]
Calibration = Literal["off", "contextual", "batch"]


class _Calibrated(Options):
    """`calibrate`: divide the arm's label prior out of its predictions (tailor.calibration):
    `contextual` measures it on content-free inputs (Zhao et al. 2021), `batch` on `calibrate_rows`
    training inputs (Zhou et al. 2023). Measured when the arm is fitted, saved in its recipe."""

    calibrate: Calibration = "off"
    calibrate_rows: int = Field(64, gt=0)   # batch: the training inputs the prior is the mean over

    @field_validator("calibrate", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML 1.1 reads a bare `off` as false (and `on` as true, which names no method)
        if value is False:
            return "off"
        if value is True:
            raise ValueError("say which calibration: contextual or batch")
        return value

    def knobs(self) -> dict:
        # on a task without a label set a calibrated trial is refused at once (a failed trial, no time spent)
        return {**super().knobs(), "calibrate": choices(self.calibrate, "off", "contextual")}

    def _check_calibrate(self, task: Task) -> None:
        """Refused before any work: a task without a fixed label set has no prior to divide out."""
        if self.calibrate != "off":
            label_set(task)

    def _calibrated(self, adapted: Adapted, task: Task, cache=None) -> Adapted:
        if self.calibrate == "off":
            return adapted
        prior = measure_prior(adapted, task, self.calibrate, cache=cache, rows=self.calibrate_rows,
                              seed=getattr(self, "seed", 0))
        adapted.recipe = adapted.recipe.model_copy(update={"calibration": prior})
        return adapted


class _Prompting(Method):
    @classmethod
    def load(cls, recipe: Recipe, pool: list[Example], folder: Path | None, base) -> Adapted:
        builder = recipe_builder(recipe, base.tokenizer)
        return Adapted(recipe, base.model, base.tokenizer, base.weights_id, builder,
                       shots=make_shots(recipe.shots, pool, builder, recipe.labels), pool=pool)

    def _adapted(self, task: Task, base, shots: ShotSpec | None = None, pool: list[Example] = (),
                 cache=None) -> Adapted:
        """The arm built through its recipe, exactly as `load` rebuilds it (its label prior
        measured, when it calibrates)."""
        from ..prompts import builder_for
        builder = builder_for(task, base.tokenizer, getattr(base.model, "config", None))
        adapted = self.load(base_recipe(self, task, base, builder, shots=shots), list(pool), None, base)
        return self._calibrated(adapted, task, cache) if isinstance(self, _Calibrated) else adapted


class ZeroShot(_Calibrated, _Prompting):
    """The instruction and the input, nothing else: the floor every other arm must beat."""

    method: ClassVar[str] = "zero-shot"
    bare: ClassVar[bool] = True

    def fit(self, task: Task, base, out=None, *, cache=None, **_) -> Adapted:
        self._check_calibrate(task)
        return self._adapted(task, base, cache=cache)


class FewShot(_Calibrated, _Prompting):
    """k fixed training examples, drawn once with a seed (label-balanced for classification),
    shown before every input."""

    method: ClassVar[str] = "few-shot"
    k: int = 4
    seed: int = 0
    balanced: bool = True

    def knobs(self) -> dict:
        return {**super().knobs(), "k": choices(self.k, 1, 2, 4, 8)}

    def fit(self, task: Task, base, out=None, *, cache=None, **_) -> Adapted:
        self._check_calibrate(task)
        shots = fixed_shots(task, self.k, self.seed, self.balanced)
        return self._adapted(task, base, ShotSpec(selector="fixed", k=self.k, ids=[s.id for s in shots]), shots,
                             cache)


def fixed_shots(task: Task, k: int, seed: int, balanced: bool) -> list[Example]:
    pool = train_pool(task)
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


class ICL(_Calibrated, _Prompting):
    """In-context learning with examples chosen per input (dynamic example selection, as
    LangChain's example selectors do). The pool is a seeded sample of the train split."""

    method: ClassVar[str] = "icl"
    k: int = 4
    selector: SelectorKind = "similarity"
    pool_size: int = 2000
    seed: int = 0
    mmr_lambda: float = 0.5
    ngram: int = 1
    token_budget: int = 600

    def knobs(self) -> dict:
        return {**super().knobs(), "k": choices(self.k, 1, 2, 4, 8),
                "selector": choices(self.selector, "similarity", "mmr", "ngram", "random")}

    def fit(self, task: Task, base, out=None, *, cache=None, **_) -> Adapted:
        self._check_calibrate(task)
        pool = train_pool(task)
        if self.pool_size and len(pool) > self.pool_size:
            pool = random.Random(self.seed).sample(pool, self.pool_size)
        spec = ShotSpec(selector=self.selector, k=self.k, ids=[ex.id for ex in pool],
                        options={"seed": self.seed, "mmr_lambda": self.mmr_lambda, "ngram": self.ngram,
                                 "token_budget": self.token_budget})
        return self._adapted(task, base, spec, pool, cache)


class FixedShots:
    def __init__(self, shots: list[Example]):
        self.shots = shots

    def __call__(self, example: Example) -> list[Example]:
        return self.shots


def make_shots(spec: ShotSpec | None, pool: list[Example], builder, labels: list[str] | None):
    """The shot chooser a recipe describes, over the examples its ids name."""
    if spec is None:
        return None
    by_id = {ex.id: ex for ex in pool}
    missing = [i for i in spec.ids if i not in by_id]
    if missing:
        raise TailorError(f"the recipe's shots name {len(missing)} examples its pool lacks (e.g. '{missing[0]}')")
    chosen = [by_id[i] for i in spec.ids]
    if spec.selector == "fixed":
        return FixedShots(chosen)
    from ..selectors import Selector
    # The tokens one shot adds: its input and answer plus the turn markers around them.
    overhead = builder.count(builder.render([{"role": "user", "content": ""}]))

    def shot_tokens(ex: Example) -> int:
        return builder.count(ex.input_text) + builder.count(builder.target_text(ex.target)) + overhead

    o = spec.options
    return Selector(chosen, spec.selector, spec.k, o.get("seed", 0), o.get("mmr_lambda", 0.5), o.get("ngram", 1),
                    o.get("token_budget", 600), shot_tokens, labels)


def train_pool(task: Task) -> list[Example]:
    """Shots come from the train split only: falling back to all rows would show the model
    test rows with their answers."""
    pool = list(task.splits.get("train") or [])
    if not pool:
        raise TailorError(f"{task.name}: the train split is empty, so there are no examples to show")
    return pool
