"""The bootstrap replicates every interval, paired difference and probability of being best is
read from. One row draw per replicate is shared by all arms, so every difference is paired: a
replicate resamples the test rows jointly for both arms.

An arm fitted with several seeds has a second source of noise, the seed, and two ways to carry it
into the replicates (`seeds=`):

- "t" (the default): rows resampled on the arm's per-row scores averaged over its seeds, plus a
  seed term drawn from a Student t with k - 1 degrees of freedom scaled by the standard error of
  the k seed means (s / sqrt(k)), independently per arm. With few seeds the t's wide tails are
  what the few seeds know about seed variance (a t-test's logic); the seed means' spread also
  holds some row noise already counted by the rows, so this errs on the wide side.
- "resample": a two-level ("pigeonhole") bootstrap over the crossed seeds x rows table (Owen
  2007, Annals of Applied Statistics 1(2)): rows drawn as above and each arm's k seeds drawn with
  replacement. With 3 seeds a resampled mean never leaves the range of the 3 seed means, which
  misses the true mean 25% of the time (2 / 2^3) when the seed effect dominates:
  bench/verdict_power.py (3 seeds, seed sd 0.02, 300 rows, 200 simulations) measures it declaring
  identical arms different 10.5% of the time at a nominal 5%, against 2.0% with "t". Kept for
  comparison and for many seeds.

Seeds are separate fits, never paired across arms: seed 1 of one arm and seed 1 of another share
nothing. Vectorised: a replicate's row draw is kept as counts per row, so all arms' means under
all replicates are one matrix product (counts @ scores.T), in chunks that bound memory."""

from __future__ import annotations

from typing import Literal

import numpy as np

SeedLevel = Literal["t", "resample"]
CHUNK_CELLS = 4_000_000   # replicate-rows cells of counts held at once (32 MB of int64)


def row_resampled_means(table: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Means of each column of `table` (rows, columns) over the same n rows drawn with
    replacement in each replicate: shape (replicates, columns)."""
    n = table.shape[0]
    out = np.empty((replicates, table.shape[1]))
    chunk = max(1, CHUNK_CELLS // n)
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        draws = rng.integers(0, n, size=(r, n))
        counts = np.bincount((draws + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
        out[start:start + r] = counts @ table / n
    return out


def replicate_means(scores: list[np.ndarray], replicates: int, rng: np.random.Generator,
                    seeds: SeedLevel = "t") -> np.ndarray:
    """Bootstrap means, shape (replicates, arms). `scores[a]` is arm a's (seeds, rows) matrix;
    every arm has the same rows, drawn once per replicate for all arms."""
    if seeds == "t":
        rows = row_resampled_means(np.stack([s.mean(axis=0) for s in scores], axis=1), replicates, rng)
        for a, s in enumerate(scores):
            k = s.shape[0]
            if k > 1:
                se = float(np.std(s.mean(axis=1), ddof=1)) / np.sqrt(k)
                rows[:, a] += se * rng.standard_t(k - 1, size=replicates)
        return rows
    per_seed = row_resampled_means(np.concatenate(scores, axis=0).T, replicates, rng)   # each seed's mean
    out = np.empty((replicates, len(scores)))
    first = 0
    for a, s in enumerate(scores):
        k = s.shape[0]
        block = per_seed[:, first:first + k]
        if k == 1:
            out[:, a] = block[:, 0]
        else:
            draws = rng.integers(0, k, size=(replicates, k))
            weights = np.bincount((draws + k * np.arange(replicates)[:, None]).ravel(),
                                  minlength=replicates * k).reshape(replicates, k)
            out[:, a] = (weights * block).sum(axis=1) / k
        first += k
    return out


def probability_best(means: np.ndarray) -> np.ndarray:
    """Each arm's share of replicates in which its mean is the highest; an arm tied for the top
    with others gets an equal split of that replicate, so the shares sum to 1."""
    top = means.max(axis=1, keepdims=True)
    # equal means can differ in the last bit when summed in a different order
    at_top = means >= top - 1e-12 * np.maximum(1.0, np.abs(top))
    return (at_top / at_top.sum(axis=1, keepdims=True)).mean(axis=0)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13)."""
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)
