"""The command line. Thin: parses, calls the library, prints. A TailorError becomes one line on
stderr and exit code 2, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import TailorError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Tailor: measure which adaptation of an open LLM is worth it on your task, and build it.")
out = Console(width=None if sys.stdout.isatty() else 140)  # logs keep whole tables
err = Console(stderr=True)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except TailorError as e:
        # markup=False: a message quoting user data such as "[x]" must print as it is.
        err.print(f"error: {e}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


@app.command()
def tasks() -> None:
    """List the bundled tasks (loaded from installed packages) with their sizes."""
    from .datasets import list_bundled
    table = Table("task", "kind", "rows", "train", "dev", "test", "source", "about")
    for t in list_bundled():
        table.add_row(t["name"], t["kind"], str(t["rows"]), str(t["train"]), str(t["dev"]),
                      str(t["test"]), t["package"], t["about"])
    out.print(table)


@app.command()
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
    from .datasets import load_task
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


@app.command("eval")
def eval_(
    model: str = typer.Option("smollm2-135m", help="bundled model, local HF folder or hub id"),
    task: str = typer.Option("tweet-sentiment", help="bundled task name or task file"),
    method: str = typer.Option("zero-shot", help="zero-shot | few-shot"),
    k: Optional[int] = typer.Option(None, help="number of in-context examples (few-shot)"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N rows of the split"),
    split: str = typer.Option("test"),
    seed: int = typer.Option(0),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp16 | fp32"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:1 ..."),
    batch_size: int = typer.Option(16),
    max_new_tokens: int = typer.Option(64),
    cache: bool = typer.Option(True, help="reuse engine results from earlier runs"),
    runs_dir: str = typer.Option("runs"),
    adapter: Optional[str] = typer.Option(None, help="a `tailor train` run directory: evaluate its trained model"),
) -> None:
    """Evaluate one method on a task's held-out split; writes a run directory."""
    from .run_eval import EvalConfig, run_eval
    opts = {"k": k} if k is not None else {}
    cfg = EvalConfig(model=model, task=task, method=method, method_options=opts, split=split,
                     limit=limit, seed=seed, dtype=dtype, device=device, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, cache=cache, runs_dir=runs_dir, adapter=adapter)
    print_eval(run_eval(cfg))


def print_eval(result: dict) -> None:
    table = Table("metric", "value", title=f"{result['method']} on {result['task']} "
                  f"({result['rows']} {result['split']} rows, {result['model']})")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    c = result["cost"]
    table.add_row("tokens/request", f"{c['prompt_tokens_per_request']:.1f} prompt + "
                  f"{c['completion_tokens_per_request']:.1f} answer")
    table.add_row("latency p50 / p95", f"{c['latency_p50_s'] * 1000:.0f} / {c['latency_p95_s'] * 1000:.0f} ms (per batch)")
    table.add_row("served from cache", f"{c['cached_share']:.0%}")
    table.add_row("wall time", f"{c['wall_s']:.1f} s")
    out.print(table)
    out.print(f"run directory: {result['run_dir']}")


# Each area registers its own commands on `app`; one file per area keeps this file thin.
from .commands import bench, curate, ladder, train  # noqa: E402,F401

if __name__ == "__main__":
    main()
