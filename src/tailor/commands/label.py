"""`tailor label`: pre-label rows with an arm into a review file, least certain first, and merge
the reviewed rows into a task file."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..errors import TailorError
from . import out
from .numbers import COUNT, SHARE


def label(
    file: Optional[str] = typer.Argument(None, metavar="FILE", help="a task file of rows to label (targets "
                                                                    "optional: where present, labels are scored against them)"),
    arm: Optional[str] = typer.Option(None, "--with", help="the arm that labels: a `tailor train`/`tailor eval` run "
                                                           "or a ladder's RUN/arms/NAME"),
    review: Optional[str] = typer.Option(None, "--out", help="the review file to write (.jsonl; a .csv copy is "
                                                              "written beside it)"),
    keep_above: Optional[float] = typer.Option(None, callback=SHARE, help="mark the rows whose confidence is at least P as kept "
                                                          "(filtering with a model trained on a curated core)"),
    accept: Optional[str] = typer.Option(None, "--accept", help="a reviewed file (.jsonl or .csv) to merge into --into"),
    into: Optional[str] = typer.Option(None, "--into", help="with --accept: the .jsonl task file the rows are added to "
                                                            "(created if absent)"),
    threshold: Optional[float] = typer.Option(None, callback=SHARE, help="with --accept: an unreviewed row is kept only if its "
                                                         "confidence is at least this (default 0.9)"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the arm was fitted on)"),
    batch_size: int = typer.Option(16, callback=COUNT, help="rows per engine batch (and per journal flush)"),
    max_new_tokens: int = typer.Option(64, callback=COUNT, help="generate arms: tokens per drafted answer"),
    cache: bool = typer.Option(True, help="reuse engine results from earlier runs"),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option("auto"),
    runs_dir: str = typer.Option("runs"),
) -> None:
    """Pre-label FILE with an arm into a review file (least certain rows first; killed and rerun,
    it resumes without labelling a row twice), or merge a reviewed file into a task file."""
    from ..label import accept as merge
    from ..label import label_file
    if accept is not None:
        given = [name for name, v in (("FILE", file), ("--with", arm), ("--out", review), ("--keep-above", keep_above))
                 if v is not None]
        if given or into is None:
            raise TailorError("tailor label --accept REVIEW needs --into TASK_FILE" if into is None else
                              f"tailor label --accept REVIEW --into TASK_FILE takes no {', '.join(given)}")
        s = merge(accept, into, threshold=0.9 if threshold is None else threshold)
        table = Table("rows of the review", "count", title=f"{accept} into {s['into']}")
        for key, name in (("edited", "corrected by the reviewer (added)"), ("accepted", "accepted (added)"),
                          ("rejected", "rejected"),
                          ("kept_unreviewed", f"not reviewed, confidence >= {s['threshold']} (added)"),
                          ("dropped_unreviewed", f"not reviewed, confidence < {s['threshold']} or none (left out)"),
                          ("already_present", "already in the task file (not added again)")):
            table.add_row(name, f"{s[key]:,}")
        out.print(table)
        out.print(f"added {s['added']:,} rows to {s['into']} ({s['format']} format)", highlight=False)
        return
    missing = [name for name, v in (("FILE", file), ("--with", arm), ("--out", review)) if v is None]
    if missing:
        raise TailorError(f"tailor label needs {', '.join(missing)}: tailor label FILE --with ARM --out REVIEW.jsonl, "
                          "or tailor label --accept REVIEW --into TASK_FILE")
    if into is not None or threshold is not None:
        raise TailorError("--into and --threshold go with --accept REVIEW")
    s = label_file(arm, file, review, keep_above=keep_above, model=model, dtype=dtype, device=device,
                   batch_size=batch_size, max_new_tokens=max_new_tokens, cache=cache, runs_dir=runs_dir)
    table = Table("", "value", title=f"{file} labelled with {arm}")
    table.add_row("rows labelled", f"{s['labelled']:,} ({s['computed']:,} computed now, "
                                   f"{s['from_journal']:,} resumed from an earlier run)")
    table.add_row("mean confidence", "none (a generate arm has no probabilities)" if s["mean_confidence"] is None
                  else f"{s['mean_confidence']:.4f}")
    if s["keep_above"] is not None:
        table.add_row(f"kept (confidence >= {s['keep_above']})", f"{s['kept']:,} of {s['rows']:,}")
    if s["gold_rows"]:
        name = "accuracy" if s["kind"] != "generate" else "exact match"
        table.add_row(f"{name} against the file's targets", f"{s['accuracy']:.4f} ({s['gold_rows']:,} rows)")
        if s["keep_above"] is not None:
            table.add_row(f"{name} of the kept rows", "no kept row has a target" if s["accuracy_kept"] is None
                          else f"{s['accuracy_kept']:.4f} ({s['kept_gold_rows']:,} rows)")
    out.print(table)
    out.print(f"review: {s['review']} and {s['csv']} (least certain first; fill 'review' with a corrected label, "
              f"accept or reject, then run tailor label --accept {s['review']} --into TASK_FILE)", highlight=False)
    out.print(f"run directory: {s['run_dir']}")
