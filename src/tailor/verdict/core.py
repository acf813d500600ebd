"""The verdict: every arm's interval, paired comparisons against the best and the baseline, the
probability of being best, and the recommendation as a claim that the numbers support."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import TailorError
from .bootstrap import SeedLevel, percentile_interval, probability_best, replicate_means
from .stats import McNemar, mcnemar_exact, rows_for_noninferiority, rows_to_separate, wilson_interval

# reference_*: the best observed is a reference arm (measured for comparison, never recommended: a model
# outside the ones being chosen between); "matched": a candidate is shown within the tolerance of it
Claim = Literal["only_arm", "best_separated", "best_not_separated", "cheaper_non_inferior", "reference_matched",
                "reference_best"]
IntervalMethod = Literal["wilson", "bootstrap-percentile", "bootstrap-percentile-seeds-t", "bootstrap-percentile-seeds-resampled"]


@dataclass(frozen=True)
class ArmScores:
    """One arm's input: its per-row scores on the shared test rows, higher is better (0/1 for
    accuracy, a float per row for ROUGE-L, F1, ...), as a vector (rows,) or, for an arm fitted
    with several seeds, a matrix (seeds, rows); and its cost (any unit, lower is cheaper)."""
    name: str
    scores: Any
    cost: float


@dataclass(frozen=True)
class ArmVerdict:
    """One arm's mean over seeds and rows, its interval and how it was made, the spread between
    its seeds (None for one seed) and its share of bootstrap replicates in which it is best."""
    name: str
    cost: float
    mean: float
    lo: float
    hi: float
    interval: IntervalMethod
    seeds: int
    seed_means: tuple[float, ...]
    seed_min: float | None
    seed_max: float | None
    seed_sd: float | None          # sample standard deviation (ddof 1) of the seed means
    p_best: float


@dataclass(frozen=True)
class Comparison:
    """mean(arm) - mean(reference) on the same rows, with its paired-bootstrap interval (rows
    resampled jointly, seeds too), its one-sided lower bound, and McNemar's exact test when both
    arms are one seed of 0/1 scores. `separated`: the two-sided interval excludes 0 and, where
    McNemar applies, p < 1 - confidence. `non_inferior`: the one-sided lower bound is above
    -tolerance. Sample sizes are normal-approximation estimates from the observed difference and
    the per-row spread of differences (rows averaged over seeds first)."""
    arm: str
    reference: str
    diff: float
    lo: float
    hi: float
    lower_one_sided: float
    mcnemar: McNemar | None
    sd_row_diff: float
    separated: bool
    non_inferior: bool
    rows_to_separate: int | None
    rows_for_non_inferiority: int | None


@dataclass(frozen=True)
class Verdict:
    """Everything the recommendation rests on. `recommended` is the cheapest arm shown
    non-inferior to the best within `tolerance`, else the best observed; `claim` says which of
    these happened and whether the best is separated from every other arm; `contenders` are the
    arms the data cannot separate from the best."""
    metric: str
    rows: int
    binary: bool
    tolerance: float
    confidence: float
    power: float
    replicates: int
    seed: int
    seed_level: SeedLevel
    arms: tuple[ArmVerdict, ...]
    best: str
    baseline: str | None
    versus_best: tuple[Comparison, ...]
    versus_baseline: tuple[Comparison, ...]
    recommended: str
    claim: Claim
    contenders: tuple[str, ...]
    reference: tuple[str, ...] = ()                # arms measured for comparison, never recommended
    versus_reference: tuple[Comparison, ...] = ()  # every other arm against each reference arm

    def arm(self, name: str) -> ArmVerdict:
        return next(a for a in self.arms if a.name == name)

    def comparison(self, arm: str, reference: str) -> Comparison:
        """The comparison of `arm` against `reference` (the best, the baseline or a reference arm)."""
        for c in self.versus_best + self.versus_baseline + self.versus_reference:
            if c.arm == arm and c.reference == reference:
                return c
        raise KeyError(f"no comparison of {arm} against {reference}")

    def sentence(self) -> str:
        from .wording import sentence
        return sentence(self)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["sentence"] = self.sentence()
        return out


def verdict(arms: Sequence[ArmScores], *, metric: str, tolerance: float, baseline: str | None = None,
            confidence: float = 0.95, replicates: int = 2000, seed: int = 0, power: float = 0.8,
            seeds: SeedLevel = "t", reference: Sequence[str] = ()) -> Verdict:
    """The statistical verdict on arms scored on the same test rows (see the package docstring).
    `reference`: arms measured for comparison that are never recommended (a model the choice is not
    between, such as a closed model a team is leaving): each has its interval and chance of being
    best, every other arm is compared with it, and the recommendation is among the others."""
    names, matrices, costs = _check(arms, tolerance, baseline, confidence, replicates, power)
    refs = tuple(dict.fromkeys(reference))
    if any(r not in names for r in refs) or len(refs) >= len(names):
        raise TailorError(f"verdict: reference arms {list(refs)} must be arms ({', '.join(names)}), and not all of them")
    if seeds not in ("t", "resample"):
        raise TailorError(f"verdict: seeds must be 't' or 'resample', got {seeds!r}")
    n = matrices[0].shape[1]
    binary = all(bool(np.all((m == 0) | (m == 1))) for m in matrices)
    means = [float(m.mean()) for m in matrices]
    reps = replicate_means(matrices, replicates, np.random.default_rng(seed), seeds)
    p_best = probability_best(reps)

    summaries = []
    for i, name in enumerate(names):
        m = matrices[i]
        k = m.shape[0]
        seed_means = tuple(float(x) for x in m.mean(axis=1))
        if binary and k == 1:
            lo, hi = wilson_interval(int(m.sum()), n, confidence)
            method: IntervalMethod = "wilson"
        else:
            lo, hi = percentile_interval(reps[:, i], confidence)
            method = "bootstrap-percentile" if k == 1 else \
                "bootstrap-percentile-seeds-t" if seeds == "t" else "bootstrap-percentile-seeds-resampled"
        summaries.append(ArmVerdict(
            name=name, cost=costs[i], mean=means[i], lo=lo, hi=hi, interval=method, seeds=k, seed_means=seed_means,
            seed_min=min(seed_means) if k > 1 else None, seed_max=max(seed_means) if k > 1 else None,
            seed_sd=float(np.std(seed_means, ddof=1)) if k > 1 else None, p_best=float(p_best[i])))

    # the best observed; equal means go to the cheaper arm, then to the earlier one
    order = sorted(range(len(names)), key=lambda i: (-means[i], costs[i], i))
    b = order[0]

    def compare(i: int, j: int) -> Comparison:
        return _compare(names, matrices, means, reps, i, j, binary, tolerance, confidence, power)

    versus_best = tuple(compare(i, b) for i in order[1:])
    versus_baseline: tuple[Comparison, ...] = ()
    if baseline is not None:
        z = names.index(baseline)
        versus_baseline = tuple(compare(i, z) for i in range(len(names)) if i != z)

    candidates = [i for i in range(len(names)) if names[i] not in refs]
    versus_reference = tuple(compare(i, names.index(r)) for r in refs for i in candidates)
    contenders = tuple(c.arm for c in versus_best if not c.separated)
    cheaper = sorted((i for i in candidates if costs[i] < costs[b]), key=lambda i: (costs[i], i))
    passing = [i for i in cheaper if next(c for c in versus_best if c.arm == names[i]).non_inferior]
    claim: Claim
    if names[b] in refs:
        # the best is not a choice: the cheapest candidate shown within the tolerance of it, else the best candidate
        matched = sorted((i for i in candidates if next(c for c in versus_best if c.arm == names[i]).non_inferior),
                         key=lambda i: (costs[i], i))
        claim = "reference_matched" if matched else "reference_best"
        pick = matched[0] if matched else next(i for i in order if i in candidates)
    elif len(names) == 1:
        claim = "only_arm"
        pick = b
    elif passing:
        claim, pick = "cheaper_non_inferior", passing[0]
    else:
        pick = b
        # a low chance of being best is reason enough to withhold "best", even when each pair separates
        claim = "best_separated" if not contenders and p_best[b] >= confidence else "best_not_separated"
    return Verdict(metric=metric, rows=n, binary=binary, tolerance=tolerance, confidence=confidence, power=power,
                   replicates=replicates, seed=seed, seed_level=seeds, arms=tuple(summaries), best=names[b], baseline=baseline,
                   versus_best=versus_best, versus_baseline=versus_baseline, recommended=names[pick], claim=claim,
                   contenders=contenders, reference=refs, versus_reference=versus_reference)


def _compare(names, matrices, means, reps, i, j, binary, tolerance, confidence, power) -> Comparison:
    d = reps[:, i] - reps[:, j]
    lo, hi = percentile_interval(d, confidence)
    lower = float(np.quantile(d, 1 - confidence))
    one_seed = matrices[i].shape[0] == 1 and matrices[j].shape[0] == 1
    test = mcnemar_exact(matrices[i][0], matrices[j][0]) if binary and one_seed else None
    alpha = 1 - confidence
    row_diff = matrices[i].mean(axis=0) - matrices[j].mean(axis=0)
    sd = float(np.std(row_diff, ddof=1))
    diff = means[i] - means[j]
    return Comparison(
        arm=names[i], reference=names[j], diff=diff, lo=lo, hi=hi, lower_one_sided=lower, mcnemar=test, sd_row_diff=sd,
        separated=(lo > 0 or hi < 0) and (test is None or test.p < alpha), non_inferior=lower > -tolerance,
        rows_to_separate=rows_to_separate(diff, sd, alpha, power),
        rows_for_non_inferiority=rows_for_noninferiority(diff, sd, tolerance, alpha, power))


def _check(arms, tolerance, baseline, confidence, replicates, power):
    if not arms:
        raise TailorError("verdict: no arms to compare")
    names: list[str] = []
    matrices: list[np.ndarray] = []
    costs: list[float] = []
    for arm in arms:
        if not isinstance(arm.name, str) or not arm.name:
            raise TailorError(f"verdict: an arm's name must be a non-empty string, got {arm.name!r}")
        if arm.name in names:
            raise TailorError(f"verdict: arm '{arm.name}' appears twice")
        try:
            m = np.asarray(arm.scores, dtype=float)
        except (TypeError, ValueError) as e:
            raise TailorError(f"verdict: arm '{arm.name}': scores are not numbers ({e})") from None
        if m.ndim == 1:
            m = m[None, :]
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] < 2:
            raise TailorError(f"verdict: arm '{arm.name}': scores must be (rows,) or (seeds, rows) with at least 2 rows, "
                              f"got shape {np.shape(arm.scores)}")
        if not np.all(np.isfinite(m)):
            raise TailorError(f"verdict: arm '{arm.name}': {int(np.sum(~np.isfinite(m)))} scores are NaN or infinite")
        if matrices and m.shape[1] != matrices[0].shape[1]:
            raise TailorError(f"verdict: arm '{arm.name}' has {m.shape[1]} rows, arm '{names[0]}' {matrices[0].shape[1]}: "
                              "arms must be scored on the same test rows")
        try:
            cost = float(arm.cost)
        except (TypeError, ValueError):
            raise TailorError(f"verdict: arm '{arm.name}': cost {arm.cost!r} is not a number") from None
        if not math.isfinite(cost):
            raise TailorError(f"verdict: arm '{arm.name}': cost {cost} is not finite")
        names.append(arm.name)
        matrices.append(m)
        costs.append(cost)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise TailorError(f"verdict: tolerance must be a finite number >= 0, got {tolerance}")
    if not 0.5 < confidence < 1:
        raise TailorError(f"verdict: confidence must be between 0.5 and 1, got {confidence}")
    if not 0 < power < 1:
        raise TailorError(f"verdict: power must be between 0 and 1, got {power}")
    if replicates < 200:
        raise TailorError(f"verdict: {replicates} bootstrap replicates are too few for a 95% interval; use at least 200")
    if baseline is not None and baseline not in names:
        raise TailorError(f"verdict: baseline '{baseline}' is not one of the arms ({', '.join(names)})")
    return names, matrices, costs
