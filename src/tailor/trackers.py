"""Experiment trackers: a finished run directory logged to MLflow, trackio or TensorBoard, so a
team keeps Tailor's ladders where it keeps its other experiments.

A ladder is one tracker run with a child run per arm (MLflow: nested runs; trackio: runs of one
group; TensorBoard: one log folder per arm). The ladder's run holds the resolved experiment as
parameters, the recommendation, and `results.json` and `report.html` as artifacts; an arm's run
holds its options, its training curves (every row of its `train_metrics.jsonl`; each other fit
of it, a seed or a learning-curve point, under its own prefix), its metrics with the primary
metric's 95% interval and chance of being best, and its cost. A `tailor train` or `tailor eval`
run is one tracker run: its config, curve, metrics and cost. Everything is read back from the run
directory, which stays the record: `tailor run`, `train` and `eval` log it when they end
(`report_to:` / `--report-to`), and `tailor track RUN` logs any earlier run. A tracker that is
asked for but not installed is refused before any work starts.

Where MLflow writes: `MLFLOW_TRACKING_URI` when set, otherwise a SQLite database beside the runs
(`RUNS_DIR/mlflow.db`, artifacts in `RUNS_DIR/mlartifacts`): MLflow 3 refuses its old file store
by default. trackio writes to its own local folder (`TRACKIO_DIR`, default ~/.cache/huggingface/
trackio); `trackio show` opens it."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import TailorError
from .jsonl import read_json_object, read_jsonl
from .progress import console

Tracker = Literal["mlflow", "trackio", "tensorboard"]
TRACKERS: tuple[str, ...] = ("mlflow", "trackio", "tensorboard")
_PACKAGE = {"mlflow": "mlflow", "trackio": "trackio", "tensorboard": "tensorboard"}
_MLFLOW_VALUE_LIMIT = 6000   # MLflow refuses longer parameter values


def check_installed(targets: list[str], where: str = "report_to") -> None:
    """One line naming the tracker and the install, before any work starts."""
    for t in targets:
        if t not in TRACKERS:
            raise TailorError(f"{where}: '{t}' is not one of {', '.join(TRACKERS)}")
        if importlib.util.find_spec(_PACKAGE[t]) is None:
            hint = "mlflow-skinny" if t == "mlflow" else t
            raise TailorError(f"{where}: '{t}' asked for, but the package is not installed (pip install {hint})")


def mlflow_uri(runs_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys (arms.0.lr); lists of scalars stay one value."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, list) and any(isinstance(v, (dict, list)) for v in tree):
        for i, v in enumerate(tree):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = tree if isinstance(tree, str) else json.dumps(tree)
    return out


@dataclass
class Entry:
    """One tracker run: a ladder, one of its arms, or a train/eval run."""
    name: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)          # logged at step 0
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    failed: bool = False


def read_run(run_dir: Path) -> tuple[str, Entry, list[Entry]]:
    """(tracker experiment name, the run's entry, its arms' entries) from a finished run directory."""
    path = Path(run_dir)
    config = read_json_object(path / "config.json", "run config") if (path / "config.json").is_file() else {}
    if (path / "results.json").is_file():
        return _ladder(path, config, read_json_object(path / "results.json", "ladder results"))
    if (path / "metrics.json").is_file():   # a `tailor train` / `tailor eval` run: itself one arm
        result = read_json_object(path / "metrics.json", "run metrics")
        entry = Entry(path.name, flatten(config), {"tailor.run_dir": str(path.resolve()), "tailor.task": result.get("task", ""),
                                                   "tailor.method": result.get("method", "")},
                      _numbers(result.get("metrics")) | _numbers(result.get("cost"), "cost."),
                      _curve(path, ""), _present(path, "metrics.json", "config.json", "manifest.json"))
        return result.get("task") or "tailor", entry, []
    raise TailorError(f"{path}: neither results.json nor metrics.json (a run that has not finished, or not a run directory)")


def _ladder(path: Path, config: dict, results: dict) -> tuple[str, Entry, list[Entry]]:
    rec, primary = results.get("recommendation") or {}, results.get("primary_metric")
    exp = results.get("experiment") or {}
    parent = Entry(path.name, flatten({k: v for k, v in config.items() if k != "arms"}) | {
                       f"arms.{a['name']}": a.get("method", "") for a in results.get("arms", [])},
                   {"tailor.run_dir": str(path.resolve()), "tailor.task": exp.get("task", ""),
                    "tailor.recommended_arm": rec.get("arm") or "", "tailor.claim": rec.get("claim") or ""},
                   {"wall_s": float(results.get("wall_s") or 0.0), "arms": float(len(results.get("arms", []))),
                    "recommendation_confident": float(bool(rec.get("confident")))},
                   [], _present(path, "results.json", "report.html", "config.json", "manifest.json"))
    children = []
    for arm in results.get("arms", []):
        metrics = _numbers(arm.get("metrics"))
        if arm.get("interval") and primary:
            metrics[f"{primary}_ci_low"], metrics[f"{primary}_ci_high"] = map(float, arm["interval"])
        if arm.get("p_best") is not None:
            metrics["p_best"] = float(arm["p_best"])
        folder = Path(arm.get("arm_dir") or path / "arms" / arm["name"])
        folder = folder if folder.exists() else path / "arms" / arm["name"]   # a run directory moved since
        curve = _curve(folder, "")
        for other in sorted(folder.parent.glob(f"{glob.escape(arm['name'])}.*")):   # NAME.seed1, NAME.rows80
            curve += _curve(other, other.name[len(arm["name"]) + 1:] + ".")
        children.append(Entry(arm["name"], flatten(arm.get("options") or {}),
                              {"tailor.method": arm.get("method", ""), "tailor.status": arm.get("status", "ok")},
                              metrics | _numbers(arm.get("cost"), "cost."), sorted(curve, key=lambda r: r[0]),
                              failed=arm.get("status", "ok") != "ok"))
    return exp.get("name") or config.get("name") or "tailor", parent, children


def _numbers(tree, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in (tree or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _curve(folder: Path, prefix: str) -> list[tuple[int, dict[str, float]]]:
    log = folder / "train_metrics.jsonl"
    if not log.is_file():
        return []
    return [(row["step"], {f"{prefix}train.{k}": v for k, v in _numbers(row).items() if k != "step"})
            for _, row in read_jsonl(log, torn="drop") if isinstance(row.get("step"), int)]


def _present(path: Path, *names: str) -> list[Path]:
    return [path / n for n in names if (path / n).is_file()]


def log_run(run_dir: str | Path, targets: list[str], runs_dir: str | Path | None = None) -> dict[str, str]:
    """Logs a finished run directory to each tracker; returns where each one put it."""
    check_installed(targets)
    experiment, parent, children = read_run(Path(run_dir))
    runs_dir = Path(runs_dir) if runs_dir else Path(run_dir).parent
    log = {"mlflow": _mlflow, "trackio": _trackio, "tensorboard": _tensorboard}
    return {t: log[t](experiment, parent, children, runs_dir, Path(run_dir)) for t in targets}


def log_finished(run_dir: str | Path, targets: list[str], runs_dir: str | Path) -> None:
    """The finished run logged to its trackers; a tracker that fails is reported with the command
    that retries it, and the run's results stand (they are on disk already)."""
    for target in targets:
        try:
            where = log_run(run_dir, [target], runs_dir)[target]
            console.print(f"{target}: {where}", highlight=False)
        except Exception as e:   # a tracker's own errors are many and its own; the run is done and kept
            console.print(f"[red]{target}: not logged ({type(e).__name__}: {e}); retry: tailor track {run_dir} "
                          f"--to {target}[/]", highlight=False)


def _mlflow(experiment: str, parent: Entry, children: list[Entry], runs_dir: Path, run_dir: Path) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(runs_dir)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    exp_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=None if os.environ.get("MLFLOW_TRACKING_URI")
        else (runs_dir.resolve() / "mlartifacts").as_uri())
    now = int(1000 * time.time())

    def one(entry: Entry, tags: dict[str, str]) -> str:
        run_id = client.create_run(exp_id, run_name=entry.name, tags=entry.tags | tags).info.run_id
        params = [Param(k, v[:_MLFLOW_VALUE_LIMIT]) for k, v in entry.params.items()]
        metrics = [Metric(k, v, now, 0) for k, v in entry.metrics.items()] + [
            Metric(k, v, now, step) for step, row in entry.curve for k, v in row.items()]
        for i in range(0, len(params), 100):     # MLflow takes 100 parameters per call
            client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):   # and 1,000 metrics
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for artifact in entry.artifacts:
            client.log_artifact(run_id, str(artifact))
        return run_id

    pid = one(parent, {})
    for child in children:
        client.set_terminated(one(child, {"mlflow.parentRunId": pid}), "FAILED" if child.failed else "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return f"{uri}, experiment '{experiment}', run {pid}"


def _trackio(experiment: str, parent: Entry, children: list[Entry], runs_dir: Path, run_dir: Path) -> str:
    import trackio

    for i, entry in enumerate([parent, *children]):
        with contextlib.redirect_stdout(io.StringIO()):   # trackio prints a line per run; Tailor says one
            trackio.init(project=experiment, name=entry.name if i == 0 else f"{parent.name}/{entry.name}",
                         group=parent.name, config=entry.params | entry.tags, embed=False,
                         auto_log_cpu=False, auto_log_gpu=False)
            rows = [(0, entry.metrics)] + entry.curve
            for step, row in sorted(rows, key=lambda r: r[0]):
                trackio.log(row, step=step)
            for artifact in entry.artifacts:
                trackio.log_artifact(str(artifact), name=f"{parent.name}-{artifact.name}".replace(".", "-"))
            trackio.finish()
    return f"trackio project '{experiment}', group '{parent.name}' (trackio show)"


def _tensorboard(experiment: str, parent: Entry, children: list[Entry], runs_dir: Path, run_dir: Path) -> str:
    from torch.utils.tensorboard import SummaryWriter

    root = run_dir / "tensorboard"
    for entry in [parent, *children]:
        with SummaryWriter(str(root / ("run" if entry is parent else entry.name))) as w:
            for step, row in [(0, entry.metrics)] + entry.curve:
                for k, v in row.items():
                    w.add_scalar(k.replace(".", "/"), v, step)
    return f"tensorboard --logdir {root}"
