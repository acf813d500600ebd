"""Closed-form pieces of the verdict: Wilson's interval, McNemar's exact test, and the
normal-approximation sample sizes. Standard library only (no scipy: it is not a declared
dependency of Tailor, only something another package happens to pull in)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()
EXACT_LIMIT = 1000   # discordant pairs up to which McNemar's tail is summed in exact integers


def z_quantile(q: float) -> float:
    """The standard normal quantile (inverse CDF) at q."""
    return _NORMAL.inv_cdf(q)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for one proportion (Wilson 1927; recommended over the Wald
    interval by Newcombe 1998 and Brown, Cai & DasGupta 2001): it stays inside [0, 1] and keeps
    close to its nominal coverage at small n and near 0 or 1."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = z_quantile(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes the bound is exactly 0 or 1; the formula's rounding can leave 1e-17
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired 0/1 scores (McNemar 1947): only discordant rows count.
    b: rows the first arm got right and the second wrong; c: the reverse. Under "no
    difference" b ~ Binomial(b + c, 1/2); p is the two-sided exact p-value."""
    b: int
    c: int
    p: float


def binomial_half_tail(k: int, m: int) -> float:
    """P(X <= k) for X ~ Binomial(m, 1/2). Exact integer sums up to EXACT_LIMIT trials; beyond,
    the terms in log space (lgamma) summed from the largest, which keeps ~1e-12 relative error."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    if m <= EXACT_LIMIT:
        return sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m   # int / int: correctly rounded
    logs = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def mcnemar_exact(first, second) -> McNemar:
    """McNemar's exact test between two 0/1 score vectors on the same rows."""
    a, s = np.asarray(first), np.asarray(second)
    if a.shape != s.shape or a.ndim != 1:
        raise ValueError(f"mcnemar_exact needs two 1-D vectors of one length, got {a.shape} and {s.shape}")
    b = int(np.sum((a == 1) & (s == 0)))
    c = int(np.sum((a == 0) & (s == 1)))
    return McNemar(b=b, c=c, p=mcnemar_p(b, c))


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact p-value from the discordant counts: twice the smaller binomial tail, at most 1."""
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2 * binomial_half_tail(min(b, c), m))


def rows_to_separate(diff: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Rows a paired comparison needs to tell a true mean difference `diff` from 0 with the given
    power by a two-sided test at `alpha`, when per-row differences have standard deviation `sd`:
    n = ((z_{1-alpha/2} + z_power) * sd / diff)^2 (the normal approximation; an estimate, taking
    the observed difference and spread as the truth). None when diff is 0: no n separates them."""
    if diff == 0 or not math.isfinite(diff):
        return None
    return max(2, math.ceil(((z_quantile(1 - alpha / 2) + z_quantile(power)) * sd / abs(diff)) ** 2))


def rows_for_noninferiority(diff: float, sd: float, tolerance: float, alpha: float = 0.05,
                            power: float = 0.8) -> int | None:
    """Rows a one-sided non-inferiority test at `alpha` needs to show (arm - best) > -tolerance
    with the given power when the true difference is `diff`: n = ((z_{1-alpha} + z_power) * sd /
    (diff + tolerance))^2 (normal approximation). None when diff <= -tolerance: no n shows it."""
    margin = diff + tolerance
    if margin <= 0 or not math.isfinite(margin):
        return None
    return max(2, math.ceil(((z_quantile(1 - alpha) + z_quantile(power)) * sd / margin) ** 2))
