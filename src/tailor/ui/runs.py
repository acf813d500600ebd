"""What the dashboard shows, read from a runs folder: one summary per run directory, a run's
arms and live state, an arm's predictions filtered. Plain files only (config.json, manifest.json,
status.json, results.json or metrics.json, predictions*.jsonl); nothing here imports torch, and a
run directory that is half written or hand edited is shown as far as it can be read, never fatal
to the page."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TailorError
from ..jsonl import read_jsonl
from ..status import STATUS, is_alive

_STAMP = re.compile(r"^(\d{8})-(\d{6})-([a-z]+)-?(.*)$")


@dataclass
class ArmRow:
    name: str
    method: str = ""
    ok: bool = True
    metric: str = ""
    value: float | None = None
    interval: list[float] | None = None
    p_best: float | None = None
    tokens: float | None = None
    cost: float | None = None
    train_s: float | None = None
    error: str | None = None


@dataclass
class RunSummary:
    name: str
    path: Path
    command: str = ""
    task: str = ""
    model: str = ""
    state: str = "unknown"          # running | finished | failed | stopped | incomplete
    started: float | None = None
    wall_s: float | None = None
    arms: list[ArmRow] = field(default_factory=list)
    planned_arms: list[str] = field(default_factory=list)
    best: ArmRow | None = None
    recommendation: str = ""
    confident: bool | None = None
    live: dict | None = None        # status.json while running
    error: str | None = None
    problems: list[str] = field(default_factory=list)   # files that could not be read

    @property
    def started_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)) if self.started else ""


def read_json(path: Path, problems: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path.name}: {e}")
        return None


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("config.json", STATUS, "results.json", "metrics.json"))


def list_runs(root: Path) -> list[RunSummary]:
    """Every run directory directly under `root`, newest first."""
    if not root.is_dir():
        raise TailorError(f"{root}: no such runs folder")
    runs = [summarise(p) for p in root.iterdir() if is_run_dir(p)]
    return sorted(runs, key=lambda r: (r.started or 0, r.name), reverse=True)


def run_path(root: Path, name: str) -> Path:
    """A run named in a request, only ever a direct child of the runs folder."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise KeyError(name)
    path = root / name
    if not is_run_dir(path) or path.resolve().parent != root.resolve():
        raise KeyError(name)
    return path


def summarise(path: Path) -> RunSummary:
    run = RunSummary(path.name, path)
    m = _STAMP.match(path.name)
    if m:
        run.command = m.group(3)
        run.started = time.mktime(time.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S"))
    config = read_json(path / "config.json", run.problems) or {}
    status = read_json(path / STATUS, run.problems)
    results = read_json(path / "results.json", run.problems)
    metrics = read_json(path / "metrics.json", run.problems)
    if isinstance(config, dict):
        run.task, run.model = str(config.get("task") or ""), str(config.get("model") or "")
        run.planned_arms = [a.get("name", "?") if isinstance(a, dict) else str(a) for a in config.get("arms") or []
                            if isinstance(a, (dict, str))]
    if isinstance(status, dict):
        run.command = status.get("command") or run.command
        run.started = _num(status.get("started")) or run.started
        run.state = status.get("state") or "unknown"
        run.error = status.get("error")
        if run.state == "running":
            if is_alive(status):
                run.live = status
                run.wall_s = time.time() - (run.started or time.time())
                run.arms = [ArmRow(a.get("name", "?"), a.get("method", ""), bool(a.get("ok", True)), a.get("metric", ""),
                                   _num(a.get("value"))) for a in status.get("arms_done") or [] if isinstance(a, dict)]
            else:
                run.state = "stopped"   # killed: its process is gone without saying so
    if isinstance(results, dict):
        _ladder(run, results)
    elif isinstance(metrics, dict):
        _single(run, metrics)
    elif run.state == "unknown":
        run.state = "incomplete"   # an older run without status.json that wrote no result
    return run


def _ladder(run: RunSummary, results: dict) -> None:
    if run.state != "failed":
        run.state, run.live = "finished", None   # results.json is written once every arm is measured
    exp = results.get("experiment") or {}
    run.task = exp.get("task") or run.task
    run.model = exp.get("model") or run.model
    run.wall_s = _num(results.get("wall_s")) or run.wall_s
    primary = results.get("primary_metric") or ""
    run.arms = []
    for a in results.get("arms") or []:
        if not isinstance(a, dict):
            continue
        cost = a.get("cost") or {}
        run.arms.append(ArmRow(str(a.get("name", "?")), str(a.get("method", "")), a.get("status", "ok") == "ok", primary,
                               _num((a.get("metrics") or {}).get(primary)),
                               [float(x) for x in a["interval"]] if isinstance(a.get("interval"), list) else None,
                               _num(a.get("p_best")),
                               _tokens(cost),
                               _num(cost.get("first_month_cost")), _num(cost.get("train_time_s")), a.get("error")))
    rec = results.get("recommendation") or {}
    run.recommendation, run.confident = str(rec.get("text") or ""), rec.get("confident")
    best = rec.get("best_arm") or rec.get("arm")
    run.best = next((a for a in run.arms if a.name == best), None)


def _tokens(cost: dict) -> float:
    return (_num(cost.get("prompt_tokens_per_request")) or 0) + (_num(cost.get("completion_tokens_per_request")) or 0)


def _single(run: RunSummary, metrics: dict) -> None:
    if run.state in ("unknown", "stopped"):
        run.state = "finished"
    run.task = metrics.get("task") or run.task
    run.model = metrics.get("model") or run.model
    values = metrics.get("metrics") or {}
    primary = next(iter(values), "")
    cost = metrics.get("cost") or {}
    run.arms = [ArmRow(run.name, str(metrics.get("method", "")), True, primary, _num(values.get(primary)),
                       tokens=_tokens(cost),
                       train_s=_num(metrics.get("train_time_s")))]
    run.best = run.arms[0]


def predictions_file(path: Path, arm: str, run: RunSummary) -> Path:
    """An arm's predictions: a ladder keeps one file per arm, a train/eval run one file."""
    if arm not in {a.name for a in run.arms}:
        raise KeyError(arm)
    ladder = path / f"predictions-{arm}.jsonl"
    return ladder if ladder.is_file() else path / "predictions.jsonl"


@dataclass
class PredictionPage:
    rows: list[dict]
    total: int          # rows in the file
    matching: int       # rows that pass the filters
    labels: list[str]   # the targets seen (to filter by)
    dropped: int = 0    # torn or unreadable lines, counted


def predictions(path: Path, *, wrong: bool = False, label: str = "", text: str = "", sort: str = "",
                offset: int = 0, limit: int = 100) -> PredictionPage:
    """Rows of a predictions file, filtered: wrong answers only, one target label, a text search
    over input, prediction and target; sorted by the model's confidence in its answer (`sort=score`,
    least sure first) when the rows carry label probabilities."""
    if not path.is_file():
        return PredictionPage([], 0, 0, [])
    rows, dropped = [], 0
    for _, row in read_jsonl(path, torn="drop"):
        if isinstance(row, dict):
            rows.append(row)
        else:
            dropped += 1
    labels = sorted({str(r.get("target")) for r in rows if r.get("target") is not None})[:200]
    needle = text.lower().strip()

    def keep(r: dict) -> bool:
        if wrong and str(r.get("prediction", "")).strip() == str(r.get("target", "")).strip():
            return False
        if label and str(r.get("target")) != label:
            return False
        return not needle or any(needle in str(r.get(k, "")).lower() for k in ("prompt", "input", "prediction", "target", "id"))

    kept = [r for r in rows if keep(r)]
    if sort == "score":
        kept.sort(key=_confidence)
    return PredictionPage(kept[offset:offset + limit], len(rows), len(kept), labels, dropped)


def _confidence(row: dict) -> float:
    probs = row.get("probs")
    values = [v for v in (probs.values() if isinstance(probs, dict) else []) if _num(v) is not None]
    return max(values) if values else 1.0   # rows without probabilities go last
