"""DPO: Tailor's DPO loss on its one training loop vs TRL's DPOTrainer + peft, on the same model
(smollm2-135m, bf16, the same HF folder Tailor loads), the same pairs (factual-summary-pairs,
formatted by Tailor's prompt builder for both), the same LoRA config, beta, lr schedule and
steps. TRL is a bench-only dependency (the `bench` extra):

    .venv/bin/python -m uv pip install --python .venv/bin/python -c constraints.txt "trl==1.16.*"
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/dpo_vs_trl.py [--pairs 160 --batch 8 --repeats 1]

Each side runs in its own process (peak RSS is its own). Both use the reference as the adapter
switched off (TRL's default with peft, Tailor's default for a fresh adapter) and no dropout
(TRL's DPO default `disable_dropout=True`; LoRA dropout 0 on both sides).

Tokens/s counts the same tokens for both sides: per pair, the prompt twice plus both answers
(what a concatenated chosen/rejected forward sees), per epoch, over the training wall time. Tailor
runs a pair's prompt once (chosen and rejected share it under a tree mask), so it does less work
for the same tokens: that is the point of measuring it this way.

Held-out preference accuracy is computed for both trained adapters by the same function on the
test split (prompts unseen in training): the implicit-reward accuracy of DPO (Rafailov et al.
2023), ((log π − log π_ref)(chosen) > (log π − log π_ref)(rejected)), and the policy's raw
likelihood preference (log π(chosen) > log π(rejected)); the base's likelihood preference is the
floor. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys

import torch

LORA = dict(r=16, alpha=32, dropout=0.0)
LR, BETA = 2e-4, 0.1


def data(n: int):
    from tailor.datasets import load_task
    from tailor.models import load_tokenizer
    from tailor.preference.dpo import encode_pairs
    from tailor.prompts import builder_for
    task = load_task("factual-summary-pairs")
    tok = load_tokenizer("smollm2-135m")
    builder = builder_for(task, tok)
    train = task.splits["train"]
    pool = random.Random(0).sample(train, min(n, len(train)))
    task.splits["train"] = pool
    return task, tok, builder, pool, encode_pairs(builder, pool, 1024)[0], encode_pairs(builder, task.splits["test"], 1024)[0]


def pair_tokens(enc) -> int:
    return sum(2 * len(e.prompt) + len(e.targets[0]) + len(e.targets[1]) for e in enc)


def preference_accuracy(model, held, pad_id: int) -> dict:
    from tailor.train.data import pack
    from tailor.train.losses import sequence_logprobs
    model.eval()
    implicit = likelihood = n = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for b in pack(held, 512, pad_id, 16):
            lp = sequence_logprobs(model, b)
            with model.disable_adapter():
                ref = sequence_logprobs(model, b)
            at = {s: k for k, s in enumerate(b.sequences)}
            for i in range(len(b.examples)):
                c, r = at[(i, 0)], at[(i, 1)]
                implicit += float((lp[c] - ref[c]) > (lp[r] - ref[r]))
                likelihood += float(lp[c] > lp[r])
                n += 1
    return {"implicit": implicit / n, "likelihood": likelihood / n}


def base_likelihood_accuracy(held, pad_id: int) -> float:
    from tailor.models import load_base
    from tailor.train.data import pack
    from tailor.train.losses import sequence_logprobs
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    wins = n = 0
    with torch.no_grad():
        for b in pack(held, 512, pad_id, 16):
            lp = sequence_logprobs(base.model, b)
            at = {s: k for k, s in enumerate(b.sequences)}
            for i in range(len(b.examples)):
                wins += float(lp[at[(i, 0)]] > lp[at[(i, 1)]])
                n += 1
    return wins / n


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_tailor(args) -> dict:
    from tailor.methods import make_method
    from tailor.models import load_base
    task, tok, builder, pool, enc, held = data(args.pairs)
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    arm = make_method("dpo", {**LORA, "lr": LR, "beta": BETA, "epochs": 1, "batch_size": args.batch,
                              "max_train_examples": None, "warmup_ratio": 0.1, "min_lr_ratio": 0.0,
                              "seed": args.seed, "log_every": 1000})
    adapted = arm.fit(task, base, progress=False)
    peak = peak_rss_mb()
    t = adapted.recipe.train
    return {"tokens": pair_tokens(enc), "real_tokens": t["train_tokens"], "train_s": t["train_time_s"],
            "steps": t["steps"], "final_loss": t["final_loss"], "peak_rss_mb": peak,
            "acc": preference_accuracy(adapted.model, held, tok.pad_token_id), "held": len(held)}


def side_trl(args) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tailor.models import model_dir
    task, tok, builder, pool, enc, held = data(args.pairs)
    rows = [{"prompt": builder.build(ex).text, "chosen": builder.target_text(ex.target),
             "rejected": builder.target_text(ex.meta["rejected"])} for ex in pool]
    model = AutoModelForCausalLM.from_pretrained(model_dir("smollm2-135m"), dtype=torch.bfloat16)

    cfg = DPOConfig(output_dir=os.path.join(args.tmp, "trl-dpo"), per_device_train_batch_size=args.batch,
                    num_train_epochs=1, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.1,
                    bf16=True, use_cpu=True, logging_steps=1, save_strategy="no", report_to=[], beta=BETA,
                    loss_type=["sigmoid"], max_length=1024, dataloader_num_workers=0, seed=args.seed,
                    disable_tqdm=True, gradient_checkpointing=False)
    from trl_clock import Clock  # bench/ is on the path when a bench runs
    clock = Clock()
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                target_modules="all-linear", task_type="CAUSAL_LM"),
                         callbacks=[clock])
    trainer.train()
    peak = peak_rss_mb()
    return {"tokens": pair_tokens(enc), "train_s": clock.end - clock.start, "steps": trainer.state.global_step,
            "final_loss": clock.losses[-1] if clock.losses else float("nan"), "peak_rss_mb": peak,
            "acc": preference_accuracy(trainer.model, held, tok.pad_token_id), "held": len(held)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=160)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--side", choices=["tailor", "trl"])
    p.add_argument("--tmp", default="/tmp/tailor-bench")
    p.add_argument("--repeats", type=int, default=1, help="rounds; each side's fastest round counts for speed")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.side:
        print(json.dumps((side_tailor if args.side == "tailor" else side_trl)(args)))
        return
    best: dict[str, dict] = {}
    for rnd in range(args.repeats):
        for side in ("tailor", "trl"):
            cmd = [sys.executable, __file__, "--side", side, "--pairs", str(args.pairs), "--batch", str(args.batch),
                   "--tmp", args.tmp, "--seed", str(args.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["tps"] = r["tokens"] / r["train_s"]
            print(f"round {rnd}: {side}: {r['tps']:.0f} tok/s, {r['train_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"held-out implicit-reward acc {r['acc']['implicit']:.3f}", flush=True)
            if side not in best or r["tps"] > best[side]["tps"]:
                best[side] = r
    t, trl = best["tailor"], best["trl"]
    _, tok, _, _, _, held = data(args.pairs)
    floor = base_likelihood_accuracy(held, tok.pad_token_id)
    print(f"DPO (sigmoid, beta {BETA}), smollm2-135m bf16, factual-summary-pairs: {args.pairs} pairs, batch "
          f"{args.batch}, 1 epoch ({t['steps']} steps), LoRA r={LORA['r']} all-linear, lr {LR}, "
          f"{torch.get_num_threads()} threads; held-out: {t['held']} pairs of unseen articles")
    print(f"{'':10}{'tokens/s':>10}{'train s':>10}{'peak RSS MB':>13}{'final loss':>12}{'acc implicit':>14}"
          f"{'acc likelihood':>16}")
    for side, v in (("tailor", t), ("trl", trl)):
        print(f"{side:10}{v['tps']:>10.0f}{v['train_s']:>10.1f}{v['peak_rss_mb']:>13.0f}{v['final_loss']:>12.4f}"
              f"{v['acc']['implicit']:>14.3f}{v['acc']['likelihood']:>16.3f}")
    print(f"base (no training) likelihood preference accuracy: {floor:.3f}")
    print(json.dumps({"tokens_per_s_ratio": t["tps"] / trl["tps"], "peak_rss_ratio": t["peak_rss_mb"] / trl["peak_rss_mb"],
                      "pref_acc_tailor": t["acc"]["implicit"], "pref_acc_trl": trl["acc"]["implicit"],
                      "likelihood_acc_tailor": t["acc"]["likelihood"], "likelihood_acc_trl": trl["acc"]["likelihood"],
                      "likelihood_acc_base": floor, "final_loss_tailor": t["final_loss"],
                      "final_loss_trl": trl["final_loss"], "tokens_per_s": {"tailor": round(t["tps"], 1),
                                                                            "trl": round(trl["tps"], 1)},
                      "peak_rss_mb": {"tailor": round(t["peak_rss_mb"]), "trl": round(trl["peak_rss_mb"])},
                      "train_s": {"tailor": t["train_s"], "trl": trl["train_s"]}, "steps": t["steps"],
                      "pairs": args.pairs, "held_out_pairs": t["held"]}))


if __name__ == "__main__":
    main()
