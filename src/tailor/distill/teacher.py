"""Teacher labelling: offline batch inference of the teacher arm over the rows a student learns
from (the train inputs and, optionally, unlabelled ones), as the distillation literature's
common form does (a teacher can label far more data than it was trained on).

It runs through `tailor.label.prelabel`, the one labelling path (the arm exactly as measured,
through the engine and its result cache, journaled): a run killed midway and started again
labels only the rows its journal lacks. What a student can learn from, per row:
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

from ..errors import TailorError
from ..task import Example, hash_examples
from ..utils import atomic_write_text, cache_dir, sha256_text

log = logging.getLogger("tailor")
TOPK_CHUNK = 64   # rows per top-k call: each call's results reach the result cache before the next


@dataclass
class TeacherLabels:
    rows: dict[str, dict]                         # id -> {"label", "probs"?, "topk_ids"?, "topk_lp"?}
    labelling: dict = field(default_factory=dict)  # rows, wall_s, reused, score_bytes, full_row_bytes


def teacher_identity(teacher: Path) -> dict:
    from ..recipe import find_arm, read_recipe
    folder = find_arm(teacher)
    recipe, _ = read_recipe(folder)
    return {"arm": str(folder.resolve()), "method": recipe.method, "base": recipe.base.get("weights_id"),
            "weights": (recipe.weights or {}).get("digest"), "kind": recipe.kind, "labels": recipe.labels}


def label_rows(teacher: str | Path, examples: list[Example], *, top_k: int = 0, max_new_tokens: int = 64,
               batch_size: int = 16, runs_dir: str | Path = "runs", progress: bool = True,
               cache: bool = True) -> TeacherLabels:
    """The teacher's labels for `examples` (and, with top_k > 0 on a generate task, its top-k
    token log-probabilities along each answer). `cache`: the engine's result cache (off, every
    row is computed: what labelling costs)."""
    from ..label import prelabel
    who = teacher_identity(Path(teacher))
    key = sha256_text(json.dumps([who, hash_examples(examples), top_k, max_new_tokens], sort_keys=True))[:24]
    store = cache_dir("teacher-labels") / f"{key}.jsonl"
    if store.is_file():
        labels = _read(store)
        labels.labelling["reused"] = True
        log.info("teacher labels for %d rows reused from %s (labelled in %.0f s)", len(labels.rows), store,
                 labels.labelling.get("wall_s", 0.0))
        return labels
    inputs = store.with_suffix(".inputs.jsonl")
    text = "".join(json.dumps(_input_record(ex), ensure_ascii=False) + "\n" for ex in examples)
    if not inputs.is_file() or inputs.read_text(encoding="utf-8") != text:
        atomic_write_text(inputs, text)
    t0 = time.perf_counter()
    rows, summary = prelabel(teacher, inputs, store.with_suffix(".predictions.jsonl"), batch_size=batch_size,
                             max_new_tokens=max_new_tokens, runs_dir=str(runs_dir), progress=progress, cache=cache)
    out = {r["id"]: {"label": r["label"]} for r in rows}
    for r in rows:
        if r["probs"]:
            out[r["id"]]["probs"] = r["probs"]
    score_bytes = full_bytes = 0
    if top_k and who["kind"] == "generate":
        score_bytes, full_bytes = _add_topk(teacher, examples, out, top_k, batch_size, progress)
    labelling = {"rows": len(rows), "computed": summary["computed"], "from_journal": summary["from_journal"],
                 "wall_s": round(time.perf_counter() - t0, 2), "top_k": top_k, "score_bytes": score_bytes,
                 "full_row_bytes": full_bytes, "teacher": who["arm"], "reused": False}
    atomic_write_text(store, json.dumps({"labelling": labelling}) + "\n"
                      + "".join(json.dumps({"id": i, **v}, ensure_ascii=False) + "\n" for i, v in out.items()))
    inputs.unlink(missing_ok=True)
    return TeacherLabels(out, labelling)


def _input_record(ex: Example) -> dict:
    """A row the teacher's predictor reads back as the same example (targets are not needed)."""
    if ex.choices:
        return {"id": ex.id, "question": ex.input, "choices": ex.choices}
    return {"id": ex.id, ("messages" if isinstance(ex.input, list) else "text"): ex.input}


def _add_topk(teacher, examples: list[Example], out: dict, k: int, batch_size: int, progress: bool) -> tuple[int, int]:
    """Top-k log-probabilities of the teacher along its own answers, through the engine (cached
    per chunk, so a killed run recomputes at most one chunk). Returns the bytes they take as
    int32 ids + fp16 log-probabilities, and what full-vocabulary fp16 rows would take."""
    from ..engine import ResultCache
    from ..methods import load_adapted
    from ..models import load_base
    from ..recipe import find_arm, read_recipe
    recipe, _ = read_recipe(find_arm(teacher))
    base = load_base(recipe.base.get("name") or recipe.base["path"])
    adapted = load_adapted(teacher, base)
    engine = adapted.engine(ResultCache(), batch_size=batch_size, progress=progress)
    vocab = adapted.model.config.vocab_size
    positions = 0
    for start in range(0, len(examples), TOPK_CHUNK):
        chunk = examples[start:start + TOPK_CHUNK]
        prompts = [adapted.builder.build(ex, adapted.shots(ex) if adapted.shots else ()).text for ex in chunk]
        answers = [adapted.builder.target_text(out[ex.id]["label"]) for ex in chunk]
        for ex, top in zip(chunk, engine.top_logprobs(prompts, answers, k)):
            out[ex.id]["topk_ids"], out[ex.id]["topk_lp"] = top.ids, top.logprobs
            positions += len(top.ids)
    if not positions:
        raise TailorError("teacher top-k: the teacher's answers are all empty, so there is nothing to distil")
    return positions * k * (4 + 2), positions * vocab * 2


def _read(store: Path) -> TeacherLabels:
    lines = [json.loads(x) for x in store.read_text(encoding="utf-8").split("\n") if x]
    return TeacherLabels({r.pop("id"): r for r in lines[1:]}, dict(lines[0]["labelling"]))
