"""A judge is checked before it is trusted.

Agreement with people: rows labelled by people (`human_label` or `human_score` beside the answer
they rated, in the row's `output` field, else its target) are judged by the model grader, and the
two are compared: Cohen's kappa (1960) for a label_model's labels, Spearman's rank correlation
for a score_model's scores, each with a 95% percentile bootstrap interval over the rows. The
judge is trusted when the interval's LOWER bound clears the threshold, so a small slice that
happens to agree does not pass: kappa 0.4 by default (Landis & Koch 1977 call 0.41-0.60
"moderate" agreement; below is "fair" at best), Spearman 0.5 by default (a rank agreement at least
as strong as the better automatic metrics reach against people on summarisation, e.g. G-Eval, Liu
et al. 2023, about 0.5). `check_judge` refuses an untrusted judge unless told to trust it.

Pairwise judging: each pair is judged in both orders (Zheng et al. 2023, "Judging LLM-as-a-Judge",
found judges favour a position); the share of pairs whose winner flips with the order is the
position bias, and a pair that flips counts as a tie. The win rate is reported raw and
length-controlled as AlpacaEval 2 does (Dubois et al. 2024, "Length-Controlled AlpacaEval"): a
logistic regression of the win on tanh of the standardised length difference, and the win rate
read off at a length difference of zero (their regression also has model and instruction terms;
with one pair of arms only the intercept and the length term remain).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import TailorError
from ..results import JudgeAgreement as Agreement
from ..task import Example
from .base import Grader, item_of

DEFAULT_THRESHOLD = {"kappa": 0.4, "spearman": 0.5}
REPLICATES = 2000
HUMAN_FIELDS = ("human_label", "human_score")


# ---------------------------------------------------------------- statistics


def cohen_kappa(a: list, b: list) -> float:
    """(p_o - p_e) / (1 - p_e): observed agreement beyond what the two raters' label shares give by
    chance. NaN when both raters use a single label (chance agreement is then 1)."""
    n = len(a)
    if n == 0:
        return math.nan
    labels = sorted(set(a) | set(b), key=str)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((sum(x == lab for x in a) / n) * (sum(y == lab for y in b) / n) for lab in labels)
    return math.nan if pe == 1 else (po - pe) / (1 - pe)


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    return rankdata(x)   # ties share their mean rank, as Spearman's rho takes them


def spearman(x: list[float], y: list[float]) -> float:
    """Pearson's correlation of the ranks; NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_interval(stat, a: list, b: list, replicates: int = REPLICATES, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of stat(a, b) over rows drawn with replacement (NaN draws,
    e.g. a resample with one label only, are left out; NaN if every draw is)."""
    rng = np.random.default_rng(seed)
    n = len(a)
    vals = []
    for _ in range(replicates):
        idx = rng.integers(0, n, n)
        v = stat([a[i] for i in idx], [b[i] for i in idx])
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return math.nan, math.nan
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))




def agreement(judge: list, human: list, statistic: str, grader: str = "judge", threshold: float | None = None,
              seed: int = 0) -> Agreement:
    """How far a judge agrees with people on the same rows."""
    threshold = DEFAULT_THRESHOLD[statistic] if threshold is None else threshold
    stat = cohen_kappa if statistic == "kappa" else spearman
    value = stat(judge, human)
    lo, hi = bootstrap_interval(stat, judge, human, seed=seed)
    confusion = None
    if statistic == "kappa":
        confusion = {}
        for h, j in zip(human, judge):
            confusion.setdefault(str(h), {}).setdefault(str(j), 0)
            confusion[str(h)][str(j)] += 1
    trusted = not math.isnan(lo) and lo >= threshold
    return Agreement(grader=grader, statistic=statistic, value=value, lo=lo, hi=hi, rows=len(judge), threshold=threshold,
                     trusted=trusted, confusion=confusion)


# ---------------------------------------------------------------- a judge against people


def human_rows(rows: list[Example]) -> list[Example]:
    """The rows people labelled: those with `human_label` or `human_score`."""
    return [r for r in rows if any(r.meta.get(f) is not None for f in HUMAN_FIELDS)]


def model_graders(grader: Grader) -> list[Grader]:
    """The model judges in a grader: itself, or those a multi grader combines."""
    from .model import _ModelGrader
    if isinstance(grader, _ModelGrader):
        return [grader]
    parts = getattr(grader, "parts", {})
    return [g for p in parts.values() for g in model_graders(p)]


def judge_agreement(grader: Grader, rows: list[Example], threshold: float | None = None, seed: int = 0) -> Agreement:
    """A model grader's agreement with the people who labelled `rows`: the judge grades each row's
    rated answer (its `output` field, else its target) as it would grade an arm's."""
    from .model import LabelModel
    labelled = human_rows(rows)
    field = "human_label" if isinstance(grader, LabelModel) else "human_score"
    usable = [r for r in labelled if r.meta.get(field) is not None]
    where = f"{grader._where}: grader '{grader.name}'"
    if not usable:
        raise TailorError(f"{where}: no row carries {field} (the {grader.kind} is checked against people's "
                          f"{'labels' if field == 'human_label' else 'scores'}): a judge nobody checked decides nothing")
    samples = [str(r.meta.get("output", r.target)) for r in usable]
    items = [item_of(r) for r in usable]
    if isinstance(grader, LabelModel):
        bad = sorted({str(r.meta[field]) for r in usable} - set(grader.labels))
        if bad:
            raise TailorError(f"{where}: human_label {', '.join(bad)} not among the judge's labels ({', '.join(grader.labels)})")
        return agreement(grader.label(samples, items), [str(r.meta[field]) for r in usable], "kappa", grader.name,
                         threshold, seed)
    try:
        human = [float(r.meta[field]) for r in usable]
    except (TypeError, ValueError):
        raise TailorError(f"{where}: a human_score is not a number") from None
    return agreement(grader.grade(samples, items), human, "spearman", grader.name, threshold, seed)


def check_judge(grader: Grader, rows: list[Example], *, trust: bool = False, threshold: float | None = None,
                seed: int = 0) -> list[Agreement]:
    """Every model judge in `grader` against the people-labelled rows. Raises a one-line TailorError
    when a judge is unchecked or below the threshold, unless `trust` (then the agreement is still
    returned, and reported). A grader without a model judge needs no check: []."""
    out = []
    for judge in model_graders(grader):
        try:
            a = judge_agreement(judge, rows, threshold, seed)
        except TailorError:
            if trust:
                continue
            raise
        if not a.trusted and not trust:
            raise TailorError(f"{a.sentence()}: it falls short, so the ladder will not rank arms by it "
                              "(label more rows, or set metric.trust_judge: true to rank by it anyway)")
        out.append(a)
    return out


# ---------------------------------------------------------------- pairwise judging


@dataclass
class Pairwise:
    pairs: int
    win_rate: float              # of answers A over B, both orders averaged (a flipped pair is a tie)
    win_lo: float                # its 95% bootstrap interval over the pairs
    win_hi: float
    lc_win_rate: float           # at equal length (AlpacaEval 2's length control)
    length_coef: float           # the logistic regression's length term (>0: longer answers win)
    flips: float                 # share of pairs whose winner changes with the order shown
    first_position: float        # share of the 2n judgements that picked the answer shown first

    def to_json(self) -> dict:
        return asdict(self)


def length_controlled(wins: list[float], len_a: list[float], len_b: list[float], ridge: float = 1e-2) -> tuple[float, float]:
    """(win rate at zero length difference, length coefficient): logistic regression of the win
    (0, 1/2, 1) on tanh(length difference / its standard deviation), fitted by Newton's method
    with a small ridge so that all-wins or all-losses stay finite."""
    d = np.asarray(len_a, float) - np.asarray(len_b, float)
    sd = d.std()
    if not len(d) or sd == 0:   # no length difference to control for: the win rate is its own estimate
        return (float(np.mean(wins)) if len(d) else math.nan), 0.0
    x = np.tanh(d / sd)
    X = np.column_stack([np.ones_like(x), x])
    y = np.asarray(wins, float)
    w = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (y - p) - ridge * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + math.exp(-w[0]))), float(w[1])


def pairwise(judge, items: list[dict], answers_a: list[str], answers_b: list[str]) -> Pairwise:
    """A pairwise judge (a label_model of two labels: labels[0] says the answer shown first is better,
    labels[1] the second; its templates read {{ item.answer_1 }} and {{ item.answer_2 }}, the two
    answers in the order shown) judges A against B in both orders."""
    if not callable(getattr(judge, "label", None)) or len(getattr(judge, "labels", ())) != 2:
        raise TailorError(f"{getattr(judge, '_where', 'grader')}: a pairwise judge is a label_model with two labels "
                          "(the first: the answer shown first is better)")
    first = judge.labels[0]
    ab = [{**it, "answer_1": a, "answer_2": b} for it, a, b in zip(items, answers_a, answers_b)]
    ba = [{**it, "answer_1": b, "answer_2": a} for it, a, b in zip(items, answers_a, answers_b)]
    in_ab = judge.label(list(answers_a), ab)   # sample.output_text: the answer shown first
    in_ba = judge.label(list(answers_b), ba)
    a_wins_ab = [x == first for x in in_ab]
    a_wins_ba = [x != first for x in in_ba]
    wins = [(p + q) / 2 for p, q in zip(a_wins_ab, a_wins_ba)]
    n = len(wins)
    flips = sum(p != q for p, q in zip(a_wins_ab, a_wins_ba)) / n if n else math.nan
    firsts = (sum(x == first for x in in_ab) + sum(x == first for x in in_ba)) / (2 * n) if n else math.nan
    lc, coef = length_controlled(wins, [len(a.split()) for a in answers_a], [len(b.split()) for b in answers_b])
    lo, hi = bootstrap_interval(lambda w, _: float(np.mean(w)), wins, wins) if n else (math.nan, math.nan)
    return Pairwise(n, sum(wins) / n if n else math.nan, lo, hi, lc, coef, flips, firsts)


def gate_task_judge(task, grader_file: str, *, trust: bool = False, threshold: float | None = None,
                    base=None) -> list[Agreement]:
    """`metric: {grader: FILE}` of an experiment: the grader becomes the task's primary metric
    (`task.grader`), and each model judge in it is checked against the task's people-labelled rows
    first (`check_judge`: refused below the threshold unless `trust`). The agreement goes into the
    task's notes, which the terminal, results.json and the report show. `base`: the ladder's loaded
    base, which a judge naming the same model uses instead of loading a second copy."""
    from .base import load_grader, task_grader
    spec = load_grader(grader_file).model_dump(exclude_none=True)
    spec["name"] = spec.get("name") or spec["type"]
    task.grader = spec
    for judge in model_graders(task_grader(task)):   # a judge on the ladder's own base shares the loaded one
        if base is not None and judge.model == getattr(base, "name", None):
            judge.bind(base)
    checks = check_judge(task_grader(task), task.examples, trust=trust, threshold=threshold)
    for a in checks:
        task.notes.append(a.sentence() + ("" if a.trusted else ": below it, ranked by it only because trust_judge is set"))
    if trust and not checks and model_graders(task_grader(task)):
        task.notes.append(f"judge '{spec['name']}' was not checked against people (no labelled rows): "
                          "ranked by it only because trust_judge is set")
    return checks


def pairwise_arms(judge_file: str, answers: dict[str, list | None], rows: list[Example], versus: str | None = None,
                  base=None) -> dict[str, dict]:
    """Every arm's answers against one arm's (`versus`, default the first) on the same rows, judged
    by a pairwise label_model in both orders: {arm: {versus, pairs, win_rate, lc_win_rate,
    length_coef, flips, first_position}}. `answers`: per arm, its predictions on `rows` (None: failed)."""
    from .base import load_grader
    judge = load_grader(judge_file)
    if base is not None and getattr(judge, "model", None) == getattr(base, "name", None):
        judge.bind(base)
    done = {name: preds for name, preds in answers.items() if preds}
    if not done:
        return {}
    ref = versus or next(iter(done))
    if ref not in done:
        raise TailorError(f"{judge_file}: pairwise judging against '{ref}', which is not a measured arm "
                          f"({', '.join(done)})")
    items = [item_of(r) for r in rows]
    theirs = [p.prediction for p in done[ref]]
    return {name: {"versus": ref, **pairwise(judge, items, [p.prediction for p in preds], theirs).to_json()}
            for name, preds in done.items() if name != ref}
