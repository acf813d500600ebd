"""An equal tuning budget for every arm, on the dev rows only.

An arm measured at its written options can lose to its learning rate rather than its method, and
an ICL arm runs at whatever `k` was written. With `tune:` each tuned arm gets the same wall-clock
budget of trials: optuna's TPE sampler (Bergstra et al. 2011) proposes the knobs its family
declares (`Method.knobs()`, or the team's own), each trial fits the arm on the train rows and is
measured on the dev rows through THE measurement path, and trials that trail at a cheap first
rung are pruned by successive halving (Jamieson & Talwalkar 2016; optuna's asynchronous form,
Li et al. 2020) or Hyperband (Li et al. 2018). The arm as written is trial 0 (enqueued first),
so the record says how far tuning moved it. The best trial's options become the arm, which the
ladder then measures once on the test rows: trials see a copy of the task that holds no test rows.

The rung: a weight arm's dev metric halfway through its training (THE loop's dev watch,
`train.loop.DEV_WATCH`: the watched evaluation never changes what the run trains), a prompting
arm's on the first half of the dev rows (the second half is measured only if it survives).
Several workers (`tailor tune EXPERIMENT --arm NAME`, and the ladder itself) share one study
through a database (`tune: {storage: sqlite:///PATH}`; PostgreSQL across machines): the study's
deadline is set once, so the budget is wall clock per arm whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from . import fits
from .calibration import label_set
from .config import Arm, Experiment
from .errors import TailorError
from .evaluate import score_predictions
from .knobs import Knob, TuneOptions, safe_url, study_name
from .measure import measure
from .methods.base import save_adapted
from .progress import console
from .results import Tuning, TuningTrial
from .schema import validate
from .task import Task, hash_examples, primary_metric
from .train.loop import DEV_WATCH
from .utils import sha256_text

log = logging.getLogger("tailor")
optuna.logging.set_verbosity(optuna.logging.WARNING)   # each trial gets its own line here
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
REDUCTION = 2   # a rung keeps the better half (the one rung is halfway: steps or dev rows)


def dev_view(task: Task) -> Task:
    """The task as trials see it: the train and dev rows, and no test row at all."""
    splits = {"train": list(task.splits.get("train") or []), "dev": list(task.splits.get("dev") or [])}
    return dataclasses.replace(task, examples=splits["train"] + splits["dev"], splits=splits, notes=list(task.notes))


@dataclass
class _Session:
    """What every trial of one arm shares: the loaded base and engine cache (through the run
    context), the test-free task, the dev rows and the space."""

    exp: Experiment
    arm: Arm
    ctx: object
    settings: TuneOptions
    view: Task
    dev: list
    metric: str
    written: dict
    folder: Path
    worker: str
    best_local: float | None = None
    best_folder: Path | None = None

    @property
    def space(self) -> dict[str, Knob]:
        return self.settings.knobs

    @property
    def pruning(self) -> bool:
        return self.settings.pruner != "none"


class _Watch:
    """THE loop's dev watch for a weight arm's trial: one evaluation halfway through training,
    reported to the trial, which the pruner may stop there."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def due(self, step: int, total: int) -> bool:
        return total >= 2 and step == rung_step(total)

    def seen(self, step: int, total: int, value: float) -> None:
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"dev {value:.4f} at step {step} of {total}")


def rung_step(total: int) -> int:
    return max(1, total // REDUCTION)


def _applicable(settings: TuneOptions, task) -> TuneOptions:
    """The space without knobs this task cannot take: a prompting arm's `calibrate` needs a label
    set (every trial with it would be refused), so on a generate task it is left out, and said."""
    if "calibrate" not in settings.knobs:
        return settings
    try:
        label_set(task)
    except TailorError as e:
        console.print(f"  calibrate left out of the search: {e}", highlight=False)
        return settings.model_copy(update={"knobs": {k: v for k, v in settings.knobs.items() if k != "calibrate"}})
    return settings


def tune_arm(exp: Experiment, arm: Arm, ctx, progress: bool = True, worker: int = 0) -> tuple[Arm, Tuning]:
    """The arm with its best options on dev (its `tune` cleared) and the record of its trials.
    `worker`: 0 for the ladder, 1, 2, ... for `tailor tune` workers (each samples with its own seed).
    A study where no trial finished leaves the arm as written, and says so."""
    settings: TuneOptions = _applicable(arm.tune, ctx.task)
    metric = primary_metric(ctx.task)   # a task's grader where it has one: what the ladder ranks by
    dev = list(ctx.task.splits.get("dev") or [])[: settings.dev_rows]
    name = study_name(exp.name, arm.name, settings)
    record = Tuning(metric=metric, dev_rows=len(dev), budget_minutes=settings.budget_minutes, pruner=settings.pruner,
                    knobs={k: v.to_json() for k, v in settings.knobs.items()}, study=name,
                    storage=safe_url(settings.storage))
    t0 = time.perf_counter()
    try:
        if not dev:
            raise TailorError(f"{ctx.task.name} has no dev rows to tune on: set task_options.dev (rows or a share)")
        session = _Session(exp, arm, ctx, settings, dev_view(ctx.task), dev, metric,
                           arm.options.model_dump(exclude_unset=True), ctx.path / "tune" / _slug(arm.name),
                           f"{socket.gethostname()}:{os.getpid()}")
        console.print(f"  tuning {arm.name}: {settings.budget_minutes:g} min"
                      f"{f', at most {settings.trials} trials' if settings.trials else ''} on {len(dev)} dev rows "
                      f"({metric}); " + ", ".join(f"{k} {v.describe()}" for k, v in settings.knobs.items())
                      + f"; pruner {settings.pruner}; study {name}"
                      + (f" in {safe_url(settings.storage)}" if settings.storage else ""), highlight=False)
        study = _open_study(session, name, worker)
        stopped = _optimize(session, study)
        _wait_for_others(study)
        record = _record(record, study, time.perf_counter() - t0, stopped)
    except TailorError as e:   # tuning must not sink the ladder: the arm is measured as written, and says so
        record.error, record.seconds = str(e), time.perf_counter() - t0
    except Exception as e:
        log.error("tuning %s failed:\n%s", arm.name, traceback.format_exc())
        record.error, record.seconds = f"{type(e).__name__}: {e}", time.perf_counter() - t0
    if record.error:
        console.print(f"  [red]tuning failed[/]: {record.error}; {arm.name} is measured as written", highlight=False)
        return dataclasses.replace(arm, tune=None), record
    best = validate(type(arm.options), {**arm.options.model_dump(exclude_unset=True), **record.best_params},
                    f"arm '{arm.name}' (best trial)")
    _print_summary(record)
    return dataclasses.replace(arm, options=best, tune=None), record


def _open_study(s: _Session, name: str, worker: int) -> optuna.Study:
    storage = None
    if s.settings.storage:
        kwargs = {"connect_args": {"timeout": 60}} if s.settings.storage.startswith("sqlite") else {}
        # heartbeats: a worker that dies leaves no trial running forever (it fails after the grace period)
        storage = _storage(s.settings.storage, kwargs)
    sampler = optuna.samplers.TPESampler(seed=s.settings.seed + worker, n_startup_trials=s.settings.startup_trials)
    fingerprint = _fingerprint(s)
    try:   # the database's unique study name makes exactly one worker the creator
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=_pruner(s), study_name=name,
                                    direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=_pruner(s))
        for _ in range(100):   # the creator enqueues the default trial, then sets the deadline
            if "deadline" in study.user_attrs:
                break
            time.sleep(0.2)
        if study.user_attrs.get("fingerprint") != fingerprint:
            raise TailorError(f"study '{name}' in {safe_url(s.settings.storage)} was made for another arm, space, "
                              "task or model; name a new study (tune: {study: NAME})") from None
        return study
    study.set_user_attr("fingerprint", fingerprint)
    study.enqueue_trial({k: getattr(s.arm.options, k) for k in s.space}, user_attrs={"default": True})
    study.set_user_attr("deadline", time.time() + s.settings.budget_minutes * 60)   # the study's wall clock
    return study


def _storage(url: str, engine_kwargs: dict) -> optuna.storages.RDBStorage:
    def make():
        with warnings.catch_warnings():   # optuna 5.1 still calls the heartbeat experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=10, grace_period=60)
    for _ in range(5):   # workers started together on a fresh database race to create its tables: the loser retries
        try:
            return make()
        except Exception as e:   # sqlalchemy's OperationalError / IntegrityError (by name: sqlalchemy is optuna's)
            if type(e).__name__ not in ("OperationalError", "IntegrityError"):
                raise
            time.sleep(0.5 + random.random())
    return make()


def _pruner(s: _Session) -> optuna.pruners.BasePruner:
    """The rung: halfway through the written arm's training steps, or half the dev rows."""
    if s.settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if s.arm.options.changes_weights:
        full = _planned_steps(s.arm.options, s.view)
        rung = rung_step(full)
    else:
        full, rung = len(s.dev), max(1, len(s.dev) // REDUCTION)
    if s.settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=rung, max_resource=max(full, rung + 1),
                                              reduction_factor=REDUCTION)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=rung, reduction_factor=REDUCTION)


def _planned_steps(options, task: Task) -> int:
    """THE loop's plan for an arm trained on the pool (steps, or epochs over the sampled rows): the
    pruner's resource scale; other arms' data differ in size, and the rung is then approximate."""
    steps = getattr(options, "steps", 0) or 0
    if steps:
        return steps
    rows = len(task.splits.get("train") or [])
    rows = min(rows, getattr(options, "max_train_examples", None) or rows)
    per_epoch = math.ceil(rows / (getattr(options, "batch_size", None) or 1))
    return max(1, math.ceil((getattr(options, "epochs", None) or 1.0) * per_epoch))


def _fingerprint(s: _Session) -> str:
    """What a shared study was made for: workers joining it must tune the same thing."""
    return sha256_text(json.dumps({
        "method": s.arm.method, "options": s.written, "space": {k: v.to_json() for k, v in s.space.items()},
        "base": s.ctx.base.weights_id, "metric": s.metric, "train": hash_examples(s.view.splits["train"]),
        "dev": hash_examples(s.dev), "kind": s.view.kind, "instruction": s.view.instruction,
        "pruner": s.settings.pruner}, sort_keys=True, default=str))[:16]


def _optimize(s: _Session, study: optuna.Study) -> str:
    deadline = study.user_attrs.get("deadline")
    if deadline is None:
        raise TailorError(f"study '{study.study_name}' has no deadline: the worker that created it stopped before "
                          "setting it up; name a new study")
    cap = s.settings.trials
    callbacks = [optuna.study.MaxTrialsCallback(cap, states=FINISHED)] if cap else []
    remaining = deadline - time.time()
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining > 0 and (cap is None or done < cap):
        # a trial starts only before the deadline; one started before it finishes (never cut, it
        # would not be the arm it names)
        study.optimize(lambda trial: _objective(s, trial), n_trials=cap, timeout=remaining, catch=(Exception,),
                       callbacks=callbacks, gc_after_trial=True)
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    if cap and len(finished) >= cap:
        return "trials"
    return "space" if _exhausted(s.space, finished) else "budget"


def _wait_for_others(study: optuna.Study) -> None:
    """Other workers' trials still running when this one stops: their results count, so wait for
    them (a dead worker's trial fails after the storage's heartbeat grace period)."""
    if not isinstance(study._storage, optuna.storages.RDBStorage):   # one process: nothing else runs
        return
    longest = max((t.duration.total_seconds() for t in study.get_trials(deepcopy=False, states=FINISHED)
                   if t.duration), default=60.0)
    until = time.time() + 1.5 * longest + 60
    while time.time() < until:
        optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        time.sleep(2)
    log.warning("study %s: %d trials of other workers still running; chosen without them", study.study_name,
                len(running))


def _objective(s: _Session, trial: optuna.Trial) -> float:
    params = {name: _suggest(trial, name, knob) for name, knob in s.space.items()}
    done = trial.study.get_trials(deepcopy=False, states=FINISHED)
    repeat = next((t for t in done if t.params == params and t.state != optuna.trial.TrialState.FAIL), None)
    if repeat is not None:   # fitting and measuring are deterministic: the same options, the same outcome
        trial.set_user_attr("repeat_of", repeat.number)
        trial.set_user_attr("seconds", 0.0)
        if _exhausted(s.space, done):
            trial.study.stop()   # every combination of a space of choices has been tried
        if repeat.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(f"the options of pruned trial {repeat.number}")
        return repeat.value
    options = validate(type(s.arm.options), {**s.written, **params}, f"arm '{s.arm.name}' trial {trial.number}")
    trial.set_user_attr("worker", s.worker)
    weights = type(options).changes_weights
    folder = s.folder / f"trial-{trial.number}"
    t0 = time.perf_counter()
    shown = " ".join(f"{k}={_show(v)}" for k, v in params.items())
    try:
        # an identical earlier fit (the ladder's own arm as written, an earlier run) is reused as the ladder would
        adapted = fits.reuse(_key(s, options), s.ctx.base) if weights and s.exp.reuse_fits else None
        if adapted is not None:
            trial.set_user_attr("reused_fit", str(adapted.artifact_dir))
        else:
            token = DEV_WATCH.set(_Watch(trial)) if weights and s.pruning else None
            try:   # the run's engine cache: a prompt already scored under the same weights is not scored again
                adapted = options.fit(s.view, s.ctx.base, folder if weights else None, progress=False,
                                      cache=s.ctx.cache)
            finally:
                if token is not None:
                    DEV_WATCH.reset(token)
        value = _dev_metric(s, trial, adapted)
    except optuna.TrialPruned as e:
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        shutil.rmtree(folder, ignore_errors=True)
        console.print(f"    trial {trial.number}: {shown} pruned ({e}; {time.perf_counter() - t0:.0f} s)",
                      highlight=False)
        raise
    except Exception as e:
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("error", str(e)[:500] if isinstance(e, TailorError) else f"{type(e).__name__}: {e}"[:500])
        shutil.rmtree(folder, ignore_errors=True)
        console.print(f"    trial {trial.number}: {shown} [red]failed[/]: {str(e)[:200]}", highlight=False)
        if not isinstance(e, TailorError):
            log.error("trial %d of %s failed:\n%s", trial.number, s.arm.name, traceback.format_exc())
        raise
    trial.set_user_attr("seconds", time.perf_counter() - t0)
    console.print(f"    trial {trial.number}: {shown} -> dev {s.metric} {value:.4f} ({time.perf_counter() - t0:.0f} s)"
                  f"{' (the arm as written)' if trial.user_attrs.get('default') else ''}"
                  f"{' (an identical earlier fit)' if trial.user_attrs.get('reused_fit') else ''}", highlight=False)
    if weights:
        _keep_if_best(s, options, adapted, folder, value)
    return value


def _exhausted(space: dict[str, Knob], done: list) -> bool:
    if any(k.choices is None for k in space.values()):
        return False
    return len({json.dumps(t.params, sort_keys=True) for t in done}) >= math.prod(len(k.choices) for k in space.values())


def _dev_metric(s: _Session, trial: optuna.Trial, adapted) -> float:
    """THE measurement on the dev rows. A prompting arm's rung: the first half of them, reported
    and perhaps pruned before the second half is measured."""
    kw = {"cache": s.ctx.cache, "batch_size": s.exp.batch_size, "max_new_tokens": s.exp.max_new_tokens,
          "progress": False, "latency_requests": 0}
    half = len(s.dev) // REDUCTION
    if not s.pruning or type(s.arm.options).changes_weights or half < 2:
        return measure(adapted, s.view, s.dev, **kw).metrics[s.metric]
    first = measure(adapted, s.view, s.dev[:half], **kw)
    trial.report(first.metrics[s.metric], half)
    if trial.should_prune():
        raise optuna.TrialPruned(f"dev {first.metrics[s.metric]:.4f} on the first {half} rows")
    rest = measure(adapted, s.view, s.dev[half:], **kw)
    return score_predictions(s.view, first.predictions + rest.predictions).metrics[s.metric]


def _keep_if_best(s: _Session, options, adapted, folder: Path, value: float) -> None:
    """A worker keeps the artifact of its best trial so far, and remembers it as the fit of those
    options (tailor.fits): the ladder then measures those very weights on the test rows instead of
    training them again (a trial's fit is the arm's fit: same rows, options and code)."""
    if s.best_local is not None and value <= s.best_local:
        shutil.rmtree(folder, ignore_errors=True)
        return
    save_adapted(adapted, folder)
    fits.remember(_key(s, options), folder)
    if s.best_folder is not None and s.best_folder != folder:
        shutil.rmtree(s.best_folder, ignore_errors=True)
    s.best_local, s.best_folder = value, folder


def _key(s: _Session, options) -> str:
    # the key the ladder's own fit of these options has (no budget: a trial trains its written steps)
    return fits.fit_key(options, s.view, s.ctx.base.weights_id, None)


def _suggest(trial: optuna.Trial, name: str, knob: Knob):
    if knob.choices is not None:
        return trial.suggest_categorical(name, knob.choices)
    if isinstance(knob.low, int) and isinstance(knob.high, int):
        return trial.suggest_int(name, knob.low, knob.high, log=knob.log)
    return trial.suggest_float(name, float(knob.low), float(knob.high), log=knob.log)


def _record(record: Tuning, study: optuna.Study, seconds: float, stopped: str) -> Tuning:
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        state = STATES.get(t.state.name, t.state.name.lower())
        dev = t.value if t.state == optuna.trial.TrialState.COMPLETE else (
            t.intermediate_values[t.last_step] if t.last_step is not None else None)
        took = t.user_attrs.get("seconds") or (t.duration.total_seconds() if t.duration else None)
        rows.append(TuningTrial(number=t.number, params=dict(t.params), state=state, dev=dev,
                                reached=t.last_step if t.state == optuna.trial.TrialState.PRUNED else None,
                                seconds=took, default=bool(t.user_attrs.get("default")),
                                worker=t.user_attrs.get("worker"), error=t.user_attrs.get("error"),
                                repeat_of=t.user_attrs.get("repeat_of")))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    finished = sum(r.state in ("complete", "pruned", "failed") for r in rows)
    record = record.model_copy(update={
        "trials": rows, "seconds": seconds, "stopped": stopped,
        "trials_per_minute": finished / (seconds / 60) if seconds > 0 else 0.0,
        "workers": sorted({r.worker for r in rows if r.worker})})
    default = next((r for r in rows if r.default), None)
    if default is not None and default.state == "complete":
        record.default_dev = default.dev
    if not complete:
        first = next((r.error for r in rows if r.error), None)
        record.error = f"no trial finished on dev ({len(rows)} tried{f'; first error: {first}' if first else ''})"
        return record
    best = max(complete, key=lambda t: (t.value, -t.number))   # ties: the earlier trial (the default first)
    record.best_trial, record.best_params, record.best_dev = best.number, dict(best.params), best.value
    return record


def _print_summary(r: Tuning) -> None:
    pruned = sum(t.state == "pruned" and t.repeat_of is None for t in r.trials)
    failed = sum(t.state == "failed" for t in r.trials)
    repeats = sum(t.repeat_of is not None for t in r.trials)
    extra = ", ".join(x for x in (f"{pruned} pruned" if pruned else "", f"{failed} failed" if failed else "",
                                  f"{repeats} repeats of earlier options, not fitted again" if repeats else "") if x)
    workers = f" from {len(r.workers)} workers" if len(r.workers) > 1 else ""
    default = "—" if r.default_dev is None else f"{r.default_dev:.4f}"
    params = " ".join(f"{k}={_show(v)}" for k, v in r.best_params.items())
    console.print(f"  tuned: {len(r.trials)} trials{workers}{f' ({extra})' if extra else ''} in {r.seconds / 60:.1f} min "
                  f"({r.trials_per_minute:.1f} a minute, stopped by {r.stopped}); dev {r.metric} best {r.best_dev:.4f} "
                  f"(trial {r.best_trial}: {params}), default {default}", highlight=False)


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
