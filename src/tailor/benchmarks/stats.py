"""Intervals for accuracy and for differences of accuracy (percentile bootstrap).

A paired bootstrap resamples the SAME items for both results, so the variance that comes from
which items happened to be drawn cancels out: a 2-point drop on 1000 shared items can be real
even when the two separate ±3-point intervals overlap.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_RESAMPLES = 2000


def bootstrap_ci(correct, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes."""
    x = np.asarray(correct, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_bootstrap_delta(base, other, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                           seed: int = 0) -> tuple[float, float, float]:
    """(delta, low, high) of mean(other) - mean(base) over the same items, resampled in pairs."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired results need the same items ({a.size} vs {b.size})")
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    d = b - a
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(1)
    alpha = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def items_for_halfwidth(halfwidth: float, p: float = 0.5, level: float = 0.95) -> int:
    """Items needed for a ±halfwidth interval at accuracy p (normal approximation; the bootstrap
    interval of a mean of 0/1 outcomes is close to it at these sizes). 0.03 at p=0.5 -> 1068."""
    z = {0.9: 1.645, 0.95: 1.96, 0.99: 2.576}.get(level, 1.96)
    return math.ceil((z / halfwidth) ** 2 * p * (1 - p))


def paired_bootstrap_mean_delta(pairs, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                                seed: int = 0) -> tuple[float, float, float]:
    """The mean over benchmarks of each benchmark's delta, with an interval from resampling the
    items of each benchmark separately (stratified), so a large benchmark does not drown a
    small one."""
    if not pairs:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    point = 0.0
    for base, other in pairs:
        d = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
        point += d.mean()
        total += d[rng.integers(0, d.size, size=(resamples, d.size))].mean(1)
    k = len(pairs)
    alpha = (1 - level) / 2
    return point / k, float(np.quantile(total / k, alpha)), float(np.quantile(total / k, 1 - alpha))
