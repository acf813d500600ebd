"""GRPO (tailor.preference.grpo) on tiny-test: the three loss variants and the group advantages
against hand computations on tiny tensors; the policy ratio is exactly 1 at the first update on a
fresh batch; the samples of a group differ and repeat under their seeds; format and correctness
rewards are logged apart; dynamic sampling drops groups that teach nothing; and a run killed
mid-step resumes from its checkpoint to the same history and weights as an uninterrupted one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tailor.errors import DataError, TailorError
from tailor.preference.grpo import GRPOTrainer, RewardFn, group_advantages, policy_loss, sample_seed
from tailor.task import Example, Task


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    std = math.sqrt(4 * 0.25 / 3)   # Bessel-corrected, as TRL's std()
    a = 0.5 / (std + 1e-4)
    assert torch.allclose(group_advantages(rewards, scale=True), torch.tensor([[a, -a, -a, a], [0.0] * 4]))
    assert torch.equal(group_advantages(rewards, scale=False), torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4]))


# three response tokens: two of sequence 0 (advantage +1), one of sequence 1 (advantage -2);
# ratios 1, e^0.5 = 1.649 (above 1 + eps with A > 0: clipped) and e^-0.5 = 0.607 (below 1 - eps with A < 0: clipped)
SEQ = torch.tensor([0, 0, 1])
ADV = torch.tensor([1.0, 1.0, -2.0])
OLD = torch.tensor([-1.0, -2.0, -0.5])
SHIFT = torch.tensor([0.0, 0.5, -0.5])


def _loss(kind: str, clip_high: float = 0.2, **kw):
    lp = (OLD + SHIFT).clone().requires_grad_(True)
    loss, stats = policy_loss(lp, OLD, ADV, SEQ, 2, kind, 0.2, clip_high, max_new_tokens=4, **kw)
    loss.backward()
    return loss.item(), lp.grad, stats


def test_the_three_loss_variants_by_hand():
    # token losses -min(rA, clip(r)A): -1, -1.2 (clipped at 1.2), +1.6 (clipped at 0.8 x -2)
    grpo, grad, stats = _loss("grpo")
    assert grpo == pytest.approx(((-1 - 1.2) / 2 + 1.6) / 2)          # mean per sequence, then over sequences
    # only the unclipped token has a gradient: -A r / (its sequence's 2 tokens x 2 sequences)
    assert torch.allclose(grad, torch.tensor([-0.25, 0.0, 0.0]))
    assert stats["clip_high_fraction"] == pytest.approx(1 / 3) and stats["clip_low_fraction"] == pytest.approx(1 / 3)
    assert stats["ratio_max_dev"] == pytest.approx(math.exp(0.5) - 1)
    dr, grad, _ = _loss("dr_grpo")
    assert dr == pytest.approx((-1 - 1.2 + 1.6) / (2 * 4))           # a constant: sequences x max_new_tokens
    assert torch.allclose(grad, torch.tensor([-1 / 8, 0.0, 0.0]))
    dapo, grad, _ = _loss("dapo", clip_high=0.28)
    assert dapo == pytest.approx((-1 - 1.28 + 1.6) / 3)               # token-level, clip-higher at 1.28
    assert torch.allclose(grad, torch.tensor([-1 / 3, 0.0, 0.0]))
    assert _loss("dapo", clip_high=0.28, token_norm=6.0)[0] == pytest.approx((-1 - 1.28 + 1.6) / 6)
    # + beta x k3 with log(pi_ref / pi) = 0, ln 2, -ln 2: exp(x) - x - 1 = 0, 1 - ln 2, ln 2 - 1/2
    ref = OLD + SHIFT + torch.tensor([0.0, math.log(2), -math.log(2)])
    k3 = [0.0, 1 - math.log(2), math.log(2) - 0.5]
    kl_loss, _, stats = _loss("grpo", beta=0.1, ref_lp=ref)
    assert kl_loss == pytest.approx(((-1 + 0.1 * k3[0] - 1.2 + 0.1 * k3[1]) / 2 + 1.6 + 0.1 * k3[2]) / 2)
    assert stats["kl"] == pytest.approx(sum(k3) / 3)
    with pytest.raises(TailorError, match="loss 'ppo' is not one of grpo, dr_grpo, dapo"):
        _loss("ppo")


# ---------------------------------------------------------------- runs on tiny-test

LABELS = ["billing", "bug"]


class Killed(BaseException):
    """What a kill looks like from inside: no `except Exception` stops it."""


@pytest.fixture(scope="module")
def task():
    rows = [Example(f"t{i}", f"ticket {i}: {'invoice charge' if i % 2 else 'crash error'}", LABELS[i % 2])
            for i in range(24)]
    return Task("tickets", "classify", "Label the support ticket.", rows, labels=LABELS).split(test=4, dev=2)


def _rewards(kill_at: int | None = None) -> list[RewardFn]:
    """Real functions of the text: correctness, the sample is the row's label; format, the share of
    its characters that are lower-case letters or spaces (it varies between samples of tiny-test's
    random weights, so advantages are not all 0). `kill_at`: the call of the correctness reward
    that kills the run."""
    calls = {"n": 0}

    def correct(samples, rows):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed("killed")
        return [float(s.strip() == ex.target) for s, ex in zip(samples, rows)]

    def lower(samples, rows):
        return [sum(c.islower() or c == " " for c in s) / len(s) if s else 0.0 for s in samples]

    return [RewardFn("label", "correctness", 1.0, correct), RewardFn("lower", "format", 0.5, lower)]


def _trainer(tiny_base, task, out=None, rewards=None, resume=None, **options):
    from tailor.methods import make_method
    from tailor.prompts import builder_for
    opts = make_method("grpo", {"steps": 3, "prompts_per_step": 2, "group_size": 3, "max_new_tokens": 5,
                                "precision": "fp32", "lr": 1e-2, **options})
    torch.manual_seed(opts.seed)
    policy = opts.trainable_model(task, tiny_base)
    builder = builder_for(task, tiny_base.tokenizer, tiny_base.model.config)
    return GRPOTrainer(policy, tiny_base.tokenizer, builder, task.splits["train"], rewards or _rewards(), opts, out,
                       resume=resume)


def test_the_ratio_is_one_at_the_first_update_of_a_fresh_batch(tiny_base, task):
    # two passes over two minibatches: the first update's ratio is 1 to the bit, later ones move
    result = _trainer(tiny_base, task, steps=2, inner_epochs=2, minibatches=2, loss="grpo").run()
    for row in result["history"]:
        assert row["updates"] == 4 and row["first_ratio_max_dev"] == 0.0
        assert row["ratio_max_dev"] > 0.0   # the mean over updates: later updates see changed weights
    one = _trainer(tiny_base, task, steps=1).run()["history"][0]
    assert one["updates"] == 1 and one["ratio_max_dev"] == 0.0


def test_a_groups_samples_differ_and_repeat_under_their_seeds(tiny_base):
    from tailor.engine import Engine
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, cache=None, progress=False)
    prompts = ["ticket 3: invoice charge"] * 6
    draw = lambda seeds: [g.text for g in engine.generate(prompts, max_new_tokens=6, temperature=1.0, seed=seeds)]  # noqa: E731
    first = draw(list(range(6)))
    assert len(set(first)) > 1 and draw(list(range(6))) == first
    assert len(set(draw(7))) == 1   # one seed for all: the same prompt gives one sample, as before
    # two runs' seeds: sample_seed puts the run's seed above bit 40, which torch's CPU generator
    # drops (it keeps 32 bits); the engine mixes every bit in, so runs 0 and 1 draw apart
    other = draw([sample_seed(1, 0, k) for k in range(6)])
    assert other != draw([sample_seed(0, 0, k) for k in range(6)]) and other == draw([sample_seed(1, 0, k) for k in range(6)])
    with pytest.raises(ValueError, match="2 seeds for 6 requests"):
        draw([1, 2])


def test_each_group_trains_its_samples_on_the_prompt_they_were_drawn_from(tiny_base, task):
    """The encoded group holds the row's own prompt and, as targets, the samples' answers (before,
    the prompt was overwritten by the group's last sample: every sample was trained conditioned on
    another sample's text, and GRPO learned almost nothing)."""
    trainer = _trainer(tiny_base, task)
    groups = trainer.sample(0)
    builder = trainer.builder
    for ex, enc in zip(groups.examples, groups.data):
        assert enc.prompt == builder.encode(builder.build(ex).text)
        assert len(enc.targets) == trainer.o.group_size


def test_dynamic_sampling_drops_groups_of_equal_rewards_and_counts_them(tiny_base, task):
    same = [RewardFn("constant", "correctness", 1.0, lambda samples, rows: [1.0] * len(samples))]
    row = _trainer(tiny_base, task, rewards=same, steps=1, dynamic_sampling=True).run()["history"][0]
    assert (row["groups"], row["groups_sampled"], row["groups_dropped"], row["updates"]) == (0, 8, 8, 0)
    bad = [RewardFn("short", "correctness", 1.0, lambda samples, rows: [1.0])]
    with pytest.raises(TailorError, match="reward 'short' gave 1 scores for 6 samples"):
        _trainer(tiny_base, task, rewards=bad, steps=1).run()


def test_a_killed_run_resumes_to_the_same_history_and_weights(tiny_base, task, tmp_path):
    from tailor.train.checkpoint import trainable_state, weights_digest
    straight = _trainer(tiny_base, task)
    a = straight.run()
    rows = a["history"]
    # the rewards are logged apart: each one's mean, and the format and correctness parts of the sum
    for r in rows:
        assert r["reward"] == pytest.approx(r["reward_correctness"] + r["reward_format"])
        assert r["reward_correctness"] == r["reward/label"] and r["reward_format"] == 0.5 * r["reward/lower"]
    assert len({r["loss"] for r in rows}) == 3   # the weights moved: each step's loss differs
    # killed inside step 3 (its rewards), after the checkpoint of step 2
    with pytest.raises(Killed):
        _trainer(tiny_base, task, tmp_path, rewards=_rewards(kill_at=3), save_every=1).run()
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 2
    resumed = _trainer(tiny_base, task, tmp_path, resume=str(tmp_path), save_every=1)
    b = resumed.run()
    assert b["resumed_from"] and b["steps"] == 3
    for key in ("reward", "reward/label", "reward/lower", "loss", "grad_norm", "response_length", "stop_fraction"):
        assert [r[key] for r in b["history"]] == [r[key] for r in rows], key
    assert weights_digest(trainable_state(resumed.model)) == weights_digest(trainable_state(straight.model))
    logged = [json.loads(line)["step"] for line in (tmp_path / "train_metrics.jsonl").open()]
    assert logged == [1, 2, 3]


def test_options_grpo_does_not_read_are_refused_in_one_line(tmp_path):
    from tailor.config import load_experiment
    path = tmp_path / "experiment.yaml"
    path.write_text("task: tweet-sentiment\narms:\n  - {name: sft, method: lora}\n"
                    "  - {name: grpo, method: grpo, after: sft, group_size: 4, batch_size: 8}\n")
    with pytest.raises(DataError) as info:
        load_experiment(path)
    assert "line 4: field 'arms[1].batch_size': unknown setting" in str(info.value) and "\n" not in str(info.value)
    path.write_text("task: tweet-sentiment\narms:\n  - {name: grpo, method: grpo, group_size: 1}\n")
    with pytest.raises(DataError, match="arms\\[0\\].group_size"):
        load_experiment(path)


def test_a_budget_stops_the_arm_after_the_step_that_passes_it_with_a_checkpoint(tiny_base, task, tmp_path):
    from tailor.methods import make_method
    arm = make_method("grpo", {"steps": 3, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 3,
                               "precision": "fp32", "save_every": 2})
    train = arm.fit(task, tiny_base, tmp_path, progress=False, budget_s=0.001).recipe.train
    assert (train["stopped"], train["steps"], train["planned_steps"]) == ("budget", 1, 3)
    assert [r["name"] for r in train["rewards"]] == ["exact_match"]   # no rewards set: the task's primary metric
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 1


def test_grpo_says_what_it_will_do_and_prints_progress_lines_with_an_eta(tiny_base, task, monkeypatch, capsys):
    from tailor.methods import make_method
    monkeypatch.setenv("TAILOR_PROGRESS_SECONDS", "0")   # a plain line on every step (not a terminal)
    make_method("grpo", {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 3,
                         "precision": "fp32"}).fit(task, tiny_base, None, progress=True)
    err = capsys.readouterr().err
    assert "grpo: 2 steps of 2 prompts x 2 samples of at most 3 tokens, dapo loss" in err
    first = next(line for line in err.splitlines() if "training grpo: 1/2 steps (50%)" in line)
    assert "tok/s" in first and "reward " in first and "correctness " in first and "ETA " in first


def test_graders_are_the_rewards_with_format_apart_from_correctness(tiny_base, task, tmp_path):
    from tailor.methods import make_method
    spec = tmp_path / "label.json"
    spec.write_text(json.dumps({"type": "string_check", "name": "label", "input": "{{ sample.output_text }}",
                                "reference": "{{ item.reference_answer }}", "operation": "eq"}))
    has_b = {"type": "string_check", "name": "has_b", "input": "{{ sample.output_text }}", "reference": "b",
             "operation": "ilike"}
    arm = make_method("grpo", {"steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 3,
                               "precision": "fp32", "rewards": [{"grader": str(spec)},
                                                                {"grader": has_b, "kind": "format", "weight": 0.5}]})
    train = arm.fit(task, tiny_base, None, progress=False).recipe.train
    assert [(r["name"], r["kind"], r["weight"]) for r in train["rewards"]] == [("label", "correctness", 1.0),
                                                                            ("has_b", "format", 0.5)]
    row = train["history"][0]
    assert row["reward"] == pytest.approx(row["reward/label"] + 0.5 * row["reward/has_b"])
    assert (row["reward_correctness"], row["reward_format"]) == (row["reward/label"], 0.5 * row["reward/has_b"])
    assert arm.fit_inputs()["grader_files"][str(spec)]   # an edited grader file is a different fit
    bad = make_method("grpo", {"rewards": [{"grader": {"type": "string_check", "input": "x", "operation": "eq"}}]})
    with pytest.raises(TailorError) as info:   # refused before the model is touched
        bad.fit(task, tiny_base, None, progress=False)
    assert str(info.value).startswith("grpo rewards[0].grader: field 'reference'") and "\n" not in str(info.value)
