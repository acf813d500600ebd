"""The ladder's recommendation as a claim the test rows support (tailor.decide over
tailor.verdict): constructed per-row predictions where the answer is known, and arms fitted with
several seeds on tiny-test."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import write_tickets
from tailor.config import experiment_from_dict
from tailor.decide import recommend, row_scores
from tailor.evaluate import Prediction
from tailor.results import ArmResult, Cost

ROWS = 300


def _preds(correct: list[bool]) -> list[Prediction]:
    return [Prediction(f"r{i}", "yes" if ok else "no", "yes", 10, 1, 0.0) for i, ok in enumerate(correct)]


def _arm(name: str, method: str, month: float) -> ArmResult:
    return ArmResult(name=name, method=method, metrics={"accuracy": 0.0},
                     cost=Cost(first_month_cost=month, prompt_tokens_per_request=100, completion_tokens_per_request=2))


def _rows(p: float, seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < p for _ in range(ROWS)]


def _exp(tolerance: float = 0.02):
    return experiment_from_dict({"arms": ["zero-shot"], "tolerance": tolerance})


def test_two_close_arms_are_not_called_different_and_the_sentence_says_so():
    zs, icl = _rows(0.40, 1), _rows(0.75, 2)
    lora = list(icl)
    for i in range(0, 9):   # lora right on 3 more rows than icl: 0.01 apart on 300 rows
        lora[i * 30] = True
    arms = [_arm("zero-shot", "zero-shot", 1.0), _arm("icl", "icl", 5.0), _arm("lora", "lora", 2.0)]
    preds = {"zero-shot": [_preds(zs)], "icl": [_preds(icl)], "lora": [_preds(lora)]}
    rec = recommend(arms, preds, "classify", "accuracy", _exp())
    by = {a.name: a for a in arms}
    assert rec.best_arm == "lora" and rec.arm == "lora"
    assert rec.claim == "best_not_separated" and not rec.confident
    assert "better" not in rec.text.split(".")[0] or "cannot" in rec.text
    assert by["zero-shot"].interval[1] < by["icl"].interval[0]            # 0.40 vs 0.75: separated
    assert abs(sum(a.p_best for a in arms) - 1) < 1e-9 and by["zero-shot"].p_best < 0.01
    assert rec.verdict["versus_baseline"] and rec.verdict["rows"] == ROWS


def test_a_cheaper_arm_shown_not_worse_than_the_best_is_recommended():
    best = _rows(0.70, 3)
    cheap = list(best)
    cheap[0] = not cheap[0]   # one row apart
    arms = [_arm("icl", "icl", 5.0), _arm("lora", "lora", 1.0)]
    rec = recommend(arms, {"icl": [_preds(best if best[0] else cheap)], "lora": [_preds(cheap if best[0] else best)]},
                    "classify", "accuracy", _exp(tolerance=0.05))
    assert rec.best_arm == "icl" and rec.arm == "lora" and rec.claim == "cheaper_non_inferior" and rec.confident


def test_row_scores_average_to_the_metric():
    preds = [Prediction("a", "the cat sat", "the cat sat down", 1, 1, 0.0), Prediction("b", "dog", "a cat", 1, 1, 0.0)]
    from tailor.evaluate import rouge
    assert sum(row_scores("generate", preds)) / 2 == rouge([p.prediction for p in preds],
                                                          [p.target for p in preds])["rougeL"]


def test_an_arm_with_seeds_fits_each_and_the_verdict_covers_them(tmp_path):
    from tailor.ladder import run_ladder
    task = write_tickets(tmp_path / "tickets.jsonl", 60)
    exp = experiment_from_dict({
        "model": "tiny-test", "dtype": "fp32", "task": str(task), "curate": False, "report": False,
        "forgetting": False, "cache": False, "latency_requests": 0, "runs_dir": str(tmp_path / "runs"),
        "arms": ["zero-shot", {"method": "lora", "seeds": 3, "steps": 2, "batch_size": 4, "precision": "fp32",
                                "eval_every": 0}]}, "exp.yaml")
    result = run_ladder(exp, progress=False)
    lora = next(a for a in result.arms if a.name == "lora")
    assert [r.seed for r in lora.seed_runs] == [1, 2] and len(lora.seed_means) == 3
    assert all(Path(r.arm_dir).name == f"lora.seed{k}" for k, r in enumerate(lora.seed_runs, 1))
    assert lora.seed_means[0] == lora.metrics["accuracy"]
    saved = json.loads((Path(result.run_dir) / "results.json").read_text())
    v = saved["recommendation"]["verdict"]
    assert next(a for a in v["arms"] if a["name"] == "lora")["seeds"] == 3
    assert saved["arms"][1]["interval"][0] <= saved["arms"][1]["interval"][1]


def test_seeds_on_a_deterministic_arm_are_refused_in_one_line():
    import pytest

    from tailor.errors import DataError
    with pytest.raises(DataError, match=r"arms\[0\].seeds.*no seed to vary"):
        experiment_from_dict({"arms": [{"method": "zero-shot", "seeds": 3}]}, "exp.yaml")
    with pytest.raises(DataError, match=r"arms\[0\].seeds.*whole number"):
        experiment_from_dict({"arms": [{"method": "lora", "seeds": 0}]}, "exp.yaml")


def test_the_report_shows_how_sure_the_recommendation_is(tmp_path):
    from tailor.report import write_report
    from test_report import realistic_results
    results = realistic_results()
    ok = [a for a in results.arms if a.ok]
    rates = {"zero_shot": 0.40, "few_shot": 0.57, "icl_similar": 0.66, "lora": 0.73}
    preds = {a.name: [_preds(_rows(rates[a.name], i))] for i, a in enumerate(ok)}
    results.recommendation = recommend(results.arms, preds, "classify", "accuracy", _exp())
    html = write_report(results, tmp_path).read_text(encoding="utf-8")
    section = html[html.index('id="verdict"'):html.index('id="quality-cost"')]
    assert 'href="#verdict"' in html and "chance of being best" in section
    assert section.count("<tr><td>") >= len(ok) + (len(ok) - 1)   # every arm, and every arm against the best
    assert "zero_shot − lora" in section and "<svg" in section and "McNemar" in section
    lora = next(a for a in results.arms if a.name == "lora")
    table = html[html.index('id="comparison"'):html.index('id="verdict"')]
    assert f"{lora.interval[0]:.3f}–{lora.interval[1]:.3f}" in table


def test_break_even_volumes_match_the_arithmetic_and_the_report_plots_them(tmp_path):
    from tailor.breakeven import break_even, sentence
    from tailor.report import write_report
    from test_report import realistic_results
    lora = ArmResult(name="lora", method="lora", cost=Cost(train_cost=1.0, cost_per_1k_requests=0.01))
    icl = ArmResult(name="icl", method="icl", cost=Cost(cost_per_1k_requests=0.05))
    zs = ArmResult(name="zero-shot", method="zero-shot", cost=Cost(cost_per_1k_requests=0.008))
    rows = break_even([lora, icl, zs], 100_000)
    by = {r.prompt_arm: r for r in rows}
    # 1.0 $ over 6 months against 0.04 $ saved per 1k requests: 1/6 / 0.00004 = 4,166.7 requests a month
    assert by["icl"].requests_per_month[6] == 1.0 / 6 / 0.00004 and by["icl"].requests_per_month[3] == 1.0 / 3 / 0.00004
    assert by["icl"].cheaper_now and by["zero-shot"].requests_per_month[6] is None   # zero-shot is cheaper per request
    text = sentence(rows, 100_000)
    assert "lora becomes cheaper than icl above 4,167 requests a month" in text and "never becomes cheaper than zero-shot" in text
    results = realistic_results()
    for a in results.arms:
        if a.name == "lora":
            a.cost.train_cost = 0.5
    results.break_even = break_even(results.arms, results.experiment.requests_per_month)
    html = write_report(results, tmp_path).read_text(encoding="utf-8")
    start = html.index('id="break-even"')
    section = html[start:html.index("</section>", start)]
    assert "<polyline" in section and section.count("<tr><td>lora</td>") == 3   # against each prompting arm


def test_a_saturating_curve_is_recovered_from_its_points():
    from tailor.curves import fit_curve
    from tailor.results import CurvePoint
    a, b, c = 0.8, 2.0, 0.5
    points = [CurvePoint(rows=n, metric=a - b * n ** -c) for n in (80, 160, 320, 640)]
    curve = fit_curve(points)
    assert abs(curve.fit["a"] - a) < 0.01 and abs(curve.fit["c"] - c) < 0.02
    assert abs(curve.predicted_at_double - (a - b * 1280 ** -c)) < 0.002
    falling = [CurvePoint(rows=n, metric=0.9 - n / 1000) for n in (80, 160, 320)]
    assert fit_curve(falling).fit is None   # more rows hurting is no learning curve: no fit, said so


def test_a_learning_curve_refits_on_fewer_rows_and_the_report_plots_it(tmp_path):
    from tailor.ladder import run_ladder
    from tailor.report import write_report
    task = write_tickets(tmp_path / "tickets.jsonl", 80)
    exp = experiment_from_dict({
        "model": "tiny-test", "dtype": "fp32", "task": str(task), "curate": False, "report": False,
        "forgetting": False, "cache": False, "latency_requests": 0, "runs_dir": str(tmp_path / "runs"),
        "learning_curve": {"arms": ["lora"], "fractions": [0.25, 0.5]},
        "arms": ["zero-shot", {"method": "lora", "steps": 2, "batch_size": 4, "precision": "fp32", "eval_every": 0}]},
        "exp.yaml")
    result = run_ladder(exp, progress=False)
    curve = next(a for a in result.arms if a.name == "lora").learning_curve
    assert [p.rows for p in curve.points] == [16, 32, 64]   # 64 train rows, a quarter and a half of them
    assert all(p.lo <= p.metric <= p.hi for p in curve.points)
    assert (Path(result.run_dir) / "arms" / "lora.rows16" / "recipe.json").is_file()
    html = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert 'id="curves"' in html and "lora: accuracy" in html


def test_a_learning_curve_on_an_arm_that_cannot_take_fewer_rows_is_refused():
    import pytest

    from tailor.errors import DataError
    with pytest.raises(DataError, match=r"learning_curve.arms\[0\].*does not train on a number"):
        experiment_from_dict({"arms": ["zero-shot"], "learning_curve": {"arms": ["zero-shot"]}}, "exp.yaml")
    with pytest.raises(DataError, match=r"learning_curve.arms\[0\].*not an arm"):
        experiment_from_dict({"arms": ["zero-shot"], "learning_curve": {"arms": ["lora"]}}, "exp.yaml")


def test_the_report_shows_the_label_prior_a_calibrated_arm_divided_out(tmp_path):
    from tailor.report import write_report
    from test_report import realistic_results
    results = realistic_results()
    few = next(a for a in results.arms if a.name == "few_shot")
    few.calibration = {"method": "contextual", "rows": 300, "changed": 41,
                       "prior": {"negative": 0.7, "neutral": 0.1, "positive": 0.2},
                       "shares_before": {"negative": 0.8, "neutral": 0.05, "positive": 0.15},
                       "shares_after": {"negative": 0.4, "neutral": 0.3, "positive": 0.3}}
    html = write_report(results, tmp_path).read_text(encoding="utf-8")
    start = html.index('id="calibration"')
    section = html[start:html.index("</section>", start)]
    assert "0.70 / 0.10 / 0.20" in section and "0.80 / 0.05 / 0.15" in section and "0.40 / 0.30 / 0.30" in section
    assert "0.33 / 0.33 / 0.33" in section   # gold shares from few_shot's confusion rows (100 each)
    assert 'href="#calibration"' in html and ">41<" in section


def test_the_verdict_curves_break_even_and_calibration_sections_render_in_chromium(tmp_path):
    import pytest

    from tailor.breakeven import break_even
    from tailor.curves import fit_curve
    from tailor.report import find_chromium, render, write_report
    from tailor.results import CurvePoint
    from test_report import realistic_results
    if find_chromium() is None:
        pytest.skip("no Chromium binary installed")
    results = realistic_results()
    ok = [a for a in results.arms if a.ok]
    rates = {"zero_shot": 0.40, "few_shot": 0.57, "icl_similar": 0.66, "lora": 0.73}
    preds = {a.name: [_preds(_rows(rates[a.name], i))] for i, a in enumerate(ok)}
    results.recommendation = recommend(results.arms, preds, "classify", "accuracy", _exp())
    lora = next(a for a in ok if a.name == "lora")
    lora.cost.train_cost = 0.5
    lora.learning_curve = fit_curve([CurvePoint(rows=n, metric=0.8 - 2 * n ** -0.5, lo=0.7, hi=0.9)
                                     for n in (80, 160, 320, 640)])
    ok[1].calibration = {"method": "contextual", "rows": 300, "changed": 4, "prior": {"negative": 0.5},
                         "shares_before": {"negative": 0.6}, "shares_after": {"negative": 0.4}}
    results.break_even = break_even(results.arms, results.experiment.requests_per_month)
    page = render(write_report(results, tmp_path), tmp_path / "report.png", width=1280)
    assert page.errors == []
    for anchor in ("verdict", "curves", "break-even", "calibration"):
        assert f'id="{anchor}"' in page.dom
