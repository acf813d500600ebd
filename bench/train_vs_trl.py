"""LoRA SFT: Tailor's training loop vs TRL's SFTTrainer + peft, same data, model, LoRA config,
sequence budget and steps, each in its best CPU settings. TRL is a bench-only dependency:

    uv pip install -p .venv/bin/python "trl==1.16.*"    (check with --dry-run: it pulls no torch)
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/train_vs_trl.py [--examples 320 --batch 16 --seeds 6]

Speed and memory. Each side runs with and without gradient checkpointing (TRL's SFTConfig turns
it on by default: its memory-lean setting; off is its fastest), each run in its own process so
peak RSS is its own. "Best settings" per axis: tokens/s compares both sides without checkpointing
(each at its fastest), peak RSS compares both with it (each at its leanest); the default pairing
(Tailor's default off, TRL's default on) is printed too. Measured: real (non-padding) tokens/s of
the training steps and peak RSS up to the end of training. The four runs repeat in interleaved
rounds (`--repeats`) and each keeps its fastest round: this shared VM's matmul throughput drifts
by 2x from minute to minute, and the best of several rounds is the figure least disturbed.

Loss. The loss of the trained adapter on the whole dev split, computed for both sides by the
same function (target-only cross-entropy), so the losses compare like for like. Both schedules
are 10% warmup, then cosine to zero (TRL's default; Tailor's own default keeps a floor of 0.1;
HF's warmup starts at lr 0, Tailor's at lr/warmup). Round r trains with seed r on both sides
(adapter init, data order, dropout) on the same examples; rounds beyond `--repeats`, up to
`--seeds`, run only the configurations without checkpointing (checkpointing does not change the
loss). Each side's loss is its mean over the seeds, printed with its spread and the standard
error of the difference: 20 steps at lr 1e-3 end a few hundredths apart from one seed to the
next, so one seed per side cannot settle "equal or lower loss". The default 6 seeds take about
45 minutes, most of it TRL's.

MFU: achieved training FLOP/s (`train_flops`: model FLOPs of the real tokens, nothing counted for
padding or masked attention blocks) over the bf16 FLOP/s of a plain large matmul on this machine,
measured in the same run, and the ceiling of the body's matmuls at a step's shapes
(`step_profile.py` splits a step's time by operator). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from dtype_matmul import bf16_peak_flops  # noqa: E402

LORA = dict(r=16, alpha=32, dropout=0.05)
LR = 1e-3


def data(n: int):
    from tailor.datasets import load_task
    from tailor.models import load_tokenizer
    from tailor.prompts import builder_for
    from tailor.train.data import encode_examples
    task = load_task("tweet-sentiment")
    tok = load_tokenizer("smollm2-135m")
    builder = builder_for(task, tok)
    import random
    pool = random.Random(0).sample(task.splits["train"], n)   # the same examples for every seed
    held = task.splits["dev"]
    return task, tok, builder, pool, encode_examples(builder, pool, 1024)[0], encode_examples(builder, held, 1024)[0]


def held_out_loss(model, held) -> float:
    from tailor.train.data import pack
    from tailor.train.losses import SFT
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for b in pack(held, 256, 2, 16):
            total += SFT()(model, b)[0].item()
            n += len(b.labels)
    return total / n


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tailor_arm(batch: int, seed: int = 0, gc: bool = False):
    from tailor.methods import make_method
    return make_method("lora", {**LORA, "lr": LR, "epochs": 1, "batch_size": batch, "max_train_examples": None,
                                "warmup_ratio": 0.1, "min_lr_ratio": 0.0, "seed": seed,
                                "log_every": 1000, "grad_checkpointing": gc})


def tailor_setup(examples: int):
    """The task with the bench's examples as its train split, the bf16 base, the encoded examples
    and the held-out rows."""
    from tailor.models import load_base
    task, tok, builder, pool, enc, held = data(examples)
    task.splits["train"] = pool
    return task, load_base("smollm2-135m", dtype="bf16", device="cpu"), enc, held


def side_tailor(args) -> dict:
    task, base, enc, held = tailor_setup(args.examples)
    adapted = tailor_arm(args.batch, args.seed, args.gc).fit(task, base, progress=False)
    peak = peak_rss_mb()   # training's peak: the held-out evaluation below is the bench's, not the trainer's
    t = adapted.recipe.train
    return {"tokens": t["train_tokens"], "train_s": t["train_time_s"], "steps": t["steps"],
            "padding_fraction": t["padding_fraction"], "target_tokens": t["target_tokens"],
            "loss": held_out_loss(adapted.model, held),
            "peak_rss_mb": peak, "mean_len": sum(len(e) for e in enc) / len(enc), "held": len(held)}


def side_trl(args) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tailor.models import model_dir
    task, tok, builder, pool, enc, held = data(args.examples)
    rows = [{"prompt": builder.build(ex).text, "completion": builder.target_text(ex.target)} for ex in pool]
    model = AutoModelForCausalLM.from_pretrained(model_dir("smollm2-135m"), dtype=torch.bfloat16)

    cfg = SFTConfig(output_dir=os.path.join(args.tmp, "trl"), per_device_train_batch_size=args.batch,
                    num_train_epochs=1, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.1,
                    bf16=True, use_cpu=True, logging_steps=1, save_strategy="no", report_to=[],
                    completion_only_loss=True, max_length=1024, packing=False, dataloader_num_workers=0,
                    seed=args.seed, disable_tqdm=True, gradient_checkpointing=args.gc)
    from trl_clock import Clock  # bench/ is on the path when a bench runs
    clock = Clock()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                target_modules="all-linear", task_type="CAUSAL_LM"),
                         callbacks=[clock])
    trainer.train()
    peak = peak_rss_mb()
    return {"tokens": sum(len(e) for e in enc), "train_s": clock.end - clock.start,
            "steps": trainer.state.global_step, "loss": held_out_loss(trainer.model, held),
            "peak_rss_mb": peak, "held": len(held)}


@functools.cache
def model_config():
    from transformers import AutoConfig

    from tailor.models import model_dir
    return AutoConfig.from_pretrained(model_dir("smollm2-135m"))


def body_shapes():
    c = model_config()
    h, inter = c.hidden_size, c.intermediate_size
    kv = h * c.num_key_value_heads // c.num_attention_heads
    return c.num_hidden_layers, [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]


def train_flops(tokens: int, target_tokens: int, mean_len: float, rank: int) -> float:
    """Model FLOPs of LoRA training: the frozen body forward and input-gradient backward (4 per
    weight per token), the adapters forward and both gradients (6), causal attention over each
    example's own length (forward 2hL, backward twice that), and the tied, frozen vocabulary head
    only where a loss is taken (4)."""
    c = model_config()
    h, v = c.hidden_size, c.vocab_size
    layers, linears = body_shapes()
    body = sum(i * o for i, o in linears)
    lora = rank * sum(i + o for i, o in linears)
    per_token = layers * (4 * body + 6 * lora + 6 * h * mean_len)
    return tokens * per_token + target_tokens * 4 * h * v


def matmul_ceiling(tokens: int, tries: int = 3) -> float:
    """bf16 FLOP/s of the body's matmuls alone at a step's own shapes (`tokens` rows: forward
    x W^T and input-gradient g W of each linear), best of a few tries. No training step of this
    model can run its matmuls faster than this, so ceiling / peak bounds the MFU an eager loop
    (or any loop that does not change the shapes) can reach here."""
    _, linears = body_shapes()
    pairs = []
    for i, o in linears:
        pairs.append((torch.randn(tokens, i, dtype=torch.bfloat16), torch.randn(o, i, dtype=torch.bfloat16).t()))
        pairs.append((torch.randn(tokens, o, dtype=torch.bfloat16), torch.randn(o, i, dtype=torch.bfloat16)))
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    best = 0.0
    for _ in range(tries):
        for a, b in pairs:  # warm-up
            a @ b
        start = time.perf_counter()
        for _ in range(10):
            for a, b in pairs:
                a @ b
        best = max(best, 10 * flops / (time.perf_counter() - start))
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--side", choices=["tailor", "trl"])
    p.add_argument("--gc", action="store_true", help="gradient checkpointing (one side's run)")
    p.add_argument("--tmp", default="/tmp/tailor-bench")
    p.add_argument("--repeats", type=int, default=2,
                   help="rounds of all four runs; each run's fastest round counts (this VM's speed drifts)")
    p.add_argument("--seeds", type=int, default=6, help="seeds for the held-out loss (round r uses seed r)")
    p.add_argument("--seed", type=int, default=0, help="one side's run")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.side:
        print(json.dumps((side_tailor if args.side == "tailor" else side_trl)(args)))
        return
    runs, peaks, ceilings = {}, [], []
    losses = {"tailor": {}, "trl": {}}
    for seed in range(max(args.repeats, args.seeds)):
        speed_round = seed < args.repeats
        for side in ("tailor", "trl"):
            for gc in (False, True) if speed_round else (False,):
                cmd = [sys.executable, __file__, "--side", side, "--examples", str(args.examples), "--batch",
                       str(args.batch), "--tmp", args.tmp, "--seed", str(seed)] + (["--gc"] if gc else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{side} (gc={gc}, seed {seed}) failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["tps"] = r["tokens"] / r["train_s"]
                print(f"seed {seed}: {side} gc={gc}: {r['tps']:.0f} tok/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                      f"held-out loss {r['loss']:.4f}", flush=True)
                if not gc:
                    losses[side][seed] = r["loss"]
                if (side, gc) not in runs or r["tps"] > runs[(side, gc)]["tps"]:
                    runs[(side, gc)] = r
        if speed_round:
            peaks.append(bf16_peak_flops(fresh=True))   # the MFU denominator: best of the rounds too
            t = runs[("tailor", False)]
            ceilings.append(matmul_ceiling(round(t["tokens"] / t["steps"])))
    peak = max(peaks)
    t = runs[("tailor", False)]
    flops = train_flops(t["tokens"], t["target_tokens"], t["mean_len"], LORA["r"])
    mfu = flops / t["train_s"] / peak
    print(f"LoRA SFT, smollm2-135m, tweet-sentiment: {args.examples} examples, batch {args.batch}, 1 epoch, "
          f"r={LORA['r']} all-linear, bf16, {torch.get_num_threads()} threads")
    print(f"{'':24}{'tokens/s':>10}{'train s':>10}{'peak RSS MB':>13}")
    for (side, gc), v in runs.items():
        name = f"{side} {'checkpointing' if gc else 'no checkpointing'}"
        print(f"{name:24}{v['tps']:>10.0f}{v['train_s']:>10.1f}{v['peak_rss_mb']:>13.0f}")
    fast = {s: runs[(s, False)] for s in ("tailor", "trl")}
    lean = {s: runs[(s, True)] for s in ("tailor", "trl")}
    default = {"tailor": runs[("tailor", False)], "trl": runs[("trl", True)]}
    ratio = lambda pair, key: pair["tailor"][key] / pair["trl"][key]  # noqa: E731
    print(f"fastest vs fastest: {ratio(fast, 'tps'):.2f}x tokens/s; leanest vs leanest: peak RSS "
          f"{ratio(lean, 'peak_rss_mb'):.2f}x; defaults (Tailor off, TRL on): {ratio(default, 'tps'):.2f}x "
          f"tokens/s, {ratio(default, 'peak_rss_mb'):.2f}x peak RSS")
    seeds = sorted(losses["tailor"])
    mean = {s: statistics.mean(losses[s].values()) for s in losses}
    spread = {s: statistics.stdev(losses[s].values()) if len(seeds) > 1 else 0.0 for s in losses}
    diff_se = (sum(spread[s] ** 2 for s in losses) / len(seeds)) ** 0.5
    print(f"held-out loss (target tokens, {t['held']} dev examples) per seed: "
          + ", ".join(f"{k}: tailor {losses['tailor'][k]:.4f} trl {losses['trl'][k]:.4f}" for k in seeds))
    print(f"mean over {len(seeds)} seeds: tailor {mean['tailor']:.4f} (sd {spread['tailor']:.4f}), trl "
          f"{mean['trl']:.4f} (sd {spread['trl']:.4f}); tailor - trl = {mean['tailor'] - mean['trl']:+.4f} "
          f"(standard error {diff_se:.4f})")
    ceiling = max(ceilings)
    print(f"tailor padding fraction {t['padding_fraction']:.3f}; bf16 matmul peak {peak / 1e9:.0f} GFLOP/s; "
          f"tailor achieved {flops / t['train_s'] / 1e9:.0f} GFLOP/s: MFU {mfu:.3f}; the body's matmuls alone at a "
          f"step's shapes reach {ceiling / 1e9:.0f} GFLOP/s (MFU ceiling {ceiling / peak:.2f})")
    print(json.dumps({"tokens_per_s_ratio": ratio(fast, "tps"), "peak_rss_ratio": ratio(lean, "peak_rss_mb"),
                      "loss_tailor": mean["tailor"], "loss_trl": mean["trl"], "mfu": mfu,
                      "loss_seeds": len(seeds), "loss_tailor_sd": spread["tailor"], "loss_trl_sd": spread["trl"],
                      "loss_diff_se": diff_se,
                      "loss_tailor_per_seed": [losses["tailor"][k] for k in seeds],
                      "loss_trl_per_seed": [losses["trl"][k] for k in seeds],
                      "default_tokens_per_s_ratio": ratio(default, "tps"),
                      "default_peak_rss_ratio": ratio(default, "peak_rss_mb"),
                      "tokens_per_s": {f"{s}{'_gc' if g else ''}": round(v["tps"], 1) for (s, g), v in runs.items()},
                      "peak_rss_mb": {f"{s}{'_gc' if g else ''}": round(v["peak_rss_mb"]) for (s, g), v in runs.items()},
                      "matmul_peak_gflops": peak / 1e9, "matmul_ceiling_gflops": ceiling / 1e9,
                      "mfu_ceiling": ceiling / peak}))


if __name__ == "__main__":
    main()
