"""GRPO: Tailor's GRPO (tailor.preference.grpo: sampling through the engine's continuous-batching
decoder, a group's samples trained in one packed row under a tree mask) against TRL's
GRPOTrainer + peft, on the same model (smollm2-135m, bf16 compute, the same HF folder Tailor
loads), the same prompts (asdiv when it is bundled, else tweet-sentiment; formatted by Tailor's
prompt builder for both), the same reward function (this file's, below), the same LoRA config,
group size, prompts per step, generation length, sampling (temperature 1, top-p 1), loss (DAPO:
token-level, clip 0.2 / 0.28, beta 0, one update per batch) and steps. TRL is a bench-only
dependency (the `bench` extra):

    .venv/bin/python -m pip install 'trl==1.16.*' --no-deps      # then datasets, pandas (constraints.txt)
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/grpo_vs_trl.py [--task asdiv --steps 8 --prompts 4 --group 8 --new 48]

Each side runs in its own process (peak RSS is its own). Tokens/s counts, for both sides the same
way (this file's reward function sees every sample: its prompt's tokens plus the sample's tokens,
re-encoded), every token sampled, over the wall time of training (sampling, rewards and updates
together; model loading left out: TRL's clock starts at its first step, Tailor's trainer times
its own steps).

Reward: asdiv, 1 when the first number in the sample equals the answer (fractions compared as
numbers); tweet-sentiment, 1 when the sample is the label (case and spaces aside). Reported:
the mean training reward of each side's samples over the last half of the steps, and the held-
out reward: greedy answers to the same test rows through Tailor's engine, for the base and
each trained adapter. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from fractions import Fraction

import torch

LORA = dict(r=16, alpha=32, dropout=0.0)
LR = 1e-4
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def as_number(text: str) -> Fraction | None:
    m = NUMBER.search(text)
    if not m:
        return None
    try:
        return Fraction(m.group(0).replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def make_reward(task_name: str, kind: str = "exact"):
    """`exact`: the answer (asdiv: its first number) is the target. `first-word` (tweet-sentiment): the
    answer's first word is the target label, a reward a 135M model can learn within tens of steps."""
    if task_name == "asdiv":
        return lambda sample, target: float(as_number(sample) is not None and as_number(sample) == as_number(target))
    if kind == "first-word":
        return lambda sample, target: float((re.findall(r"[a-z]+", sample.lower()) or [""])[0] == target.lower())
    return lambda sample, target: float(" ".join(sample.lower().split()).strip(" .") == target.lower())


def data(args):
    """The task (asdiv if bundled here, else tweet-sentiment), its train prompts and held-out rows."""
    from tailor.datasets import load_task
    from tailor.errors import TailorError
    from tailor.models import load_tokenizer
    from tailor.prompts import builder_for
    try:
        task = load_task(args.task)
    except (TailorError, KeyError, FileNotFoundError):
        task = load_task("tweet-sentiment")
    tok = load_tokenizer("smollm2-135m")
    builder = builder_for(task, tok)
    n = args.steps * args.prompts
    train = task.splits["train"][:n]   # one epoch: each prompt once in both trainers, in the same order
    task.splits["train"] = train
    return task, tok, builder, train, task.splits["test"][:args.held]


class Counter:
    """The reward both sides call, counting the tokens of every sample it sees."""

    def __init__(self, task_name: str, tok, kind: str = "exact"):
        self.fn, self.tok = make_reward(task_name, kind), tok
        self.tokens, self.rewards = 0, []

    def __call__(self, samples: list[str], prompts: list[str], targets: list[str]) -> list[float]:
        self.tokens += sum(len(self.tok(p, add_special_tokens=False).input_ids) +
                           len(self.tok(s, add_special_tokens=False).input_ids) for p, s in zip(prompts, samples))
        out = [self.fn(s.strip(), t) for s, t in zip(samples, targets)]
        self.rewards.append(sum(out) / len(out))
        return out


def held_out(model, tok, builder, rows, reward, new: int) -> float:
    from tailor.engine import Engine
    model.eval()
    texts = [builder.build(ex).text for ex in rows]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gens = Engine(model, tok, "held-out", cache=None, progress=False, batch_size=len(texts)).generate(
            texts, max_new_tokens=new)
    return [reward(g.text.strip(), ex.target) for g, ex in zip(gens, rows)]   # per row: the sides are paired


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def paired(a: list[float], b: list[float], draws: int = 2000) -> tuple[float, float, float, int, int]:
    """Mean of a - b over the same rows, its 95% percentile bootstrap interval over rows, and the
    rows each side alone got right."""
    import numpy as np
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(0)
    boots = d[rng.integers(0, len(d), (draws, len(d)))].mean(1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), \
        int(((d > 0)).sum()), int((d < 0).sum())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_tailor(args) -> dict:
    from tailor.methods import make_method
    from tailor.methods.finetune import start_adapter
    from tailor.models import load_base
    from tailor.preference.grpo import GRPOTrainer, RewardFn
    task, tok, builder, train, held = data(args)
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    counter = Counter(task.name, tok, args.reward)
    texts = {ex.id: builder.build(ex).text for ex in train}
    reward = RewardFn("reward", "correctness", 1.0, lambda samples, rows: counter(
        samples, [texts[ex.id] for ex in rows], [ex.target for ex in rows]))
    arm = make_method("grpo", {**LORA, "lr": args.lr, "steps": args.steps, "prompts_per_step": args.prompts,
                               "group_size": args.group, "max_new_tokens": args.new, "loss": "dapo", "beta": 0.0,
                               "precision": "bf16", "seed": args.seed, "max_train_examples": None})
    torch.manual_seed(arm.seed)
    policy, _ = start_adapter(arm, base)
    base_reward = mean(held_out(policy, tok, builder, held, counter.fn, args.new))   # LoRA B = 0: the base
    result = GRPOTrainer(policy, tok, builder, train, [reward], arm, None).run()
    peak = peak_rss_mb()
    half = counter.rewards[len(counter.rewards) // 2:]
    return {"task": task.name, "tokens": counter.tokens, "train_s": result["train_time_s"],
            "sampling_s": result["sampling_s"], "steps": result["steps"], "peak_rss_mb": peak,
            "reward_train": sum(half) / len(half), "held_rows": held_out(policy, tok, builder, held, counter.fn, args.new),
            "reward_base": base_reward, "held": len(held), "curve": counter.rewards}


def side_trl(args) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tailor.models import model_dir
    task, tok, builder, train, held = data(args)
    counter = Counter(task.name, tok, args.reward)

    def reward(prompts, completions, target, **_):
        return counter(completions, prompts, target)

    from tailor.train.data import step_examples
    # the prompts in the order Tailor's steps draw them (TRL, not shuffling, takes them in file order)
    ordered = [ex for step in range(args.steps) for ex in step_examples(train, args.prompts, args.seed, step)]
    rows = [{"prompt": builder.build(ex).text, "target": ex.target} for ex in ordered]
    model = AutoModelForCausalLM.from_pretrained(model_dir("smollm2-135m"), dtype=torch.bfloat16)
    cfg = GRPOConfig(output_dir=os.path.join(args.tmp, "trl-grpo"), per_device_train_batch_size=args.prompts * args.group,
                     num_generations=args.group, gradient_accumulation_steps=1, max_completion_length=args.new,
                     max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, max_grad_norm=1.0, beta=0.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.28,
                     num_iterations=1, scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0,
                     shuffle_dataset=False, bf16=True, use_cpu=True, logging_steps=1, save_strategy="no",
                     report_to=[], seed=args.seed, disable_tqdm=True, dataloader_num_workers=0, log_completions=False)

    class Clock(TrainerCallback):   # from the first step (generation happens inside it) to the end
        start = end = None

        def on_step_begin(self, a, state, control, **kw):
            Clock.start = Clock.start or time.perf_counter()

        def on_train_end(self, a, state, control, **kw):
            Clock.end = time.perf_counter()

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, callbacks=[Clock()],
                          peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    peak = peak_rss_mb()
    half = counter.rewards[len(counter.rewards) // 2:]
    return {"task": task.name, "tokens": counter.tokens, "train_s": Clock.end - Clock.start,
            "steps": trainer.state.global_step, "peak_rss_mb": peak, "reward_train": sum(half) / len(half),
            "held_rows": held_out(trainer.model, tok, builder, held, counter.fn, args.new), "held": len(held),
            "curve": counter.rewards}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="samples per prompt")
    p.add_argument("--new", type=int, default=48, help="max new tokens per sample")
    p.add_argument("--held", type=int, default=48, help="held-out rows answered greedily")
    p.add_argument("--task", choices=["asdiv", "tweet-sentiment"], default="asdiv",
                   help="asdiv falls back to tweet-sentiment where it is not bundled")
    p.add_argument("--reward", choices=["exact", "first-word"], default="exact",
                   help="tweet-sentiment: the answer is the label, or its first word is")
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--side", choices=["tailor", "trl"])
    p.add_argument("--tmp", default="/tmp/tailor-bench")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.side:
        print(json.dumps((side_tailor if args.side == "tailor" else side_trl)(args)))
        return
    res: dict[str, dict] = {}
    for side in ("tailor", "trl"):
        cmd = [sys.executable, __file__, "--side", side] + [
            f"--{k}={getattr(args, k)}"
            for k in ("steps", "prompts", "group", "new", "held", "tmp", "seed", "task", "reward", "lr")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{side} failed:\n{proc.stderr[-4000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["tps"] = r["tokens"] / r["train_s"]
        r["reward_held"] = mean(r["held_rows"])
        res[side] = r
        print(f"{side}: {r['tps']:.0f} tok/s, {r['train_s']:.1f} s training, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"process {time.perf_counter() - t0:.0f} s", flush=True)
    t, trl = res["tailor"], res["trl"]
    print(f"GRPO (DAPO loss, beta 0, clip 0.2/0.28, one update per batch), smollm2-135m bf16, {t['task']}: "
          f"{args.steps} steps x {args.prompts} prompts x {args.group} samples of at most {args.new} tokens, "
          f"LoRA r={LORA['r']} all-linear, lr {args.lr:g}, reward {args.reward}, {torch.get_num_threads()} threads; "
          f"held-out: {t['held']} rows, greedy")
    print(f"{'':8}{'tokens/s':>10}{'tokens':>9}{'train s':>9}{'peak RSS MB':>13}{'reward train':>14}{'reward held':>13}")
    for side, v in (("tailor", t), ("trl", trl)):
        print(f"{side:8}{v['tps']:>10.0f}{v['tokens']:>9}{v['train_s']:>9.1f}{v['peak_rss_mb']:>13.0f}"
              f"{v['reward_train']:>14.3f}{v['reward_held']:>13.3f}")
    print(f"base (no training) held-out reward: {t['reward_base']:.3f}; Tailor's sampling took {t['sampling_s']:.1f} s "
          f"of its {t['train_s']:.1f} s")
    for side, v in (("tailor", t), ("trl", trl)):   # the training samples' reward, by quarter of the steps
        q = max(1, len(v["curve"]) // 4)
        print(f"{side} training reward by quarter: " + "  ".join(f"{mean(v['curve'][i:i + q]):.3f}"
                                                              for i in range(0, len(v["curve"]), q)))
    diff, lo, hi, only_t, only_trl = paired(t["held_rows"], trl["held_rows"])
    print(f"held out, paired on the same {len(t['held_rows'])} rows: Tailor - TRL {diff:+.3f} (95% bootstrap "
          f"{lo:+.3f} to {hi:+.3f}); right only for Tailor {only_t}, only for TRL {only_trl}")
    print(json.dumps({"tokens_per_s_ratio": t["tps"] / trl["tps"], "peak_rss_ratio": t["peak_rss_mb"] / trl["peak_rss_mb"],
                      "reward_tailor": t["reward_held"], "reward_trl": trl["reward_held"], "reward_base": t["reward_base"],
                      "reward_train_tailor": t["reward_train"], "reward_train_trl": trl["reward_train"],
                      "reward_diff": diff, "reward_diff_ci": [lo, hi], "seed": args.seed,
                      "tokens_per_s": {"tailor": round(t["tps"], 1), "trl": round(trl["tps"], 1)},
                      "peak_rss_mb": {"tailor": round(t["peak_rss_mb"]), "trl": round(trl["peak_rss_mb"])},
                      "train_s": {"tailor": round(t["train_s"], 1), "trl": round(trl["train_s"], 1)},
                      "task": t["task"], "steps": args.steps, "prompts_per_step": args.prompts, "group": args.group,
                      "max_new_tokens": args.new, "held_out_rows": t["held"], "lr": args.lr, "reward": args.reward}))


if __name__ == "__main__":
    main()
