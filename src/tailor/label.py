"""Model-in-the-loop labelling: `tailor label FILE --with ARM --out REVIEW` and
`tailor label --accept REVIEW --into TASK_FILE`.

Pre-labelling runs the rows through `label_examples` (the arm exactly as the ladder measured it,
through the engine and its result cache). Its journal (for review.jsonl:
review.predictions.jsonl.partial beside it) makes a run that is killed resumable: started again, it computes only
the rows the journal lacks and never labels a row twice. The review file, REVIEW (JSONL) and
REVIEW with a .csv suffix, lists the least certain rows first. A reviewer fills the `review`
field of any row: a corrected label (a generate arm's corrected answer), "accept" or "reject".

Confidence is the model's largest probability over the labels (classify arms) or the choices
(choice arms). A generate arm has no probabilities: its confidence is null, so its rows keep
input order and none passes a confidence threshold unreviewed.

`label_examples` is the one labelling path, over an arm already loaded: `tailor predict` adds
its journal and output files to it, and distillation's teacher labelling its label store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from .context import open_run
from .errors import DataError, TailorError
from .journal import Journal, fill
from .jsonl import json_type
from .jsonl import loads as json_loads
from .methods.base import load_adapted, method_class
from .progress import Meter
from .recipe import POOL, RECIPE, Recipe, find_arm, read_recipe
from .task import Example, Task, detect_format, load_inputs, read_records, records_to_examples
from .task import _bad_value as bad_value  # THE rule for a value read from a file: depth, lone surrogates
from .utils import atomic_write_text, check_outputs, same_file, sha256_file

# evaluate and models import torch: the functions that run a model import them, so reading and
# accepting a review loads no model code

REVIEW_WORDS = ("accept", "reject")
PROB_PREFIX = "p_"


# ---------------------------------------------------------------- labelling


def labelling_arm(arm: str | Path) -> tuple[Path, Recipe]:
    """The folder and recipe of the arm `arm`, which must answer rows: a scorer (a reward model)
    writes no answers and is refused."""
    folder = find_arm(arm)
    recipe, _ = read_recipe(folder)
    if method_class(recipe.method).scorer:
        raise TailorError(f"{folder}: a {recipe.method} arm scores answers, it writes none: there is nothing "
                          "to predict or label (use it as a judge, or as a ppo arm's reward_model)")
    if method_class(recipe.method).external:
        raise TailorError(f"{folder}: a {recipe.method} arm's answers come from outside Tailor (a model's completions "
                          "file or endpoint) for the rows it was measured on: Tailor has no model of it to predict or "
                          "label other rows with")
    return folder, recipe


def arm_digest(folder: Path) -> str:
    """The content of what decides an arm's answers: its recipe (method, options, prompt, shots,
    retriever with its knowledge base's content id, calibration), its pool and its weight files,
    read as they are now. Every arm has one, a prompting arm too (it has no weights digest): a
    journal made under another digest is refused, so an arm edited between a killed run and its
    resume never mixes two arms' answers in one output."""
    recipe, pool = read_recipe(folder)
    h = hashlib.sha256(json.dumps({"recipe": recipe.model_dump(), "pool": [[ex.id, ex.input, ex.target, ex.choices]
                                                                           for ex in pool]},
                                  sort_keys=True, ensure_ascii=False, default=str).encode())
    for rel in sorted(str(f) for f in (recipe.weights or {}).get("files", [])):
        path = folder / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:   # a weight file swapped under an unchanged recipe changes the answers too
            h.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f) if f.is_file() else '-'}\n".encode())
    return h.hexdigest()


def arm_files(folder: Path, recipe: Recipe) -> dict[str, Path]:
    """The files of an arm folder that an output must never overwrite (what each is -> its path)."""
    files = {"arm's recipe": folder / RECIPE, "arm's pool": folder / POOL}
    for rel in (recipe.weights or {}).get("files", []):
        files[f"arm's weights {rel}"] = folder / rel
    return files


def recipe_task(recipe: Recipe) -> Task:
    """The task an arm answers, as its recipe states it (kind, instruction, labels), with no rows."""
    return Task("predict", recipe.kind, recipe.instruction, [], labels=recipe.labels)


def label_examples(adapted, engine, examples: list[Example], max_new_tokens: int = 64) -> tuple[list[dict], int]:
    """THE labelling path: an already-loaded arm's answer to each example, exactly as it is
    measured (`Adapted.predict`: shots, passages, option scoring or generation, through `engine`
    and its result cache). Returns one line per example, {id, prediction, prompt_tokens,
    completion_tokens, probs (classify and choice arms), target (where the example has one)}, and
    the tokens computed (not read from the cache). `tailor predict`, `tailor label` and
    distillation's teacher labelling all label through here."""
    preds = adapted.predict(engine, recipe_task(adapted.recipe), examples, max_new_tokens)
    lines = []
    for ex, p in zip(examples, preds):
        line = {"id": p.id, "prediction": p.prediction, "prompt_tokens": p.prompt_tokens,
                "completion_tokens": p.completion_tokens}
        if p.probs is not None:
            line["probs"] = p.probs
        if ex.target:
            line["target"] = ex.target
        lines.append(line)
    return lines, sum(p.prompt_tokens + p.completion_tokens for p in preds if not p.cached)


def label_chunk(adapted, engine, examples: list[Example], indices: list[int],
                max_new_tokens: int = 64) -> tuple[list[dict], int]:
    """Journal entries ({"i", "line"}) for the examples at `indices`, and the tokens computed."""
    lines, tokens = label_examples(adapted, engine, [examples[i] for i in indices], max_new_tokens)
    return [{"i": i, "line": line} for i, line in zip(indices, lines)], tokens


def score_lines(recipe: Recipe, lines: list[dict]) -> dict | None:
    """Metrics of the labelled lines that carry a target (None when none does)."""
    from .evaluate import Prediction, score_predictions
    scored = [line for line in lines if line.get("target")]
    if not scored:
        return None
    preds = [Prediction(line["id"], line["prediction"], line["target"], line["prompt_tokens"], line["completion_tokens"],
                        0.0, probs=line.get("probs")) for line in scored]
    return {"rows": len(scored), **score_predictions(recipe_task(recipe), preds).metrics}


def review_row(ex: Example, line: dict) -> dict:
    """A row of the review file: the model's label, its confidence and probabilities, the gold
    target where the input has one, and an empty `review` for a person to fill."""
    probs = line.get("probs")
    row = {"id": ex.id, "input": ex.input, "label": line["prediction"],
           "confidence": max(probs.values()) if probs else None, "probs": probs}
    if ex.choices is not None:
        row["choices"] = ex.choices
    if ex.target:
        row["gold"] = ex.target
    row["review"] = ""
    return row


def label_file(arm: str | Path, input: str | Path, review: str | Path, *, keep_above: float | None = None,
               model: str | None = None, dtype: str = "auto", device: str = "auto", batch_size: int = 16,
               max_new_tokens: int = 64, cache: bool = True, runs_dir: str = "runs", progress: bool = True) -> dict:
    """Pre-labels every row of `input` with `arm` and writes the review file `review` (.jsonl) and
    its CSV copy beside it, least certain rows first. With `keep_above`, each row's `kept` says
    whether its confidence is at least that. `model`: the base (default: the one the arm was
    fitted on). Rows are journaled chunk by chunk (`batch_size` rows) in
    REVIEW.predictions.jsonl.partial: a killed run started again labels only the rows it lacks.
    Returns a summary (also written to the run directory's label.json)."""
    from .models import recipe_base
    input, review = Path(input), Path(review)
    if review.suffix.lower() != ".jsonl":
        raise TailorError(f"{review}: the review file must end in .jsonl (its CSV copy is written beside it)")
    csv_path = review.with_suffix(".csv")
    journal_path = review.with_name(review.stem + ".predictions.jsonl")
    folder, recipe = labelling_arm(arm)
    check_outputs({"input": input, **arm_files(folder, recipe)},
                  {"review file": review, "review's CSV copy": csv_path, "journal": Journal.path_of(journal_path)})
    if keep_above is not None:
        if not 0 <= keep_above <= 1:
            raise TailorError(f"--keep-above must be a probability from 0 to 1, got {keep_above}")
        if recipe.kind == "generate":
            raise TailorError(f"--keep-above needs the model's probabilities, and {arm} is a generate arm (it has none)")
    examples = load_inputs(input)
    base_name = model or recipe_base(recipe, folder)
    config = {"arm": str(arm), "input": str(input), "review": str(review), "keep_above": keep_above,
              "batch_size": batch_size, "max_new_tokens": max_new_tokens}
    with open_run("label", Path(arm).name, config, runs_dir=runs_dir, model=base_name, dtype=dtype, device=device,
                  cache=cache) as ctx:
        made_of = {"input": sha256_file(input), "arm": str(folder.resolve()), "arm_digest": arm_digest(folder),
                   "model": base_name, "dtype": dtype, "max_new_tokens": max_new_tokens}
        journal = Journal(journal_path, made_of)
        todo = [i for i in range(len(examples)) if i not in journal.done]
        adapted = load_adapted(folder, ctx.base)
        engine = adapted.engine(ctx.cache, batch_size=batch_size, progress=False)
        with Meter(len(todo), "labelling", progress, "rows") as meter:
            fill(journal, todo, lambda indices: label_chunk(adapted, engine, examples, indices, max_new_tokens),
                 batch_size, meter)
        lines = [journal.done[i]["line"] for i in range(len(examples))]
        rows = [review_row(ex, line) for ex, line in zip(examples, lines)]
        if keep_above is not None:
            for row in rows:
                row["kept"] = row["confidence"] >= keep_above
        rows.sort(key=lambda r: (r["confidence"] is not None, r["confidence"] or 0.0))   # stable: ties keep input order
        atomic_write_text(review, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_text(csv_path, _review_csv(rows, recipe.labels if recipe.kind == "classify" else None))
        journal.path.unlink()

        confs = [r["confidence"] for r in rows if r["confidence"] is not None]
        summary = {"kind": recipe.kind, "rows": len(rows), "labelled": len(rows), "computed": len(todo),
                   "from_journal": len(rows) - len(todo), "keep_above": keep_above,
                   "kept": sum(r["kept"] for r in rows) if keep_above is not None else None,
                   "mean_confidence": sum(confs) / len(confs) if confs else None,
                   **_gold_accuracy(rows, recipe.kind, keep_above is not None),
                   "metrics": score_lines(recipe, lines), "review": str(review), "csv": str(csv_path),
                   "run_dir": str(ctx.path)}
        ctx.run.write_json("label.json", summary)
    return summary


def _gold_accuracy(rows: list[dict], kind: str, keep: bool) -> dict:
    """Agreement of the model's label with the input's target, over all rows that have one and
    over the kept ones (for a generate arm: exact match after normalising case and spaces)."""
    from .evaluate import normalize
    same = (lambda a, b: a == b) if kind != "generate" else (lambda a, b: normalize(a) == normalize(b))
    gold = [r for r in rows if "gold" in r]
    kept = [r for r in gold if r.get("kept")]
    mean = lambda rs: sum(same(r["label"], r["gold"]) for r in rs) / len(rs) if rs else None
    return {"gold_rows": len(gold), "accuracy": mean(gold), "kept_gold_rows": len(kept) if keep else None,
            "accuracy_kept": mean(kept) if keep else None}


def _review_csv(rows: list[dict], labels: list[str] | None) -> str:
    """The review as CSV: the JSONL's fields, a classify arm's probabilities as one p_<label>
    column per label; a choice arm's choices and probabilities as JSON cells; a chat input as a
    JSON array of messages."""
    columns = ["id", "review", "label", "confidence"]
    columns += [c for c in ("kept", "gold") if any(c in r for r in rows)]
    columns.append("input")
    choice = any("choices" in r for r in rows)
    columns += ["choices", "probs"] if choice else [PROB_PREFIX + label for label in labels or []]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        cells = {"id": r["id"], "review": r["review"], "label": r["label"],
                 "confidence": "" if r["confidence"] is None else repr(r["confidence"]),
                 "input": r["input"] if isinstance(r["input"], str) else json.dumps(r["input"], ensure_ascii=False)}
        if "kept" in columns:
            cells["kept"] = "true" if r.get("kept") else "false"
        if "gold" in columns:
            cells["gold"] = r.get("gold", "")
        if choice:
            cells["choices"] = json.dumps(r["choices"], ensure_ascii=False)
            cells["probs"] = json.dumps(r["probs"], ensure_ascii=False)
        else:
            cells.update({PROB_PREFIX + label: repr(r["probs"][label]) for label in labels or []})
        writer.writerow(cells)
    return buf.getvalue()


# ---------------------------------------------------------------- reading a review


@dataclass
class Reviewed:
    no: int                       # line of the review file
    id: str
    input: str | list[dict]
    label: str                    # the model's label
    confidence: float | None
    review: str                   # "", "accept", "reject" or a corrected label
    choices: list[str] | None = None


def read_review(path: str | Path) -> tuple[str, list[Reviewed]]:
    """A review file (the JSONL or its CSV, either possibly edited by hand), validated strictly:
    a bad row is a DataError naming the file, line and field. Returns the task kind and the rows."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise DataError(path, "a review file is .jsonl or .csv")
    records, unit = read_records(path)
    is_csv = path.suffix.lower() == ".csv"
    first = records[0][1]
    if is_csv:
        kind = "choice" if "choices" in first else "classify" if any(k.startswith(PROB_PREFIX) for k in first) else "generate"
        labels = [k[len(PROB_PREFIX):] for k in first if k.startswith(PROB_PREFIX)] if kind == "classify" else None
    else:
        probs = first.get("probs")
        if probs is not None and not (isinstance(probs, dict) and probs):   # decides the kind: checked first
            raise DataError(path, f"expected an object of probabilities (or null), got {json_type(probs)}",
                            records[0][0], "probs", unit)
        kind = "choice" if "choices" in first else "classify" if probs else "generate"
        labels = list(probs) if kind == "classify" else None
    rows, seen = [], {}
    for no, rec in records:
        row = _reviewed(path, no, rec, unit, kind, labels, is_csv)
        if row.id in seen:
            raise DataError(path, f"duplicate id {_short(row.id)} (first at {unit} {seen[row.id]})", no, "id", unit)
        seen[row.id] = no
        rows.append(row)
    return kind, rows


def _reviewed(path, no, rec, unit, kind, labels, is_csv) -> Reviewed:
    err = lambda field, problem: DataError(path, problem, no, field, unit)

    def text(field, allow_empty=False):
        if field not in rec or (rec[field] is None and not is_csv):
            raise err(field, "missing")
        v = "" if rec[field] is None else rec[field]
        if not isinstance(v, str):
            raise err(field, f"expected a string, got {json_type(v)}")
        if not allow_empty and not v.strip():
            raise err(field, "is empty")
        return v

    def number(field, value, required):
        if is_csv and isinstance(value, str):
            if not value.strip():
                value = None
            else:
                try:
                    value = float(value)
                except ValueError:
                    raise err(field, f"expected a number from 0 to 1, got {_short(value)}") from None
        if value is None:
            if required:
                raise err(field, "missing")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise err(field, f"expected a number from 0 to 1, got {_short(value)}")
        return float(value)

    rid = rec.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool) and not is_csv:
        rid = str(rid)
    if not isinstance(rid, str) or not rid.strip():
        raise err("id", "expected a non-empty string")
    input = _input(rec.get("input"), is_csv, err)
    choices = None
    if kind == "choice":
        choices = _json_cell(rec.get("choices"), is_csv, err, "choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise err("choices", "expected an array of at least 2 non-empty strings")
    options = labels if kind == "classify" else choices
    label = text("label", allow_empty=kind == "generate")   # a generated answer may be empty
    if options is not None and label not in options:
        raise err("label", f"{_short(label)} is not one of {options}")
    confidence = number("confidence", rec.get("confidence"), required=kind != "generate")
    if kind != "generate":
        if is_csv and kind == "classify":
            probs = {k[len(PROB_PREFIX):]: v for k, v in rec.items() if k and k.startswith(PROB_PREFIX)}
        else:
            probs = _json_cell(rec.get("probs"), is_csv, err, "probs")
        if not isinstance(probs, dict) or sorted(probs) != sorted(options):
            raise err("probs", f"expected a probability for each of {options}")
        for key, value in probs.items():
            number(PROB_PREFIX + key if is_csv and kind == "classify" else f"probs.{key}", value, required=True)
    if "gold" in rec and rec["gold"] not in (None, ""):
        text("gold")
    if "review" in rec and rec["review"] is None:
        rec = {**rec, "review": ""}   # JSON null: not reviewed
    review = text("review", allow_empty=True).strip()
    if review.lower() in REVIEW_WORDS:
        review = review.lower()
        if review == "accept" and not label.strip():
            raise err("review", "accept keeps the model's answer, which is empty; write the answer instead, or reject")
    elif review and options is not None and review not in options:
        raise err("review", f"{_short(review)} is not one of the labels {options}, nor accept or reject")
    return Reviewed(no, rid, input, label, confidence, review, choices)


def _input(value, is_csv, err):
    """A row's input: text, or chat messages (in a CSV cell, a JSON array of them)."""
    if is_csv and isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            parsed = json_loads(value)
            if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                                           for m in parsed):
                if problem := bad_value(parsed):
                    raise err("input", problem)
                value = parsed
        except json.JSONDecodeError:
            pass   # text that merely starts like JSON
    if isinstance(value, str):
        if not value.strip():
            raise err("input", "is empty")
        return value
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
            for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise err("input", "missing" if value in (None, "") else "expected text or an array of chat messages")


def _short(value) -> str:
    """A value as an error line shows it: its start (a cell may hold a 4,000-digit number)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else f"{json_type(value)} of {len(str(value))} digits"
    return text if len(text) <= 60 else text[:57] + "..."


def _json_cell(value, is_csv, err, field):
    if is_csv and isinstance(value, str):
        try:   # the JSONL reader's parser: nesting and numbers past its limits are errors, not crashes
            parsed = json_loads(value)
        except json.JSONDecodeError as e:
            raise err(field, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if problem := bad_value(parsed):
            raise err(field, problem)
        return parsed
    if value is None:
        raise err(field, "missing")
    return value


# ---------------------------------------------------------------- accepting a review


def accept(review: str | Path, into: str | Path, *, threshold: float) -> dict:
    """Merges the reviewed rows of `review` into the JSONL task file `into` (created if absent):
    a corrected label wins; "accept" keeps the model's label (so does a correction equal to it);
    "reject" drops the row; an unreviewed row is kept only if its confidence is at least
    `threshold`. Rows whose id `into` already has are not added again. `into` keeps its format
    (a new file: text+label for classify, question+choices+answer for choice, prompt+completion
    or messages for generate) and is rewritten whole and atomically, or not at all. Returns
    every choice counted."""
    review, into = Path(review), Path(into)
    if not 0 <= threshold <= 1:
        raise TailorError(f"--threshold must be a probability from 0 to 1, got {threshold}")
    if into.suffix.lower() != ".jsonl":
        raise TailorError(f"{into}: rows are merged into a .jsonl task file")
    if same_file(into, review):
        raise TailorError(f"{into}: the task file is the review file")
    kind, rows = read_review(review)
    fmt, present, head = _existing(into)
    fmt = fmt or {"classify": "text_label", "choice": "choice"}.get(kind) or (
        "prompt_completion" if all(isinstance(r.input, str) for r in rows) else "chat")
    if (fmt == "choice") != (kind == "choice") or (fmt == "text_label" and kind != "classify"):
        raise TailorError(f"{into}: a {fmt} task file cannot take the rows of a {kind} review ({review})")

    counts = dict.fromkeys(("edited", "accepted", "rejected", "kept_unreviewed", "dropped_unreviewed",
                            "already_present"), 0)
    new = []
    for row in rows:
        if row.review == "reject":
            counts["rejected"] += 1
            continue
        if row.review and row.review not in ("accept", row.label):
            counts["edited"] += 1
            label = row.review
        elif row.review:
            counts["accepted"] += 1
            label = row.label
        elif row.confidence is not None and row.confidence >= threshold:
            counts["kept_unreviewed"] += 1
            label = row.label
        else:
            counts["dropped_unreviewed"] += 1
            continue
        if row.id in present:
            counts["already_present"] += 1
            continue
        present.add(row.id)
        new.append(_task_record(row, label, fmt))
    if new:
        atomic_write_text(into, head + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
    return {"rows": len(rows), **counts, "added": len(new), "threshold": threshold, "into": str(into), "format": fmt}


def _existing(into: Path) -> tuple[str | None, set[str], str]:
    """The format, the ids and the text (ending in a newline) of the task file `into`; None, an
    empty set and "" when it does not exist or is empty."""
    if not into.exists() or not into.read_bytes().strip():
        return None, set(), ""
    records, unit = read_records(into)
    fmt = detect_format(into, records, unit)
    ids = {ex.id for ex in records_to_examples(into, records, unit, fmt, optional_target=True)}
    text = into.read_text(encoding="utf-8")
    return fmt, ids, text if text.endswith("\n") else text + "\n"


def _task_record(row: Reviewed, label: str, fmt: str) -> dict:
    """One row of a task file in format `fmt`, with the accepted label as its target."""
    text = row.input if isinstance(row.input, str) else "\n".join(m["content"] for m in row.input if m["role"] != "system")
    if fmt == "text_label":
        return {"id": row.id, "text": text, "label": label}
    if fmt == "choice":
        return {"id": row.id, "question": text, "choices": row.choices, "answer": label}
    if fmt == "prompt_completion":
        return {"id": row.id, "prompt": text, "completion": label}
    if fmt == "alpaca":
        return {"id": row.id, "instruction": text, "output": label}
    messages = row.input if isinstance(row.input, list) else [{"role": "user", "content": row.input}]
    return {"id": row.id, "messages": [*messages, {"role": "assistant", "content": label}]}
