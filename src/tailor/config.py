"""The experiment schema and the `tailor train` config: typed (pydantic, strict), read from YAML
with errors that name the file, the line and the field. Reading a config imports no torch."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from .advise import check_answers
from .curate.options import CurateOptions
from .errors import DataError, TailorError
from .helm.options import BiasOptions, RobustnessOptions
from .knobs import TuneOptions, arm_tune, read_tune
from .methods import METHODS, Method
from .schema import Options, Seed, read_yaml, validate
from .trackers import Tracker

Positive = Annotated[int, Field(gt=0)]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]


class TaskOptions(Options):
    """How to read a task file (bundled tasks keep their own fixed split)."""

    name: str | None = None
    kind: Literal["classify", "generate", "choice"] | None = None
    format: Literal["chat", "prompt_completion", "alpaca", "text_label", "choice"] | None = None
    fields: dict[str, str] | None = None      # renames, e.g. {text: tweet}
    labels: list[str] | None = None
    instruction: str | None = None
    metrics: list[str] | None = None
    encoding: str = "utf-8"
    test: Annotated[int, Field(ge=0)] | Annotated[float, Field(ge=0, lt=1)] | None = None   # rows, or a share
    dev: Annotated[int, Field(ge=0)] | Annotated[float, Field(ge=0, lt=1)] | None = None
    min_confidence: float | None = None       # tweet-sentiment: annotator confidence

    def loader_options(self, seed: int) -> dict:
        return {"seed": seed, **self.model_dump(exclude_none=True)}


class JudgeOptions(Options):
    """`judge:` a gold reward model that grades every policy arm's answers on the held-out prompts
    (the gold-versus-proxy reward model of Gao et al. 2023; InstructGPT, Ouyang et al. 2022, grades
    with held-out labelers): a reward-model arm of this ladder, trained on prompts the policies never
    saw (`train_prompts: half-b` on it, `half-a` on the policies), or a reward-model arm folder."""

    arm: str                           # a reward-model arm of this ladder (its name), or an arm folder
    reference: str | None = None       # win rate and KL against this arm (default: the first lora arm)
    base: str | None = None            # length change against this arm (default: the first zero-shot arm)
    checkpoints: bool = True           # PPO arms: the judge's reward and KL at each saved checkpoint
    seed: Seed = 1                     # of the temperature-1 samples the KL is estimated on


class CurveOptions(Options):
    """`learning_curve:` the named arms refitted on fractions of their training rows and measured on
    the same test rows, so a team sees whether labelling more rows or switching method pays more."""

    arms: Annotated[list[str], Field(min_length=1)]
    fractions: list[Annotated[float, Field(gt=0, lt=1)]] = [0.125, 0.25, 0.5]   # the arm itself is 1


class MetricOptions(Options):
    """`metric:` a grader (a JSON file in OpenAI's grader shapes, tailor.graders) as the primary
    metric of every arm: each test row's answer graded, the mean ranks the arms, the verdict's
    intervals resample the per-row grades. A model judge in it is first checked against the rows
    people labelled (`human_label` / `human_score`, tailor.graders.agreement): below the threshold
    the ladder refuses to rank by it unless `trust_judge: true`."""

    grader: str
    trust_judge: bool = False
    min_agreement: float | None = None   # the lower bound that must clear it (default: kappa 0.4, Spearman 0.5)
    # a pairwise judge (a label_model file, labels[0]: the answer shown first is better) run on every arm's
    # answers against `versus` (default: the first arm) in both orders: position bias and length-controlled wins
    pairwise: str | None = None
    versus: str | None = None


@dataclass(frozen=True)
class Arm:
    name: str
    method: str
    options: Method
    seeds: int = 1     # fits with seeds seed, seed+1, ...: the verdict's interval then covers training variance
    tune: Any = None   # knobs.TuneOptions (its space resolved): trials on dev choose its options (tailor.tune)

    def to_json(self) -> dict:
        return {"name": self.name, "method": self.method, "options": self.options.model_dump(), "seeds": self.seeds,
                **({"tune": self.tune.model_dump(exclude_none=True)} if self.tune else {})}


class Experiment(Options):
    model: str = "smollm2-135m"
    task: str = "tweet-sentiment"
    name: str = ""
    task_options: TaskOptions = TaskOptions()
    limit: Positive | None = None       # evaluate on the first N test rows (all if None)
    seed: Seed = 0
    dtype: Dtype = "auto"
    device: str = "auto"
    batch_size: Positive = 16
    max_new_tokens: Positive = 64
    cache: bool = True
    reuse_fits: bool = True             # reuse an identical earlier fit (same rows, options, code)
    runs_dir: str = "runs"
    # Cost model (the cost arithmetic of Meta's guide): tokens are billed per 1k, training per hour.
    price_per_1k_tokens: Annotated[float, Field(ge=0)] = 0.0002
    price_per_train_hour: Annotated[float, Field(ge=0)] = 1.0
    requests_per_month: Annotated[int, Field(ge=0)] = 100_000
    tolerance: Annotated[float, Field(ge=0)] = 0.02   # "as good as the best" within this much primary metric
    latency_requests: Annotated[int, Field(ge=0)] = 8  # requests timed one at a time, uncached (0: none)
    budget_minutes: Annotated[float, Field(gt=0)] | None = None   # wall-clock budget for the whole ladder
    curate: bool = True
    continue_on_data_problems: bool = False
    max_leakage: Annotated[float, Field(ge=0)] = CurateOptions.max_leakage
    max_conflicts: Annotated[float, Field(ge=0)] = CurateOptions.max_conflicts
    forgetting: bool = True             # run the general suite for every weight-changing arm
    forgetting_size: Positive | None = None   # items per general benchmark (default: each one's
                                              # fixed subset, about +-3 points; smaller is faster)
    report: bool = True
    advice: dict[str, Any] = {}
    judge: JudgeOptions | None = None   # a gold reward model grading the policies: {arm: NAME, reference: sft}
    metric: MetricOptions | None = None   # {grader: FILE}: a grader is every arm's primary metric (tailor.graders)
    tune: TuneOptions | None = None     # every arm with knobs tuned on dev under the same budget (tailor.knobs)
    learning_curve: CurveOptions | None = None   # {arms: [lora], fractions: [0.125, 0.25, 0.5]}
    report_to: list[Tracker] = []       # the finished ladder logged to mlflow / trackio / tensorboard (tailor.trackers)
    robustness: RobustnessOptions | None = None   # every arm on perturbed inputs (tailor.helm; off: cost)
    bias: BiasOptions | None = None     # Crows-Pairs, StereoSet, BBQ per arm against the base (tailor.helm)
    arms: list[Any] = Field(default_factory=list, exclude=True)   # [Arm], validated by `read_arms`

    def to_json(self) -> dict:
        return {**self.model_dump(), "arms": [a.to_json() for a in self.arms]}


def load_experiment(path: str | Path) -> Experiment:
    data, lines = read_yaml(path, "experiment settings")
    return experiment_from_dict(data, path, lines)


# what only a task file reads: a bundled task keeps its published split and its own fields
FILE_ONLY = ("name", "kind", "format", "fields", "labels", "instruction", "metrics", "test", "dev")


def _check_bundled_split(exp: Experiment, path, lines: dict) -> None:
    """A bundled task has a fixed split (the same rows in every run, so runs compare): options that
    only reading a file honours are refused, not silently dropped."""
    from .datasets.bundled import BUNDLED
    if exp.task not in BUNDLED:
        return
    for field in FILE_ONLY:
        if getattr(exp.task_options, field) is not None:
            hint = {"test": "; `limit: N` measures the first N test rows",
                    "dev": "; tuning takes fewer with tune.dev_rows, training with eval_examples"}.get(field, "")
            raise DataError(path, f"{exp.task} is a bundled task with its own fixed split and fields: "
                                  f"task_options.{field} applies to task files only{hint}",
                            lines.get(("task_options", field)), f"task_options.{field}")


def experiment_from_dict(data: dict, path: str | Path = "<experiment>", lines: dict | None = None) -> Experiment:
    data = dict(data)
    arms = read_arms(data.pop("arms", None), path, lines or {})
    exp = validate(Experiment, data, path, lines)
    exp.arms = arms
    exp.advice = check_answers(exp.advice, path, lines or {}, ("advice",))
    exp.name = exp.name or f"{Path(str(exp.task)).stem}-ladder"
    _check_bundled_split(exp, path, lines or {})
    if exp.judge is not None:
        exp.judge = _check_judge(exp, path, lines or {})
    if exp.metric is not None:   # the grader file read now: a bad spec fails before any model loads
        from .graders import load_grader
        for field in ("grader", "pairwise"):
            try:
                g = load_grader(getattr(exp.metric, field)) if getattr(exp.metric, field) else None
            except TailorError as e:
                raise DataError(path, str(e), (lines or {}).get(("metric", field)), f"metric.{field}") from None
            if field == "pairwise" and g is not None and len(getattr(g, "labels", ())) != 2:
                raise DataError(path, "a pairwise judge is a label_model with two labels (the first: the answer shown "
                                "first is better)", (lines or {}).get(("metric", field)), "metric.pairwise")
        if exp.metric.versus is not None and exp.metric.versus not in {a.name for a in exp.arms}:
            raise DataError(path, f"'{exp.metric.versus}' is not an arm of this ladder",
                            (lines or {}).get(("metric", "versus")), "metric.versus")
    if exp.tune is not None and exp.tune.knobs is not None:
        raise DataError(path, "knobs belong to an arm's tune: (each family has its own options)",
                        (lines or {}).get(("tune", "knobs")), "tune.knobs")
    exp.arms = [dataclasses.replace(a, tune=arm_tune(exp.tune, a.tune, a.options, path, lines or {}, ("arms", i)))
                for i, a in enumerate(exp.arms)]
    if exp.learning_curve is not None:
        by_name = {a.name: a for a in exp.arms}
        for i, name in enumerate(exp.learning_curve.arms):
            where = ("learning_curve", "arms", i)
            if name not in by_name:
                raise DataError(path, f"'{name}' is not an arm of this experiment", (lines or {}).get(where),
                                f"learning_curve.arms[{i}]")
            if "max_train_examples" not in type(by_name[name].options).model_fields:
                raise DataError(path, f"a {by_name[name].method} arm does not train on a number of labelled rows "
                                      "it could be given fewer of", (lines or {}).get(where), f"learning_curve.arms[{i}]")
    return exp


def _check_judge(exp: Experiment, path, lines: dict) -> JudgeOptions:
    judge, by_name, where = exp.judge, {a.name: a for a in exp.arms}, ("judge", "arm")
    if judge.arm in by_name and not type(by_name[judge.arm].options).scorer:
        raise DataError(path, f"arm '{judge.arm}' is a {by_name[judge.arm].method} arm; the judge must be a "
                              "scorer (a reward-model arm)", lines.get(where, lines.get(("judge",))), "judge.arm")
    if judge.arm not in by_name and not Path(judge.arm).exists():
        raise DataError(path, f"'{judge.arm}' is neither an arm of this ladder nor an arm folder",
                        lines.get(where, lines.get(("judge",))), "judge.arm")
    for field in ("reference", "base"):
        name = getattr(judge, field)
        if name is not None and name not in by_name:
            raise DataError(path, f"'{name}' is not an arm of this ladder (arms: {', '.join(by_name)})",
                            lines.get(("judge", field), lines.get(("judge",))), f"judge.{field}")
    return judge


def arm_slug(name: str) -> str:
    """The folder (and file-name part) of an arm: RUN/arms/SLUG, predictions-SLUG.jsonl."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


# Names the ladder gives the repeated fits of an arm (seeds: N, learning_curve:): an arm named so
# would share their folders.
_DERIVED = re.compile(r"\.(seed|rows)[0-9]+$")
MAX_NAME = 100   # an arm's name is part of file names (255 bytes on most file systems)


def read_arms(raw: Any, path, lines: dict) -> list[Arm]:
    if not isinstance(raw, list) or not raw:
        raise DataError(path, "needs a list of at least one arm, e.g. [zero-shot, {method: icl, k: 4}]",
                        lines.get(("arms",)), "arms")
    arms, folders = [], {}
    for i, item in enumerate(raw):
        where, line = f"arms[{i}]", lines.get(("arms", i))
        spec = {"method": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or "method" not in spec:
            raise DataError(path, "expected a method name or a mapping with 'method'", line, where)
        spec = dict(spec)
        method, name, seeds = spec.pop("method"), spec.pop("name", None), spec.pop("seeds", 1)
        tune = read_tune(spec.pop("tune", None), path, lines, ("arms", i, "tune"))
        if not isinstance(method, str) or method not in METHODS:
            raise DataError(path, f"unknown method {method!r} (known: {', '.join(METHODS)})",
                            lines.get(("arms", i, "method"), line), f"{where}.method")
        name = method if name is None else name
        name_line = lines.get(("arms", i, "name"), line)
        if not isinstance(name, str) or not name.strip():
            raise DataError(path, f"expected a non-empty name, got {name!r}", line, f"{where}.name")
        slug = arm_slug(name)
        if slug in (".", "..") or len(name) > MAX_NAME or _DERIVED.search(name):
            why = (f"longer than {MAX_NAME} characters" if len(name) > MAX_NAME else
                   "'.seedN' and '.rowsN' name the ladder's repeated fits of an arm" if _DERIVED.search(name) else
                   "it would name the run's own folders")
            raise DataError(path, f"arm name {name!r} cannot name a folder ({why})", name_line, f"{where}.name")
        # Arms are saved in RUN/arms/SLUG: two names that differ only in case or in characters the
        # slug replaces would share one folder (and on macOS or Windows, a case-insensitive one).
        other = folders.get(slug.casefold())
        if other is not None:
            same = "duplicate arm name" if other == name else f"arm names '{other}' and '{name}' share the folder"
            raise DataError(path, f"{same} '{slug}'; give each arm a distinct name (letters, digits, _ . -)",
                            name_line, f"{where}.name")
        folders[slug.casefold()] = name
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
            raise DataError(path, f"expected a whole number of seeds from 1 to 100, got {seeds!r}",
                            lines.get(("arms", i, "seeds"), line), f"{where}.seeds")
        if seeds > 1 and "seed" not in METHODS[method].model_fields:
            raise DataError(path, f"a {method} arm has no seed to vary (it is deterministic): drop seeds",
                            lines.get(("arms", i, "seeds"), line), f"{where}.seeds")
        arms.append(Arm(name, method, validate(METHODS[method], spec, path, lines, ("arms", i)), seeds, tune))
    return arms


class TrainRunConfig(Options):
    """`tailor train CONFIG.yaml`: one training arm on one task, then an evaluation."""

    model: str = "smollm2-135m"
    task: str = "tweet-sentiment"
    method: str = "lora"
    options: dict[str, Any] = {}
    task_options: TaskOptions = TaskOptions()
    dtype: Dtype = "auto"
    device: str = "auto"
    eval_split: Literal["train", "dev", "test"] | None = "test"
    eval_limit: Positive | None = None
    batch_size: Positive = 16
    max_new_tokens: Positive = 64
    latency_requests: Annotated[int, Field(ge=0)] = 8
    cache: bool = True
    runs_dir: str = "runs"
    seed: Seed = 0


def load_train_config(path: str | Path, overrides: dict | None = None) -> tuple[TrainRunConfig, Method]:
    """The config and its method with options validated (a training method: it has a loop)."""
    data, lines = read_yaml(path, "training settings")
    data.update(overrides or {})
    cfg = validate(TrainRunConfig, data, path, lines)
    cls = METHODS.get(cfg.method)
    if cls is None:
        raise DataError(path, f"unknown method {cfg.method!r} (known: {', '.join(METHODS)})", lines.get(("method",)),
                        "method")
    if not cls.changes_weights:
        raise DataError(path, f"method '{cfg.method}' does not train; use tailor eval --method {cfg.method}",
                        lines.get(("method",)), "method")
    options = {"seed": cfg.seed, **cfg.options}
    return cfg, validate(cls, options, path, lines, ("options",))
