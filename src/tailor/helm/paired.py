"""A paired difference with its interval, through the verdict's bootstrap (tailor.verdict): the
same items resampled for both sides in every replicate, so what the two share cancels."""

from __future__ import annotations

import numpy as np

from ..verdict.bootstrap import percentile_interval, row_resampled_means
from ..verdict.stats import mcnemar_exact

REPLICATES = 2000


def paired_delta(before, after, *, confidence: float = 0.95, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """`after` - `before` (per-item scores on the same items, higher is the measured direction):
    the means, their difference, its percentile-bootstrap interval, and McNemar's exact p where
    both are 0/1."""
    x, y = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError(f"paired_delta needs two non-empty vectors of one length, got {x.shape} and {y.shape}")
    means = row_resampled_means(np.stack([x, y], axis=1), replicates, np.random.default_rng(seed))
    lo, hi = percentile_interval(means[:, 1] - means[:, 0], confidence)
    out = {"n": int(len(x)), "before": float(x.mean()), "after": float(y.mean()), "delta": float(y.mean() - x.mean()),
           "ci_low": lo, "ci_high": hi, "separated": bool(lo > 0 or hi < 0)}
    if set(np.unique(x)) <= {0.0, 1.0} and set(np.unique(y)) <= {0.0, 1.0}:
        m = mcnemar_exact(x.astype(int), y.astype(int))
        out["mcnemar_p"] = m.p
        out["separated"] = out["separated"] and m.p < 1 - confidence
    return out
