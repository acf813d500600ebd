"""`tailor tasks`, `tailor check` and `tailor debug`: what data Tailor has, whether a file is a
valid task, and what the training data teaches wrongly."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import out
from .numbers import COSINE, SEED, split_size


def tasks() -> None:
    """List the bundled tasks (loaded from installed packages) with their sizes."""
    from ..datasets import list_bundled
    table = Table("task", "kind", "rows", "train", "dev", "test", "source", "about")
    for t in list_bundled():
        table.add_row(t["name"], t["kind"], str(t["rows"]), str(t["train"]), str(t["dev"]),
                      str(t["test"]), t["package"], t["about"])
    out.print(table)


def check(
    file: str = typer.Argument(..., help="a task file (.jsonl .json .csv .tsv .parquet) or a bundled task"),
    format: Optional[str] = typer.Option(None, help="chat | prompt_completion | alpaca | text_label | choice (default: detect)"),
    kind: Optional[str] = typer.Option(None, help="classify | generate | choice (default: from the format)"),
    labels: Optional[str] = typer.Option(None, help="comma-separated label set; other labels are errors"),
    encoding: str = typer.Option("utf-8", help="text encoding of the file"),
    test: float = typer.Option(0.1, callback=split_size, help="test split: a fraction, or a row count if >= 1"),
    dev: float = typer.Option(0.1, callback=split_size, help="dev split: a fraction, or a row count if >= 1"),
    seed: int = typer.Option(0, callback=SEED),
) -> None:
    """Validate a task file and print what was found."""
    from ..datasets import load_task
    task = load_task(file, format=format, kind=kind, encoding=encoding, seed=seed,
                     labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
                     test=int(test) if test >= 1 else test, dev=int(dev) if dev >= 1 else dev)
    s = task.summary()
    table = Table("field", "value", show_header=False)
    for key in ("name", "kind", "rows", "train_rows", "dev_rows", "test_rows", "metrics", "data_hash"):
        table.add_row(key, str(s.get(key)))
    if task.labels:
        counts = s.get("label_counts", {})
        table.add_row("labels", ", ".join(f"{l} ({counts.get(l, 0)})" for l in task.labels))
    for note in task.notes:
        table.add_row("note", note)
    out.print(table)
    out.print(f"[green]ok[/]: {task.source} is a valid {task.kind} task")


def debug(
    run: str = typer.Argument(..., help="a ladder run directory, or a `tailor train`/`tailor eval` run with predictions"),
    arm: Optional[str] = typer.Option(None, help="the ladder's arm to debug (default: the recommended one)"),
    write_fixes: Optional[str] = typer.Option(None, help="write the flagged training rows here (JSONL) for review"),
    near: float = typer.Option(0.85, callback=COSINE, help="cosine at which a training row is the same case as a failure"),
    gap: float = typer.Option(0.6, callback=COSINE, help="cosine that counts as nearby when measuring coverage"),
) -> None:
    """Debug the training data from an arm's bad outputs: failure clusters, training rows that
    teach the mistake (likely label errors), coverage gaps and output kinds."""
    from ..debug import DebugOptions, debug_run
    r = debug_run(run, arm, DebugOptions(near=near, gap=gap), write_fixes)
    out.print(f"{r['arm']} ({r['method']}) on {r['task']}: {r['failures']} of {r['predictions']} test rows failed; "
              f"neighbours among the {r['training_rows']:,} rows it learned from", markup=False)
    table = Table("cluster", "failures", "gold -> predicted", "training rows nearby", "teach the mistake", "coverage")
    for c in r["clusters"]:
        table.add_row(str(c["id"]), str(c["size"]), ", ".join(f"{p} ({n})" for p, n in c["confusion"]),
                      f"{c['nearby_training_rows']:g}", str(c["teaching_the_mistake"]),
                      f"gap: add about {c['add']}" if c["gap"] else "-")
    out.print(table)
    over = [k["kind"] for k in r["output_kinds"] if k["over_predicted"]]
    out.print(f"likely label errors (training rows to review): {len(r['likely_label_errors'])}; coverage gaps: "
              f"{len(r['coverage_gaps'])}; over-predicted output kinds: {', '.join(over) or 'none'}", markup=False)
    for key, what in (("json", "details"), ("fixes", "flagged rows"), ("report", "report")):
        if r.get(key):
            out.print(f"{what}: {r[key]['html'] if key == 'report' else r[key]}", markup=False)
