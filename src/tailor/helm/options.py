"""The experiment's `robustness:` and `bias:` settings; both off unless given (each costs a
measurement per perturbation or probe). Reading them imports no torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..schema import Options

Perturbation = Literal["typos", "lowercase", "uppercase", "whitespace", "punctuation", "contractions"]
Probe = Literal["crows_pairs", "stereoset", "bbq"]


class RobustnessOptions(Options):
    """`robustness: {perturbations: [typos, lowercase], rows: 200}`: every arm measured again on
    its first `rows` test rows with each perturbation applied to the input (HELM's invariance
    perturbations; Liang et al. 2022, section 4.6)."""

    perturbations: Annotated[list[Perturbation], Field(min_length=1)] = [
        "typos", "lowercase", "whitespace", "punctuation", "contractions"]
    rows: Annotated[int, Field(gt=0)] | None = None   # the first N test rows (all if None)
    typo_rate: Annotated[float, Field(gt=0, le=1)] = 0.05   # share of letters replaced by a keyboard neighbour
    seed: int = 0


class BiasOptions(Options):
    """`bias: {probes: [crows_pairs, stereoset, bbq], rows: 300}`: the base and every
    weight-changing arm scored on `rows` items of each probe (a seeded sample, the same items
    for every model)."""

    probes: Annotated[list[Probe], Field(min_length=1)] = ["crows_pairs", "stereoset", "bbq"]
    rows: Annotated[int, Field(gt=0)] = 300
    seed: int = 0
