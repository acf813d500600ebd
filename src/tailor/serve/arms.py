"""Arms ready to answer requests: each with its engine, its adapter in that engine, and its
recipe (instruction, chat template, shots), so what the ladder measured is what is served.

LoRA arms of one base (SFT, DPO, PPO, RAG+LoRA, ...) share one engine (rows of different
adapters in one forward); prompting and RAG arms run on that engine's bare base; the base itself is
served under its own name (prompts as given). An arm with other weights (full fine-tuning, BitFit,
IA3, soft prompts, a student) gets an engine of its own. A plan-and-execute arm (PEARL, extraction)
answers each request by running its program, as the ladder measured it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..calibration import calibrated
from ..engine import Engine
from ..errors import TailorError
from ..prompts import assemble
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
    program: object = None      # an arm whose predictions are a program (PEARL): its Adapted, run per request
    task: object = None         # what the program reads of the task (kind, instruction, labels)
    calibration: dict | None = None   # the recipe's label prior (tailor.calibration), divided out of the scores

    def prompt(self, request: str | list[dict]) -> str:
        """The prompt text of a request: a completion prompt (text) or chat turns."""
        if self.builder is None:
            if isinstance(request, str):
                return request
            tok = self.engine.tok
            if getattr(tok, "chat_template", None):
                return tok.apply_chat_template(request, tokenize=False, add_generation_prompt=True)
            return "\n\n".join(m["content"] for m in request)
        return assemble(self.builder, [Example("request", request, "")], self.shots, self.passages)[0][0].text

    def options(self) -> list[str]:
        return [self.builder.target_text(label) for label in self.labels]

    def label_scores(self, logprobs: list[float]) -> list[float]:
        """The labels' scores as the arm was measured: its label prior divided out, when it has one."""
        if not self.calibration:
            return list(logprobs)
        return calibrated(self.labels, logprobs, self.calibration["log_prior"])


def check_name(name: str) -> str:
    """Names come from the command line and from requests: they never reach the filesystem, and
    only these characters are accepted."""
    if not NAME.match(name):
        raise TailorError(f"arm name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
                          "or digit)")
    return name


def load_arms(base, arms: dict[str, str | Path]) -> dict[str, ServedArm]:
    """The base (under its own name) and every arm, each on its engine. What an arm is decides
    where it runs (its family's capabilities, never its name): LoRA adapters of the unchanged base
    are stacked on one shared engine with the prompting arms; an arm with weights of its own gets
    an engine of its own; an arm whose predictions are a program (plans, several calls) runs that
    program per request; a scorer (a reward model) writes no answers and is refused."""
    from ..methods import load_adapted
    from ..methods.base import method_class, recipe_builder
    from ..methods.finetune import lora_stack
    from ..methods.prompting import make_shots
    from ..retrieval import Retriever
    recipes = {}
    for name, path in arms.items():
        check_name(name)
        if name == base.name:
            raise TailorError(f"arm name '{name}' is the base's own name; choose another")
        folder = find_arm(path)
        recipe, pool = read_recipe(folder)
        cls = method_class(recipe.method)
        if cls.scorer:
            raise TailorError(f"{folder}: a {recipe.method} arm scores answers, it writes none, so it cannot be served "
                              "(use it as a judge, or as a ppo arm's reward_model)")
        if cls.external:
            raise TailorError(f"{folder}: a {recipe.method} arm's answers come from outside Tailor (a model's completions "
                              "file or endpoint), so Tailor has no model of it to serve; ask that model directly")
        recipes[name] = (folder, recipe, pool, cls)
    stacked = {n: folder for n, (folder, _, _, cls) in recipes.items() if cls.lora_adapter and not cls.quantized}
    context = _context(base.model)
    if stacked:
        model, ids = lora_stack(base, stacked)
        shared = Engine(model, base.tokenizer, base.weights_id, None, progress=False, adapters=ids)
    else:
        shared = Engine(base.model, base.tokenizer, base.weights_id, None, progress=False)
    out = {base.name: ServedArm(base.name, None, "generate", shared, context=context)}
    for name, (folder, recipe, pool, cls) in recipes.items():
        if cls.own_predict or (cls.changes_weights and name not in stacked):   # a program, or weights of its own
            adapted = load_adapted(folder, base)
            engine = shared if not cls.changes_weights else Engine(adapted.model, adapted.tokenizer, adapted.weights_id,
                                                                   None, progress=False)
            out[name] = ServedArm(name, recipe.method, recipe.kind, engine, None, adapted.builder, adapted.shots,
                                  recipe.labels, base.name, context, adapted.passages,
                                  program=adapted if cls.own_predict else None, task=_task(recipe),
                                  calibration=recipe.calibration)
            continue
        builder = recipe_builder(recipe, base.tokenizer)
        passages = Retriever.from_spec(recipe.retriever) if recipe.retriever else None
        out[name] = ServedArm(name, recipe.method, recipe.kind, shared, name if name in stacked else None, builder,
                              make_shots(recipe.shots, pool, builder, recipe.labels), recipe.labels, base.name,
                              context, passages, calibration=recipe.calibration)
    return out


def _task(recipe):
    """What a program arm's predict reads of its task: name, kind, instruction, labels."""
    from ..task import Task
    return Task(recipe.task.get("name", "served"), recipe.kind, recipe.instruction, [], recipe.labels)


def _context(model) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or 2048)
