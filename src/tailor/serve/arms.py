"""Arms ready to answer requests: each with its engine, its adapter in that engine, and its
recipe (instruction, chat template, shots), so what the ladder measured is what is served.

LoRA arms of one base share one engine (rows of different adapters in one forward); prompting
arms run on that engine's bare base; the base itself is served under its own name (prompts as
given). An arm with other weights (full fine-tuning, BitFit, IA3, soft prompts) gets an engine of
its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..engine import Engine
from ..errors import TailorError
from ..recipe import find_arm, read_recipe
from ..task import Example

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ServedArm:
    name: str
    method: str | None          # None: the base model itself
    kind: str                   # classify arms answer with the label their scoring picks; others generate
    engine: Engine
    adapter: str | None = None  # the arm's adapter in `engine` (None: the bare base)
    builder: object = None      # the recipe's prompt builder (None: prompts go to the base as given)
    shots: object = None
    labels: list[str] | None = None
    parent: str | None = None
    context: int = 2048         # the longest prompt + answer this arm accepts, in tokens
    passages: object = None     # a RAG arm's retriever: each request's passages, as the ladder measured

    def prompt(self, request: str | list[dict]) -> str:
        """The prompt text of a request: a completion prompt (text) or chat turns."""
        if self.builder is None:
            if isinstance(request, str):
                return request
            tok = self.engine.tok
            if getattr(tok, "chat_template", None):
                return tok.apply_chat_template(request, tokenize=False, add_generation_prompt=True)
            return "\n\n".join(m["content"] for m in request)
        example = Example("request", request, "")
        passages = [p.text for p in self.passages([example])[0]] if self.passages else ()
        return self.builder.build(example, self.shots(example) if self.shots else (), passages).text

    def options(self) -> list[str]:
        return [self.builder.target_text(label) for label in self.labels]


def check_name(name: str) -> str:
    """Names come from the command line and from requests: they never reach the filesystem, and
    only these characters are accepted."""
    if not NAME.match(name):
        raise TailorError(f"arm name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
                          "or digit)")
    return name


def load_arms(base, arms: dict[str, str | Path]) -> dict[str, ServedArm]:
    """The base (under its own name) and every arm, each on its engine."""
    from ..methods import load_adapted
    from ..methods.base import recipe_builder
    from ..methods.finetune import lora_stack
    from ..methods.prompting import make_shots
    recipes = {}
    for name, path in arms.items():
        check_name(name)
        if name == base.name:
            raise TailorError(f"arm name '{name}' is the base's own name; choose another")
        folder = find_arm(path)
        recipes[name] = (folder, *read_recipe(folder))
    lora = {n: folder for n, (folder, recipe, _) in recipes.items() if recipe.method == "lora"}
    context = _context(base.model)
    if lora:
        model, ids = lora_stack(base, lora)
        shared = Engine(model, base.tokenizer, base.weights_id, None, progress=False, adapters=ids)
    else:
        shared = Engine(base.model, base.tokenizer, base.weights_id, None, progress=False)
    out = {base.name: ServedArm(base.name, None, "generate", shared, context=context)}
    for name, (folder, recipe, pool) in recipes.items():
        if recipe.method == "lora" or recipe.method in ("zero-shot", "few-shot", "icl"):
            builder = recipe_builder(recipe, base.tokenizer)
            out[name] = ServedArm(name, recipe.method, recipe.kind, shared, name if name in lora else None, builder,
                                  make_shots(recipe.shots, pool, builder, recipe.labels), recipe.labels, base.name,
                                  context)
        else:   # weights of its own: its own model and engine
            adapted = load_adapted(folder, base)
            engine = Engine(adapted.model, adapted.tokenizer, adapted.weights_id, None, progress=False)
            out[name] = ServedArm(name, recipe.method, recipe.kind, engine, None, adapted.builder, adapted.shots,
                                  recipe.labels, base.name, context, adapted.passages)
    return out


def _context(model) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or 2048)
