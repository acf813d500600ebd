"""`tailor eval`: one arm on a task's held-out split, into a run directory that is itself an arm
folder (its recipe reloads with --adapter)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import out
from .numbers import COUNT, COUNT0, SEED


def eval_(
    model: str = typer.Option("smollm2-135m", help="bundled model, local HF folder or hub id"),
    task: str = typer.Option("tweet-sentiment", help="bundled task name or task file"),
    method: str = typer.Option("zero-shot", help="zero-shot | few-shot | icl"),
    k: Optional[int] = typer.Option(None, callback=COUNT0, help="number of in-context examples (few-shot, icl)"),
    selector: Optional[str] = typer.Option(None, help="icl: similarity | mmr | ngram | balanced | budget | random"),
    limit: Optional[int] = typer.Option(None, callback=COUNT, help="evaluate only the first N rows of the split"),
    split: str = typer.Option("test"),
    seed: int = typer.Option(0, callback=SEED),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp16 | fp32"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:1 ..."),
    batch_size: int = typer.Option(16, callback=COUNT),
    max_new_tokens: int = typer.Option(64, callback=COUNT),
    latency_requests: int = typer.Option(8, callback=COUNT0,
                                         help="requests timed one at a time, uncached, for latency (0: none)"),
    cache: bool = typer.Option(True, help="reuse engine results from earlier runs"),
    runs_dir: str = typer.Option("runs"),
    adapter: Optional[str] = typer.Option(None, help="an arm folder: a `tailor train` or `tailor eval` run, or a "
                                                     "ladder's RUN/arms/NAME; evaluates that arm as it was saved"),
    report_to: str = typer.Option("", "--report-to", help="comma-separated trackers the finished run is logged to: "
                                                          "mlflow, trackio, tensorboard"),
) -> None:
    """Evaluate one arm on a task's held-out split; writes a run directory."""
    from ..arm_run import EvalConfig, run_eval
    from ..trackers import check_installed, log_finished
    trackers = [t.strip() for t in report_to.split(",") if t.strip()]
    check_installed(trackers, "--report-to")
    from .serve import _read_arms
    _read_arms([adapter] if adapter else [])   # an edited arm folder: one line before the model loads
    opts = {k2: v for k2, v in (("k", k), ("selector", selector)) if v is not None}
    cfg = EvalConfig(model=model, task=task, method=method, method_options=opts, split=split,
                     limit=limit, seed=seed, dtype=dtype, device=device, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, latency_requests=latency_requests, cache=cache,
                     runs_dir=runs_dir, adapter=adapter)
    result = run_eval(cfg)
    print_eval(result)
    log_finished(result["run_dir"], trackers, runs_dir)


def print_eval(result: dict) -> None:
    table = Table("metric", "value", title=f"{result['method']} on {result['task']} "
                  f"({result['rows']} {result['split']} rows, {result['model']})")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    c = result["cost"]
    table.add_row("tokens/request", f"{c['prompt_tokens_per_request']:.1f} prompt + "
                  f"{c['completion_tokens_per_request']:.1f} answer")
    if c["latency_requests"]:
        table.add_row("latency p50 / p95", f"{c['latency_p50_s'] * 1000:.0f} / {c['latency_p95_s'] * 1000:.0f} ms "
                      f"(one request at a time, {c['latency_requests']} timed)")
    if c["batch_s_per_request"] is not None:
        table.add_row("batched compute", f"{c['batch_s_per_request'] * 1000:.1f} ms per request")
    table.add_row("served from cache", f"{c['cached_share']:.0%}")
    table.add_row("wall time", f"{c['eval_wall_s']:.1f} s")
    out.print(table)
    out.print(f"run directory: {result['run_dir']}")
