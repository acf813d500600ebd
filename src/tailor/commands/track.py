"""`tailor track RUN --to mlflow,trackio`: a finished run directory (a ladder, `tailor train` or
`tailor eval`) logged to the team's experiment trackers (tailor.trackers)."""

from __future__ import annotations

import typer

from . import out


def track(
    run_dir: str = typer.Argument(..., help="a finished run directory (it has results.json or metrics.json)"),
    to: str = typer.Option(..., "--to", help="comma-separated trackers: mlflow, trackio, tensorboard"),
    runs_dir: str = typer.Option(None, help="where MLflow's database goes when MLFLOW_TRACKING_URI is unset "
                                            "(default: the run directory's parent)"),
) -> None:
    """Log a finished run to MLflow, trackio or TensorBoard: one tracker run per ladder, a child run per arm."""
    from ..trackers import check_installed, log_run, read_run
    targets = [t.strip() for t in to.split(",") if t.strip()]
    check_installed(targets, "--to")
    read_run(run_dir)   # an unfinished or foreign folder is refused before any tracker is touched
    for target, where in log_run(run_dir, targets, runs_dir).items():
        out.print(f"{target}: {where}")
