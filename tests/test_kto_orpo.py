"""KTO and ORPO on tiny-test: each loss against numbers worked out by hand, the thumbs up/down
reader (good rows, bad rows with their one-line errors), the loop's packed batches against plain
forwards row by row, a fit of each that learns a toy preference, and fit -> save -> load_adapted
giving the same predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tailor.errors import DataError, TailorError
from tailor.preference.data import load_preference_task, read_preferences


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def toy_pairs(n: int = 48):
    """Answers of equal shape that differ in one word (`blue` preferred to `red`): the base has no
    length bias to ride on, and the preference is learnable in a few steps."""
    return [{"prompt": f"question {i % 16}: name a thing {i}", "chosen": f"the blue one {i % 4}",
             "rejected": f"the red one {i % 4}"} for i in range(n)]


@pytest.fixture(scope="module")
def pair_task(tmp_path_factory):
    return load_preference_task(_write(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", toy_pairs()), test=4, dev=1)


# ---------------------------------------------------------------- the losses by hand


def test_kto_loss_matches_a_hand_computation():
    from tailor.preference.kto import kto_terms
    policy, reference = torch.tensor([-3.0, -2.0, -4.0]), torch.tensor([-4.0, -2.5, -3.0])
    policy_kl, reference_kl = torch.tensor([-5.0, -6.0, -7.0]), torch.tensor([-5.5, -6.0, -6.9])
    desirable = torch.tensor([True, False, True])
    loss, rewards, z0 = kto_terms(policy, reference, policy_kl, reference_kl, desirable, 0.5, 1.0, 2.0)
    # z0 = mean(0.5, 0, -0.1) = 0.4 / 3; r = (1, 0.5, -1)
    z = 0.4 / 3
    assert z0.item() == pytest.approx(z)
    assert loss.tolist() == pytest.approx([1 - sigmoid(0.5 * (1 - z)),            # desirable, weight 1
                                           2 * (1 - sigmoid(0.5 * (z - 0.5))),    # undesirable, weight 2
                                           1 - sigmoid(0.5 * (-1 - z))])          # desirable
    assert rewards.tolist() == pytest.approx([0.5, 0.25, -0.5])
    # a negative KL estimate is clamped at 0: r is then compared with 0
    loss, _, z0 = kto_terms(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-6.0]), torch.tensor([-5.0]),
                            torch.tensor([False]), 0.1, 1.0, 1.0)
    assert z0.item() == 0.0 and loss.item() == pytest.approx(1 - sigmoid(0.1 * (0 - 1.0)))
    # z0 is detached: no gradient reaches the mismatched completions' log-probabilities
    pk = torch.tensor([-1.0, -2.0], requires_grad=True)
    p = torch.tensor([-1.0, -1.5], requires_grad=True)
    kto_terms(p, torch.tensor([-2.0, -2.0]), pk, torch.tensor([-3.0, -3.0]), torch.tensor([True, False]),
              0.3, 1.0, 1.0)[0].sum().backward()
    assert pk.grad is None and p.grad is not None and p.grad[0] < 0 < p.grad[1]


def test_orpo_loss_matches_a_hand_computation():
    from tailor.preference.orpo import orpo_terms
    # chosen: 4 tokens summing to -2 (mean -0.5); rejected: 3 tokens summing to -6 (mean -2)
    loss, nll, ratio = orpo_terms(torch.tensor([-2.0, -3.0]), torch.tensor([-6.0, -1.0]), torch.tensor([4.0, 2.0]),
                                  torch.tensor([3.0, 2.0]), 0.25)

    def odds(mean_logp):
        p = math.exp(mean_logp)
        return math.log(p / (1 - p))

    r0, r1 = odds(-0.5) - odds(-2.0), odds(-1.5) - odds(-0.5)
    assert ratio.tolist() == pytest.approx([r0, r1])
    assert nll.tolist() == pytest.approx([0.5, 1.5])
    assert loss.tolist() == pytest.approx([0.5 + 0.25 * math.log(1 + math.exp(-r0)),
                                           1.5 + 0.25 * math.log(1 + math.exp(-r1))])
    # an answer the model is certain of (mean log-prob 0) keeps a finite loss and gradient
    lp = torch.tensor([0.0], requires_grad=True)
    out = orpo_terms(lp, torch.tensor([-3.0]), torch.tensor([1.0]), torch.tensor([1.0]), 0.1)[0]
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(lp.grad).all()


# ---------------------------------------------------------------- thumbs up/down rows


def test_thumbs_up_down_rows_are_read_and_split(tmp_path):
    rows = [{"prompt": f"q{i % 10}", "completion": f"answer {i}", "label": i % 3 != 0, "id": f"r{i}"} for i in range(40)]
    rows.append({"prompt": [{"role": "user", "content": "chat q"}],
                 "completion": [{"role": "assistant", "content": "chat a"}], "label": True})
    with pytest.raises(DataError, match="mixed shapes: chat messages here"):
        read_preferences(_write(tmp_path / "mixed.jsonl", rows))
    rows.pop()
    ex = read_preferences(_write(tmp_path / "u.jsonl", rows))
    assert (ex[1].id, ex[1].input, ex[1].target, ex[1].meta["label"], ex[1].meta["completion"]) == \
        ("r1", "q1", "answer 1", True, "answer 1")
    assert (ex[0].target, ex[0].meta["label"], ex[0].meta["completion"]) == ("", False, "answer 0")  # no reference answer
    assert "rejected" not in ex[0].meta
    conv = read_preferences(_write(tmp_path / "c.jsonl", [
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}],
         "label": False}]))
    assert conv[0].meta["completion"] == "a" and conv[0].meta["label"] is False
    task = load_preference_task(tmp_path / "u.jsonl", test=2, dev=1)
    held = task.splits["test"] + task.splits["dev"]
    assert held and all(e.meta["label"] for e in held)   # held-out rows are measured against their answer
    assert any(e.meta["label"] is False for e in task.splits["train"])
    test_down = sum(1 for e in ex if e.input in {h.input for h in task.splits["test"]} and not e.meta["label"])
    notes = " | ".join(task.notes)
    assert test_down and f"{test_down} thumbs-down rows of test prompts left out of test" in notes
    assert "40 rows" in notes and sum(map(len, task.splits.values())) + test_down < 40


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "b", "label": "yes"}],
     r"u.jsonl:line 2: field 'label': expected true \(desirable\) or false \(undesirable\), got a string"),
    ([{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "b"}],
     r"u.jsonl:line 2: field 'label': missing"),
    ([{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "label": False}],
     r"u.jsonl:line 2: field 'completion': missing"),
    ([{"prompt": "q", "completion": " ", "label": True}], r"u.jsonl:line 1: field 'completion': is empty"),
    ([{"prompt": "q", "completion": "a", "label": 1}], r"u.jsonl:line 1: field 'label': expected true"),
    ([{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "chosen": "a", "rejected": "b"}],
     r"u.jsonl:line 2: mixed shapes: this line is a pair \(prompt, chosen, rejected\) but line 1 is a thumbs up/down row"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "completion": "a", "label": True}],
     r"u.jsonl:line 2: mixed shapes: this line is a thumbs up/down row \(prompt, completion, label\) but line 1 is a pair"),
])
def test_a_bad_thumbs_row_gives_its_one_line_error(tmp_path, rows, message):
    with pytest.raises(DataError, match=message) as info:
        read_preferences(_write(tmp_path / "u.jsonl", rows))
    assert "\n" not in str(info.value)


def test_kto_reads_pairs_as_one_row_of_each_kind_with_a_kl_sample_of_another_prompt(tiny_base, pair_task):
    from tailor.preference.data import prompt_key
    from tailor.preference.kto import encode_kto, kto_rows
    from tailor.prompts import builder_for
    from tailor.task import Example
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    train = pair_task.splits["train"]
    data, report, counts = encode_kto(builder, train, 512, seed=3)
    assert len(data) == 2 * len(train) and counts["desirable"] == counts["undesirable"] == len(train)
    by_id = {ex.id: ex for ex in train}
    answer_of = {}
    for enc in data:
        pair_id, side = enc.id.rsplit(":", 1)
        ex = by_id[pair_id]
        text = ex.target if side == "chosen" else ex.meta["rejected"]
        assert enc.extra["desirable"] == (side == "chosen")
        assert enc.targets[0] == builder.encode(builder.target_text(text))
        answer_of[tuple(enc.targets[0])] = prompt_key(ex.input)
    # the KL sample is a completion of another prompt (the same text may answer several prompts,
    # so check that some row of another prompt has it)
    for enc in data:
        own = prompt_key(by_id[enc.id.rsplit(":", 1)[0]].input)
        assert any(tuple(other.targets[0]) == tuple(enc.targets[1]) and
                   prompt_key(by_id[other.id.rsplit(":", 1)[0]].input) != own for other in data)
    # a completion both desirable and undesirable for one prompt is refused, naming both rows
    bad = [Example("a", "q", "x", meta={"rejected": "y"}), Example("b", "q", "y", meta={"rejected": "x"})]
    with pytest.raises(TailorError, match="row 'b:chosen' marks a completion desirable that row 'a:rejected' marks"):
        kto_rows(bad)
    with pytest.raises(TailorError, match="every row has the same prompt"):
        encode_kto(builder, bad[:1], 512)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("method, options, message", [
    ("kto", {"reference": "adapter-off"}, r"field 'arms\[0\].reference': expected 'auto' or 'precomputed'"),
    ("kto", {"beta": 0}, r"field 'arms\[0\].beta': expected greater than 0"),
    ("kto", {"undesirable_weight": 0.0}, r"field 'arms\[0\].undesirable_weight': expected greater than 0"),
    ("kto", {"loss": "ipo"}, r"field 'arms\[0\].loss': unknown setting"),
    ("kto", {"sft_weight": 0.1}, r"field 'arms\[0\].sft_weight': unknown setting"),
    ("orpo", {"beta": 0.1}, r"field 'arms\[0\].beta': unknown setting"),
    ("orpo", {"reference": "precomputed"}, r"field 'arms\[0\].reference': unknown setting"),
    ("orpo", {"or_weight": 0}, r"field 'arms\[0\].or_weight': expected greater than 0"),
])
def test_options_an_arm_would_not_use_are_refused_when_read(tmp_path, method, options, message):
    from tailor.config import load_experiment
    path = tmp_path / "exp.yaml"
    path.write_text("model: tiny-test\ntask: factual-summary-pairs\narms:\n"
                    f"  - {{method: {method}, {', '.join(f'{k}: {v}' for k, v in options.items())}}}\n")
    with pytest.raises(DataError, match=message) as info:
        load_experiment(path)
    assert "exp.yaml:line 4" in str(info.value)


def test_kto_and_orpo_are_lora_policies():
    from tailor.methods import METHODS
    for name in ("kto", "orpo"):
        cls = METHODS[name]
        assert cls.lora_adapter and cls.changes_weights and not cls.trains_on_pool and not cls.scorer


# ---------------------------------------------------------------- the loop's batches against plain forwards


def _nonzero_policy(tiny_base, method):
    from tailor.methods import make_method
    torch.manual_seed(0)
    model = make_method(method, {}).trainable_model(None, tiny_base).eval()   # eval: no dropout
    with torch.no_grad():   # a non-zero adapter, so the policy differs from the reference
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model


def _alone(model, prompt, target, adapter_on):
    ids = torch.tensor([prompt + target])
    ctx = torch.enable_grad() if adapter_on else model.disable_adapter()
    with ctx:
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1)[torch.arange(len(target)), torch.tensor(target)].sum()


def _one_step(tiny_base, pair_task, model, loss, data, batch_size):
    from tailor.prompts import builder_for
    from tailor.train.loop import Trainer
    from tailor.train.options import TrainConfig
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    cfg = TrainConfig(steps=1, batch_size=batch_size, pack_len=64, micro_batch_tokens=100000, precision="fp32",
                      kernels="off")
    trainer = Trainer(model, tiny_base.tokenizer, builder, pair_task, cfg, None, loss=loss, data=data,
                      layout="packed", soft_tokens=0, tag="t", progress=False, resume=None, budget_s=None)
    batches, units = trainer.batches(0)
    assert len(batches) == 1 and batches[0].attention_mask.dim() == 3   # one micro-batch: z0 over the step
    value, logs = trainer.forward_backward(batches, units)
    return batches[0].examples, units, value, logs, {n: p.grad.clone() for n, p in model.named_parameters()
                                                   if p.requires_grad}


def test_kto_step_matches_plain_forwards_row_by_row_and_is_half_at_step_zero(tiny_base, pair_task):
    """Each row's completion and its mismatched completion packed under one tree mask, the
    reference from the adapter switched off: loss and gradient equal those computed with a plain
    forward per sequence; a fresh adapter (policy = reference) gives loss 0.5 per unit weight."""
    from tailor.preference.kto import KTOLoss, encode_kto
    from tailor.prompts import builder_for
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    data, _, _ = encode_kto(builder, pair_task.splits["train"], 512)
    model = _nonzero_policy(tiny_base, "kto")
    rows, units, value, logs, got = _one_step(tiny_base, pair_task, model, KTOLoss(0.4, 1.0, 1.5), data, 12)
    assert units == 12
    model.zero_grad()
    own = [_alone(model, e.prompt, e.targets[0], True) for e in rows]
    own_ref = [_alone(model, e.prompt, e.targets[0], False).detach() for e in rows]
    with torch.no_grad():
        kl = [(_alone(model, e.prompt, e.targets[1], True) - _alone(model, e.prompt, e.targets[1], False)).item()
              for e in rows]
    z0 = max(0.0, sum(kl) / len(kl))
    total = 0
    for e, p, r in zip(rows, own, own_ref):
        if e.extra["desirable"]:
            total = total + 1.0 * (1 - torch.sigmoid(0.4 * ((p - r) - z0)))
        else:
            total = total + 1.5 * (1 - torch.sigmoid(0.4 * (z0 - (p - r))))
    (total / units).backward()
    assert value == pytest.approx(total.item() / units, rel=1e-4)
    assert logs["kl"] == pytest.approx(z0, abs=1e-4)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-3, atol=1e-6)

    from tailor.methods import make_method
    fresh = make_method("kto", {}).trainable_model(None, tiny_base).eval()
    rows, units, value, logs, _ = _one_step(tiny_base, pair_task, fresh, KTOLoss(0.4, 1.0, 1.5), data, 12)
    n_desirable = sum(e.extra["desirable"] for e in rows)
    assert value == pytest.approx((0.5 * n_desirable + 0.75 * (units - n_desirable)) / units, abs=1e-6)
    assert logs["kl"] == 0.0 and logs["rewards_desirable"] == 0.0


def test_orpo_step_matches_plain_forwards_pair_by_pair(tiny_base, pair_task):
    from tailor.preference.dpo import encode_pairs
    from tailor.preference.orpo import ORPOLoss
    from tailor.prompts import builder_for
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    data, _ = encode_pairs(builder, pair_task.splits["train"], 512)
    model = _nonzero_policy(tiny_base, "orpo")
    rows, units, value, logs, got = _one_step(tiny_base, pair_task, model, ORPOLoss(0.3), data, 8)
    model.zero_grad()
    total = 0
    for e in rows:
        mc = _alone(model, e.prompt, e.targets[0], True) / len(e.targets[0])
        mr = _alone(model, e.prompt, e.targets[1], True) / len(e.targets[1])
        ratio = (mc - torch.log(1 - torch.exp(mc))) - (mr - torch.log(1 - torch.exp(mr)))
        total = total - mc - 0.3 * torch.nn.functional.logsigmoid(ratio)
    (total / units).backward()
    assert value == pytest.approx(total.item() / units, rel=1e-4)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- fits


def _preference(adapted, rows):
    from tailor.preference.reward import likelihood_preference
    return likelihood_preference(adapted.engine(None, progress=False), adapted.builder, rows)


@pytest.mark.parametrize("method, options", [
    ("kto", {"steps": 25, "batch_size": 16, "lr": 3e-3, "beta": 0.5}),
    ("orpo", {"steps": 25, "batch_size": 8, "lr": 3e-3, "or_weight": 1.0}),
])
def test_fit_learns_the_toy_preference_saves_and_loads_to_the_same_predictions(tiny_base, pair_task, tmp_path,
                                                                                 method, options):
    from peft import PeftModel

    from tailor.methods import load_adapted, make_method, save_adapted
    from tailor.methods.finetune import frozen_copy
    test = pair_task.splits["test"]
    before = _preference(make_method("zero-shot").fit(pair_task, tiny_base), test)
    weights = {n: p.clone() for n, p in tiny_base.model.named_parameters()}
    adapted = make_method(method, {**options, "precision": "fp32", "log_every": 1}).fit(
        pair_task, tiny_base, tmp_path / method, progress=False)
    save_adapted(adapted, tmp_path / method)
    assert all(torch.equal(p, weights[n]) for n, p in tiny_base.model.named_parameters())   # the base is intact
    assert any(p.abs().sum() > 0 for n, p in adapted.model.named_parameters() if "lora_B" in n)   # the adapter moved
    after = _preference(adapted, test)
    assert after["mean_margin"] > before["mean_margin"] + 1.0 and after["accuracy"] == 1.0, (before, after)
    rows = [json.loads(line) for line in (tmp_path / method / "train_metrics.jsonl").open()]
    if method == "kto":
        assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-6)   # policy = reference before the first update
        last = rows[-1]
        assert last["rewards_desirable"] > 0 > last["rewards_undesirable"] and last["loss"] < rows[0]["loss"]
        assert adapted.recipe.train["data"]["desirable"] == adapted.recipe.train["data"]["undesirable"]
    else:
        assert rows[-1]["odds_accuracy"] == 1.0 and rows[-1]["log_odds_ratio"] > rows[0]["log_odds_ratio"]
        assert rows[-1]["nll"] < rows[0]["nll"]
    # a standard PEFT adapter folder, and the reloaded arm predicts what the fitted one did
    peft_model = PeftModel.from_pretrained(frozen_copy(tiny_base), tmp_path / method / "adapter")
    assert sum("lora_" in n for n, _ in peft_model.named_parameters()) > 0
    loaded = load_adapted(tmp_path / method, tiny_base)
    assert loaded.method == method and loaded.weights_id == adapted.weights_id
    assert _preference(loaded, test)["mean_margin"] == pytest.approx(after["mean_margin"], rel=1e-5)
    fitted = adapted.predict(adapted.engine(None, progress=False), pair_task, test, 6)
    again = loaded.predict(loaded.engine(None, progress=False), pair_task, test, 6)
    assert [p.prediction for p in fitted] == [p.prediction for p in again]


def test_kto_trains_on_thumbs_rows_and_continues_from_a_lora_policy(tiny_base, tmp_path):
    """KTO on an unpaired file; `init_adapter` takes any arm whose artifact is a LoRA adapter of
    the base (the capability, not a list of names): a KTO arm is accepted, a prompting arm refused."""
    from tailor.methods import make_method, save_adapted
    rows = [{"prompt": f"question {i % 12}: name a thing {i}", "completion": f"the {'blue' if i % 2 else 'red'} one",
             "label": bool(i % 2)} for i in range(60)]
    task = load_preference_task(_write(tmp_path / "u.jsonl", rows), test=2, dev=1)
    quick = {"steps": 2, "batch_size": 8, "precision": "fp32"}
    first = make_method("kto", quick).fit(task, tiny_base, tmp_path / "kto", progress=False)
    data = first.recipe.train["data"]
    assert data["desirable"] + data["undesirable"] == len(task.splits["train"]) and data["undesirable"] > 0
    save_adapted(first, tmp_path / "kto")
    pairs = load_preference_task(_write(tmp_path / "p.jsonl", toy_pairs(24)), test=2, dev=1)
    after = make_method("kto", {**quick, "init_adapter": str(tmp_path / "kto")}).fit(
        pairs, tiny_base, tmp_path / "kto2", progress=False)
    assert after.recipe.options["init_adapter"] == str(tmp_path / "kto")
    save_adapted(make_method("zero-shot").fit(pairs, tiny_base), tmp_path / "zs")
    with pytest.raises(TailorError, match=r"init_adapter must be .*LoRA.*not zero-shot"):
        make_method("kto", {**quick, "init_adapter": str(tmp_path / "zs")}).fit(pairs, tiny_base, None, progress=False)
