"""`tailor predict ARM --input FILE --output OUT.jsonl`: batch prediction over a file, resumable.

Input: any task file Tailor reads (targets optional; where present they are scored), or an
OpenAI Batch file (`{custom_id, method, url, body}` lines with chat or completion bodies). A
task file runs through the arm exactly as the ladder measured it (`Adapted.predict`: shots,
option scoring, generation); a Batch file through the server's request path.

Resumable and idempotent: every finished chunk of rows is appended to OUT.partial (flushed to
disk) before the next one starts, so a run killed at any moment and started again computes each
row once; when every row is done, OUT (and the error file) is written whole, in input order,
atomically, and the journal is removed. Each run records what it computed and what it took from
the journal (predict.json in its run directory).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from . import predict_shards as shards
from .context import open_run
from .errors import DataError, TailorError
from .journal import Journal, fill
from .label import arm_digest, arm_files, label_chunk, labelling_arm, score_lines
from .methods.base import load_adapted
from .models import recipe_base
from .progress import Meter
from .serve.arms import load_arms
from .serve.openai_types import ChatRequest, CompletionRequest
from .serve.requests import ApiError, request_jobs, response_body
from .serve.scheduler import Scheduler
from .task import load_inputs, read_records
from .train.distributed import sum_numbers, world
from .utils import atomic_write_text, check_outputs, same_file, sha256_file

log = logging.getLogger("tailor")
BATCH_URLS = ("/v1/chat/completions", "/v1/completions")


@dataclass
class Row:
    key: str            # the row's id, or the Batch request's custom_id
    example: object = None
    body: object = None  # a validated request body (Batch input)
    error: dict | None = None


def read_rows(path: Path) -> tuple[list[Row], bool]:
    """The rows of `path` and whether it is an OpenAI Batch file. A Batch line that cannot be
    run becomes an error row (reported in the error file), not a stop."""
    records, _ = read_records(path)
    if not {"custom_id", "body"} <= set(records[0][1]):
        return [Row(ex.id, example=ex) for ex in load_inputs(path)], False
    rows, seen = [], set()
    for no, rec in records:
        key = rec.get("custom_id")
        if not isinstance(key, str) or not key:
            raise DataError(path, "expected a non-empty string", no, "custom_id")
        if key in seen:
            raise DataError(path, f"duplicate custom_id '{key}'", no, "custom_id")
        seen.add(key)
        url, body = rec.get("url"), rec.get("body")
        if url not in BATCH_URLS or rec.get("method", "POST") != "POST":
            rows.append(Row(key, error={"code": "invalid_url", "message": f"line {no}: expected POST to one of "
                                        f"{', '.join(BATCH_URLS)}, got {rec.get('method')} {url}"}))
            continue
        try:
            parsed = (ChatRequest if url == BATCH_URLS[0] else CompletionRequest).model_validate(body)
            if parsed.stream:
                raise ValueError("a batch request cannot stream")
            rows.append(Row(key, body=parsed))
        except (ValidationError, ValueError) as e:
            rows.append(Row(key, error={"code": "invalid_request", "message": f"line {no}: {e}".splitlines()[0]
                                        if not isinstance(e, ValidationError) else f"line {no}: {_first(e)}"}))
    return rows, True


def _first(e) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def run_predict(arm: str, input_path: str | Path, output: str | Path, errors: str | Path | None = None, *,
                model: str | None = None, dtype: str = "auto", device: str = "auto", batch_size: int = 16,
                max_new_tokens: int = 64, cache: bool = True, runs_dir: str = "runs", progress: bool = True) -> dict:
    input_path, output = Path(input_path), Path(output)
    if output.is_dir() or not output.name:
        raise TailorError(f"{output}: the output is a folder; name a file")
    errors = Path(errors) if errors else output.with_name(output.stem + ".errors.jsonl")
    folder, recipe = labelling_arm(arm)
    # before anything is read or written: no output may be an input or another output, under any spelling
    check_outputs({"input": input_path, **arm_files(folder, recipe)},
                  {"output": output, "errors file": errors, "journal": Journal.path_of(output)})
    if any(same_file(j, input_path) for j in shards.journals(output)):   # a rank's journal is read, then removed
        raise TailorError(f"{input_path}: the input is named like a journal of {output}; rename it")
    rows, batch = read_rows(input_path)
    config = {"arm": str(arm), "input": str(input_path), "output": str(output), "errors": str(errors),
              "batch_size": batch_size, "max_new_tokens": max_new_tokens}
    base_name = model or recipe_base(recipe, folder)
    w = world()   # under a launcher the rows left are dealt out between ranks (predict_shards.py)
    context = (open_run("predict", Path(arm).name, config, runs_dir=runs_dir, model=base_name, dtype=dtype,
                        device=device, cache=cache) if w.is_main else shards.rank_context(base_name, dtype, device))
    with context as ctx:
        made_of = {"input": sha256_file(input_path), "arm": str(folder.resolve()),
                   "arm_digest": arm_digest(folder), "model": base_name,
                   "dtype": dtype, "max_new_tokens": max_new_tokens}
        journal = Journal(output, made_of, path=shards.journal_path(output, w))
        done = shards.done_everywhere(output, made_of, journal, w)
        todo = [i for i in range(len(rows)) if i not in done]
        resumed = len(rows) - len(todo)
        if resumed:
            log.info("resuming: %d of %d rows are done already (%s)", resumed, len(rows), journal.path)
        t0 = time.perf_counter()
        run = _batch_runner(arm, ctx, rows, batch_size) if batch else _task_runner(folder, ctx, rows, batch_size)
        mine = shards.my_rows(todo, w)
        try:
            with Meter(len(mine), "predicting", progress and w.is_main, "rows") as meter:
                tokens = fill(journal, mine, lambda indices: run(indices, max_new_tokens), batch_size, meter)
        finally:
            getattr(run, "close", lambda: None)()
        # every rank's rows are in its journal once all have summed their tokens; rank 0 merges
        counts = run.engine.prompt_tokens
        tokens, prefilled, reused = (int(x) for x in sum_numbers([tokens, counts["prefilled"], counts["reused"]], w))
        if not w.is_main:
            return None
        wall = time.perf_counter() - t0
        done = shards.read_all(output, made_of, journal)
        lines = [done[i] for i in range(len(rows))]
        atomic_write_text(output, "".join(json.dumps(e["line"], ensure_ascii=False) + "\n" for e in lines if "line" in e))
        failed = [e["error"] for e in lines if "error" in e]
        atomic_write_text(errors, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in failed))
        shards.remove_journals(output)
        summary = {"rows": len(rows), "written": len(rows) - len(failed), "failed": len(failed),
                   "computed": len(todo), "from_journal": resumed, "wall_s": wall,
                   "rows_per_s": len(todo) / wall if wall else None, "tokens_per_s": tokens / wall if wall else None,
                   "prompt_tokens": {"prefilled": prefilled, "reused": reused},
                   "output": str(output), "errors": str(errors), "run_dir": str(ctx.path)}
        if not batch:
            summary["metrics"] = score_lines(recipe, [e["line"] for e in lines])
        ctx.run.write_json("predict.json", summary)
        return summary


def _task_runner(folder, ctx, rows: list[Row], batch_size: int):
    """Rows of a task file, through the one labelling path (`label.label_examples`: the arm as the
    ladder measured it)."""
    adapted = load_adapted(folder, ctx.base)
    engine = adapted.engine(ctx.cache, batch_size=batch_size, progress=False)
    examples = [row.example for row in rows]

    def run(indices, max_new_tokens):
        return label_chunk(adapted, engine, examples, indices, max_new_tokens)
    run.engine = engine
    return run


def _batch_runner(arm, ctx, rows: list[Row], batch_size: int):
    """OpenAI Batch requests, through the server's path (request -> jobs -> scheduler -> body)."""
    served = load_arms(ctx.base, {"arm": arm})["arm"]
    scheduler = Scheduler([served.engine], batch_size=batch_size, max_queue=1 << 30).start()

    def run(indices, max_new_tokens):
        entries, waiting, tokens = [], [], 0
        for i, row in [(i, rows[i]) for i in indices]:
            if row.error is not None:
                entries.append({"i": i, "error": _batch_line(row.key, error=row.error)})
                continue
            try:
                jobs = request_jobs(served, row.body, limit=1 << 30)
                scheduler.submit(jobs)
            except ApiError as e:
                entries.append({"i": i, "error": _batch_line(row.key, error={"code": e.code, "message": e.message})})
                continue
            except Exception as e:   # this row failed, not the run: an error line (journaled, never redone)
                entries.append({"i": i, "error": _failed(row.key, e)})
                continue
            waiting.append((i, row, jobs))
        for i, row, jobs in waiting:
            try:
                answers = [j.future.result() for j in jobs]
            except Exception as e:   # as OpenAI's Batch API writes a failed request to the error file
                entries.append({"i": i, "error": _failed(row.key, e)})
                continue
            body = response_body(row.body, jobs, answers, f"batch_req_{uuid.uuid4().hex[:24]}", int(time.time()))
            tokens += body.usage.total_tokens
            entries.append({"i": i, "line": _batch_line(row.key, status=200, body=body.model_dump())})
        return sorted(entries, key=lambda e: e["i"]), tokens
    run.close, run.engine = scheduler.stop, served.engine
    return run


def _failed(custom_id: str, error: Exception) -> dict:
    log.warning("request %s failed: %s: %s", custom_id, type(error).__name__, error)
    return _batch_line(custom_id, error={"code": "server_error", "message": f"{type(error).__name__}: {error}"})


def _batch_line(custom_id: str, status: int | None = None, body: dict | None = None, error: dict | None = None):
    """OpenAI's Batch output line."""
    response = None if body is None else {"status_code": status, "request_id": uuid.uuid4().hex, "body": body}
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response, "error": error}
