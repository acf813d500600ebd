"""General benchmark suites (from data in installed packages) and forgetting measurement:
`run_suite` scores a model on the suite, `compare` gives base-vs-adapted deltas with paired
intervals and flags significant drops."""

from .loaders import BENCHMARKS, NOT_AVAILABLE, SUITES, load_benchmark
from .suite import compare, run_suite, suite_names

__all__ = ["BENCHMARKS", "NOT_AVAILABLE", "SUITES", "compare", "load_benchmark", "run_suite", "suite_names"]
