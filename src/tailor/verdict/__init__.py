"""The statistical verdict on a ladder: which arm to use, as a claim the test rows support.

Pure Python and numpy (no scipy, no torch); importing it is cheap.

Input: one `ArmScores(name, scores, cost)` per arm, all scored on the SAME test rows, higher is
better. `scores` is a vector (rows,) - 0/1 per row for accuracy, a float per row for ROUGE-L,
F1, ... - or a matrix (seeds, rows) for an arm fitted with several seeds. `cost` is any number,
lower is cheaper (the ladder's first-month cost). Equal costs and equal means are broken by
the order the arms are given in.

    from tailor.verdict import ArmScores, verdict
    v = verdict([ArmScores("zero-shot", zs, 0.1), ArmScores("icl", icl, 0.4), ArmScores("lora", lora, 2.0)],
                metric="accuracy", tolerance=0.02, baseline="zero-shot", confidence=0.95,
                replicates=2000, seed=0)
    v.recommended, v.claim, v.sentence(), v.to_json()

`verdict(arms, *, metric, tolerance, baseline=None, confidence=0.95, replicates=2000, seed=0,
power=0.8, seeds="t") -> Verdict` computes:

1. Per arm (`Verdict.arms`: `ArmVerdict`): the mean over seeds and rows and its interval at
   `confidence`: Wilson's score interval for one seed of 0/1 scores, otherwise the PERCENTILE
   bootstrap over rows (not BCa: with seeds the replicates are not a plain resample of one
   sample, where BCa's jackknife acceleration is defined), plus the seeds' spread (min, max, sd
   of the seed means). With several seeds the replicates carry the seed noise too: by default
   (`seeds="t"`) a Student-t seed term scaled by the seed means' standard error on top of the
   row resampling; `seeds="resample"` is the plain two-level bootstrap (seeds and rows drawn
   with replacement, Owen's pigeonhole bootstrap, 2007), which with 3 seeds declared identical
   arms different in 10.5% of simulations at a nominal 5% ("t": 2.0%; bench/verdict_power.py).
2. Paired comparisons (`Comparison`): every arm against the best observed arm
   (`versus_best`, nearest first) and against `baseline` (`versus_baseline`): the difference of
   means with its paired-bootstrap interval (one row draw shared by both arms in each replicate;
   each arm's seed term drawn on its own: seeds are separate fits, never pairs), its one-sided
   lower bound, and McNemar's exact two-sided test (the binomial tail of the discordant rows) when both arms are
   one seed of 0/1 scores. `separated` means the interval excludes 0 and McNemar, where it
   applies, has p < 1 - confidence.
3. Each arm's probability of being best: its share of the bootstrap replicates in which its
   mean is the highest (ties split), summing to 1 over the arms.
4. The recommendation (`recommended`, `claim`): the cheapest arm cheaper than the best that is
   shown NOT WORSE than the best by more than `tolerance` (non-inferiority: the one-sided
   `confidence` lower bound of arm - best is above -tolerance) -> "cheaper_non_inferior";
   else the best observed arm -> "best_separated" when it is separated from every other arm
   and its probability of being best is at least `confidence`, "best_not_separated"
   otherwise, with the arms it cannot be told from in `contenders`; "only_arm" for one arm.
   Each comparison also carries the rows that would separate the two at the observed
   difference (`rows_to_separate`) and that would show non-inferiority
   (`rows_for_non_inferiority`): normal-approximation sample sizes for a paired difference at
   alpha = 1 - confidence and `power`, from the observed per-row difference spread (rows
   averaged over seeds first, so seed noise is left out); estimates.
5. `Verdict.sentence()`: the verdict in plain English, which says "better" only of separated
   comparisons and says so when arms cannot be told apart; `Verdict.to_json()`: every number.

Comparisons are not corrected for multiplicity: "best" is claimed only when the best separates
from each other arm (an intersection-union test, which needs no correction), and the
non-inferiority tests run in order of cost, the first to pass is taken.

The closed-form pieces are public too: `wilson_interval(successes, n, confidence)`,
`mcnemar_exact(first, second) -> McNemar(b, c, p)`, `mcnemar_p(b, c)`,
`rows_to_separate(diff, sd, alpha, power)`, `rows_for_noninferiority(diff, sd, tolerance, alpha,
power)`. `bench/verdict_power.py` measures the false-separation rate (A/A) and the power
(planted effects) of this verdict.
"""

from .core import ArmScores, ArmVerdict, Claim, Comparison, Verdict, verdict
from .stats import McNemar, mcnemar_exact, mcnemar_p, rows_for_noninferiority, rows_to_separate, wilson_interval

__all__ = ["ArmScores", "ArmVerdict", "Claim", "Comparison", "McNemar", "Verdict", "mcnemar_exact", "mcnemar_p",
           "rows_for_noninferiority", "rows_to_separate", "verdict", "wilson_interval"]
