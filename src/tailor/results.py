"""The typed results of a ladder: what `results.json` holds (with its `schema_version`), what the
terminal table and the HTML report read. One measurement path fills them (`measure.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import TailorError

SCHEMA_VERSION = 1


class Result(BaseModel):
    # NaN is a real value here (ECE of an empty bin, a metric on no rows): written as NaN, as
    # Python's json module does, not dropped.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants", protected_namespaces=())


class Cost(Result):
    requests: int = 0
    prompt_tokens_per_request: float = 0.0
    completion_tokens_per_request: float = 0.0
    latency_p50_s: float | None = None   # one request at a time, uncached: what a caller waits
    latency_p95_s: float | None = None
    latency_requests: int = 0            # how many requests were timed that way
    batch_s_per_request: float | None = None   # batched evaluation's compute time per computed request
    cached_share: float = 0.0
    shots_dropped: int = 0               # in-context examples dropped to fit the prompt budget
    eval_wall_s: float = 0.0
    fit_wall_s: float = 0.0
    train_time_s: float = 0.0
    train_tokens: int = 0
    trainable_params: int = 0
    artifact_bytes: int = 0
    cost_per_1k_requests: float = 0.0
    train_cost: float = 0.0
    first_month_cost: float = 0.0


class Delta(Result):
    """Adapted minus base accuracy on the same items, with its paired-bootstrap interval."""
    n: int | None = None
    base_accuracy: float | None = None
    adapted_accuracy: float | None = None
    delta: float
    ci_low: float
    ci_high: float
    significant: bool = False
    significant_drop: bool = False
    base_ece: float | None = None
    adapted_ece: float | None = None


class Forgetting(Result):
    base: str
    adapted: str
    level: float = 0.95
    benchmarks: dict[str, Delta]
    overall: Delta
    any_significant_drop: bool = False

    def rows(self, with_mean: bool = False) -> list[tuple[str, Delta]]:
        rows = list(self.benchmarks.items())
        return rows + [("mean of all", self.overall)] if with_mean and rows else rows

    def worst(self) -> tuple[str, Delta] | None:
        """The benchmark that dropped most, a significant drop before any other."""
        rows = self.rows()
        return min(rows, key=lambda nr: (not nr[1].significant_drop, nr[1].delta)) if rows else None


class ExampleRow(Result):
    id: str
    input: str
    target: str
    prediction: str


class Retrieval(Result):
    """A knowledge-base arm's retrieval, grounding and their cost (tailor.retrieval.grounding)."""
    kb: str
    kb_chunks: int
    kb_bytes: int
    retriever: str
    k: int
    dense: str = "exact"
    ms_per_query: float | None = None
    queries: int = 0
    passages_per_request: float = 0.0
    passages_dropped: int = 0            # left out to fit the prompt budget
    gold_rows: int = 0                   # rows that name their gold documents
    recall_at_k: float | None = None
    hit_at_k: float | None = None
    mrr: float | None = None
    citations: int | None = None         # generate tasks
    citation_precision: float | None = None
    citation_recall: float | None = None
    cited_out_of_range: int | None = None
    unanswerable: int | None = None      # tasks with a no-answer output
    abstained_when_unanswerable: float | None = None
    abstained_when_answerable: float | None = None
    closed_book: dict[str, float] | None = None   # a weight-changing arm's metrics with no passages


class LongDoc(Result):
    """A long-document arm's own measurements (tailor.longdoc): calls and tokens per question, for
    pearl its actions, plan validity and retries, for extract and truncated the context it saved."""
    model_config = ConfigDict(extra="allow")   # each arm adds its own counts (mining, extraction)
    method: str
    questions: int = 0
    calls_per_question: float = 0.0
    tokens_per_question: float = 0.0
    planner: str | None = None
    plans_valid: float | None = None            # share of questions with a valid plan within the retries
    plans_valid_first_try: float | None = None
    mean_retries: float | None = None
    plan_fallbacks: int | None = None
    document_tokens_per_question: float | None = None
    context_tokens_per_question: float | None = None
    context_saved: float | None = None          # 1 - context tokens / document tokens
    truncated: int | None = None


class JudgedCheckpoint(Result):
    """A PPO arm's saved checkpoint graded by the judge (step 0: the policy it started from)."""
    step: int
    reward: float                      # the judge's mean reward of its greedy answers
    kl: float | None = None            # to the reference on the held-out prompts, estimated as the arm's
    win_rate: float | None = None
    length: float = 0.0
    train_kl: float | None = None      # the PPO iteration's own rollout KL (training prompts)
    proxy_reward: float | None = None  # the reward PPO optimised, on that iteration's rollouts
    best: bool = False                 # the saved checkpoint the judge rewards most


class Judged(Result):
    """A policy arm graded by the ladder's judge (a gold reward model) on the held-out prompts
    (tailor.preference.judge): greedy answers, KL from one temperature-1 sample per prompt."""
    judge: str                         # the judge arm's name (or folder)
    judge_accuracy: float | None = None   # the judge's held-out pairwise accuracy
    disjoint: bool | None = None       # the judge trained on prompts this arm never trained on (None: unknown)
    prompts: int = 0
    reference: str | None = None
    base: str | None = None
    reward: float                      # the judge's mean reward of the arm's greedy answers
    win_rate: float | None = None      # share of prompts where it beats the reference's answer, ties half
    ties: int = 0
    kl: float | None = None            # mean of log pi - log pi_ref over one sample per prompt (nats per answer)
    length: float = 0.0                # mean answer tokens (greedy)
    length_change: float | None = None   # against the base arm
    checkpoints: list[JudgedCheckpoint] = []


class SeedRun(Result):
    """One more fit of an arm with `seeds: N` (the first seed is the arm itself), measured on the
    same test rows."""
    seed: int
    metrics: dict[str, float] = {}
    arm_dir: str | None = None
    train_time_s: float = 0.0


class CurvePoint(Result):
    rows: int                          # labelled training rows the fit drew from
    metric: float
    lo: float | None = None            # 95% interval over the test rows
    hi: float | None = None
    train_time_s: float = 0.0


class LearningCurve(Result):
    """The arm refitted on fractions of its training rows (tailor.curves), the last point the arm
    itself, and a saturating power law fitted through them: metric(n) = a - b * n^-c."""
    points: list[CurvePoint]
    fit: dict[str, float] | None = None
    predicted_at_double: float | None = None   # the fitted curve at twice the rows (an extrapolation)


class TuningTrial(Result):
    """One trial of an arm's study (tailor.tune): its knobs, its dev metric, what it took."""
    number: int
    params: dict[str, Any] = {}
    state: Literal["complete", "pruned", "failed", "running", "waiting"] = "complete"
    dev: float | None = None             # the dev metric; a pruned trial's at the rung it stopped
    reached: int | None = None           # a pruned trial: the training steps (or dev rows) it reached
    seconds: float | None = None
    default: bool = False                # the arm as written: enqueued first, trial 0
    worker: str | None = None
    error: str | None = None
    repeat_of: int | None = None         # the same options as an earlier trial: its value, not fitted again


class Tuning(Result):
    """An arm's options chosen on the dev rows under its wall-clock budget (`tune:`; tailor.tune)."""
    metric: str
    dev_rows: int
    budget_minutes: float
    seconds: float = 0.0                 # this process's tuning wall time
    trials_per_minute: float = 0.0
    knobs: dict[str, Any] = {}           # the space searched, name -> {low, high, log} or {choices}
    pruner: str = ""
    study: str = ""
    storage: str | None = None
    workers: list[str] = []
    trials: list[TuningTrial] = []
    best_trial: int | None = None
    best_params: dict[str, Any] = {}
    best_dev: float | None = None
    default_dev: float | None = None     # trial 0: the arm as written
    stopped: str = ""                    # budget | trials | space (every combination of its choices tried)
    error: str | None = None             # no trial finished: the arm was measured as written


class ArmResult(Result):
    name: str
    method: str
    options: dict[str, Any] = {}
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    metrics: dict[str, float] = {}
    cost: Cost = Cost()
    confusion: list[list[int]] | None = None
    labels: list[str] | None = None
    examples: list[ExampleRow] = []
    forgetting: Forgetting | None = None
    changes_weights: bool = False
    weights_id: str | None = None
    arm_dir: str | None = None           # the saved arm: `tailor eval --adapter` / serve load it from here
    fit_reused_from: str | None = None
    train: dict[str, Any] | None = None  # the training run's result (steps, budget, loss, ...)
    notes: dict[str, int] = {}           # fallbacks the measurement took, counted
    retrieval: Retrieval | None = None
    longdoc: LongDoc | None = None
    # per row against the closed-book zero-shot arm: helped (wrong -> right), hurt, unchanged
    versus_closed_book: dict[str, Any] | None = None
    # a distilled arm against its teacher and gold (tailor.distill.imitation)
    imitation: dict[str, Any] | None = None
    # a policy graded by the ladder's judge reward model (`judge:`; tailor.preference.judge)
    judge: Judged | None = None
    # the verdict (tailor.decide): the primary metric's 95% interval over test rows (and seeds), the
    # share of bootstrap replicates in which this arm is best, and with `seeds: N` each seed's run
    interval: list[float] | None = None
    p_best: float | None = None
    seed_means: list[float] | None = None
    seed_runs: list[SeedRun] = []
    learning_curve: LearningCurve | None = None
    # a calibrated prompting arm (tailor.calibration): the label prior divided out, predicted-label
    # shares on the test rows before and after, rows whose answer it changed
    calibration: dict[str, Any] | None = None
    tuning: Tuning | None = None         # `tune:` its trials on dev (default vs tuned); its options are the best's
    # HELM's other metrics (tailor.helm): the primary metric on perturbed inputs against clean, per perturbation
    # and worst case, paired intervals; bias probes against the base (or the base's, for an arm of its weights)
    robustness: dict[str, Any] | None = None
    bias: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Recommendation(Result):
    arm: str | None = None
    best_arm: str | None = None
    text: str = ""
    # how sure: cheaper_non_inferior | best_separated | best_not_separated | only_arm (tailor.verdict);
    # confident: a claim the intervals support (a cheaper arm shown not worse, or a best arm separated)
    claim: str | None = None
    confident: bool = False
    verdict: dict[str, Any] | None = None   # every number behind it: intervals, paired differences, power


class ExperimentInfo(Result):
    name: str = ""
    model: str = ""
    task: str = ""
    created: str = ""
    test_rows: int = 0
    price_per_1k_tokens: float | None = None
    price_per_train_hour: float | None = None
    requests_per_month: int | None = None
    tolerance: float | None = None
    budget_minutes: float | None = None


class Curation(Result):
    summary: list[list[Any]] = []
    html: str = ""
    problems: list[str] = []


class JudgeAgreement(Result):
    """A model judge against the rows people labelled (tailor.graders.agreement): Cohen's kappa on
    labels or Spearman's rho on scores, with a bootstrap interval; trusted when the lower bound
    clears the threshold."""
    grader: str
    statistic: str                       # "kappa" or "spearman"
    value: float
    lo: float
    hi: float
    rows: int
    threshold: float
    trusted: bool
    confusion: dict[str, dict[str, int]] | None = None   # kappa: {people's label: {judge's label: rows}}

    def sentence(self) -> str:
        return (f"judge '{self.grader}' against people on {self.rows} rows: {self.statistic} {self.value:.2f} "
                f"[95% {self.lo:.2f}, {self.hi:.2f}]; trusted only if the lower bound is at least {self.threshold:g}")


class PairwiseJudged(Result):
    """One arm's answers against another's on the same test rows, judged in both orders by a
    pairwise judge: the win rate (a pair whose winner flips with the order is a tie) with its
    bootstrap interval, the length-controlled win rate (AlpacaEval 2), and the position bias."""
    arm: str
    versus: str
    pairs: int
    win_rate: float
    win_lo: float
    win_hi: float
    lc_win_rate: float
    length_coef: float                   # > 0: the judge prefers the longer answer
    flips: float                         # share of pairs whose winner changes when the order is swapped
    first_position: float                # share of the judgements that picked the answer shown first


class Judging(Result):
    """How far the ladder's judges can be trusted (`metric: {grader, pairwise}`)."""
    grader: str | None = None            # the grader ranking every arm
    agreement: list[JudgeAgreement] = []  # each model judge in it, against people
    trusted_by_setting: bool = False     # ranked by a judge people do not back because trust_judge is set
    pairwise_judge: str | None = None
    pairwise: list[PairwiseJudged] = []


class BreakEven(Result):
    """A weight arm against a prompting arm (tailor.breakeven): the monthly requests above which the
    weight arm is cheaper, with its training paid off over 3, 6 and 12 months (None: never)."""
    weight_arm: str
    prompt_arm: str
    train_cost: float
    saving_per_1k: float                 # per 1k requests, prompting arm minus weight arm
    requests_per_month: dict[int, float | None]
    cheaper_now: bool = False            # at the experiment's requests_per_month, over 6 months


class LadderResult(Result):
    schema_version: int = SCHEMA_VERSION
    experiment: ExperimentInfo = ExperimentInfo()
    task: dict[str, Any] = {}            # the task's summary: name, kind, rows, splits, labels, notes
    curation: Curation | None = None
    primary_metric: str = "accuracy"
    arms: list[ArmResult] = []
    recommendation: Recommendation = Recommendation()
    advice: dict[str, Any] | None = None
    manifest: dict[str, Any] = {}
    wall_s: float = 0.0
    run_dir: str = ""
    report: dict[str, Any] | None = None
    debug: dict[str, Any] = {}           # arm name -> `tailor debug`'s summary (clusters, flags, output kinds)
    break_even: list[BreakEven] = []
    judging: Judging | None = None       # a model judge's agreement with people, pairwise judging

    @property
    def ok_arms(self) -> list[ArmResult]:
        return [a for a in self.arms if a.ok]

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


def read_results(path: str | Path) -> LadderResult:
    """A ladder's results.json (or its run directory), validated."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    from .jsonl import loads
    try:
        data = loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TailorError(f"{file}: cannot read results ({e})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else None
        raise TailorError(f"{file}: results schema {found} is not the {SCHEMA_VERSION} this Tailor reads")
    from pydantic import ValidationError

    from .schema import located_error
    try:
        return LadderResult.model_validate(data)
    except ValidationError as e:
        raise located_error(e, LadderResult, data, file, {}) from None
