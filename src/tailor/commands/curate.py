"""`tailor curate`: the dataset report a team reads before spending a GPU hour, and a cleaned
copy of the data (the input file is never touched)."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from ..curate.options import CurateOptions
from . import out
from .numbers import COUNT, COUNT0, NONNEGATIVE, POSITIVE_SHARE, SEED, SHARE, split_size


def curate(
    source: str = typer.Argument(..., help="a task file (.jsonl .json .csv .tsv .parquet) or a bundled task"),
    model: str = typer.Option("smollm2-135m", help="tokenizer for lengths; model for the model checks"),
    max_tokens: Optional[int] = typer.Option(None, callback=COUNT,
                                             help="training length, prompt + answer (default: the trainer's seq_len)"),
    near_threshold: float = typer.Option(0.8, callback=POSITIVE_SHARE,
                                         help="Jaccard similarity (character 5-grams) for near duplicates"),
    expected: Optional[str] = typer.Option(None, help="expected label shares, e.g. negative=0.4,neutral=0.4,positive=0.2 "
                                                      "(default: uniform)"),
    model_checks: bool = typer.Option(True, "--model-checks/--no-model-checks", help="label-noise candidates through the engine"),
    sample: int = typer.Option(256, callback=COUNT0, help="train rows the model scores for label noise (0: all)"),
    noise_confidence: float = typer.Option(0.8, callback=SHARE, help="model probability on another label to list a row"),
    augment: int = typer.Option(0, callback=COUNT0, help="paraphrase this many train rows into synthetic rows"),
    write: Optional[str] = typer.Option(None, help="write the fixed rows to this .jsonl file"),
    conflicts: str = typer.Option("majority", help="conflicting train rows: majority | drop | keep"),
    length_policy: str = typer.Option("drop", help="train rows over max tokens: drop | truncate_input | keep"),
    standardize: bool = typer.Option(False, help="strip outputs, one spelling per label"),
    balance: str = typer.Option("none", help="none | downsample (train rows to the expected shares)"),
    keep_duplicates: bool = typer.Option(False, help="do not drop exact and near duplicates"),
    keep_leaked: bool = typer.Option(False, help="do not drop train rows that match dev/test rows"),
    drop_noise: bool = typer.Option(False, help="drop label-noise candidates (default: list them)"),
    max_leakage: float = typer.Option(CurateOptions.max_leakage, callback=NONNEGATIVE,
                                      help="ladder stop limit: share (or count if >= 1) of test rows leaked"),
    max_conflicts: float = typer.Option(CurateOptions.max_conflicts, callback=NONNEGATIVE,
                                        help="ladder stop limit: share (or count) of train rows in conflicts"),
    format: Optional[str] = typer.Option(None, help="chat | prompt_completion | alpaca | text_label | choice"),
    kind: Optional[str] = typer.Option(None, help="classify | generate | choice"),
    labels: Optional[str] = typer.Option(None, help="comma-separated label set"),
    encoding: str = typer.Option("utf-8"),
    test: float = typer.Option(0.1, callback=split_size, help="test split of a file: a fraction, or a row count if >= 1"),
    dev: float = typer.Option(0.1, callback=split_size, help="dev split of a file: a fraction, or a row count if >= 1"),
    seed: int = typer.Option(0, callback=SEED),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option("auto"),
    batch_size: int = typer.Option(32, callback=COUNT),
    cache: bool = typer.Option(True, help="reuse engine results from earlier runs"),
    runs_dir: str = typer.Option("runs"),
) -> None:
    """Check a dataset (duplicates, train/test leakage, conflicts, lengths, balance, output format,
    label noise) and optionally write a cleaned copy."""
    from ..context import open_run
    from ..curate import apply_fixes_logged, curate_task, parse_expected, write_clean
    from ..engine import Engine

    t0 = time.perf_counter()
    opts = CurateOptions(
        near_threshold=near_threshold, max_tokens=max_tokens, expected=parse_expected(expected),
        model_checks=model_checks, sample=sample or None, noise_confidence=noise_confidence,
        augment=augment, seed=seed, conflicts=conflicts, length_policy=length_policy,
        standardize_outputs=standardize, balance=balance, drop_exact_duplicates=not keep_duplicates,
        drop_near_duplicates=not keep_duplicates, drop_leaked=not keep_leaked, drop_noise=drop_noise,
        max_leakage=max_leakage, max_conflicts=max_conflicts)
    options = {"format": format, "kind": kind, "encoding": encoding, "seed": seed,
               "labels": labels.split(",") if labels else None,
               "test": int(test) if test >= 1 else test, "dev": int(dev) if dev >= 1 else dev}
    config = {"source": source, "model": model, "options": opts.to_json(), "write": write}
    with open_run("curate", source.split("/")[-1], config, runs_dir=runs_dir, model=model, dtype=dtype,
                  device=device, task=source, task_options=options, seed=seed, cache=cache,
                  load="model" if model_checks or augment else "tokenizer") as ctx:
        task, engine = ctx.task, None
        if ctx.base is not None:
            engine = Engine(ctx.base.model, ctx.base.tokenizer, ctx.base.weights_id, ctx.cache, batch_size=batch_size)
        report = curate_task(task, tokenizer=ctx.tokenizer, engine=engine, options=opts)
        report.model = model
        ctx.run.write_json("curation.json", report.to_json())
        page = f"<!doctype html><meta charset='utf-8'><title>curation: {task.name}</title>{report.html_section()}"
        ctx.run.file("curation.html").write_text(page, encoding="utf-8")

        table = Table("finding", "value", title=f"curation of {task.name} ({len(task.examples)} rows)")
        for name, value in report.summary_rows():
            table.add_row(name, value)
        out.print(table)
        for reason in report.blocking():
            out.print(f"[bold red]would stop the ladder:[/] {reason}", highlight=False)
        if write:
            rows, log = apply_fixes_logged(task, report, opts, _builder(task, ctx))
            path = write_clean(write, rows, task)
            n_train = sum(ex.meta.get("split") == "train" for ex in rows)
            changes = ", ".join(f"{k} {v}" for k, v in log.items() if v) or "no changes"
            out.print(f"wrote {path}: {len(rows)} rows ({n_train} train); {changes}", highlight=False)
            ctx.run.write_json("fixes.json", {"path": str(path), "rows": len(rows), "train_rows": n_train, "log": log})
        out.print(f"run directory: {ctx.path}  ({time.perf_counter() - t0:.1f} s)")


def _builder(task, ctx):
    from ..prompts import builder_for
    return builder_for(task, ctx.tokenizer, ctx.base.model.config if ctx.base else None)
