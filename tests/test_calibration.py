"""Contextual calibration (Zhao et al. 2021) and the batch prior (Zhou et al. 2023) on prompting and
RAG arms: the correction by hand, the prior saved in the recipe and applied alike by measurement,
a reloaded arm and the server, and a constructed label bias that calibration undoes."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from conftest import write_tickets
from tailor.calibration import CONTENT_FREE, calibrated, log_prior
from tailor.config import experiment_from_dict
from tailor.datasets import load_task
from tailor.errors import TailorError
from tailor.methods import load_adapted
from tailor.methods.base import save_adapted
from tailor.methods.prompting import ICL, FewShot, ZeroShot
from tailor.task import Example

# a label of many tokens: its summed log-probability is far below the one-word label's whatever the
# input says, so an uncalibrated arm (the random tiny-test model included) always answers "bug"
LONG = "billing problem with the invoice for last month"


def _tickets(tmp_path, rows: int = 60):
    path = write_tickets(tmp_path / "tickets.jsonl", rows)
    text = path.read_text().replace('"label": "billing"', f'"label": "{LONG}"')
    path.write_text(text)
    return load_task(str(path), test=20, dev=8)


# ---------------------------------------------------------------- the arithmetic, by hand

def test_the_prior_is_the_mean_normalised_probability_and_divides_out_by_hand():
    # two content-free inputs: normalised (0.9, 0.1) and (0.7, 0.3) (the second given unnormalised, shifted by -2)
    prior = log_prior([[math.log(0.9), math.log(0.1)], [math.log(0.7) - 2, math.log(0.3) - 2]], ["a", "b"])
    assert prior["a"] == pytest.approx(math.log(0.8)) and prior["b"] == pytest.approx(math.log(0.2))
    # a row the model scores p(a) = 0.7, p(b) = 0.3: uncalibrated "a"; divided by the prior,
    # 0.7 / 0.8 = 0.875 < 0.3 / 0.2 = 1.5, so calibrated "b" with probability 1.5 / 2.375
    scores = calibrated(["a", "b"], [math.log(0.7) - 5, math.log(0.3) - 5], prior)
    assert max(range(2), key=scores.__getitem__) == 1
    e = [math.exp(s) for s in scores]
    assert e[1] / sum(e) == pytest.approx(1.5 / 2.375)
    # options in another order are matched by name, not position
    assert calibrated(["b", "a"], [math.log(0.3), math.log(0.7)], prior) == pytest.approx(
        [math.log(0.3) - math.log(0.2), math.log(0.7) - math.log(0.8)])
    # a label a thousand nats less likely keeps a finite prior (a log(0) would make it win every row)
    far = log_prior([[0.0, -1000.0], [0.0, -1002.0]], ["a", "b"])
    assert far["a"] == pytest.approx(0.0) and far["b"] == pytest.approx(-1000 + math.log((1 + math.exp(-2)) / 2))
    with pytest.raises(TailorError, match="option 'c' has no calibrated prior"):
        calibrated(["a", "c"], [0.0, 0.0], prior)


def test_calibrate_off_reads_from_yaml_and_on_is_refused():
    def arm(value):
        exp = experiment_from_dict({"task": "t.jsonl", "arms": [{"method": "zero-shot", "calibrate": value}]})
        return exp.arms[0].options.calibrate
    assert arm(False) == "off"   # YAML 1.1 reads a bare `off` as false
    assert arm("contextual") == "contextual"
    with pytest.raises(TailorError, match="contextual or batch"):
        arm(True)
    with pytest.raises(TailorError):   # not an option of a long-document arm, never silently ignored
        experiment_from_dict({"task": "t.jsonl", "arms": [{"method": "truncated", "calibrate": "contextual"}]})


# ---------------------------------------------------------------- fitted, saved, reloaded

def test_a_fitted_few_shot_arm_saves_its_prior_and_reloads_to_identical_predictions(tiny_base, tmp_path):
    task = _tickets(tmp_path)
    adapted = FewShot(k=2, calibrate="contextual").fit(task, tiny_base)
    cal = adapted.recipe.calibration
    assert cal["method"] == "contextual" and cal["content_free"] == list(CONTENT_FREE)
    assert set(cal["log_prior"]) == set(task.labels)
    assert sum(math.exp(v) for v in cal["log_prior"].values()) == pytest.approx(1.0)

    # the prior by hand: the arm's instruction AND its two shots, each content-free input in the row's place
    engine = adapted.engine(None, progress=False)
    assert len(adapted.shots(Example("any", "x", ""))) == 2
    _assert_prior_by_hand(adapted, engine, task.labels)

    test = task.splits["test"]
    fitted = adapted.predict(engine, task, test)
    save_adapted(adapted, tmp_path / "arm")
    assert json.loads((tmp_path / "arm" / "recipe.json").read_text())["calibration"] == cal
    reloaded = load_adapted(tmp_path / "arm", tiny_base)
    again = reloaded.predict(reloaded.engine(None, progress=False), task, test)
    assert [p.prediction for p in again] == [p.prediction for p in fitted]
    assert [p.probs for p in again] == [p.probs for p in fitted]
    # and each is the raw scores' argmax after the prior is subtracted, by hand
    raw = engine.score([p.prompt for p in fitted], [[adapted.builder.target_text(label) for label in task.labels]] * len(test))
    for p, s in zip(fitted, raw):
        by_hand = max(task.labels, key=lambda label: s.logprobs[task.labels.index(label)] - cal["log_prior"][label])
        assert p.prediction == by_hand
        assert p.uncalibrated == task.labels[max(range(len(task.labels)), key=s.logprobs.__getitem__)]


def _assert_prior_by_hand(adapted, engine, labels):
    """The saved prior against the mean normalised label probability of the arm's prompts built
    here: each content-free input with the shots its arm picks for it."""
    inputs = [Example(f"cf-{i}", text, "") for i, text in enumerate(CONTENT_FREE)]
    texts = [adapted.builder.build(ex, adapted.shots(ex)).text for ex in inputs]
    scores = engine.score(texts, [[adapted.builder.target_text(label) for label in labels]] * len(texts))
    mean = [sum(math.exp(s.logprobs[j]) / sum(math.exp(x) for x in s.logprobs) for s in scores) / len(scores)
            for j in range(len(labels))]
    for j, label in enumerate(labels):
        assert math.exp(adapted.recipe.calibration["log_prior"][label]) == pytest.approx(mean[j] / sum(mean), rel=1e-4)


def test_icl_measures_the_prior_with_each_content_free_inputs_own_shots(tiny_base, tmp_path):
    task = _tickets(tmp_path)
    adapted = ICL(k=2, selector="similarity", calibrate="contextual").fit(task, tiny_base)
    picked = [[s.id for s in adapted.shots(Example(f"cf-{i}", t, ""))] for i, t in enumerate(CONTENT_FREE)]
    assert all(len(p) == 2 for p in picked)
    _assert_prior_by_hand(adapted, adapted.engine(None, progress=False), task.labels)


def test_batch_prior_is_measured_on_training_inputs_never_a_shown_shot(tiny_base, tmp_path):
    task = _tickets(tmp_path)
    adapted = FewShot(k=2, calibrate="batch", calibrate_rows=10).fit(task, tiny_base)
    cal = adapted.recipe.calibration
    train = {ex.id for ex in task.splits["train"]}
    assert cal["method"] == "batch" and len(cal["rows"]) == 10 and set(cal["rows"]) <= train
    assert not set(cal["rows"]) & set(adapted.recipe.shots.ids)
    assert sum(math.exp(v) for v in cal["log_prior"].values()) == pytest.approx(1.0)


def test_calibration_is_refused_in_one_line_where_there_is_no_label_set(tiny_base, tmp_path):
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"prompt": f"say {i}", "completion": f"ok {i}"}) + "\n" for i in range(20)))
    with pytest.raises(TailorError, match="generate task"):
        ZeroShot(calibrate="contextual").fit(load_task(str(gen)), tiny_base)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"question": f"q {i}", "choices": ["no", "yes"] if i % 2 else ["a", "b", "c"],
                                         "answer": 0}) + "\n" for i in range(20)))
    with pytest.raises(TailorError, match="one option set"):
        ZeroShot(calibrate="contextual").fit(load_task(str(mixed)), tiny_base)


def test_a_choice_task_with_one_option_set_is_calibrated_per_option(tiny_base, tmp_path):
    path = tmp_path / "yesno.jsonl"
    path.write_text("".join(json.dumps({"question": f"is {i} even", "choices": ["no", "yes"], "answer": i % 2})
                            + "\n" for i in range(30)))
    task = load_task(str(path), test=10, dev=5)
    adapted = ZeroShot(calibrate="contextual").fit(task, tiny_base)
    assert set(adapted.recipe.calibration["log_prior"]) == {"no", "yes"}
    preds = adapted.predict(adapted.engine(None, progress=False), task, task.splits["test"])
    assert all(p.uncalibrated in ("no", "yes") for p in preds)


# ---------------------------------------------------------------- a constructed bias, undone

@pytest.fixture(scope="module")
def biased(tiny_base, tmp_path_factory):
    """A zero-shot arm whose raw scores always pick the short label, fitted with and without calibration."""
    from tailor.measure import measure
    root = tmp_path_factory.mktemp("calibration")
    task = _tickets(root, rows=80)
    test = task.splits["test"]
    out = {"task": task, "test": test}
    for mode in ("off", "contextual"):
        adapted = ZeroShot(calibrate=mode).fit(task, tiny_base)
        save_adapted(adapted, root / mode)
        out[mode] = measure(adapted, task, test, cache=None, progress=False, latency_requests=0)
        out[f"{mode}-folder"] = root / mode
    return out


def test_calibration_moves_predictions_from_the_favoured_label_to_the_other(biased):
    off, cal = biased["off"], biased["contextual"]
    assert off.calibration is None and all(p.uncalibrated is None for p in off.predictions)
    summary = cal.calibration
    n = len(biased["test"])
    assert summary["rows"] == n and summary["method"] == "contextual"
    # the constructed bias: uncalibrated, the long label is never predicted, and its prior is tiny
    assert summary["shares_before"][LONG] == 0 and [p.prediction for p in off.predictions] == ["bug"] * n
    assert summary["prior"][LONG] < 0.01
    # calibrated, it is predicted on a real share of the rows; the summary counts what the predictions say
    after = sum(p.prediction == LONG for p in cal.predictions)
    assert after >= n // 5 and summary["shares_after"][LONG] == pytest.approx(after / n)
    assert summary["changed"] == after
    assert [p.uncalibrated for p in cal.predictions] == [p.prediction for p in off.predictions]


def test_the_server_answers_the_calibrated_label(biased, tiny_base):
    from tailor.serve.run import build
    app, scheduler = build(tiny_base, {"plain": biased["off-folder"], "calibrated": biased["contextual-folder"]})
    try:
        client = TestClient(app)
        for name, measured in (("plain", biased["off"]), ("calibrated", biased["contextual"])):
            got = []
            for ex in biased["test"]:
                r = client.post("/v1/completions", json={"model": name, "prompt": ex.input_text, "temperature": 0})
                assert r.status_code == 200, r.text
                got.append(r.json()["choices"][0]["text"])
            assert got == [p.prediction for p in measured.predictions], name
    finally:
        scheduler.stop()
    # the two arms answer differently on the rows calibration changed: the server applied the prior
    assert biased["contextual"].calibration["changed"] > 0


def test_tailor_predict_writes_the_calibrated_labels(biased, tmp_path):
    from tailor.predict import run_predict
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": ex.input_text, "label": ex.target}) + "\n" for ex in biased["test"]))
    out = tmp_path / "out.jsonl"
    run_predict(str(biased["contextual-folder"]), rows, out, model="tiny-test", dtype="fp32", device="cpu", cache=False,
                runs_dir=str(tmp_path / "runs"), progress=False)
    written = [json.loads(line)["prediction"] for line in out.read_text().split("\n") if line]
    assert written == [p.prediction for p in biased["contextual"].predictions]
    assert LONG in written   # the calibrated labels, not the uncalibrated "bug" on every row
