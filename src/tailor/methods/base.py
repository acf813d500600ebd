"""What `fit` returns: a model to run plus the prompt recipe, with its costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..engine import Engine, ResultCache
from ..evaluate import Prediction, predict
from ..prompts import PromptBuilder
from ..task import Example, Task


@dataclass
class Adapted:
    method: str
    model: object            # the base model, a PEFT-wrapped model, or a new model
    tokenizer: object
    weights_id: str           # content id of the weights actually used: part of cache keys
    builder: PromptBuilder
    shots_for: Callable[[Example], list[Example]] | None = None
    passages_for: Callable[[Example], list[str]] | None = None
    trainable_params: int = 0
    artifact_bytes: int = 0
    train_time_s: float = 0.0
    train_tokens: int = 0
    artifact_dir: Path | None = None
    info: dict = field(default_factory=dict)

    def engine(self, cache: ResultCache | None = None, **options) -> Engine:
        return Engine(self.model, self.tokenizer, self.weights_id, cache, **options)

    def predict(self, engine: Engine, task: Task, examples: list[Example],
                max_new_tokens: int = 64) -> list[Prediction]:
        return predict(engine, self.builder, task, examples, self.shots_for, self.passages_for,
                       max_new_tokens)
