"""Preference alignment measured without humans, on factual-summary-pairs with smollm2-135m
(bf16, CPU): base, SFT (LoRA on the chosen summaries), DPO and PPO (both continuing the SFT
adapter, which is also their reference), compared on held-out articles.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/preference_alignment.py [--ppo-steps 12]

- Two reward models on disjoint halves of the training articles: the *proxy* (the one PPO
  optimises) on half A, the *gold* (the judge) on half B, so PPO's own reward model never grades
  itself (InstructGPT, Ouyang et al. 2022, measures against held-out labelers for the same
  reason). SFT, DPO and PPO train on half A only. Both RMs' held-out pairwise accuracy is printed.
- Per policy, on the test articles (never trained on): preference accuracy (log-likelihood of
  the faithful summary above the unfaithful one), greedy summaries judged by the gold RM (win
  rate against SFT's summary of the same article, ties half; and length-controlled: the gold
  score minus its least-squares slope on length, pooled over every policy's summaries), mean
  length in tokens, rougeL against the faithful summary (the task metric), and KL to the
  reference (SFT): the mean over one temperature-1 sample per article of log π − log π_SFT.
- PPO's per-iteration proxy reward and KL are printed (reward hacking shows as reward rising
  with KL and length); the gold reward of its checkpoints every `--gold-every` iterations too.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch


def halves(task):
    from tailor.preference.data import prompt_key
    keys = sorted({prompt_key(ex.input) for ex in task.splits["train"]})
    random.Random(0).shuffle(keys)
    a = set(keys[: len(keys) // 2])
    return ([ex for ex in task.splits["train"] if prompt_key(ex.input) in a],
            [ex for ex in task.splits["train"] if prompt_key(ex.input) not in a])


def with_train(task, rows):
    import copy
    t = copy.copy(task)
    t.splits = {**task.splits, "train": rows}
    return t


def unique_prompts(rows):
    seen, out = set(), []
    for ex in rows:
        if ex.input not in seen:
            seen.add(ex.input)
            out.append(ex)
    return out


def evaluate_policy(adapted, sft, gold, test_pairs, test_prompts, max_new: int) -> dict:
    from tailor.evaluate import rouge
    from tailor.preference.reward import likelihood_preference
    engine = adapted.engine(None, progress=False)
    b = adapted.builder
    pref = likelihood_preference(engine, b, test_pairs)
    texts = [b.build(ex).text for ex in test_prompts]
    greedy = engine.generate(texts, max_new_tokens=max_new)
    answers = [b.target_text(g.text) if g.finish_reason == "stop" else b.answer_prefix + g.text for g in greedy]
    gold_scores = [r.score for r in gold.engine(None, progress=False).reward(texts, answers)]
    sampled = engine.generate(texts, max_new_tokens=max_new, temperature=1.0, seed=1)
    s_answers = [b.target_text(g.text) if g.finish_reason == "stop" else b.answer_prefix + g.text for g in sampled]
    own = [s.logprobs[0] for s in engine.score(texts, [[a] for a in s_answers])]
    ref = [s.logprobs[0] for s in sft.engine(None, progress=False).score(texts, [[a] for a in s_answers])]
    return {"pref_acc": pref["accuracy"], "pref_acc_per_token": pref["accuracy_per_token"],
            "gold": gold_scores, "lengths": [g.completion_tokens for g in greedy],
            "rougeL": rouge([g.text for g in greedy], [ex.target for ex in test_prompts])["rougeL"],
            "kl_to_sft": sum(o - r for o, r in zip(own, ref)) / len(own),
            "examples": [g.text for g in greedy[:3]]}


def win_rate(a: list[float], b: list[float]) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)) / len(a)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/tailor-pref")
    p.add_argument("--rm-epochs", type=float, default=2.0)
    p.add_argument("--sft-epochs", type=float, default=2.0)
    p.add_argument("--dpo-epochs", type=float, default=2.0)
    p.add_argument("--ppo-steps", type=int, default=12)
    p.add_argument("--gold-every", type=int, default=4)
    p.add_argument("--max-new", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    from tailor.datasets import load_task
    from tailor.methods import load_adapted, make_method, save_adapted
    from tailor.models import load_base
    from tailor.preference.reward import pairwise_accuracy
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    task = load_task("factual-summary-pairs")
    half_a, half_b = halves(task)
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    test_pairs = task.splits["test"]
    test_prompts = unique_prompts(test_pairs)
    timings = {}

    def fit(name, method, options, rows):
        t0 = time.perf_counter()
        adapted = make_method(method, options).fit(with_train(task, rows), base, out / name, progress=False)
        save_adapted(adapted, out / name)
        timings[name] = time.perf_counter() - t0
        print(f"{name}: fitted in {timings[name]:.0f} s", flush=True)
        return adapted

    rm_opts = {"epochs": args.rm_epochs, "batch_size": 8, "lr": 2e-4, "max_train_examples": None}
    gold = fit("gold-rm", "reward-model", rm_opts, half_b)
    proxy = fit("proxy-rm", "reward-model", rm_opts, half_a)
    rm_acc = {name: pairwise_accuracy(m.engine(None, progress=False), m.builder, test_pairs)
              for name, m in (("proxy", proxy), ("gold", gold))}
    print(f"reward models, held-out pairwise accuracy ({len(test_pairs)} pairs of unseen articles): "
          f"proxy {rm_acc['proxy']['accuracy']:.3f}, gold {rm_acc['gold']['accuracy']:.3f}", flush=True)
    sft = fit("sft", "lora", {"epochs": args.sft_epochs, "batch_size": 8, "lr": 5e-4, "max_train_examples": None}, half_a)
    dpo = fit("dpo", "dpo", {"init_adapter": str(out / "sft"), "epochs": args.dpo_epochs, "batch_size": 8,
                             "lr": 2e-4, "beta": 0.1, "max_train_examples": None}, half_a)
    ppo = fit("ppo", "ppo", {"init_adapter": str(out / "sft"), "reward_model": str(out / "proxy-rm"),
                             "steps": args.ppo_steps, "rollout_prompts": 16, "minibatch_prompts": 8, "ppo_epochs": 2,
                             "lr": 1e-4, "beta": 0.05, "max_new_tokens": args.max_new, "save_every": args.gold_every,
                             "keep_checkpoints": 100, "max_train_examples": None}, half_a)
    zero = make_method("zero-shot", {}).fit(task, base, None, progress=False)
    policies = {"base": zero, "sft": sft, "dpo": dpo, "ppo": ppo}
    results = {name: evaluate_policy(m, sft, gold, test_pairs, test_prompts, args.max_new) for name, m in policies.items()}
    # length control: gold score minus its pooled least-squares slope on length
    xs = [x for r in results.values() for x in r["lengths"]]
    ys = [y for r in results.values() for y in r["gold"]]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1e-9)
    for r in results.values():
        r["gold_lc"] = [y - slope * x for x, y in zip(r["lengths"], r["gold"])]
    sft_r = results["sft"]
    print(f"\nsmollm2-135m, factual-summary-pairs: {len(half_a)} train pairs (half A), gold RM on {len(half_b)} (half B); "
          f"{len(test_prompts)} held-out articles, {len(test_pairs)} held-out pairs; greedy, {args.max_new} new tokens max")
    print(f"{'':6}{'pref acc':>9}{'gold RM':>9}{'win vs SFT':>11}{'LC win':>8}{'KL(.|SFT)':>10}{'length':>8}"
          f"{'len chg':>8}{'rougeL':>8}")
    table = {}
    for name, r in results.items():
        row = {"pref_acc": r["pref_acc"], "gold_reward": sum(r["gold"]) / len(r["gold"]),
               "win_rate_vs_sft": win_rate(r["gold"], sft_r["gold"]),
               "win_rate_vs_sft_length_controlled": win_rate(r["gold_lc"], sft_r["gold_lc"]),
               "kl_to_sft": r["kl_to_sft"], "length": sum(r["lengths"]) / len(r["lengths"]),
               "rougeL": r["rougeL"]}
        row["length_change_vs_sft"] = row["length"] - sum(sft_r["lengths"]) / len(sft_r["lengths"])
        table[name] = row
        print(f"{name:6}{row['pref_acc']:>9.3f}{row['gold_reward']:>9.3f}{row['win_rate_vs_sft']:>11.3f}"
              f"{row['win_rate_vs_sft_length_controlled']:>8.3f}{row['kl_to_sft']:>10.3f}{row['length']:>8.1f}"
              f"{row['length_change_vs_sft']:>+8.1f}{row['rougeL']:>8.3f}")
    for name, r in results.items():
        print(f"  {name} e.g.: {r['examples'][0]!r}")
    hist = ppo.recipe.train["history"]
    print("\nPPO per iteration (proxy reward, KL to SFT per response, length, clip fraction):")
    for h in hist:
        print(f"  {h['step']:3d}  reward {h['reward']:+.3f}  kl {h['kl']:+.3f}  len {h['response_length']:.1f}  "
              f"clip {h['clip_fraction']:.3f}  first-minibatch |ratio-1| {h['first_ratio_max_dev']:.1e}")
    from safetensors.torch import load_file
    curve = []
    for ckpt in sorted((out / "ppo" / "checkpoints").glob("step-*")):
        policy = load_adapted(out / "sft", base)
        # the checkpoint holds the PolicyWithValue tensors: strip the wrapper's prefix
        tensors = {k.removeprefix("policy."): v for k, v in load_file(str(ckpt / "trainable.safetensors")).items()
                   if k.startswith("policy.")}
        params = dict(policy.model.named_parameters())
        with torch.no_grad():
            for k, v in tensors.items():
                params[k].copy_(v.to(params[k].dtype))
        policy.weights_id = f"{policy.weights_id}+ppo-ckpt:{ckpt.name}"
        e = policy.engine(None, progress=False)
        texts = [policy.builder.build(ex).text for ex in test_prompts]
        gens = e.generate(texts, max_new_tokens=args.max_new)
        answers = [policy.builder.target_text(g.text) if g.finish_reason == "stop" else policy.builder.answer_prefix + g.text
                   for g in gens]
        g = [r.score for r in gold.engine(None, progress=False).reward(texts, answers)]
        step = int(ckpt.name.split("-")[1])
        curve.append({"step": step, "gold_reward": sum(g) / len(g), "kl": hist[step - 1]["kl"]})
        print(f"  checkpoint {step}: gold reward {curve[-1]['gold_reward']:+.3f} at KL {curve[-1]['kl']:+.3f}")
    best = max(curve, key=lambda c: c["gold_reward"]) if curve else None
    if best:
        print(f"  best PPO checkpoint by gold reward: step {best['step']}")
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")
    print(json.dumps({"rm_acc_proxy": rm_acc["proxy"]["accuracy"], "rm_acc_gold": rm_acc["gold"]["accuracy"],
                      "policies": table, "ppo_history": [{k: h[k] for k in ("step", "reward", "kl", "response_length",
                                                                            "clip_fraction", "approx_kl", "value_loss")}
                                                         for h in hist],
                      "ppo_gold_curve": curve, "best_ppo_step": best and best["step"], "fit_s": timings,
                      "train_pairs": len(half_a), "gold_pairs": len(half_b), "test_pairs": len(test_pairs),
                      "test_articles": len(test_prompts)}))


if __name__ == "__main__":
    main()
