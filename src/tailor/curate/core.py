"""curate_task: every check on one task, into a CurationReport."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..progress import Meter
from ..prompts import PromptBuilder, builder_for
from ..task import Task
from .options import CurateOptions
from .outputs import balance, output_checks
from .report import CurationReport
from .text import split_rows, text_checks

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("tailor")


def default_max_tokens() -> int:
    """The training loop's row length, so 'over max tokens' means 'the trainer would drop it'."""
    from ..train.options import TrainConfig
    return TrainConfig.model_fields["seq_len"].default


def curate_task(task: Task, tokenizer=None, max_tokens: int | None = None, engine: Engine | None = None,
                builder: PromptBuilder | None = None, options: CurateOptions | None = None) -> CurationReport:
    """Checks `task`. Token lengths need a tokenizer (or a builder or an engine); label-noise
    candidates and paraphrases need an engine (the base model, or a trained arm's engine with
    its builder). Checks that cannot run are listed in `report.skipped`, never silently left out."""
    opts = options or CurateOptions()
    start = time.perf_counter()
    rows = split_rows(task)
    timings: dict[str, float] = {}
    skipped: list[str] = []
    if builder is None:
        tok = tokenizer or (engine.tok if engine is not None else None)
        config = getattr(engine.model, "config", None) if engine is not None else None
        builder = builder_for(task, tok, config) if tok is not None else None
    max_tokens = max_tokens or opts.max_tokens or default_max_tokens()

    # Tokenising runs in a thread while the text checks run here: the tokenizer's batch
    # encoder releases the GIL, so the two overlap on a 2-core machine.
    with ThreadPoolExecutor(1) as pool, Meter(3 if builder else 2, "curating", opts.progress, "checks") as meter:
        t0 = time.perf_counter()
        lengths_job = pool.submit(_timed, _lengths, rows, builder, max_tokens) if builder else None
        text = text_checks(task, opts.near_threshold, opts.shingle_chars, opts.num_perm)
        timings["duplicates_leakage_conflicts"] = time.perf_counter() - t0
        meter.update(1, 0, step="duplicates")
        t0 = time.perf_counter()
        bal = balance(task, rows, opts.expected, opts.balance_tolerance)
        outs = output_checks(task, rows, opts.min_output_chars, opts.max_output_share, opts.max_refusal_share)
        timings["balance_outputs"] = time.perf_counter() - t0
        meter.update(1, 0, step="outputs")
        lengths = None
        if lengths_job:
            t0 = time.perf_counter()
            lengths, took = lengths_job.result()
            timings["lengths"] = took
            timings["lengths_wait"] = time.perf_counter() - t0
            meter.update(1, int(sum(p + a for p, a in lengths["_per_row"].values())), step="lengths")
        else:
            skipped.append("lengths in tokens: no tokenizer given (pass --model)")

    noise = augmentation = None
    synthetic = []
    train = [ex for s, ex in rows if s == "train"]
    if engine is None:
        skipped.append("label-noise candidates: no model engine given")
        if opts.augment:
            skipped.append(f"paraphrase augmentation of {opts.augment} rows: no model engine given")
    else:
        from .model import label_noise, paraphrase
        if opts.model_checks:
            t0 = time.perf_counter()
            noise = label_noise(task, train, builder, engine, opts.sample, opts.noise_confidence,
                                opts.noise_top, opts.seed)
            timings["label_noise"] = time.perf_counter() - t0
        else:
            skipped.append("label-noise candidates: model checks turned off")
        if opts.augment:
            t0 = time.perf_counter()
            prefer = [r["label"] for r in bal["labels"] if r["ratio"] is not None and r["ratio"] < 1] \
                if bal and bal.get("kind") == "labels" else None
            synthetic, augmentation = paraphrase(task, train, engine, opts.augment, opts.augment_temperature,
                                                 opts.seed, prefer)
            timings["augmentation"] = time.perf_counter() - t0

    timings["total"] = time.perf_counter() - start
    summary = task.summary()
    info = {"name": task.name, "kind": task.kind, "source": task.source, "rows": len(rows),
            "splits": {s: len(v) for s, v in task.splits.items()}, "labels": task.labels,
            "data_hash": task.data_hash, "distinct_inputs": text["distinct_inputs"],
            "near_pairs": text["near_pairs"], "notes": summary["notes"]}
    model = getattr(engine, "weights_id", None) or (getattr(builder.tok, "name_or_path", None) if builder else None)
    report = CurationReport(task=info, options=opts.to_json(), duplicates=text["duplicates"],
                            leakage=text["leakage"], conflicts=text["conflicts"], outputs=outs, balance=bal,
                            lengths=lengths, noise=noise, augmentation=augmentation, skipped=skipped,
                            timings=timings, model=str(model) if model else None, synthetic=synthetic,
                            components=text["_comp"])
    log.info("curation of %s: %s", task.name, report.counts())
    return report


def _lengths(rows, builder, max_tokens):
    from .lengths import token_lengths
    return token_lengths(rows, builder, max_tokens)


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0
