"""Does the verdict (tailor.verdict) call a difference only when there is one, and find one when
there is? Simulated per-row scores of two arms on the same test rows, many seeds per scenario:

  aa-indep       A/A: two arms, accuracy 0.6 each, rows right or wrong independently per arm
  aa-corr        A/A: the same, but both arms find the same rows easy or hard (a shared latent
                 row difficulty, correlation --rho): what real arms on one test set look like
  aa-seeds-t     A/A: ROUGE-like float scores per row, 3 training seeds per arm (a seed shifts an
                 arm's mean, sd 0.02), the verdict's default seed term (Student t, seeds="t")
  aa-seeds-rs    the same data, the plain two-level bootstrap (seeds and rows resampled)
  planted-indep  arm "dear" right on 0.70 of rows, "cheap" on 0.60, independent per row
  planted-corr   the same 0.60 vs 0.70 with the shared row difficulty (--rho)
  margin-corr    "cheap" exactly --tolerance worse than "dear" (0.58 vs 0.60), correlated: the
                 non-inferiority claim "cheap is within the tolerance" must be made <= 5% of the time
  power-check    0.65 vs 0.70, correlated, on as many rows as the verdict's own sample-size
                 formula says give 80% power at the TRUE difference and spread: is it ~80%?
  ni-check       A/A correlated on as many rows as the formula says show non-inferiority within
                 --tolerance with 80% power: how often is the cheap arm recommended?

"cheap" costs 1, "dear" 2. Per scenario: how often the pair is declared different (paired
interval excludes 0 and, for 0/1 scores, McNemar's exact p < 0.05), how often each test alone
rejects, how often the recommendation claims "best" (a confident preference) or "cheaper and
within the tolerance", how often the sentence contains "better", how often the 95% paired
interval covers the true difference, how often an arm's own interval covers its true mean, and
how often the cheap arm is the recommended one.

Theory for planted-indep: the per-row difference has variance P(discordant) - 0.1^2 = 0.46 - 0.01,
so the standard error on 300 rows is 0.0387, z = 2.58 and a two-sided 5% z-test has power about
0.73 (the exact McNemar test a little less): no level-5% test reaches 90% there; paired tests gain
power only when the arms are correlated, as real arms on one test set are.

Pure numpy, no torch. Bootstrap replicates: --replicates (2,000). Under 2 minutes on 2 cores:
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/verdict_power.py [--seeds 200] [--rows 300] [--rho 0.6]
It prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from statistics import NormalDist

import numpy as np

from tailor.verdict import ArmScores, rows_for_noninferiority, rows_to_separate, verdict

PHI = NormalDist()


def binary_pair(rng, n, p_cheap, p_dear, rho):
    """0/1 scores of two arms on n rows. Row i is right for an arm when
    sqrt(rho) * easiness_i + sqrt(1 - rho) * own noise < the arm's threshold, so each arm's
    accuracy is its p, and rho (0 = independent rows) is the latent correlation between arms."""
    easiness = rng.standard_normal(n)
    out = []
    for p in (p_cheap, p_dear):
        latent = np.sqrt(rho) * easiness + np.sqrt(1 - rho) * rng.standard_normal(n)
        out.append((latent < PHI.inv_cdf(p)).astype(float))
    return out


def float_seeds_pair(rng, n, seeds=3):
    """ROUGE-like float scores of two identically distributed arms, (seeds, rows) each: a row's
    difficulty is shared, each training seed shifts the arm's mean (sd 0.02), each (seed, row)
    has its own noise; clipped to [0, 1]. True mean: the same for both arms (float_true_mean)."""
    difficulty = rng.beta(2, 3, n)
    out = []
    for _ in range(2):
        shift = rng.normal(0, 0.02, (seeds, 1))
        out.append(np.clip(difficulty + shift + rng.normal(0, 0.1, (seeds, n)), 0, 1))
    return out


def float_true_mean(draws=4_000_000, seed=12345):
    """The population mean of one float_seeds_pair score (over rows and seeds), by Monte Carlo."""
    rng = np.random.default_rng(seed)
    return float(np.clip(rng.beta(2, 3, draws) + rng.normal(0, 0.02, draws) + rng.normal(0, 0.1, draws), 0, 1).mean())


def true_moments(p_cheap, p_dear, rho, draws=2_000_000, seed=12345):
    """The population's mean and per-row sd of (dear - cheap) for binary_pair, by Monte Carlo."""
    cheap, dear = binary_pair(np.random.default_rng(seed), draws, p_cheap, p_dear, rho)
    d = dear - cheap
    return float(d.mean()), float(d.std())


def run(index, name, make, seeds, args, true_diff, true_means, rows, seed_level="t"):
    """Verdicts on `seeds` simulated test sets; counts of what they declared."""
    c = dict(separated=0, interval_excl0=0, mcnemar_rej=0, claim_best=0, claim_best_dear=0, claim_cheap_ni=0,
             says_better=0, diff_covered=0, arm_covered=0, p_best_dear=0.0, recommended_cheap=0)
    needed = []
    for s in range(seeds):
        rng = np.random.default_rng(1_000_003 * index + s)   # aa-seeds-t and -rs share index, so data
        cheap, dear = make(rng)
        v = verdict([ArmScores("cheap", cheap, 1.0), ArmScores("dear", dear, 2.0)], metric="score",
                    tolerance=args.tolerance, replicates=args.replicates, seed=s, seeds=seed_level)
        cmp = v.versus_best[0]
        sign = 1 if cmp.arm == "cheap" else -1          # cmp is (other - best); make it cheap - dear
        lo, hi = sorted((sign * cmp.lo, sign * cmp.hi))
        c["separated"] += cmp.separated
        c["interval_excl0"] += cmp.lo > 0 or cmp.hi < 0
        c["mcnemar_rej"] += cmp.mcnemar is not None and cmp.mcnemar.p < 0.05
        c["claim_best"] += v.claim == "best_separated"
        c["claim_best_dear"] += v.claim == "best_separated" and v.best == "dear"
        c["claim_cheap_ni"] += v.claim == "cheaper_non_inferior"
        c["says_better"] += "better" in v.sentence()
        c["diff_covered"] += lo <= -true_diff <= hi
        a = v.arm("cheap")
        c["arm_covered"] += a.lo <= true_means[0] <= a.hi
        c["p_best_dear"] += v.arm("dear").p_best
        c["recommended_cheap"] += v.recommended == "cheap"
        if cmp.rows_to_separate is not None:
            needed.append(cmp.rows_to_separate)
    out = {k: (v / seeds) for k, v in c.items()}
    out.update(scenario=name, rows=rows, seeds=seeds, true_diff=true_diff,
               median_rows_to_separate=int(np.median(needed)) if needed else None,
               interval=v.arm("cheap").interval)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--rho", type=float, default=0.6)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--replicates", type=int, default=2000)
    args = ap.parse_args()
    n, rho = args.rows, args.rho
    start = time.time()

    diff_pc, sd_pc = true_moments(0.65, 0.70, rho)
    n_power = rows_to_separate(diff_pc, sd_pc)
    _, sd_aa = true_moments(0.6, 0.6, rho)
    n_ni = rows_for_noninferiority(0.0, sd_aa, args.tolerance)
    _, sd_planted = true_moments(0.6, 0.7, rho)
    mu = float_true_mean()
    # (index for the data's random stream, name, data, true dear - cheap, true means, rows, seed level)
    scenarios = [
        (0, "aa-indep", lambda r: binary_pair(r, n, 0.6, 0.6, 0.0), 0.0, (0.6, 0.6), n, "t"),
        (1, "aa-corr", lambda r: binary_pair(r, n, 0.6, 0.6, rho), 0.0, (0.6, 0.6), n, "t"),
        (2, "aa-seeds-t", lambda r: float_seeds_pair(r, n), 0.0, (mu, mu), n, "t"),
        (2, "aa-seeds-rs", lambda r: float_seeds_pair(r, n), 0.0, (mu, mu), n, "resample"),
        (3, "planted-indep", lambda r: binary_pair(r, n, 0.6, 0.7, 0.0), 0.1, (0.6, 0.7), n, "t"),
        (4, "planted-corr", lambda r: binary_pair(r, n, 0.6, 0.7, rho), 0.1, (0.6, 0.7), n, "t"),
        (5, "margin-corr", lambda r: binary_pair(r, n, 0.6 - args.tolerance, 0.6, rho), args.tolerance,
         (0.6 - args.tolerance, 0.6), n, "t"),
        (6, "power-check", lambda r: binary_pair(r, n_power, 0.65, 0.70, rho), 0.05, (0.65, 0.70), n_power, "t"),
        (7, "ni-check", lambda r: binary_pair(r, n_ni, 0.6, 0.6, rho), 0.0, (0.6, 0.6), n_ni, "t"),
    ]
    results = [run(i, name, make, args.seeds, args, d, means, rows, level)
               for i, name, make, d, means, rows, level in scenarios]
    elapsed = time.time() - start

    cols = [("scenario", 13, "s"), ("rows", 5, "d"), ("separated", 9, ".3f"), ("CI excl 0", 9, ".3f"),
            ("McNemar", 8, ".3f"), ("claim best", 10, ".3f"), ("claim cheap~", 12, ".3f"), ("'better'", 8, ".3f"),
            ("diff cover", 10, ".3f"), ("arm cover", 9, ".3f"), ("P(dear best)", 12, ".3f"), ("rec cheap", 9, ".3f"),
            ("rows needed", 11, "")]
    keys = ["scenario", "rows", "separated", "interval_excl0", "mcnemar_rej", "claim_best", "claim_cheap_ni",
            "says_better", "diff_covered", "arm_covered", "p_best_dear", "recommended_cheap", "median_rows_to_separate"]
    print(f"verdict_power: {args.seeds} seeds per scenario, {args.replicates} bootstrap replicates, rho {rho}, "
          f"tolerance {args.tolerance}")
    print(f"true per-row sd of the difference: planted {sd_planted:.4f} (independent rows: "
          f"{np.sqrt(0.46 - 0.01):.4f}); power-check {sd_pc:.4f} at {diff_pc:.4f} -> {n_power} rows; "
          f"ni-check {sd_aa:.4f} -> {n_ni} rows")
    print("  ".join(f"{h:>{w}}" for h, w, _ in cols))
    for r in results:
        print("  ".join(f"{('-' if r[k] is None else format(r[k], f)):>{w}}" for (_, w, f), k in zip(cols, keys)))
    print(f"interval per arm: {', '.join(r['scenario'] + ' ' + r['interval'] for r in results[:4])}; {elapsed:.1f} s")
    r4 = lambda x: round(x, 4) if isinstance(x, float) else x
    print(json.dumps({"seeds": args.seeds, "rows": n, "rho": rho, "tolerance": args.tolerance,
                      "replicates": args.replicates, "power_check_rows": n_power, "ni_check_rows": n_ni,
                      "sd_row_diff_planted_corr": round(sd_planted, 4), "wall_s": round(elapsed, 1),
                      "scenarios": [{k: r4(v) for k, v in r.items()} for r in results]}))


if __name__ == "__main__":
    main()
