"""Teacher labelling: offline batch inference of the teacher arm over the rows a student learns
from (the train inputs and, optionally, unlabelled ones), as the distillation literature's
common form does (a teacher can label far more data than it was trained on).

It runs through `tailor.label.label_examples`, the one labelling path (the arm exactly as
measured, through the engine and its result cache), in memory: the teacher arm is loaded once, on
the base already loaded when it is the one the teacher was fitted on. Its rows are journaled
chunk by chunk beside the label store, so a run killed midway and started again labels only the
rows the journal lacks. What a student can learn from, per row:
- classify / choice: the teacher's answer and its probability over the label set (or choices):
  text-level, so it transfers across tokenizers;
- generate: the teacher's answer and, for soft labels, its top-k token log-probabilities at each
  position of that answer (k per position, not the 49k-wide rows; their bytes are counted).

Finished labels are kept in Tailor's cache under a key of (teacher weights, rows, k), so the
arms of a ladder that share a teacher label once; each reports the wall time the labelling took.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import ResultCache
from ..errors import TailorError
from ..journal import Journal, fill
from ..jsonl import read_jsonl
from ..label import label_chunk
from ..methods.base import load_adapted
from ..models import Base, load_base, recipe_base
from ..progress import Meter
from ..recipe import find_arm, read_recipe
from ..task import Example, hash_examples
from ..utils import atomic_write_text, cache_dir, sha256_text

log = logging.getLogger("tailor")
TOPK_CHUNK = 64   # rows per top-k call: each call's results reach the result cache before the next


@dataclass
class TeacherLabels:
    rows: dict[str, dict]                         # id -> {"label", "probs"?, "topk_ids"?, "topk_lp"?}
    labelling: dict = field(default_factory=dict)  # rows, wall_s, reused, score_bytes, full_row_bytes


def teacher_identity(teacher: Path) -> dict:
    folder = find_arm(teacher)
    recipe, _ = read_recipe(folder)
    return {"arm": str(folder.resolve()), "method": recipe.method, "base": recipe.base.get("weights_id"),
            "weights": (recipe.weights or {}).get("digest"), "kind": recipe.kind, "labels": recipe.labels}


def teacher_base(teacher: str | Path, base: Base | None = None) -> Base:
    """The base the teacher arm runs on, as it was measured: `base` itself when it is the one the
    teacher was fitted on (same weights, same dtype: a ladder's earlier arm), else that one loaded
    in the dtype the teacher was fitted in (the recipe's weights id ends in it)."""
    folder = find_arm(teacher)
    recipe, _ = read_recipe(folder)
    fitted = str((recipe.base or {}).get("weights_id") or "")
    if base is not None and fitted == base.weights_id:
        return base
    name = recipe_base(recipe, folder)
    dtype = fitted.rsplit(":", 1)[-1]
    if name.startswith("openai:") or dtype not in ("float32", "bfloat16", "float16"):   # no dtype named
        dtype = "auto"
    return load_base(name, dtype, base.device.type if base is not None else None)


def label_rows(teacher: str | Path, examples: list[Example], *, base: Base | None = None, top_k: int = 0,
               max_new_tokens: int = 64, batch_size: int = 16, progress: bool = True,
               cache: bool = True) -> TeacherLabels:
    """The teacher's labels for `examples` (and, with top_k > 0 on a generate task, its top-k
    token log-probabilities along each answer). `base`: a loaded base the teacher runs on when it
    was fitted on it (see `teacher_base`). `cache`: the engine's result cache (off, every row is
    computed: what labelling costs)."""
    who = teacher_identity(Path(teacher))
    key = sha256_text(json.dumps([who, hash_examples(examples), top_k, max_new_tokens], sort_keys=True))[:24]
    store = cache_dir("teacher-labels") / f"{key}.jsonl"
    if store.is_file():
        labels = _read(store)
        labels.labelling["reused"] = True
        log.info("teacher labels for %d rows reused from %s (labelled in %.0f s)", len(labels.rows), store,
                 labels.labelling.get("wall_s", 0.0))
        return labels
    t0 = time.perf_counter()
    on = teacher_base(teacher, base)
    adapted = load_adapted(teacher, on)
    engine = adapted.engine(ResultCache() if cache else None, batch_size=batch_size, progress=False)
    # the rows labelled so far, beside the store; made of the store's key and the base the teacher runs on
    journal = Journal(store.with_suffix(".labels.jsonl"), {"key": key, "base": on.weights_id})
    todo = [i for i in range(len(examples)) if i not in journal.done]
    with Meter(len(todo), "teacher labelling", progress, "rows") as meter:
        fill(journal, todo, lambda indices: label_chunk(adapted, engine, examples, indices, max_new_tokens),
             batch_size, meter)
    lines = [journal.done[i]["line"] for i in range(len(examples))]
    out = {line["id"]: {"label": line["prediction"]} for line in lines}
    for line in lines:
        if line.get("probs"):
            out[line["id"]]["probs"] = line["probs"]
    score_bytes = full_bytes = 0
    if top_k and who["kind"] == "generate":
        score_bytes, full_bytes = _add_topk(adapted, engine, examples, out, top_k, progress)
    labelling = {"rows": len(lines), "computed": len(todo), "from_journal": len(examples) - len(todo),
                 "wall_s": round(time.perf_counter() - t0, 2), "top_k": top_k, "score_bytes": score_bytes,
                 "full_row_bytes": full_bytes, "teacher": who["arm"], "reused": False}
    atomic_write_text(store, json.dumps({"labelling": labelling}) + "\n"
                      + "".join(json.dumps({"id": i, **v}, ensure_ascii=False) + "\n" for i, v in out.items()))
    journal.path.unlink()
    return TeacherLabels(out, labelling)


def _add_topk(adapted, engine, examples: list[Example], out: dict, k: int, progress: bool) -> tuple[int, int]:
    """Top-k log-probabilities of the teacher along its own answers, through the engine (cached
    per chunk, so a killed run recomputes at most one chunk). Returns the bytes they take as
    int32 ids + fp16 log-probabilities, and what full-vocabulary fp16 rows would take."""
    vocab = adapted.model.config.vocab_size
    positions = 0
    with Meter(len(examples), "teacher top-k", progress, "rows") as meter:
        for start in range(0, len(examples), TOPK_CHUNK):
            chunk = examples[start:start + TOPK_CHUNK]
            prompts = adapted.prompts(chunk)   # as the teacher was measured: shots and passages included
            answers = [adapted.builder.target_text(out[ex.id]["label"]) for ex in chunk]
            for ex, top in zip(chunk, engine.top_logprobs(prompts, answers, k)):
                out[ex.id]["topk_ids"], out[ex.id]["topk_lp"] = top.ids, top.logprobs
                positions += len(top.ids)
            meter.update(len(chunk))
    if not positions:
        raise TailorError("teacher top-k: the teacher's answers are all empty, so there is nothing to distil")
    return positions * k * (4 + 2), positions * vocab * 2


def _read(store: Path) -> TeacherLabels:
    lines = [r for _, r in read_jsonl(store)]
    return TeacherLabels({r.pop("id"): r for r in lines[1:]}, dict(lines[0]["labelling"]))
