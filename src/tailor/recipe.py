"""An arm's recipe: everything besides weights that decides what the model is asked, saved as
data (`recipe.json`) beside the arm's weights, so every arm, prompting arms included, can be
reloaded, evaluated, batch-predicted and served exactly as it was measured.

An arm folder holds:
- recipe.json: method and options, the prompt (instruction, kind, labels, chat template, budget),
  the shot selection (selector, k, the ids of the pool), room for a retriever, the base, the
  weights' digest, what training cost;
- pool.jsonl: the examples the shot ids name (so the folder stands alone, without the task file);
- the method family's weights (a PEFT adapter, a model folder, bias tensors), when it has any.

A `tailor train` or `tailor eval` run directory is an arm folder; a ladder keeps one per arm
under RUN/arms/NAME.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .errors import DataError, TailorError
from .jsonl import json_type, read_json_object, read_jsonl
from .schema import Options
from .selectors import SELECTORS
from .task import Example
from .utils import atomic_write_json, atomic_write_text

RECIPE = "recipe.json"
POOL = "pool.jsonl"
SCHEMA_VERSION = 1


class ShotSpec(Options):
    selector: str                 # "fixed", or the in-context selector (similarity, mmr, ...)
    k: int
    ids: list[str]                # fixed: the shots in order; otherwise the pool to select from
    options: dict = {}            # the selector's own settings (seed, mmr_lambda, ngram, token_budget)


class Recipe(Options):
    schema_version: int = SCHEMA_VERSION
    method: str
    options: dict = {}            # the method's resolved options
    kind: str
    instruction: str
    labels: list[str] | None = None
    list_options: bool = True
    max_prompt_tokens: int | None = None
    chat_template: str | None = None
    shots: ShotSpec | None = None
    retriever: dict | None = None  # a retriever spec (knowledge-base arms)
    base: dict = {}                # name, path, weights_id of the base it was built on
    weights: dict | None = None    # what the method family saved: folder, digest
    task: dict = {}                # name and data hash of the task it was fitted on
    train: dict | None = None      # the training run's result (steps, tokens, time, loss)
    trainable_params: int = 0
    program: dict | None = None    # long-document arms: PEARL's actions and plan demonstrations, the extraction schema
    calibration: dict | None = None  # a label prior divided out of every prediction (tailor.calibration):
    #                                  method, the inputs it was measured on, labels, log_prior per label


def save_recipe(folder: Path, recipe: Recipe, pool: list[Example] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if pool:
        atomic_write_text(folder / POOL, "".join(
            json.dumps({"id": ex.id, "input": ex.input, "target": ex.target, "choices": ex.choices},
                       ensure_ascii=False) + "\n" for ex in pool))
    atomic_write_json(folder / RECIPE, recipe.model_dump())


def find_arm(path: str | Path) -> Path:
    """An arm folder: a `tailor train` or `tailor eval` run directory, or a ladder's RUN/arms/NAME."""
    path = Path(path)
    if (path / RECIPE).is_file():
        return path
    arms = sorted(p.name for p in (path / "arms").iterdir()) if (path / "arms").is_dir() else []
    hint = f"; this ladder run's arms are {path}/arms/{{{','.join(arms)}}}" if arms else ""
    raise TailorError(f"{path}: not an arm folder (no {RECIPE} in it){hint}")


class _Open(Options):
    """A part of the recipe a family fills with its own keys besides the typed ones."""
    model_config = ConfigDict(extra="allow")


class _Weights(_Open):
    digest: str | None = None
    files: list[str] = []          # relative to the arm folder: copied and counted as the artifact


class _Base(_Open):
    name: str | None = None
    path: str | None = None
    weights_id: str | None = None


class _Train(_Open):
    train_time_s: float = 0.0
    train_tokens: int | float = 0


class _Calibration(_Open):
    model_config = ConfigDict(extra="allow", allow_inf_nan=True)   # a label never seen: log prior -inf
    method: str
    labels: list[str]
    log_prior: dict[str, float]


class _OnDisk(Recipe):
    """The recipe as read: the parts other code indexes into are typed, so an edited or corrupted
    recipe.json is one error naming its field instead of a KeyError wherever the part is used."""
    kind: Literal["classify", "generate", "choice"]
    base: _Base = _Base()
    weights: _Weights | None = None
    task: _Open = _Open()
    train: _Train | None = None
    calibration: _Calibration | None = None
    trainable_params: Annotated[int, Field(ge=0)] = 0
    max_prompt_tokens: Annotated[int, Field(ge=1)] | None = None


def read_recipe(folder: Path) -> tuple[Recipe, list[Example]]:
    from .schema import validate
    path = folder / RECIPE
    data = read_json_object(path, "recipe")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise DataError(path, f"recipe schema {data.get('schema_version')!r} is not the {SCHEMA_VERSION} this Tailor "
                              "reads", field="schema_version")
    validate(_OnDisk, data, path)
    recipe = validate(Recipe, data, path)
    for i, rel in enumerate((recipe.weights or {}).get("files", [])):
        parts = Path(rel).parts
        if not rel or Path(rel).is_absolute() or ".." in parts or "\\" in rel:
            raise DataError(path, f"{rel!r} is not a file inside the arm folder", field=f"weights.files[{i}]")
    pool, seen = [], set()
    if (folder / POOL).is_file():
        for no, r in read_jsonl(folder / POOL):
            missing = next((k for k in ("id", "input", "target") if k not in r), None)
            if missing:
                raise DataError(folder / POOL, "missing", no, missing)
            ex = Example(r["id"], r["input"], r["target"], r.get("choices"))
            bad = _pool_field(ex)
            if bad:
                raise DataError(folder / POOL, f"expected {bad[1]}, got {json_type(getattr(ex, bad[0]))}", no, bad[0])
            if ex.id in seen:
                raise DataError(folder / POOL, f"duplicate id {ex.id!r}", no, "id")
            seen.add(ex.id)
            pool.append(ex)
    if recipe.shots is not None and recipe.shots.selector not in ("fixed", *SELECTORS):
        raise DataError(path, f"unknown selector {recipe.shots.selector!r} (known: fixed, {', '.join(SELECTORS)})",
                        field="shots.selector")
    if recipe.calibration is not None:
        lacking = [x for x in recipe.calibration["labels"] if x not in recipe.calibration["log_prior"]]
        if lacking:
            raise DataError(path, f"no prior for label {lacking[0]!r}", field="calibration.log_prior")
    if recipe.shots is not None:
        missing = [i for i in recipe.shots.ids if i not in seen]
        if missing:
            raise DataError(path, f"names {len(missing)} examples that {POOL} beside it lacks (e.g. {missing[0]!r})",
                            field="shots.ids")
    return recipe, pool


def _pool_field(ex: Example) -> tuple[str, str] | None:
    """The first field of a pool row that is not what an example holds, and what it should be."""
    if not isinstance(ex.id, str):
        return "id", "a string"
    if not (isinstance(ex.input, str) or (isinstance(ex.input, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in ex.input))):
        return "input", "a string or chat messages ({role, content} strings)"
    if not isinstance(ex.target, str):
        return "target", "a string"
    if ex.choices is not None and not (isinstance(ex.choices, list) and all(isinstance(c, str) for c in ex.choices)):
        return "choices", "a list of strings"
    return None
