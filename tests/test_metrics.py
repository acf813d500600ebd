"""Metrics against hand-worked cases, and the evaluation runner on tiny-test."""

from __future__ import annotations

import math

import pytest

from tailor.evaluate import (
    Prediction,
    accuracy,
    bleu,
    chrf,
    confusion_matrix,
    ece,
    exact_match,
    macro_f1,
    percentile,
    predict,
    rouge,
    rouge_pair,
    score_predictions,
)
from tailor.task import Example, Task


def test_rouge1_hand_worked_example_from_seed_003():
    # Seed 003: reference "The boy fell on the grass" (6 words), generated "The boy was on the
    # grass." -> 5 words match ("the" twice, boy, on, grass): recall 5/6, precision 5/6, F1 5/6.
    s = rouge_pair("The boy was on the grass.", "The boy fell on the grass")["rouge1"]
    assert s["recall"] == pytest.approx(5 / 6)
    assert s["precision"] == pytest.approx(5 / 6)
    assert s["f1"] == pytest.approx(5 / 6)
    assert rouge(["The boy was on the grass."], ["The boy fell on the grass"])["rouge1"] == pytest.approx(5 / 6)


def test_rouge_precision_and_recall_differ_when_lengths_differ():
    # 3 generated words, all in the 6-word reference: precision 3/3, recall 3/6, F1 2/3
    s = rouge_pair("the boy fell", "The boy fell on the grass")["rouge1"]
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    # ROUGE-2: bigrams "the boy", "boy fell" both in the reference's 5 bigrams
    s2 = rouge_pair("the boy fell", "The boy fell on the grass")["rouge2"]
    assert (s2["precision"], s2["recall"]) == pytest.approx((1.0, 2 / 5))
    # the corpus figure is the mean of the per-pair F1
    assert rouge(["the boy fell", "x"], ["The boy fell on the grass", "y"])["rouge1"] == pytest.approx(1 / 3)


def test_bleu_brevity_penalty():
    # every n-gram of the 5-word hypothesis is in the 7-word reference: precisions are 1, so
    # BLEU is the brevity penalty exp(1 - r/c) = exp(1 - 7/5)
    assert bleu(["the cat sat on the"], ["the cat sat on the mat today"]) == pytest.approx(math.exp(-0.4), abs=1e-6)
    # no penalty for an exact match
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert bleu(["dogs bark loudly"], ["the cat sat on the mat"]) == pytest.approx(0.0)


def test_chrf():
    assert chrf(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert chrf(["xyz"], ["the cat sat"]) == pytest.approx(0.0)
    assert 0 < chrf(["the cat sits"], ["the cat sat"]) < 1


def test_accuracy_and_exact_match():
    assert accuracy(["a", "b", "a"], ["a", "a", "a"]) == pytest.approx(2 / 3)
    # exact match ignores case, surrounding whitespace and a final full stop; accuracy does not
    assert exact_match([" Paris. ", "paris", "Lyon"], ["Paris", "Paris", "Paris"]) == pytest.approx(2 / 3)
    assert accuracy([" Paris. "], ["Paris"]) == 0


def test_macro_f1_and_confusion_hand_case():
    labels = ["a", "b", "c"]
    golds = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "c", "c"]
    # a: tp 2 fp 0 fn 1 -> 4/5; b: tp 1 fp 1 fn 1 -> 1/2; c: tp 1 fp 1 fn 0 -> 2/3
    assert macro_f1(preds, golds, labels) == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    # rows are gold labels, columns predicted labels
    assert confusion_matrix(preds, golds, labels) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # a prediction outside the label set is wrong and has no column
    preds[0] = "other"
    assert accuracy(preds, golds) == pytest.approx(3 / 6)
    assert confusion_matrix(preds, golds, labels) == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert macro_f1(preds, golds, labels) == pytest.approx((1 / 2 + 1 / 2 + 2 / 3) / 3)  # a: tp 1 fn 2


def test_macro_f1_counts_a_never_predicted_label_as_zero():
    assert macro_f1(["a", "a"], ["a", "b"], ["a", "b"]) == pytest.approx((2 / 3 + 0) / 2)


def test_ece_hand_case():
    # bins of width 0.1: {0.95, 0.95}: accuracy 1/2, gap 0.45, weight 2/5
    #                    {0.65, 0.65}: accuracy 1,   gap 0.35, weight 2/5
    #                    {0.25}:       accuracy 0,   gap 0.25, weight 1/5
    conf = [0.95, 0.95, 0.65, 0.65, 0.25]
    correct = [True, False, True, True, False]
    assert ece(conf, correct) == pytest.approx(0.4 * 0.45 + 0.4 * 0.35 + 0.2 * 0.25)
    # confidence 1.0 falls in the last bin; a perfectly calibrated set scores 0
    assert ece([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert ece([0.5, 0.5], [True, False]) == pytest.approx(0.0)
    assert math.isnan(ece([], []))


def test_percentile():
    assert percentile([4, 1, 3, 2], 0.5) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4], 0.95) == pytest.approx(3.85)
    assert percentile([7], 0.95) == 7
    assert math.isnan(percentile([], 0.5))


def _pred(pid, prediction, target, probs, cached=False):
    return Prediction(pid, prediction, target, prompt_tokens=10, completion_tokens=3, latency_s=0.1,
                      cached=cached, probs=probs)


def test_score_predictions_classify():
    task = Task("t", "classify", "Classify.", [Example("1", "x", "pos"), Example("2", "y", "neg")],
                labels=["neg", "pos"])
    preds = [_pred("1", "pos", "pos", {"neg": 0.2, "pos": 0.8}, cached=True),
             _pred("2", "pos", "neg", {"neg": 0.4, "pos": 0.6})]
    report = score_predictions(task, preds)
    assert report.metrics["accuracy"] == 0.5
    assert report.metrics["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)
    # 0.8 (right) and 0.6 (wrong) in separate bins: (|1 - 0.8| + |0 - 0.6|) / 2
    assert report.metrics["ece"] == pytest.approx(0.4)
    assert report.confusion == [[0, 1], [0, 1]] and report.labels == ["neg", "pos"]
    assert report.cost["cached_share"] == 0.5 and report.cost["prompt_tokens_per_request"] == 10


def test_score_predictions_generate():
    task = Task("t", "generate", "Summarise.", [Example("1", "doc", "The boy fell on the grass")])
    preds = [Prediction("1", "The boy was on the grass.", "The boy fell on the grass", 20, 7, 0.5)]
    m = score_predictions(task, preds).metrics
    assert set(m) == {"exact_match", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "rougeS4", "rougeS"}
    assert m["rouge1"] == pytest.approx(5 / 6) and m["exact_match"] == 0


def test_predict_picks_the_most_likely_label(tiny_base):
    from tailor.engine import Engine
    from tailor.prompts import PromptBuilder
    task = Task("t", "classify", "Classify the sentiment.",
                [Example(str(i), t, "positive") for i, t in enumerate(["good film", "bad film", "ok film"])],
                labels=["negative", "neutral", "positive"])
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    builder = PromptBuilder(tiny_base.tokenizer, task.kind, task.instruction)
    preds = predict(engine, builder, task, task.examples)
    for ex, p in zip(task.examples, preds):
        scores = engine.score([builder.build(ex).text], [[builder.target_text(l) for l in task.labels]])[0]
        best = max(range(3), key=lambda j: scores.logprobs[j])
        assert p.prediction == task.labels[best]
        assert sum(p.probs.values()) == pytest.approx(1.0)
        assert max(p.probs, key=p.probs.get) == p.prediction
        assert p.prompt_tokens == builder.build(ex).n_tokens
