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

from .errors import DataError, TailorError
from .jsonl import read_jsonl
from .schema import Options
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


def read_recipe(folder: Path) -> tuple[Recipe, list[Example]]:
    from .schema import validate
    try:
        data = json.loads((folder / RECIPE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TailorError(f"{folder / RECIPE}: cannot read the recipe ({e})") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise TailorError(f"{folder / RECIPE}: recipe schema {data.get('schema_version')} is not the "
                          f"{SCHEMA_VERSION} this Tailor reads")
    recipe = validate(Recipe, data, folder / RECIPE)
    pool = []
    if (folder / POOL).is_file():
        for no, r in read_jsonl(folder / POOL):
            missing = next((k for k in ("id", "input", "target") if k not in r), None)
            if missing:
                raise DataError(folder / POOL, "missing", no, missing)
            pool.append(Example(r["id"], r["input"], r["target"], r.get("choices")))
    return recipe, pool
