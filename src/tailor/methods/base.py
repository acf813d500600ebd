"""What every arm shares: `Method` (typed options plus `fit`, and how its family saves and loads
weights) and `Adapted` (what `fit` returns: a model to run and the recipe that prompts it).

A family file (prompting.py, finetune.py, ...) owns its arms' options, fitting, saving and
loading; nothing else switches on method names, so a new method touches one file.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import DataError, TailorError
from ..prompts import PromptBuilder, assemble
from ..recipe import POOL, RECIPE, Recipe, find_arm, read_recipe, save_recipe
from ..schema import Options, validate
from ..utils import sha256_file

# engine, remote and evaluate import torch: they are imported in the functions that run a model, so
# validating an experiment's arms (tailor.config) never loads it
if TYPE_CHECKING:
    from ..engine import Engine, ResultCache
    from ..evaluate import Prediction
    from ..knobs import Knob
    from ..models import Base
    from ..task import Example, Task

# method name -> its class: every class that names a `method` adds itself when it is defined, so
# importing the families (the `tailor.methods` package does) fills it, and nothing here imports them
METHODS: dict[str, type[Method]] = {}


class Method(Options):
    """An arm's options (validated from an experiment file) and how it adapts the base."""

    method: ClassVar[str] = ""
    # What an arm IS. Code outside a method's family (serving, export, debugging, the ladder, the
    # report) asks these, never the method's name; a new family sets the ones that hold for it.
    changes_weights: ClassVar[bool] = False
    own_model: ClassVar[bool] = False    # serves a model of its own, not the base (priced by its size)
    lora_adapter: ClassVar[bool] = False  # its artifact is a plain PEFT LoRA folder over the unchanged base:
    #                                       served in mixed-adapter batches with other such arms, exported to vLLM
    quantized: ClassVar[bool] = False    # trained over a 4-bit copy of the base (served on the full base it differs)
    scorer: ClassVar[bool] = False       # judges answers (a reward model): measured on pairs, never served
    own_predict: ClassVar[bool] = False  # Adapted.predict runs a program (plans, several calls) rather than one
    #                                       prompt per example: the server answers each request through it
    trains_on_pool: ClassVar[bool] = False  # THE loop reads the task's train rows in step_examples' order
    #                                         (tailor debug counts only the rows a short run consumed)
    runs_on_ranks: ClassVar[bool] = False  # its training shards over the processes of a launcher
    on_policy: ClassVar[bool] = False    # learns from its own samples: judged along its saved checkpoints
    bare: ClassVar[bool] = False         # the base as it is (no weights, shots or passages): the closed-book baseline
    external: ClassVar[bool] = False     # its answers come from outside Tailor (a closed model's file or endpoint):
    #                                      measured like any arm, never recommended, served, exported or labelled with

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        # pydantic's hook, called once the class is complete (__init_subclass__ runs before its fields are)
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.__dict__.get("method")
        if not name:   # a family's shared base class, or a subclass that keeps its parent's method
            return
        known = METHODS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"method '{name}' is defined twice: {known.__module__}.{known.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}")
        METHODS[name] = cls

    def fit(self, task: Task, base: Base, out: Path | None = None, *, progress: bool = True,
            budget_s: float | None = None, resume: str | None = None, cache=None) -> Adapted:
        """Adapt `base` to `task`. `out`: the arm folder (training logs and checkpoints go there);
        `budget_s`: wall-clock seconds training may take; `resume`: a checkpoint to continue;
        `cache`: the run's engine cache for the model calls a fit makes (None: the run's cache is off)."""
        raise NotImplementedError

    def knobs(self) -> dict[str, Knob]:
        """What `tune:` searches for this arm unless a team lists its own (tailor.tune): the
        options worth turning, each a range or choices holding the arm's written value (the
        default trial). A family adds its own to its parents' (`super().knobs()`)."""
        return {}

    def check_rows(self, task: Task, rows: list[Example]) -> list[str]:
        """Refuses, with one TailorError, rows the arm cannot answer, before any arm runs (an arm whose
        answers were given to Tailor must have one for every measured row); returns what it found
        worth saying without refusing. Any arm that fits can answer any row."""
        return []

    def fit_inputs(self) -> dict:
        """What `fit` reads besides the task and the base (other arms, files), by content: part
        of the fit-reuse key, so a retrained teacher or an edited file is never reused stale."""
        return {}

    # ---- the family's artifact: weights beside the recipe (prompting arms have none)
    @classmethod
    def save_weights(cls, adapted: Adapted, folder: Path) -> dict | None:
        return None

    @classmethod
    def load(cls, recipe: Recipe, pool: list[Example], folder: Path, base: Base) -> Adapted:
        """The arm as it was fitted, from its recipe (and weights in `folder`)."""
        raise NotImplementedError


@dataclass
class Adapted:
    recipe: Recipe
    model: Any                   # the base model, a PEFT-wrapped model, or a new model
    tokenizer: Any
    weights_id: str              # content id of the weights actually used: part of cache keys
    builder: PromptBuilder
    shots: Any = None            # callable(example) -> in-context examples, built from recipe.shots
    pool: list = field(default_factory=list)   # the examples recipe.shots names
    passages: Any = None         # callable(examples) -> retrieved passages, built from recipe.retriever
    artifact_dir: Path | None = None
    artifact_bytes: int = 0
    timed: bool = True           # False: its answers were read, not computed: no request latency to measure

    @property
    def method(self) -> str:
        return self.recipe.method

    @property
    def trainable_params(self) -> int:
        return self.recipe.trainable_params

    @property
    def train_time_s(self) -> float:
        return (self.recipe.train or {}).get("train_time_s", 0.0)

    @property
    def train_tokens(self) -> int:
        return (self.recipe.train or {}).get("train_tokens", 0)

    def engine(self, cache: ResultCache | None = None, **options) -> Engine:
        from ..engine import Engine
        from ..remote import RemoteEngine, RemoteModel
        cls = RemoteEngine if isinstance(self.model, RemoteModel) else Engine
        return cls(self.model, self.tokenizer, self.weights_id, cache, **options)

    def prompts(self, examples: list[Example]) -> list[str]:
        """Each example's prompt exactly as this arm is measured with (shots and passages included)."""
        return [p.text for p in assemble(self.builder, examples, self.shots, self.passages)[0]]

    def check_request(self, example: Example) -> None:
        """Refuses, with a TailorError, a served request this arm cannot answer, before any work
        (a request carries only its text and metadata). Prompt arms answer any text."""

    def predict(self, engine: Engine, task: Task, examples: list[Example],
                max_new_tokens: int = 64) -> list[Prediction]:
        from ..evaluate import predict
        return predict(engine, self.builder, task, examples, self.shots, self.passages, max_new_tokens,
                       calibration=self.recipe.calibration)


def frozen_copy(base):
    """A private module tree over the base's own frozen weight tensors. Arms of a ladder share one
    loaded base, which must stay intact: peft and BitFit change modules (wrap them, add biases),
    never the frozen weights, so copying the modules but not the weights keeps the base intact
    without a second copy of the model in memory (the training loop never mutates a frozen
    tensor either: see `prepare_precision`)."""
    shared = {id(p): p for p in base.model.parameters()}
    model = copy.deepcopy(base.model, shared)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise TailorError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[name]


def save_adapted(adapted: Adapted, folder: Path) -> int:
    """Writes the arm folder (weights through the method's family, then the recipe); returns
    the artifact's size in bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    saved = method_class(adapted.method).save_weights(adapted, folder)
    if saved is not None:   # what fit recorded (the digest) and what the family wrote (its files)
        adapted.recipe = adapted.recipe.model_copy(update={"weights": {**(adapted.recipe.weights or {}), **saved}})
    save_recipe(folder, adapted.recipe, adapted.pool)
    adapted.artifact_dir = folder
    adapted.artifact_bytes = artifact_bytes(folder, adapted.recipe)
    return adapted.artifact_bytes


def artifact_bytes(folder: Path, recipe: Recipe) -> int:
    """What serving the arm needs: the recipe, its pool and the weight files (not the
    training run's logs and checkpoints beside them)."""
    files = [RECIPE, POOL] + list((recipe.weights or {}).get("files", []))
    return sum((folder / f).stat().st_size for f in files if (folder / f).is_file())


def copy_artifact(adapted: Adapted, folder: Path) -> None:
    """The arm's artifact (recipe, pool, weight files) copied into `folder`, which it then lives
    in: a run that reuses an earlier fit still holds every arm it measured."""
    src = adapted.artifact_dir
    for rel in [RECIPE, POOL] + list((adapted.recipe.weights or {}).get("files", [])):
        if (src / rel).is_file():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, folder / rel)
    adapted.artifact_dir = folder


def load_adapted(path: str | Path, base: Base) -> Adapted:
    """Any arm, rebuilt from its folder (see `find_arm`) on a loaded base."""
    folder = find_arm(path)
    recipe, pool = read_recipe(folder)
    arm_options(recipe, folder)   # a known method and options it takes, before a family reads them
    trained_on = (recipe.base or {}).get("weights_id", "")
    if trained_on and trained_on.rsplit(":", 1)[0] != base.weights_id.rsplit(":", 1)[0]:  # dtype aside
        logging.getLogger("tailor").warning("arm %s was fitted on %s, loading it on %s", folder, trained_on,
                                            base.weights_id)
    adapted = method_class(recipe.method).load(recipe, pool, folder, base)
    adapted.artifact_dir = folder
    adapted.artifact_bytes = artifact_bytes(folder, recipe)
    return adapted


def arm_options(recipe: Recipe, folder: Path) -> Method:
    """A saved arm's method options, validated as an experiment's are: an edited recipe.json with an
    unknown method or options of the wrong type is one error naming the file and field."""
    if recipe.method not in METHODS:
        raise DataError(Path(folder) / RECIPE, f"unknown method {recipe.method!r} (known: {', '.join(METHODS)})",
                        field="method")
    return validate(METHODS[recipe.method], recipe.options, Path(folder) / RECIPE, at=("options",))


def arm_content(path: str | None) -> str | None:
    """An arm folder's weights digest (its recipe, for arms without weights), None if unreadable."""
    if not path:
        return None
    try:
        folder = find_arm(Path(path))
        recipe, _ = read_recipe(folder)
    except (TailorError, OSError):   # not an arm (yet): fit refuses it with its own error
        return None
    return (recipe.weights or {}).get("digest") or sha256_file(folder / "recipe.json")


def base_recipe(method: Method, task: Task, base: Base, builder: PromptBuilder, **fields) -> Recipe:
    """The recipe fields every arm fills the same way."""
    return Recipe(method=method.method, options=method.model_dump(), kind=task.kind,
                  instruction=builder.instruction, labels=task.labels, list_options=builder.list_options,
                  max_prompt_tokens=builder.max_prompt_tokens, chat_template=builder.chat_template,
                  base={"name": base.name, "path": str(base.path), "weights_id": base.weights_id},
                  task={"name": task.name, "data_hash": task.data_hash}, **fields)


def recipe_builder(recipe: Recipe, tokenizer) -> PromptBuilder:
    return PromptBuilder(tokenizer, recipe.kind, recipe.instruction, recipe.max_prompt_tokens,
                         recipe.list_options, recipe.chat_template)
