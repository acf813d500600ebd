"""The bench area:
`tailor bench --model M [--adapter RUN] --suite general [--compare-to X]`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import out
from .numbers import COUNT, SEED


def bench(
    model: str = typer.Option("smollm2-135m", help="bundled model, local HF folder or hub id"),
    adapter: Optional[str] = typer.Option(None, help="a `tailor train` run directory: benchmark its trained model "
                                                     "and compare it with the base"),
    suite: str = typer.Option("general", help="general, or benchmark names separated by commas "
                                              "(mmlu, boolq, openbookqa, commonsenseqa, piqa)"),
    compare_to: Optional[str] = typer.Option(None, help="reference: an earlier `tailor bench` run directory "
                                                        "(or its results.json), or another model"),
    size: Optional[int] = typer.Option(None, callback=COUNT, help="items per benchmark (default: the fixed subsets, "
                                                  "sized for a ±3-point interval)"),
    seed: int = typer.Option(0, callback=SEED, help="seed of the item subsets (compare only results with the same seed)"),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp16 | fp32"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:1 ..."),
    batch_size: int = typer.Option(16, callback=COUNT),
    cache: bool = typer.Option(True, help="reuse engine results from earlier runs"),
    runs_dir: str = typer.Option("runs"),
) -> None:
    """General-ability suite: accuracy with 95% intervals and ECE per benchmark; with a reference,
    the deltas, flagging drops whose paired interval excludes zero (forgetting)."""
    from ..benchmarks.run import BenchConfig, run_bench
    cfg = BenchConfig(model=model, adapter=adapter, suite=suite, compare_to=compare_to, size=size,
                      seed=seed, dtype=dtype, device=device, batch_size=batch_size, cache=cache,
                      runs_dir=runs_dir)
    result = run_bench(cfg)
    if result["reference"]:
        print_suite(result["reference"])
    print_suite(result["result"])
    if result["comparison"]:
        print_comparison(result["comparison"], result["reference"]["label"], result["result"]["label"])
    out.print(f"run directory: {result['run_dir']}")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def print_suite(result: dict) -> None:
    table = Table("benchmark", "n", "accuracy", "95% interval", "±", "ECE", "chance", "wall s",
                  title=f"{result['label']}: {result['suite']} suite ({result['items']} items, "
                        f"{result['wall_s']:.0f} s)")
    for name, r in result["benchmarks"].items():
        table.add_row(name, str(r["n"]), _pct(r["accuracy"]), f"{_pct(r['ci_low'])} – {_pct(r['ci_high'])}",
                      f"{50 * (r['ci_high'] - r['ci_low']):.1f}", f"{r['ece']:.3f}", _pct(r["chance"]),
                      f"{r['wall_s']:.1f}" + (" (cached)" if r["cached_share"] == 1 else ""))
    out.print(table)
    for name, r in result["benchmarks"].items():
        for note in r.get("notes") or []:
            out.print(f"[yellow]{name}:[/] {note}")


def print_comparison(cmp: dict, ref_label: str, label: str) -> None:
    table = Table("benchmark", "reference", "this", "delta", "95% paired interval", "",
                  title=f"{label} vs {ref_label} (accuracy, points)")
    rows = list(cmp["benchmarks"].items()) + [("mean", {**cmp["overall"], "base_accuracy": None})]
    for name, r in rows:
        flag = ("[bold red]drop[/]" if r["significant_drop"] else
                "[green]gain[/]" if r["significant"] else "")
        table.add_row(name, _pct(r["base_accuracy"]) if r.get("base_accuracy") is not None else "",
                      _pct(r["adapted_accuracy"]) if r.get("adapted_accuracy") is not None else "",
                      f"{100 * r['delta']:+.1f}", f"{100 * r['ci_low']:+.1f} – {100 * r['ci_high']:+.1f}", flag)
    out.print(table)
