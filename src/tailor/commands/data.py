"""`tailor tasks` and `tailor check`: what data Tailor has and whether a file is a valid task."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import out


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
    test: float = typer.Option(0.1, help="test split: a fraction, or a row count if >= 1"),
    dev: float = typer.Option(0.1, help="dev split: a fraction, or a row count if >= 1"),
    seed: int = typer.Option(0),
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
