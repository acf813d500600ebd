"""The statistical verdict (tailor.verdict): intervals, paired tests, probability of being best,
the non-inferiority rule and the sentence that must not claim more than the intervals show."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tailor.errors import TailorError
from tailor.verdict import (
    ArmScores,
    mcnemar_exact,
    mcnemar_p,
    rows_for_noninferiority,
    rows_to_separate,
    verdict,
    wilson_interval,
)


def test_wilson_matches_hand_computation_and_published_values():
    # 8 of 10 by hand: p = 0.8, z = 1.959964, z^2 = 3.841459
    # centre = (0.8 + 3.841459/20) / (1 + 3.841459/10) = 0.9920729 / 1.3841459 = 0.7167402
    # half = 1.959964 / 1.3841459 * sqrt(0.016 + 3.841459/400) = 1.4160097 * 0.1600114 = 0.2265777
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4901625, abs=2e-6) and hi == pytest.approx(0.9433179, abs=2e-6)
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score interval)
    for (x, n), (want_lo, want_hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                                       (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        lo, hi = wilson_interval(x, n)
        assert round(lo, 4) == want_lo and round(hi, 4) == want_hi, (x, n, lo, hi)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(0, 20)[0] == 0.0


def test_mcnemar_is_the_two_sided_binomial_tail_of_the_discordant_rows():
    # b=1, c=9: P(X <= 1 | m=10) = (1 + 10) / 1024, doubled
    assert mcnemar_p(1, 9) == pytest.approx(22 / 1024, rel=1e-12)
    # b=3, c=12: (1 + 15 + 105 + 455) / 32768, doubled
    assert mcnemar_p(12, 3) == pytest.approx(2 * 576 / 32768, rel=1e-12)
    assert mcnemar_p(5, 5) == 1.0 and mcnemar_p(0, 0) == 1.0
    # beyond the exact-sum limit (log-space terms): against an exact rational sum
    exact = Fraction(2 * sum(math.comb(2500, i) for i in range(1201)), 2 ** 2500)
    assert mcnemar_p(1200, 1300) == pytest.approx(float(exact), rel=1e-9)
    # the counts come from the discordant rows only
    first = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    second = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    t = mcnemar_exact(first, second)
    assert (t.b, t.c) == (3, 1) and t.p == pytest.approx(2 * 5 / 16)


def test_rows_to_separate_is_the_paired_normal_sample_size():
    # ((1.959964 + 0.841621) * 0.3 / 0.012)^2 = 70.0396^2 = 4905.5 -> 4906
    assert rows_to_separate(0.012, 0.3) == 4906
    assert rows_to_separate(-0.012, 0.3) == 4906
    assert rows_to_separate(0.0, 0.3) is None
    # one-sided: ((1.644854 + 0.841621) * 0.3 / (−0.005 + 0.02))^2 = 49.7295^2 = 2473.0 -> 2474
    assert rows_for_noninferiority(-0.005, 0.3, 0.02) == 2474
    assert rows_for_noninferiority(-0.03, 0.3, 0.02) is None


def test_paired_bootstrap_resamples_rows_jointly():
    """A pair that differs by exactly 0.05 on every row: every replicate's difference is 0.05,
    so the interval is [0.05, 0.05]; resampling the arms' rows separately would spread it by
    the rows' own spread (sd 0.2 / sqrt(200) ~ 0.014 per arm)."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, 200)
    v = verdict([ArmScores("a", a, 1.0), ArmScores("b", a + 0.05, 2.0)], metric="rougeL", tolerance=0.02)
    c = v.comparison("a", "b")
    assert c.diff == pytest.approx(-0.05) and c.lo == pytest.approx(-0.05) and c.hi == pytest.approx(-0.05)
    assert c.separated and v.claim == "best_separated" and v.best == "b"


def test_paired_bootstrap_interval_covers_a_known_difference():
    """b = a + 0.05 + noise on 200 rows: over 200 simulated test sets the 95% paired interval
    covers the true 0.05 about 95% of the time, and is far narrower than the rows' own spread
    would give two independent samples."""
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    for s in range(200):
        a = rng.uniform(0, 1, 200)
        b = a + 0.05 + rng.normal(0, 0.1, 200)
        c = verdict([ArmScores("a", a, 1), ArmScores("b", b, 2)], metric="score", tolerance=0.0,
                    replicates=1000, seed=s).comparison("a", "b")
        covered += c.lo <= -0.05 <= c.hi
        widths.append(c.hi - c.lo)
    assert 0.90 <= covered / 200 <= 0.99, covered
    unpaired = 2 * 1.96 * math.sqrt(2 * (1 / 12) / 200)   # two independent uniform(0,1) means
    assert np.mean(widths) < 0.5 * unpaired


def test_probability_best_sums_to_one_and_splits_ties():
    rng = np.random.default_rng(2)
    same = (rng.random(150) < 0.6).astype(float)
    arms = [ArmScores("a", same, 1), ArmScores("twin", same.copy(), 1),
            ArmScores("c", (rng.random(150) < 0.6).astype(float), 1),
            ArmScores("weak", (rng.random(150) < 0.3).astype(float), 1)]
    v = verdict(arms, metric="accuracy", tolerance=0.02)
    p = {a.name: a.p_best for a in v.arms}
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-12)
    assert p["a"] == pytest.approx(p["twin"], abs=1e-12) and p["a"] > 0.1   # identical arms share each replicate
    assert p["weak"] < 0.01


def test_cheap_arm_clearly_within_tolerance_is_recommended():
    rng = np.random.default_rng(3)
    best = rng.uniform(0.2, 0.8, 400)
    cheap = best - 0.005 + rng.normal(0, 0.02, 400)   # 0.005 worse, tightly paired
    v = verdict([ArmScores("lora", best, 5.0), ArmScores("icl", cheap, 1.0)], metric="rougeL", tolerance=0.02)
    c = v.comparison("icl", "lora")
    assert c.non_inferior and c.lower_one_sided > -0.02
    assert v.recommended == "icl" and v.claim == "cheaper_non_inferior"
    assert "icl is recommended" in v.sentence() and "at most 0.02 worse" in v.sentence()


def test_cheap_arm_that_may_be_much_worse_is_not_recommended_and_the_sentence_says_why():
    rng = np.random.default_rng(4)
    best = (rng.random(200) < 0.70).astype(float)
    cheap = (rng.random(200) < 0.68).astype(float)   # independent rows: the interval is about +-0.09
    v = verdict([ArmScores("lora", best, 5.0), ArmScores("icl", cheap, 1.0)], metric="accuracy", tolerance=0.02)
    assert v.best == "lora" and v.contenders == ("icl",)
    c = v.comparison("icl", "lora")
    assert c.lo < 0 < c.hi and c.lower_one_sided < -0.02 and not c.non_inferior
    assert v.recommended == "lora" and v.claim == "best_not_separated"
    text = v.sentence()
    assert "lora and icl cannot be told apart on these 200 rows" in text and "rows would separate" in text
    assert "no cheaper arm is shown to be within 0.02 of it (closest: icl" in text
    assert "better" not in text


def test_sentence_never_says_better_when_every_interval_straddles_zero():
    """A/A pairs of 0/1 scores: whenever no comparison separates, the sentence holds no
    "better"/"worse than" and the claim is not "best_separated"; when one does, it says better."""
    rng = np.random.default_rng(5)
    said_better = 0
    for s in range(40):
        arms = [ArmScores(name, (rng.random(120) < 0.6).astype(float), cost) for name, cost in
                (("zero-shot", 0.1), ("icl", 0.5), ("lora", 2.0))]
        v = verdict(arms, metric="accuracy", tolerance=0.02, baseline="zero-shot", replicates=500, seed=s)
        every = v.versus_best + v.versus_baseline
        text = v.sentence()
        if not any(c.separated for c in every):
            assert "better" not in text and v.claim != "best_separated", text
        else:
            said_better += "better" in text
        for c in every:
            if c.lo <= 0 <= c.hi:
                assert not c.separated
    strong = (rng.random(120) < 0.95).astype(float)
    v = verdict([ArmScores("zero-shot", (rng.random(120) < 0.4).astype(float), 0.1), ArmScores("lora", strong, 2.0)],
                metric="accuracy", tolerance=0.02, baseline="zero-shot")
    assert v.claim == "best_separated" and "lora is better than every other arm" in v.sentence()


def test_seeds_carry_their_noise_into_the_intervals_and_their_spread_is_reported():
    rng = np.random.default_rng(6)
    rows = rng.uniform(0.3, 0.5, 300)
    seeds = np.stack([rows + 0.1, rows + 0.2, rows + 0.3])   # seed means 0.1 apart, rows identical
    arms = [ArmScores("full", seeds, 3.0), ArmScores("one", rows + 0.2, 1.0)]
    v = verdict(arms, metric="rougeL", tolerance=0.02)
    arm = v.arm("full")
    base = rows.mean()
    assert arm.interval == "bootstrap-percentile-seeds-t" and arm.seeds == 3
    assert arm.seed_min == pytest.approx(base + 0.1) and arm.seed_max == pytest.approx(base + 0.3)
    assert arm.seed_sd == pytest.approx(0.1)
    # rows alone would give about +-0.007; the seed term's 95% span is 2 * t(2) 4.30 * 0.1 / sqrt(3) = 0.50
    assert arm.hi - arm.lo == pytest.approx(0.50, abs=0.06)
    single = v.arm("one")
    assert single.interval == "bootstrap-percentile" and single.seed_sd is None and single.hi - single.lo < 0.03
    # same mean, but three seeds this spread neither separate the two nor show them within 0.02
    assert v.claim == "best_not_separated" and not v.comparison("one", "full").non_inferior
    # the plain two-level bootstrap never leaves the range of the 3 seed means (the reason it is not the default)
    r = verdict(arms, metric="rougeL", tolerance=0.02, seeds="resample").arm("full")
    assert r.interval == "bootstrap-percentile-seeds-resampled"
    assert base + 0.1 - 0.01 < r.lo and r.hi < base + 0.3 + 0.01 and r.hi - r.lo > 0.1


def test_same_seed_same_verdict_and_bad_input_is_refused_in_one_line():
    rng = np.random.default_rng(7)
    arms = [ArmScores("a", rng.random(50) < 0.5, 1), ArmScores("b", rng.random(50) < 0.5, 2)]
    assert verdict(arms, metric="accuracy", tolerance=0.02, seed=3).to_json() == \
        verdict(arms, metric="accuracy", tolerance=0.02, seed=3).to_json()
    with pytest.raises(TailorError, match="arm 'b' has 49 rows, arm 'a' 50"):
        verdict([arms[0], ArmScores("b", np.zeros(49), 1)], metric="accuracy", tolerance=0.02)
    with pytest.raises(TailorError, match="baseline 'zs' is not one of the arms"):
        verdict(arms, metric="accuracy", tolerance=0.02, baseline="zs")
    with pytest.raises(TailorError, match="1 scores are NaN"):
        verdict([ArmScores("a", [0.1, float("nan"), 0.3], 1)], metric="rougeL", tolerance=0.02)
    with pytest.raises(TailorError, match="appears twice"):
        verdict([arms[0], arms[0]], metric="accuracy", tolerance=0.02)
