"""Preference alignment on tiny-test: the preference file reader (every bad file gives its
one-line error), splits by prompt, DPO against a hand computation (ln 2 at step 0, exact resume
after SIGKILL), the reward model's score at the last real token, and PPO's invariants."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tailor.errors import DataError
from tailor.preference.data import load_preference_task, read_preferences, split_by_prompt


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def pair_rows(n: int = 24):
    """Pairs whose chosen answer is a fixed phrase and rejected another: learnable in a few steps."""
    return [{"prompt": f"question {i % 8}: say something {i}", "chosen": f"yes indeed {i % 3}",
             "rejected": f"no way never {i % 5}"} for i in range(n)]


# ---------------------------------------------------------------- data


def test_pairs_rankings_and_conversations_are_read(tmp_path):
    std = read_preferences(_write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "id": 7}]))
    assert (std[0].id, std[0].input, std[0].target, std[0].meta["rejected"]) == ("7", "q", "a", "b")
    conv = read_preferences(_write(tmp_path / "c.jsonl", [{
        "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}]))
    assert conv[0].input[-1] == {"role": "user", "content": "q"} and conv[0].target == "a"
    ranked = read_preferences(_write(tmp_path / "r.jsonl", [{"prompt": "q", "completions": ["best", "mid", "worst"]}]))
    assert [(e.target, e.meta["rejected"]) for e in ranked] == [("best", "mid"), ("best", "worst"), ("mid", "worst")]


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "q", "chosen": "same", "rejected": "same"}], r"p.jsonl:line 1: field 'rejected': identical to chosen"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": " ", "rejected": "b"}],
     r"p.jsonl:line 2: field 'chosen': is empty"),
    ([{"prompt": "q", "chosen": "a", "rejected": ""}], r"p.jsonl:line 1: field 'rejected': is empty"),
    ([{"prompt": "", "chosen": "a", "rejected": "b"}], r"p.jsonl:line 1: field 'prompt': is empty"),
    ([{"prompt": "q", "chosen": "a"}], r"p.jsonl:line 1: field 'rejected': missing"),
    ([{"chosen": "a", "rejected": "b"}], r"p.jsonl:line 1: field 'prompt': missing"),
    ([{"prompt": "q", "completions": ["only one"]}],
     r"p.jsonl:line 1: field 'completions': a ranking needs at least 2 completions, got 1"),
    ([{"prompt": "q", "completions": "a"}], r"p.jsonl:line 1: field 'completions': expected an array"),
    ([{"prompt": "q", "completions": ["a", "b", "a"]}],
     r"p.jsonl:line 1: field 'completions\[2\]': identical to completions\[0\]"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "completions": ["a", "b"]}],
     r"p.jsonl:line 2: mixed shapes: this line is a ranking \(prompt, completions\) but line 1 is a pair"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"},
      {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
       "rejected": [{"role": "assistant", "content": "b"}]}],
     r"p.jsonl:line 2: field 'prompt': mixed shapes: chat messages here, but line 1 has plain text"),
    ([{"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}],
     r"p.jsonl:line 1: field 'chosen': expected a string like the prompt, got an array \(mixed shapes"),
    ([{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
       "rejected": [{"role": "user", "content": "b"}]}],
     r"p.jsonl:line 1: field 'rejected': expected exactly one assistant message"),
    ([{"prompt": [{"role": "assistant", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
       "rejected": [{"role": "assistant", "content": "b"}]}],
     r"p.jsonl:line 1: field 'prompt\[0\].role': the prompt must end with the user's turn"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b", "id": "x"}, {"prompt": "r", "chosen": "a", "rejected": "b", "id": "x"}],
     r"p.jsonl:line 2: field 'id': duplicate id 'x' \(first at line 1\)"),
    (['{"prompt": "q", "chosen": "a", "rejected": "b"}', '{"prompt": "q", "chosen'],
     r"p.jsonl:line 2: invalid JSON"),
])
def test_every_bad_preference_file_gives_its_one_line_error(tmp_path, rows, message):
    path = _write(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=message) as info:
        read_preferences(path)
    assert "\n" not in str(info.value)


def test_a_bad_preference_file_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    tailor = str(Path(sys.executable).parent / "tailor")
    proc = subprocess.run([tailor, "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert any("p.jsonl:line 1: field 'rejected': identical to chosen" in line for line in lines), lines


def test_splits_are_by_prompt(tmp_path):
    rows = [{"prompt": f"q{i % 10}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(40)]
    task = load_preference_task(_write(tmp_path / "p.jsonl", rows), test=3, dev=2)
    keys = {name: {ex.input for ex in split} for name, split in task.splits.items()}
    assert len(keys["test"]) == 3 and len(keys["dev"]) == 2 and len(keys["train"]) == 5
    assert not (keys["test"] & keys["train"]) and not (keys["dev"] & keys["train"]) and not (keys["test"] & keys["dev"])
    assert sum(map(len, task.splits.values())) == 40
    with pytest.raises(DataError, match="10 prompts cannot give 6 test and 4 dev prompts"):
        split_by_prompt(task, test=6, dev=4)


def test_bundled_factual_summary_pairs_split_by_article_without_identical_sides():
    from tailor.datasets import load_task
    task = load_task("factual-summary-pairs")
    assert task.kind == "generate" and len(task.examples) == 368   # 371 triples, 3 with identical sides
    assert any("3 triples" in n for n in task.notes)
    assert all(ex.target.strip() != ex.meta["rejected"].strip() for ex in task.examples)
    articles = {name: {ex.input for ex in split} for name, split in task.splits.items()}
    assert not (articles["test"] & articles["train"]) and not (articles["dev"] & articles["train"])


# ---------------------------------------------------------------- DPO


@pytest.fixture(scope="module")
def pair_task(tmp_path_factory):
    return load_preference_task(_write(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", pair_rows()), test=2, dev=1)


def test_dpo_loss_and_rewards_match_a_hand_computation():
    from tailor.preference.dpo import dpo_terms
    pc, pr = torch.tensor([-3.0, -2.0]), torch.tensor([-5.0, -1.0])
    rc, rr = torch.tensor([-4.0, -2.5]), torch.tensor([-4.5, -1.5])
    beta = 0.5
    loss, wc, wr = dpo_terms(pc, pr, rc, rr, beta, "sigmoid")
    # pair 0: h = (-3+4) - (-5+4.5) = 1.5; pair 1: h = (-2+2.5) - (-1+1.5) = 0
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(-0.75)), math.log(2)])
    assert wc.tolist() == pytest.approx([0.5, 0.25]) and wr.tolist() == pytest.approx([-0.25, 0.25])
    ipo, _, _ = dpo_terms(pc, pr, rc, rr, beta, "ipo")
    assert ipo.tolist() == pytest.approx([(1.5 - 1.0) ** 2, (0 - 1.0) ** 2])


def _policy(tiny_base, seed=0):
    from tailor.methods import make_method
    torch.manual_seed(seed)
    return make_method("dpo", {}).trainable_model(None, tiny_base).eval()   # no dropout: comparable forwards


def test_dpo_step_zero_loss_is_ln2_and_matches_each_pair_alone(tiny_base, pair_task):
    """The loop's packed batches (chosen and rejected under one tree mask, reference from the
    adapter switched off) give, before any update, loss ln 2 and the gradient of the pairwise
    loss computed pair by pair with plain forwards."""
    from tailor.preference.dpo import DPOLoss, encode_pairs
    from tailor.prompts import builder_for
    from tailor.train.loop import Trainer
    from tailor.train.options import TrainConfig
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    data, _ = encode_pairs(builder, pair_task.splits["train"], 512)
    model = _policy(tiny_base)
    with torch.no_grad():   # a non-zero adapter, so the policy differs from the reference
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    cfg = TrainConfig(steps=1, batch_size=8, pack_len=64, micro_batch_tokens=128, precision="fp32", kernels="off")
    trainer = Trainer(model, tiny_base.tokenizer, builder, pair_task, cfg, None, loss=DPOLoss(beta=0.3), data=data,
                      layout="packed", soft_tokens=0, tag="dpo", progress=False, resume=None, budget_s=None)
    batches, units = trainer.batches(0)
    assert units == 8 and len(batches) > 1 and all(b.attention_mask.dim() == 3 for b in batches)
    loss, logs = trainer.forward_backward(batches, units)
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    def alone(enc, adapter_on):
        lps = []
        for target in enc.targets:
            ids = torch.tensor([enc.prompt + target])
            ctx = torch.enable_grad() if adapter_on else model.disable_adapter()
            with ctx:
                logits = model(input_ids=ids).logits[0, len(enc.prompt) - 1:-1].float()
            lps.append(torch.log_softmax(logits, -1)[torch.arange(len(target)), torch.tensor(target)].sum())
        return lps

    model.zero_grad()
    total = 0
    for enc in batches_examples(batches):
        (pc, pr), (rc, rr) = alone(enc, True), [x.detach() for x in alone(enc, False)]
        total = total - torch.nn.functional.logsigmoid(0.3 * ((pc - rc) - (pr - rr)))
    (total / units).backward()
    assert loss == pytest.approx(total.item() / units, rel=1e-4)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-3, atol=1e-6)

    fresh = _policy(tiny_base)   # lora_B = 0: the policy is the reference
    trainer = Trainer(fresh, tiny_base.tokenizer, builder, pair_task, cfg, None, loss=DPOLoss(beta=0.3), data=data,
                      layout="packed", soft_tokens=0, tag="dpo", progress=False, resume=None, budget_s=None)
    loss, logs = trainer.forward_backward(*trainer.batches(0))
    assert loss == pytest.approx(math.log(2), abs=1e-6)
    assert logs["rewards_margin"] == pytest.approx(0.0, abs=1e-6) and logs["rewards_accuracy"] == 0.0


def batches_examples(batches):
    return [ex for b in batches for ex in b.examples]


def test_dpo_arm_learns_the_preference_and_saves_a_standard_adapter(tiny_base, pair_task, tmp_path):
    from peft import PeftModel

    from tailor.methods import load_adapted, make_method, save_adapted
    from tailor.methods.finetune import frozen_copy
    from tailor.preference.reward import likelihood_preference
    before = {n: p.clone() for n, p in tiny_base.model.named_parameters()}
    arm = make_method("dpo", {"steps": 30, "batch_size": 8, "lr": 3e-3, "beta": 0.5, "precision": "fp32",
                              "log_every": 1, "sft_weight": 0.1})
    adapted = arm.fit(pair_task, tiny_base, tmp_path / "dpo", progress=False)
    save_adapted(adapted, tmp_path / "dpo")
    assert all(torch.equal(p, before[n]) for n, p in tiny_base.model.named_parameters())
    rows = [json.loads(line) for line in (tmp_path / "dpo" / "train_metrics.jsonl").open()]
    # step 1's loss is computed before its update: the DPO part is exactly ln 2
    assert rows[0]["loss"] - 0.1 * rows[0]["sft_nll"] == pytest.approx(math.log(2), abs=1e-5)
    last = rows[-1]
    assert last["loss"] - 0.1 * last["sft_nll"] < 0.4 and last["rewards_accuracy"] == 1.0 and last["rewards_margin"] > 0
    assert {"rewards_chosen", "rewards_rejected", "sft_nll"} <= set(rows[-1])
    pref = likelihood_preference(adapted.engine(None, progress=False), adapted.builder, pair_task.splits["test"])
    assert pref["accuracy"] == 1.0
    # a standard PEFT adapter folder
    peft_model = PeftModel.from_pretrained(frozen_copy(tiny_base), tmp_path / "dpo" / "adapter")
    assert sum("lora_" in n for n, _ in peft_model.named_parameters()) > 0
    loaded = load_adapted(tmp_path / "dpo", tiny_base)
    assert loaded.weights_id == adapted.weights_id
    assert likelihood_preference(loaded.engine(None, progress=False), loaded.builder,
                                 pair_task.splits["test"])["mean_margin"] == pytest.approx(pref["mean_margin"], rel=1e-4)


def test_dpo_after_sft_uses_the_frozen_sft_adapter_as_reference(tiny_base, pair_task, tmp_path):
    from tailor.methods import make_method, save_adapted
    from tailor.preference.dpo import DPOLoss, encode_pairs, precompute_reference
    sft = make_method("lora", {"steps": 3, "batch_size": 8, "lr": 3e-3, "precision": "fp32"}).fit(
        pair_task, tiny_base, tmp_path / "sft", progress=False)
    save_adapted(sft, tmp_path / "sft")
    arm = make_method("dpo", {"init_adapter": str(tmp_path / "sft"), "steps": 1, "precision": "fp32"})
    from tailor.methods.preference import _start_adapter
    model, from_sft = _start_adapter(arm, tiny_base)
    assert from_sft and any(p.requires_grad for p in model.parameters())
    data, _ = encode_pairs(sft.builder, pair_task.splits["train"], 512)
    precompute_reference(model, data, tiny_base.tokenizer.pad_token_id, bf16=False)
    assert all(len(e.extra["ref"]) == 2 for e in data)
    # the SFT adapter (not the base) is the reference: the policy starts there, so step 0 is ln 2
    from tailor.train.data import pack
    batch = pack(data[:4], 512, tiny_base.tokenizer.pad_token_id, 8)[0]
    model.eval()
    with torch.no_grad():
        loss, _ = DPOLoss(0.1)(model, batch)
    assert loss.item() / len(batch.examples) == pytest.approx(math.log(2), abs=1e-4)
    with torch.no_grad(), model.disable_adapter():
        from tailor.train.losses import sequence_logprobs
        base_lp = sequence_logprobs(model, batch)
    assert not torch.allclose(base_lp, torch.tensor([e.extra["ref"][j] for e in batch.examples for j in (0, 1)]))
    adapted = arm.fit(pair_task, tiny_base, tmp_path / "dpo", progress=False)
    assert adapted.recipe.options["init_adapter"] == str(tmp_path / "sft")


def _train_cmd(config: Path, runs: Path, resume: Path | None = None) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "tailor"), "train", str(config), "--runs-dir", str(runs)]
    return cmd + (["--resume", str(resume)] if resume else [])


def test_a_dpo_run_killed_with_sigkill_resumes_to_the_same_final_loss(tmp_path):
    pairs = _write(tmp_path / "pairs.jsonl", pair_rows(40))
    config = tmp_path / "dpo.yaml"
    config.write_text(
        f"model: tiny-test\ntask: {pairs}\nmethod: dpo\ndtype: fp32\neval_split: null\n"
        "options: {steps: 60, batch_size: 4, save_every: 5, dropout: 0.1, lr: 3.0e-3, log_every: 1}\n")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    straight = subprocess.run(_train_cmd(config, tmp_path / "a"), env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    (run_a,) = (tmp_path / "a").iterdir()
    expected = json.loads((run_a / "metrics.json").read_text())["final_loss"]

    proc = subprocess.Popen(_train_cmd(config, tmp_path / "b"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, latest = time.time() + 120, None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob("*/checkpoints/latest.json"))
        if found and json.loads(found[0].read_text())["step"] >= 10:
            latest = found[0]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert latest is not None, "the run ended before it could be killed"
    run_b = latest.parent.parent
    assert not (run_b / "metrics.json").exists()
    resumed = subprocess.run(_train_cmd(config, tmp_path / "c", resume=run_b), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = json.loads((run_b / "recipe.json").read_text())["train"]
    assert state["resumed_from"] and state["steps"] == 60
    steps = [json.loads(line)["step"] for line in (run_b / "train_metrics.jsonl").open()]
    assert steps == list(range(1, 61))
    assert json.loads((run_b / "metrics.json").read_text())["final_loss"] == expected


# ---------------------------------------------------------------- reward model


def test_the_reward_is_read_at_the_last_real_token_not_the_last_non_pad(tiny_base):
    """SmolLM2's pad token is its end-of-turn token, which ends every answer: the score must be
    the head applied at the last token of each row by length, even when that token is 'pad',
    and must not depend on how much padding follows."""
    from tailor.engine import last_token_scores
    from tailor.methods import make_method
    model = make_method("reward-model", {}).trainable_model(None, tiny_base).eval()
    pad = tiny_base.tokenizer.pad_token_id
    assert pad == tiny_base.tokenizer.convert_tokens_to_ids("<|im_end|>")
    seq = [5, 17, 42, 99, pad]   # ends with the end-of-turn (= pad) token
    ids = torch.tensor([seq + [pad] * 3, seq[:3] + [pad] * 5])
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 3 + [0] * 5])
    with torch.no_grad():
        got = last_token_scores(model, ids, mask)
        seq_cls = model.get_base_model()
        for row, n in ((0, 5), (1, 3)):
            hidden = seq_cls.model(input_ids=ids[row:row + 1, :n]).last_hidden_state
            want = seq_cls.score(hidden[0, n - 1]).squeeze()
            assert got[row].item() == pytest.approx(want.item(), rel=1e-5)
        # transformers' own pooling reads row 0 at the token before the final pad: different
        hf = seq_cls(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    assert hf[0].item() != pytest.approx(got[0].item(), rel=1e-3)


def test_reward_model_learns_pairs_saves_a_standard_artifact_and_the_engine_scores(tiny_base, pair_task, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tailor.methods import load_adapted, make_method, save_adapted
    from tailor.preference.reward import pairwise_accuracy
    arm = make_method("reward-model", {"steps": 25, "batch_size": 8, "lr": 3e-3, "precision": "fp32", "log_every": 1})
    adapted = arm.fit(pair_task, tiny_base, tmp_path / "rm", progress=False)
    save_adapted(adapted, tmp_path / "rm")
    rows = [json.loads(line) for line in (tmp_path / "rm" / "train_metrics.jsonl").open()]
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["accuracy"] == 1.0
    acc = pairwise_accuracy(adapted.engine(None, progress=False), adapted.builder, pair_task.splits["test"])
    assert acc["accuracy"] == 1.0 and acc["mean_margin"] > 0
    # the engine's reward equals a plain forward of the standard artifact loaded with transformers + peft
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_base.path, num_labels=1, dtype=torch.float32)
    plain.config.pad_token_id = tiny_base.tokenizer.pad_token_id
    plain = PeftModel.from_pretrained(plain, tmp_path / "rm" / "reward").eval()
    ex = pair_task.splits["test"][0]
    prompt, answer = adapted.builder.build(ex).text, adapted.builder.target_text(ex.target)
    ids = adapted.builder.encode(prompt) + adapted.builder.encode(answer)
    with torch.no_grad():
        hidden = plain.get_base_model().model(input_ids=torch.tensor([ids])).last_hidden_state
        want = plain.get_base_model().score(hidden[0, -1]).item()
    loaded = load_adapted(tmp_path / "rm", tiny_base)
    (got,) = loaded.engine(None, progress=False).reward([prompt], [answer])
    assert got.score == pytest.approx(want, rel=1e-4) and got.completion_tokens == len(adapted.builder.encode(answer))


# ---------------------------------------------------------------- PPO


def test_gae_and_the_per_token_kl_penalty_match_a_direct_computation():
    from tailor.preference.ppo import gae, token_rewards
    lp = torch.tensor([-1.0, -2.0, -0.5, -1.5, -0.2])
    ref = torch.tensor([-1.5, -1.0, -0.5, -1.0, -0.4])
    seq = torch.tensor([0, 0, 0, 1, 1])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = token_rewards(lp, ref, scores, seq, beta=0.1)
    want = [-0.1 * (a - b) for a, b in zip(lp.tolist(), ref.tolist())]
    want[2] += 2.0
    want[4] += -1.0
    assert rewards.tolist() == pytest.approx(want) and kl.tolist() == pytest.approx((lp - ref).tolist())
    values = torch.tensor([0.3, -0.2, 0.1, 0.5, 0.4])
    adv, ret = gae(rewards, values, seq, gamma=1.0, lam=0.95)
    for start, end in ((0, 3), (3, 5)):   # A_t = sum_l (gamma lambda)^l delta_{t+l}, V after the end = 0
        v = values[start:end].tolist() + [0.0]
        r = rewards[start:end].tolist()
        deltas = [r[t] + v[t + 1] - v[t] for t in range(len(r))]
        for t in range(len(r)):
            assert adv[start + t].item() == pytest.approx(sum(0.95 ** k * d for k, d in enumerate(deltas[t:])))
    assert ret.tolist() == pytest.approx((adv + values).tolist())


@pytest.fixture(scope="module")
def reward_arm(tiny_base, pair_task, tmp_path_factory):
    from tailor.methods import make_method, save_adapted
    folder = tmp_path_factory.mktemp("rm") / "rm"
    rm = make_method("reward-model", {"steps": 2, "batch_size": 8, "precision": "fp32"}).fit(
        pair_task, tiny_base, folder, progress=False)
    save_adapted(rm, folder)
    return folder


def _ppo_trainer(tiny_base, pair_task, reward_arm, **options):
    from tailor.methods import load_adapted, make_method
    from tailor.preference.ppo import PolicyWithValue, PPOTrainer
    from tailor.prompts import builder_for
    opts = make_method("ppo", {"reward_model": str(reward_arm), "rollout_prompts": 6, "minibatch_prompts": 3,
                               "max_new_tokens": 6, "precision": "fp32", "beta": 0.2, **options})
    torch.manual_seed(0)
    policy = opts.trainable_model(None, tiny_base)
    with torch.no_grad():   # a policy that differs from the reference (the adapter off)
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model = PolicyWithValue(policy, tiny_base.model.config.hidden_size)
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    rm = load_adapted(reward_arm, tiny_base)
    return PPOTrainer(model, tiny_base.tokenizer, builder, pair_task.splits["train"], rm.engine(None, progress=False),
                      opts, None), rm, builder


def test_ppo_rollout_log_probs_and_per_token_kl_penalty_match_plain_forwards(tiny_base, pair_task, reward_arm):
    trainer, rm, builder = _ppo_trainer(tiny_base, pair_task, reward_arm)
    ro = trainer.rollout(0)
    policy = trainer.model.policy
    checked = 0
    for batch, old_lp, ref_lp, rewards, scores in zip(ro.batches, ro.old_lp, ro.ref_lp, ro.rewards, ro.scores):
        for i, enc in enumerate(batch.examples):
            target = enc.targets[0]
            ids = torch.tensor([enc.prompt + target])
            with torch.no_grad():
                lp = torch.log_softmax(policy(input_ids=ids).logits[0, len(enc.prompt) - 1:-1].float(), -1)
                with policy.disable_adapter():
                    ref = torch.log_softmax(policy(input_ids=ids).logits[0, len(enc.prompt) - 1:-1].float(), -1)
            idx = torch.arange(len(target)), torch.tensor(target)
            mine = batch.sequence == batch.sequences.index((i, 0))
            torch.testing.assert_close(old_lp[mine], lp[idx], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ref_lp[mine], ref[idx], rtol=1e-4, atol=1e-5)
            want = -0.2 * (lp[idx] - ref[idx])
            want[-1] += scores[i]
            torch.testing.assert_close(rewards[mine], want, rtol=1e-4, atol=1e-5)
            checked += 1
    assert checked == 6 and (torch.cat(ro.old_lp) != torch.cat(ro.ref_lp)).any()
    # the score is the reward model's, through the engine, at the response's last real token
    enc = ro.batches[0].examples[0]
    text = tiny_base.tokenizer.decode(enc.prompt)
    answer = tiny_base.tokenizer.decode(enc.targets[0])
    (direct,) = rm.engine(None, progress=False).reward([text], [answer])
    assert ro.scores[0][0].item() == pytest.approx(direct.score, rel=1e-4, abs=1e-5)


def test_ppo_first_epoch_has_ratio_one_and_no_clipping(tiny_base, pair_task, reward_arm):
    trainer, _, _ = _ppo_trainer(tiny_base, pair_task, reward_arm, ppo_epochs=2, lr=1e-2)
    ro = trainer.rollout(0)
    logs = trainer.optimise(ro)
    assert logs["first_ratio_max_dev"] == 0.0 and logs["first_clip_fraction"] == 0.0
    assert logs["ratio_max_dev"] > 0   # later minibatches ran on updated weights
    assert {"policy_loss", "value_loss", "approx_kl", "clip_fraction"} <= set(logs)


def test_ppo_arm_trains_logs_and_saves_a_standard_adapter(tiny_base, pair_task, reward_arm, tmp_path):
    from tailor.methods import load_adapted, make_method, save_adapted
    arm = make_method("ppo", {"reward_model": str(reward_arm), "steps": 3, "rollout_prompts": 4, "minibatch_prompts": 2,
                              "max_new_tokens": 5, "precision": "fp32", "target_kl": 0.5, "save_every": 1})
    adapted = arm.fit(pair_task, tiny_base, tmp_path / "ppo", progress=False)
    save_adapted(adapted, tmp_path / "ppo")
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "train_metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("reward", "kl", "approx_kl", "clip_fraction", "value_loss", "response_length", "beta"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert rows[-1]["beta"] != rows[0]["beta"]   # adaptive beta moved
    assert (tmp_path / "ppo" / "checkpoints" / "latest.json").exists()
    loaded = load_adapted(tmp_path / "ppo", tiny_base)
    assert loaded.weights_id == adapted.weights_id
    with pytest.raises(Exception, match="set reward_model"):
        make_method("ppo", {"steps": 1}).fit(pair_task, tiny_base, None, progress=False)


def test_ppo_after_sft_has_the_frozen_sft_adapter_as_reference(tiny_base, pair_task, reward_arm, tmp_path):
    """Under bf16 autocast too (autocast caches weight casts within a region: the reference's
    swapped-in weights must be seen)."""
    from tailor.methods import load_adapted, make_method, save_adapted
    sft = make_method("lora", {"steps": 3, "batch_size": 8, "lr": 3e-3, "precision": "fp32"}).fit(
        pair_task, tiny_base, tmp_path / "sft", progress=False)
    save_adapted(sft, tmp_path / "sft")
    ppo = make_method("ppo", {"init_adapter": str(tmp_path / "sft"), "reward_model": str(reward_arm), "steps": 3,
                              "rollout_prompts": 4, "minibatch_prompts": 2, "max_new_tokens": 5, "precision": "bf16",
                              "lr": 1e-2}).fit(pair_task, tiny_base, tmp_path / "ppo", progress=False)
    hist = ppo.recipe.train["history"]
    assert hist[0]["kl"] == pytest.approx(0.0, abs=1e-3)    # the policy starts as the SFT adapter
    assert abs(hist[-1]["kl"]) > 1e-4                        # and moves away from it
    # the reference stayed the SFT adapter: its log-probs are the reloaded SFT arm's
    ex = pair_task.splits["test"][0]
    prompt, answer = sft.builder.build(ex).text, sft.builder.target_text(ex.target)
    ref = load_adapted(tmp_path / "sft", tiny_base).engine(None, progress=False).score([prompt], [[answer]])[0].logprobs[0]
    now = ppo.engine(None, progress=False).score([prompt], [[answer]])[0].logprobs[0]
    assert now != pytest.approx(ref, abs=1e-4)


def test_ppo_resumes_from_its_checkpoint_to_the_same_iterations(tiny_base, pair_task, reward_arm, tmp_path):
    """PPO has a constant lr and seeds its rollouts and minibatch order by iteration, so one
    iteration, a checkpoint, and a resumed second one repeat a straight two-iteration run."""
    from tailor.methods import make_method
    opts = {"reward_model": str(reward_arm), "rollout_prompts": 4, "minibatch_prompts": 2, "max_new_tokens": 5,
            "precision": "fp32", "save_every": 1}
    straight = make_method("ppo", {**opts, "steps": 2}).fit(pair_task, tiny_base, tmp_path / "a", progress=False)
    make_method("ppo", {**opts, "steps": 1}).fit(pair_task, tiny_base, tmp_path / "b", progress=False)
    resumed = make_method("ppo", {**opts, "steps": 2}).fit(pair_task, tiny_base, tmp_path / "b", progress=False,
                                                          resume=str(tmp_path / "b"))
    assert resumed.recipe.train["resumed_from"]
    a, b = straight.recipe.train["history"], resumed.recipe.train["history"]
    assert [r["step"] for r in b] == [1, 2]
    for key in ("reward", "kl", "policy_loss", "value_loss", "response_length"):
        assert b[-1][key] == a[-1][key], key
    assert resumed.weights_id == straight.weights_id


# ---------------------------------------------------------------- the judge (a gold reward model)


def test_win_rate_counts_ties_half_and_refuses_unequal_lists():
    from tailor.preference.judge import win_rate
    assert win_rate([1.0, 2.0, 3.0, 3.0], [0.0, 2.0, 4.0, 1.0]) == (0.625, 1)   # win, tie, loss, win
    assert win_rate([0.5, 0.5], [0.5, 0.5]) == (0.5, 2)
    assert win_rate([-1.0], [1.0]) == (0.0, 0)
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_prompt_halves_are_disjoint_cover_the_prompts_and_match_the_bench():
    """The halves a ladder trains its judge and policies on are the bench's halves A and B."""
    import importlib.util

    from tailor.datasets import load_task
    from tailor.preference.data import prompt_half, prompt_key
    task = load_task("factual-summary-pairs")
    rows = task.splits["train"]
    a, b = prompt_half(rows, "half-a"), prompt_half(rows, "half-b")
    ka, kb = {prompt_key(ex.input) for ex in a}, {prompt_key(ex.input) for ex in b}
    assert not ka & kb and len(a) + len(b) == len(rows) and abs(len(ka) - len(kb)) <= 1
    spec = importlib.util.spec_from_file_location("bench_pref", Path(__file__).parents[1] / "bench" / "preference_alignment.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench_a, bench_b = bench.halves(task)
    assert [ex.id for ex in a] == [ex.id for ex in bench_a] and [ex.id for ex in b] == [ex.id for ex in bench_b]
    assert prompt_half(rows, "all") == rows


def test_kl_estimate_matches_a_direct_computation(tiny_base, pair_task, tmp_path):
    """mean over one temperature-1 sample per prompt of log pi(y|x) - log pi_ref(y|x), against plain
    forwards of both models on the same sampled answers; the reference against itself is 0."""
    from tailor.methods import make_method
    from tailor.preference.judge import answer_text, kl_to_reference, unique_prompts
    ref = make_method("zero-shot", {}).fit(pair_task, tiny_base, None, progress=False)
    policy = make_method("lora", {"steps": 3, "batch_size": 8, "lr": 1e-2, "precision": "fp32"}).fit(
        pair_task, tiny_base, tmp_path / "sft", progress=False)
    rows = unique_prompts(pair_task.splits["train"])[:5]
    mean, per = kl_to_reference(policy, ref, rows, max_new_tokens=6, seed=3)
    texts = [policy.builder.build(ex).text for ex in rows]
    gens = policy.engine(None, progress=False).generate(texts, max_new_tokens=6, temperature=1.0, seed=3)
    tok = tiny_base.tokenizer

    def logprob(model, prompt, answer):
        p, a = tok(prompt, add_special_tokens=False).input_ids, tok(answer, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + a])).logits[0].float()
        lp = torch.log_softmax(logits[len(p) - 1:-1], -1)
        return lp.gather(-1, torch.tensor(a)[:, None]).sum().item()

    direct = [logprob(policy.model, t, answer_text(policy.builder, g)) - logprob(ref.model, t, answer_text(policy.builder, g))
              for t, g in zip(texts, gens)]
    assert per == pytest.approx(direct, abs=2e-3)
    assert mean == pytest.approx(sum(direct) / len(direct), abs=2e-3)
    assert abs(mean) > 1e-3                       # the trained policy is not the reference
    assert kl_to_reference(ref, ref, rows, max_new_tokens=6, seed=3)[0] == 0.0


# ---------------------------------------------------------------- the ladder


def test_ladder_chains_dpo_and_ppo_after_an_sft_arm_and_reports_preferences(tmp_path):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    pairs = _write(tmp_path / "pairs.jsonl", pair_rows(24))
    quick = {"steps": 2, "batch_size": 4, "precision": "fp32"}
    exp = experiment_from_dict({
        "model": "tiny-test", "task": str(pairs), "task_options": {"test": 2, "dev": 1}, "dtype": "fp32",
        "runs_dir": str(tmp_path / "runs"), "curate": False, "forgetting": False, "latency_requests": 0,
        "max_new_tokens": 6, "cache": False,
        "judge": {"arm": "gold", "reference": "sft"},
        "arms": ["zero-shot", {"name": "sft", "method": "lora", "train_prompts": "half-a", **quick},
                 {"name": "rm", "method": "reward-model", "train_prompts": "half-a", **quick},
                 {"name": "gold", "method": "reward-model", "train_prompts": "half-b", **quick},
                 {"method": "dpo", "after": "sft", "train_prompts": "half-a", **quick},
                 {"method": "ppo", "after": "sft", "reward_model": "rm", "steps": 2, "rollout_prompts": 2,
                  "minibatch_prompts": 2, "max_new_tokens": 4, "precision": "fp32", "train_prompts": "half-a",
                  "save_every": 1, "keep_checkpoints": 10},
                 {"name": "orphan", "method": "dpo", "after": "nope", **quick}]}, "exp.yaml")
    results = run_ladder(exp, progress=False)
    arms = {a.name: a for a in results.arms}
    assert [arms[n].status for n in ("zero-shot", "sft", "rm", "gold", "dpo", "ppo")] == ["ok"] * 6, \
        {n: a.error for n, a in arms.items()}
    # the judge trained on the other half of the train prompts than every policy
    n_train = len(_split(exp, "train"))
    assert arms["gold"].train["data"]["kept"] + arms["rm"].train["data"]["kept"] == n_train
    policies = ("zero-shot", "sft", "dpo", "ppo")
    assert all(arms[n].judge is not None for n in policies) and arms["rm"].judge is None and arms["gold"].judge is None
    for n in policies:
        j = arms[n].judge
        assert (j.judge, j.reference, j.base, j.prompts, j.disjoint) == ("gold", "sft", "zero-shot", 2, True), n
        assert j.judge_accuracy == arms["gold"].metrics["pairwise_accuracy"]
        assert j.length == pytest.approx(arms[n].cost.completion_tokens_per_request)   # the same greedy answers
    assert arms["sft"].judge.win_rate == 0.5 and arms["sft"].judge.kl == 0.0
    assert arms["zero-shot"].judge.length_change == 0.0
    assert arms["dpo"].judge.length_change == pytest.approx(arms["dpo"].judge.length - arms["zero-shot"].judge.length)
    # PPO: its start (the SFT arm), each saved checkpoint, the best marked; the last is the arm itself
    cps = arms["ppo"].judge.checkpoints
    assert [c.step for c in cps] == [0, 1, 2]
    assert (cps[0].reward, cps[0].kl, cps[0].win_rate) == (arms["sft"].judge.reward, 0.0, 0.5)
    assert (cps[-1].reward, cps[-1].kl) == (arms["ppo"].judge.reward, arms["ppo"].judge.kl)
    best = [c for c in cps if c.best]   # one, the saved checkpoint the judge rewards most (not the start)
    assert len(best) == 1 and best[0].step > 0 and best[0].reward == max(c.reward for c in cps[1:])
    assert cps[1].train_kl == arms["ppo"].train["history"][0]["kl"]
    # the last checkpoint's weights are the arm's own (so the ladder takes the arm's grades for it)
    from tailor.methods import load_adapted
    from tailor.models import load_base
    from tailor.preference.judge import checkpoint_weights, judged_answers, unique_prompts
    run = Path(results.run_dir)
    base = load_base("tiny-test", dtype="fp32", device="cpu")
    ppo, gold = load_adapted(run / "arms" / "ppo", base), load_adapted(run / "arms" / "gold", base)
    rows = unique_prompts(_split(exp, "test"))
    own = judged_answers(ppo, gold, rows, max_new_tokens=6)[0]
    with checkpoint_weights(ppo, run / "arms" / "ppo" / "checkpoints" / "step-0000002") as last:
        assert judged_answers(last, gold, rows, max_new_tokens=6)[0] == pytest.approx(own, abs=1e-5)
    with checkpoint_weights(ppo, run / "arms" / "ppo" / "checkpoints" / "step-0000001") as first:
        assert sum(judged_answers(first, gold, rows, max_new_tokens=6)[0]) / len(rows) == pytest.approx(cps[1].reward, abs=1e-5)
    assert arms["orphan"].status == "failed" and "after: must name an earlier arm" in arms["orphan"].error
    assert arms["dpo"].options["after"] == "sft"
    run = Path(results.run_dir)
    for name in ("dpo", "ppo"):
        recipe = json.loads((run / "arms" / name / "recipe.json").read_text())
        assert recipe["options"]["init_adapter"] == str(run / "arms" / "sft")
    assert json.loads((run / "arms" / "ppo" / "recipe.json").read_text())["options"]["reward_model"] == str(run / "arms" / "rm")
    assert set(arms["rm"].metrics) == {"pairwise_accuracy", "mean_margin"}
    assert all("preference_accuracy" in arms[n].metrics for n in ("zero-shot", "sft", "dpo", "ppo"))
    assert results.recommendation.arm != "rm"
    html = (run / "report.html").read_text()
    assert "Preference alignment" in html and "judges pairs" in html
    assert "Graded by a gold reward model: gold" in html and "win rate vs sft (ties ½)" in html
    assert "ppo: the judge&#x27;s reward against KL over its checkpoints" in html or \
        "ppo: the judge's reward against KL over its checkpoints" in html
    assert html.count("★ best") == 1 and "Gao et al. 2023" in html
    from tailor.results import read_results
    again = {a.name: a for a in read_results(run).arms}
    assert again["ppo"].judge == arms["ppo"].judge   # typed in results.json


def _split(exp, name):
    from tailor.datasets import load_task
    return load_task(exp.task, **exp.task_options.loader_options(exp.seed)).splits[name]


def test_tailor_run_prints_a_ladder_whose_reward_model_has_no_task_metric(tmp_path):
    """The terminal table of `tailor run`: a reward model judges pairs and has no answers, so its
    metric cell is a dash (it once raised KeyError after the ladder had finished)."""
    import subprocess
    import sys

    import yaml
    pairs = _write(tmp_path / "pairs.jsonl", pair_rows(16))
    quick = {"steps": 1, "batch_size": 4, "precision": "fp32"}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "model": "tiny-test", "task": str(pairs), "task_options": {"test": 2, "dev": 1}, "dtype": "fp32",
        "runs_dir": str(tmp_path / "runs"), "curate": False, "forgetting": False, "latency_requests": 0,
        "max_new_tokens": 4, "cache": False, "report": False,
        "arms": ["zero-shot", {"name": "rm", "method": "reward-model", **quick}]}))
    tailor = Path(sys.executable).with_name("tailor")
    r = subprocess.run([str(tailor), "run", str(exp)], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("│ rm "))
    assert "—" in row and "Recommendation" in r.stdout and "zero-shot is the only" in r.stdout


def test_a_judge_that_fails_leaves_a_note_on_every_arm_not_silence():
    from types import SimpleNamespace

    from tailor.preference.judge import judge_ladder
    from tailor.results import ArmResult
    arms = [ArmResult(name="sft", method="lora"), ArmResult(name="bad", method="dpo", status="failed")]
    exp = SimpleNamespace(judge=SimpleNamespace(arm="no-such-arm", reference=None, base=None, checkpoints=False,
                                                seed=1))
    judge_ladder(arms, exp, None, [], progress=False)
    assert arms[0].judge is None and any(n.startswith("not graded: the judge failed") for n in arms[0].notes)
    assert arms[1].notes == {}
