"""HELM's other metrics (tailor.helm): perturbations, the bias probes' score formulas and their
scoring through the engine, robustness and bias through a ladder, and ROUGE-S by hand."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import write_tickets
from tailor.config import experiment_from_dict
from tailor.errors import DataError
from tailor.evaluate import rouge_pair, rouge_s, rouge_s_tokens, skip_bigrams
from tailor.helm import bias
from tailor.helm.perturb import PERTURBATIONS, perturb_rows, perturb_text
from tailor.task import Example

# ---------------------------------------------------------------- ROUGE-S


def test_rouge_s_on_lin_2004s_own_example():
    """Lin 2004, section 5: with S1 as the reference, S2 has 3 of 6 skip-bigrams in common, S3 1
    and S4 2; with equal lengths and beta 1, ROUGE-S = 3/6, 1/6, 2/6."""
    s1 = "police killed the gunman".split()
    expected = {"police kill the gunman": 3 / 6, "the gunman kill police": 1 / 6, "the gunman police killed": 2 / 6}
    for text, value in expected.items():
        r = rouge_s_tokens(text.split(), s1)
        assert r["f1"] == pytest.approx(value) and r["precision"] == r["recall"] == pytest.approx(value)
    assert len(skip_bigrams(s1)) == 6


def test_rouge_s4_counts_only_pairs_at_most_four_words_apart():
    ref = "a b c d e f g".split()
    # 21 pairs without a limit; with max_skip 4 every pair but (a, g) (5 words between): 20
    assert sum(skip_bigrams(ref).values()) == 21 and sum(skip_bigrams(ref, 4).values()) == 20
    # pred pairs (a,b) (a,g) (b,g): all within 4 words in the prediction; (a,g) not in the reference's
    r = rouge_s_tokens("a b g".split(), ref, max_skip=4)
    assert (r["precision"], r["recall"]) == pytest.approx((2 / 3, 2 / 20)) and r["f1"] == pytest.approx(4 / 23)
    unlimited = rouge_s_tokens("a b g".split(), ref)
    assert (unlimited["precision"], unlimited["recall"]) == pytest.approx((1.0, 3 / 21))
    # repeated pairs match at most as often as the reference has them
    assert rouge_s_tokens("x y x y".split(), "x y".split())["precision"] == pytest.approx(1 / 6)


def test_rouge_s_with_no_skip_is_rouge_score_s_rouge_2():
    pairs = [("The cats were sitting on the mats today", "the cat sat on the mat"),
             ("a quick brown fox jumps", "the quick brown fox jumped over")]
    for pred, ref in pairs:
        assert rouge_s([pred], [ref], max_skip=0) == pytest.approx(rouge_pair(pred, ref)["rouge2"]["f1"])


# ---------------------------------------------------------------- perturbations


TEXT = "I do not think it is fine, Bob! We are   late.  See x.co @me"


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_each_perturbation_is_seeded_and_changes_the_text(name):
    once = perturb_text(name, TEXT, "row-1", seed=0, rate=0.2)
    assert once == perturb_text(name, TEXT, "row-1", seed=0, rate=0.2) and once != TEXT


def test_perturbations_change_what_they_say_and_nothing_else():
    assert perturb_text("lowercase", TEXT, "k") == TEXT.lower() and perturb_text("uppercase", TEXT, "k") == TEXT.upper()
    spaced = perturb_text("whitespace", TEXT, "k")
    assert re.sub(" +", " ", spaced) == re.sub(" +", " ", TEXT) and spaced != TEXT
    assert perturb_text("punctuation", TEXT, "k") == "I do not think it is fine Bob We are   late  See x.co @me"
    assert perturb_text("contractions", TEXT, "k") == "I don't think it's fine, Bob! We're   late.  See x.co @me"
    assert perturb_text("contractions", "Don't go, it's late", "k") == "Do not go, it is late"
    typo = perturb_text("typos", TEXT, "k", rate=0.3)
    assert len(typo) == len(TEXT) and sum(a != b for a, b in zip(typo, TEXT)) >= 3
    assert all(a == b for a, b in zip(typo, TEXT) if not a.isalpha())   # only letters, case kept
    # the rng is per row: another row or seed draws other typos
    assert len({perturb_text("typos", TEXT, k, seed=s, rate=0.3) for k in ("a", "b") for s in (0, 1)}) == 4


def test_perturb_rows_counts_changes_and_keeps_target_and_chat_roles():
    rows = [Example("1", "Do not panic", "calm"), Example("2", "fine", "ok"),
            Example("3", [{"role": "system", "content": "Do not lie"}, {"role": "user", "content": "it is OK"}], "x")]
    out, changed = perturb_rows(rows, "contractions")
    assert changed == 2 and [e.target for e in out] == ["calm", "ok", "x"]
    assert out[0].input == "Don't panic" and out[1].input == "fine"
    assert out[2].input == [{"role": "system", "content": "Do not lie"}, {"role": "user", "content": "it's OK"}]
    assert rows[0].input == "Do not panic"   # the originals untouched


# ---------------------------------------------------------------- bias: the formulas


def test_bias_score_formulas_on_given_log_likelihoods():
    assert [bias.crows_bit(-10.0, -12.5), bias.crows_bit(-12.5, -10.0), bias.crows_bit(-3.0, -3.0)] == [1.0, 0.0, 0.5]
    assert bias.stereoset_bits(-1.0, -2.0, -3.0) == (1.0, 1.0)
    assert bias.stereoset_bits(-2.0, -1.0, -1.5) == (0.0, 0.5)
    assert bias.stereoset_bits(-2.0, -3.0, -1.0) == (1.0, 0.0)
    assert bias.icat(0.5, 1.0) == 1.0 and bias.icat(0.6, 0.9) == pytest.approx(0.72) and bias.icat(1.0, 1.0) == 0
    assert bias.bbq_bits([-1.0, -0.5, -2.0], gold=1, unknown=0) == (1.0, False)
    assert bias.bbq_bits([-1.0, -0.5, -2.0], gold=0, unknown=0) == (0.0, True)


def test_compare_reports_the_change_from_the_base_with_a_paired_interval():
    counts = {"used": 100}
    base = {"crows_pairs": {"counts": counts, "scores": {"stereotype_share": [1.0, 0.0] * 50}},
            "stereoset": {"counts": counts, "scores": {"stereotype_share": [1.0, 0.0] * 50, "lm_share": [1.0] * 100}}}
    arm = {"crows_pairs": {"counts": counts, "scores": {"stereotype_share": [1.0, 1.0] * 50}},
           "stereoset": {"counts": counts, "scores": {"stereotype_share": [1.0, 0.0] * 50, "lm_share": [1.0] * 100}}}
    out = bias.compare(base, arm)
    crows = out["crows_pairs"]["metrics"]["stereotype_share"]
    assert (crows["before"], crows["after"], crows["delta"]) == (0.5, 1.0, 0.5) and crows["ci_low"] > 0.35
    assert crows["separated"] and crows["ideal"] == 0.5
    same = out["stereoset"]["metrics"]["stereotype_share"]
    assert same["delta"] == 0 and not same["separated"]
    assert out["stereoset"]["metrics"]["icat"]["before"] == 1.0


def test_probe_items_come_from_langtests_files_seeded_and_counted():
    a, counts = bias.load_items("bbq", 20, seed=0)
    b, _ = bias.load_items("bbq", 20, seed=0)
    c, _ = bias.load_items("bbq", 20, seed=1)
    assert [i.meta["index"] for i in a] == [i.meta["index"] for i in b] != [i.meta["index"] for i in c]
    assert counts["read"] == 1012 and counts["used"] == 20 and counts["available"] + counts["dropped"] == 1012
    assert all(len(i.options) == 3 and i.options[i.meta["unknown"]].strip().lower() in bias.UNKNOWN for i in a)
    crows, _ = bias.load_items("crows_pairs", 3)
    assert all(len(i.options) == 2 and "[MASK]" not in i.options[0] for i in crows)


def test_crows_pairs_scored_through_the_engine_agrees_with_a_forward_pass_by_hand(tiny_base):
    """The engine's option scoring gives the same preference as summing the model's token
    log-probabilities of each whole sentence after the newline, computed here directly."""
    from tailor.engine import Engine
    items, _ = bias.load_items("crows_pairs", 6, seed=3)
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    got = bias.score_probe(engine, "crows_pairs", items)["stereotype_share"]
    tok, model = tiny_base.tokenizer, tiny_base.model

    def loglik(prompt, sentence):
        p, s = tok(prompt, add_special_tokens=False).input_ids, tok(sentence, add_special_tokens=False).input_ids
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([p + s])).logits[0].float(), -1)
        return sum(lp[len(p) - 1 + i, t].item() for i, t in enumerate(s))

    want = [bias.crows_bit(loglik(it.prompt, it.options[0]), loglik(it.prompt, it.options[1])) for it in items]
    assert got == want and len(got) == 6


# ---------------------------------------------------------------- through a ladder


def test_robustness_and_bias_through_the_ladder(tmp_path, tiny_base):
    from tailor.datasets import load_task
    from tailor.ladder import run_ladder
    from tailor.measure import measure
    from tailor.methods import METHODS
    task_file = write_tickets(tmp_path / "tickets.jsonl", 40)
    exp = experiment_from_dict({
        "model": "tiny-test", "task": str(task_file), "task_options": {"test": 10, "dev": 2}, "dtype": "fp32",
        "arms": ["zero-shot", {"name": "lora", "method": "lora", "steps": 2, "batch_size": 4}],
        "runs_dir": str(tmp_path / "runs"), "curate": False, "report": True, "forgetting": False, "latency_requests": 0,
        "robustness": {"perturbations": ["uppercase", "typos"], "rows": 8, "typo_rate": 0.3},
        "bias": {"probes": ["crows_pairs", "bbq"], "rows": 6}}, "exp.yaml")
    results = run_ladder(exp, progress=False)
    zs, lora = results.arms
    r = zs.robustness
    assert r["rows"] == 8 and r["metric"] == "accuracy" and set(r["perturbations"]) == {"uppercase", "typos"}
    assert r["perturbations"]["uppercase"]["changed"] == 8
    # the perturbed figure is the arm measured on the perturbed rows through THE measurement path
    task = load_task(str(task_file), **exp.task_options.loader_options(exp.seed))
    rows, _ = perturb_rows(task.splits["test"][:8], "uppercase")
    zero = METHODS["zero-shot"]().fit(task, tiny_base, None, progress=False)
    again = measure(zero, task, rows, progress=False, latency_requests=0)
    assert r["perturbations"]["uppercase"]["after"] == pytest.approx(again.metrics["accuracy"])
    assert r["clean"] == pytest.approx(r["perturbations"]["uppercase"]["before"])
    worst = r["worst_case"]["after"]
    assert worst <= min(d["after"] for d in r["perturbations"].values()) and worst <= r["clean"]
    assert zs.bias["weights"] == "base" and set(zs.bias["base"]) == {"crows_pairs", "bbq"}
    probes = lora.bias["probes"]
    assert lora.bias["weights"] == "own" and probes["crows_pairs"]["metrics"]["stereotype_share"]["n"] == 6
    assert probes["crows_pairs"]["metrics"]["stereotype_share"]["before"] == zs.bias["base"]["crows_pairs"]["stereotype_share"]
    saved = json.loads((tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir()) / "results.json").read_text())
    assert saved["arms"][1]["bias"]["probes"]["bbq"]["counts"]["used"] == 6
    html = open(results.report["html"]).read()
    assert 'id="robustness"' in html and 'id="bias"' in html and "Nangia et al. 2020" in html


def test_robustness_and_bias_options_are_checked_when_read():
    base = {"model": "tiny-test", "arms": ["zero-shot"]}
    exp = experiment_from_dict(base)
    assert exp.robustness is None and exp.bias is None   # off by default
    with pytest.raises(DataError, match=r"robustness\.perturbations\[0\].*synonyms"):
        experiment_from_dict({**base, "robustness": {"perturbations": ["synonyms"]}})
    with pytest.raises(DataError, match=r"bias\.rows"):
        experiment_from_dict({**base, "bias": {"rows": 0}})
