"""Model judges (score_model, label_model) on tiny-test through the one prediction path, a judge
checked against people before it is trusted, pairwise judging checked for position bias and
length-controlled, and a grader as every arm's primary metric in a ladder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tailor.errors import TailorError
from tailor.graders import item_of, load_grader
from tailor.graders.agreement import agreement, check_judge, cohen_kappa, judge_agreement, length_controlled, pairwise, spearman
from tailor.graders.model import parse_score
from tailor.task import Example

WORDS = "apple river stone cloud music paper garden window silver tiger ocean candle forest bridge rocket pencil".split()
JUDGE_INPUT = [{"role": "developer", "content": "Is the answer right? Reply yes or no."},
               {"role": "user", "content": "Question: {{ item.input }}\nAnswer: {{ sample.output_text }}"}]


def label_judge(base, passing=("yes",), labels=("yes", "no")):
    return load_grader({"type": "label_model", "name": "right", "model": "tiny-test", "input": JUDGE_INPUT,
                        "labels": list(labels), "passing_labels": list(passing)}).bind(base)


def rows(n=16):
    return [Example(f"r{i}", f"What is {WORDS[i]}?", WORDS[i], meta={"output": " ".join(WORDS[i:i + 1 + i % 4])})
            for i in range(n)]


# ------------------------------------------------------------ statistics by hand (no model)

def test_agreement_statistics_against_hand_computations():
    # kappa: p_o 1/2, p_e 1/2 -> 0; p_o 3/4, p_e 1/2 -> 1/2; perfect -> 1; one label each -> undefined
    assert cohen_kappa(list("aabb"), list("abab")) == 0
    assert cohen_kappa(list("aabb"), list("aaab")) == pytest.approx((0.75 - 0.5) / 0.5)
    assert cohen_kappa(list("abab"), list("abab")) == 1 and math.isnan(cohen_kappa(list("aaa"), list("aaa")))
    # Spearman: ranks 1 2 3 4 vs 1 3 2 4: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)


def test_a_planted_slice_tells_an_agreeing_judge_from_one_that_does_not():
    # stand-in judges (lists of their labels): this test is about the statistics and the threshold
    import random
    rng = random.Random(0)
    human = [rng.choice(["good", "bad"]) for _ in range(80)]
    agrees = [h if rng.random() < 0.9 else ("bad" if h == "good" else "good") for h in human]   # 10% noise
    guesses = [rng.choice(["good", "bad"]) for _ in human]
    a, g = agreement(agrees, human, "kappa"), agreement(guesses, human, "kappa")
    assert a.trusted and a.lo > 0.4 and a.lo <= a.value <= a.hi
    assert not g.trusted and g.lo < 0.4 and g.lo < g.value < g.hi
    assert a.confusion["good"]["good"] + a.confusion["good"].get("bad", 0) == human.count("good")
    scores = [rng.random() for _ in range(40)]
    s = agreement([x + rng.gauss(0, 0.05) for x in scores], scores, "spearman")
    r = agreement([rng.random() for _ in scores], scores, "spearman")
    assert s.trusted and s.lo > 0.8 and not r.trusted
    assert agreement(agrees, human, "kappa", threshold=0.95).trusted is False   # the threshold is an option


def test_position_bias_of_a_judge_that_always_prefers_the_first_answer():
    class First:   # a stand-in pairwise judge: labels[0] means "the answer shown first is better"
        labels = ["1", "2"]

        def label(self, samples, items):
            assert [it["answer_1"] for it in items] == samples
            return ["1"] * len(samples)

    p = pairwise(First(), [{}] * 6, ["a", "bb", "c c c", "d", "e e", "f"], ["x x", "y", "z", "w w w", "v", "u u"])
    assert p.flips == 1.0 and p.first_position == 1.0 and p.win_rate == 0.5 and p.lc_win_rate == pytest.approx(0.5)
    assert p.win_lo == p.win_hi == 0.5   # every pair a tie: no spread to resample

    class Fair:    # prefers the longer answer wherever it is shown: no flips, a length effect
        labels = ["1", "2"]

        def label(self, samples, items):
            return ["1" if len(it["answer_1"]) >= len(it["answer_2"]) else "2" for it in items]

    q = pairwise(Fair(), [{}] * 6, ["a a a", "bb b b", "c", "d d d d", "e", "f f f"], ["x", "y", "z z", "w", "v v", "u"])
    assert q.flips == 0 and q.first_position == 0.5 and q.win_rate == pytest.approx(4 / 6)
    assert 0 <= q.win_lo < 4 / 6 < q.win_hi == 1.0   # wins 1,1,0,1,0,1 resampled: all-wins is a possible draw
    assert q.length_coef > 0 and q.lc_win_rate < q.win_rate   # the length term takes credit from the raw win rate


def test_length_controlled_win_rate_against_a_hand_fit():
    # with no length difference the regression is the intercept alone: the win rate itself
    assert length_controlled([1, 1, 1, 0], [5] * 4, [5] * 4, ridge=0)[0] == pytest.approx(0.75)
    # wins that go with length: the length-neutral rate sits below the raw one
    lc, coef = length_controlled([1, 1, 0, 1, 0, 0], [9, 8, 2, 7, 3, 5], [5] * 6)
    assert coef > 0 and lc < 0.5 + 1e-9


def test_parse_score_of_a_judges_answer():
    assert parse_score('{"result": 0.7, "steps": []}') == 0.7 and parse_score("Score: 8/10") == 8.0
    assert parse_score(" -.5e1 points") == -5.0 and parse_score("no idea") is None


# ------------------------------------------------------------ model judges on tiny-test

def test_label_model_judges_through_the_prompt_builder_and_maps_passing_labels(tiny_base):
    judge = label_judge(tiny_base)
    data = rows(8)
    samples, items = [r.meta["output"] for r in data], [item_of(r) for r in data]
    labels = judge.label(samples, items)
    assert set(labels) <= {"yes", "no"} and len(labels) == 8
    assert judge.grade(samples, items) == [float(x == "yes") for x in labels]
    assert label_judge(tiny_base, passing=("no",)).grade(samples, items) == [float(x == "no") for x in labels]
    prompt = judge.prompts(samples[:1], items[:1])[0]
    assert "Is the answer right? Reply yes or no." in prompt and "Question: What is apple?\nAnswer: apple" in prompt


def test_score_model_reads_a_number_clips_it_and_counts_what_it_cannot_read(tiny_base):
    judge = load_grader({"type": "score_model", "name": "quality", "model": "tiny-test", "range": [0, 10],
                         "sampling_params": {"temperature": 1.0, "max_completions_tokens": 6},
                         "input": [{"role": "user", "content": "Rate 0-10: {{ sample.output_text }}"}]}).bind(tiny_base)
    data = rows(6)
    samples, items = [r.meta["output"] for r in data], [item_of(r) for r in data]
    raw = [p.prediction for p in judge.answers(samples, items)]
    scores = judge.grade(samples, items)
    for text, score in zip(raw, scores):
        got = parse_score(text)
        assert score == (0.0 if got is None else min(max(got, 0), 10))
    assert sum(judge.failures.values()) == sum(parse_score(t) is None or not 0 <= parse_score(t) <= 10 for t in raw)
    assert any("decodes greedily; sampling_params temperature" in n for n in judge.notes())


def test_a_model_judge_is_checked_against_people_before_it_ranks(tiny_base):
    # tiny-test is a random model: its choice between two labels barely depends on the row. With these
    # prompts and labels it gives both labels over the 16 rows (checked below), so kappa is defined.
    data = [Example(f"r{i}", w, w, meta={"output": " ".join(WORDS[i:i + 1 + i % 4])}) for i, w in enumerate(WORDS)]
    labels = ("1", "2")
    judge = load_grader({"type": "label_model", "name": "right", "model": "tiny-test", "labels": list(labels),
                         "passing_labels": ["1"], "input": [
                             {"role": "developer", "content": "Judge the answer."},
                             {"role": "user", "content": "Q: {{ item.input }}\nA: {{ sample.output_text }}"}]}).bind(tiny_base)
    said = judge.label([r.meta["output"] for r in data], [item_of(r) for r in data])
    assert len(set(said)) == 2, "tiny-test gave one label to every row: kappa is undefined"
    agreeing = [Example(r.id, r.input, r.target, meta={**r.meta, "human_label": s}) for r, s in zip(data, said)]
    other = {labels[0]: labels[1], labels[1]: labels[0]}
    disagreeing = [Example(r.id, r.input, r.target, meta={**r.meta, "human_label": other[s]}) for r, s in zip(data, said)]
    ok = check_judge(judge, agreeing)
    assert len(ok) == 1 and ok[0].value == 1 and ok[0].trusted and ok[0].rows == 16
    with pytest.raises(TailorError, match=r"judge 'right' against people on 16 rows: kappa -[0-9.]+ .* falls short, so the "
                                          r"ladder will not rank arms by it .*trust_judge: true"):
        check_judge(judge, disagreeing)
    assert check_judge(judge, disagreeing, trust=True)[0].trusted is False
    with pytest.raises(TailorError, match=r"no row carries human_label .*a judge nobody checked decides nothing"):
        judge_agreement(judge, data)
    assert check_judge(load_grader({"type": "string_check", "name": "s", "input": "a", "reference": "a",
                                    "operation": "eq"}), data) == []   # no judge in it: nothing to check


def test_a_grader_ranks_every_arm_of_a_ladder_with_per_row_intervals(tmp_path, tiny_base):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    from tailor.results import read_results
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "completion": w, "reference_answer": w}) + "\n"
                            for w in WORDS * 2))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "string_check", "name": "says_it", "input": "{{ sample.output_text }}",
                                  "reference": "{{ item.reference_answer }}", "operation": "ilike"}))
    ab = tmp_path / "ab.json"   # a pairwise judge: "1" says the answer shown first is better
    ab.write_text(json.dumps({"type": "label_model", "name": "ab", "model": "tiny-test", "labels": ["1", "2"],
                              "passing_labels": ["1"], "input": [{"role": "user", "content":
                              "{{ item.input }}\n1: {{ item.answer_1 }}\n2: {{ item.answer_2 }}\nBetter:"}]}))
    exp = experiment_from_dict({"model": "tiny-test", "task": str(data), "task_options": {"test": 8, "dev": 0},
                                "metric": {"grader": str(grader), "pairwise": str(ab), "versus": "zero"},
                                "max_new_tokens": 4, "latency_requests": 0,
                                "forgetting": False, "report": False, "curate": False, "runs_dir": str(tmp_path / "runs"),
                                "arms": [{"name": "zero", "method": "zero-shot"},
                                         {"name": "few", "method": "few-shot", "k": 2}]})
    result = run_ladder(exp, progress=False)
    assert result.primary_metric == "says_it"
    for arm in result.arms:
        assert arm.ok and "says_it" in arm.metrics and arm.interval is not None
    pairs = json.loads((Path(result.run_dir) / "pairwise.json").read_text())
    assert list(pairs) == ["few"] and pairs["few"]["versus"] == "zero" and pairs["few"]["pairs"] == 8
    assert all(0 <= pairs["few"][k] <= 1 for k in ("win_rate", "lc_win_rate", "flips", "first_position"))
    saved = read_results(result.run_dir).judging   # results.json keeps the judging, with the win rate's interval
    assert saved.grader == "says_it" and saved.agreement == [] and saved.pairwise_judge == str(ab)
    [few] = saved.pairwise
    assert few.arm == "few" and few.versus == "zero" and few.win_lo <= few.win_rate <= few.win_hi
    assert few.flips == pairs["few"]["flips"]
    # a model judge that people's labels do not back is refused before any arm runs
    slice_rows = tmp_path / "qa_judged.jsonl"
    slice_rows.write_text(data.read_text() + "".join(
        json.dumps({"prompt": f"Say {w}.", "completion": w, "output": w, "human_label": "yes"}) + "\n" for w in WORDS[:6]))
    judge = tmp_path / "judge.json"
    judge.write_text(json.dumps({"type": "label_model", "name": "right", "model": "tiny-test", "input": JUDGE_INPUT,
                                 "labels": ["yes", "no"], "passing_labels": ["yes"]}))
    judged = experiment_from_dict({**exp.model_dump(), "task": str(slice_rows), "metric": {"grader": str(judge)},
                                   "arms": [{"name": "zero", "method": "zero-shot"}]})
    with pytest.raises(TailorError, match=r"judge 'right' against people on 6 rows: kappa .*will not rank arms by it"):
        run_ladder(judged, progress=False)
    trusted = run_ladder(experiment_from_dict({**judged.model_dump(), "metric": {"grader": str(judge), "trust_judge": True},
                                               "task_options": {"test": 4, "dev": 0},
                                               "arms": [{"name": "zero", "method": "zero-shot"}]}), progress=False)
    [check] = trusted.judging.agreement   # ranked anyway, because told to: results.json says both
    assert check.grader == "right" and check.rows == 6 and not check.trusted and trusted.judging.trusted_by_setting
    assert sum(n for row in check.confusion.values() for n in row.values()) == 6 and check.lo <= check.value <= check.hi
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "has"}))
    with pytest.raises(TailorError, match=r"field 'metric.grader': .*bad.json: field 'operation'"):
        experiment_from_dict({"model": "tiny-test", "task": str(data), "metric": {"grader": str(bad)},
                              "arms": [{"name": "zero", "method": "zero-shot"}]})


def test_cosine_similarity_on_the_bundled_embedder():
    g = load_grader({"type": "text_similarity", "name": "cos", "input": "{{ sample.output_text }}",
                     "reference": "{{ item.reference_answer }}", "evaluation_metric": "cosine", "pass_threshold": 0.5})
    items = [{"reference_answer": "The cat sat on the mat."}] * 3
    same, para, other = g.grade(["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock prices fell sharply."],
                                items)
    assert same == pytest.approx(1.0, abs=1e-5) and other < para < same and g.passed(para) and not g.passed(other)
