"""Distillation: Tailor's soft-label step (KL to the teacher's probabilities over the label set,
on its one training loop) vs TRL's GKDTrainer (Agarwal et al. 2024) in its supervised setting
(lmbda 0: no student-generated data; beta 0: forward KL over the whole vocabulary, the teacher
run on every batch), on the same student, rows, steps, lr schedule and temperature:

    .venv/bin/python -m uv pip install --python .venv/bin/python -c constraints.txt "trl==1.16.*"
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/distill_vs_trl.py --teacher RUN/arms/teacher [--rows 1600]

TEACHER is a LoRA arm on smollm2-135m for tweet-sentiment (examples/tweet-distill-ladder.yaml
trains one); without --teacher a 40-step LoRA teacher is trained into --tmp first. The student
is smollm2-135m with 10 of its 30 layers (evenly spread, first and last kept), saved once as a
Hugging Face folder that both sides load. TRL's teacher is the LoRA arm merged into a plain model.
Each side trains in its own process (peak RSS is its own, teacher included). Both read the same
rows as the same chat text: Tailor's prompt builder renders the tweet, TRL's ChatML collator the
same user message, the answer is the teacher's label.

Tokens/s counts the same tokens for both sides: each row's prompt and answer, over the training
wall time. Tailor scores all three labels per row (it needs the student's distribution over
them) and reads the teacher's probabilities from its offline labelling, whose wall time is
reported beside (`labelling_s`), so the end-to-end ratio is printed too. Accuracy: both students,
the teacher, and the untrained student, on the same test rows through Tailor's engine.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

LR, TEMPERATURE, LAYERS, BATCH = 2e-4, 2.0, 10, 16


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def task_rows(n: int):
    from tailor.datasets import load_task
    task = load_task("tweet-sentiment")
    import random
    task.splits["train"] = random.Random(0).sample(task.splits["train"], n)
    return task


def accuracy(model, tokenizer, task, limit: int) -> float:
    from tailor.engine import Engine
    from tailor.evaluate import predict
    from tailor.prompts import builder_for
    builder = builder_for(task, tokenizer, model.config)
    test = task.splits["test"][:limit]
    preds = predict(Engine(model.eval(), tokenizer, "bench", None, progress=False), builder, task, test)
    return sum(p.prediction == p.target for p in preds) / len(preds)


def prepare(args) -> dict:
    """The student folder, the merged teacher folder and the teacher (trained here if not given)."""
    from tailor.distill.student import pruned_copy
    from tailor.methods import load_adapted, make_method, save_adapted
    from tailor.methods.finetune import merge_arm
    from tailor.models import load_base
    tmp = Path(args.tmp)
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    teacher = Path(args.teacher) if args.teacher else tmp / "teacher"
    if not args.teacher and not (teacher / "recipe.json").is_file():
        task = task_rows(2000)
        save_adapted(make_method("lora", {"steps": 40, "batch_size": 16, "lr": 1e-3}).fit(task, base, teacher), teacher)
    student = tmp / "student"
    if not (student / "config.json").is_file():
        model, _ = pruned_copy(base.model, LAYERS)
        model.save_pretrained(student, safe_serialization=True)
        base.tokenizer.save_pretrained(student)
    merged = tmp / "teacher-merged"
    if not (merged / "config.json").is_file():
        merge_arm(load_adapted(teacher, base), merged)
    return {"teacher": str(teacher), "student": str(student), "merged": str(merged)}


def row_tokens(task, tokenizer) -> int:
    from tailor.prompts import builder_for
    builder = builder_for(task, tokenizer)
    return sum(len(builder.encode(builder.build(ex).text)) + len(builder.encode(builder.target_text(ex.target)))
               for ex in task.splits["train"])


def side_tailor(args, paths) -> dict:
    from tailor.distill.teacher import label_rows
    from tailor.methods import make_method
    from tailor.models import load_base
    task = task_rows(args.rows)
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    # labelled with the engine's cache off, so the time is what labelling these rows costs (the
    # arm then finds the labels made here)
    labels = label_rows(paths["teacher"], task.splits["train"], base=base, progress=False, cache=False)
    labelling_s = labels.labelling["wall_s"]
    arm = make_method("distill", {"teacher": paths["teacher"], "student": paths["student"], "labels": "soft",
                                  "alpha": 0.0, "temperature": TEMPERATURE, "lr": LR, "epochs": 1, "batch_size": BATCH,
                                  "max_train_examples": None, "warmup_ratio": 0.05, "min_lr_ratio": 0.0,
                                  "log_every": 1000})
    adapted = arm.fit(task, base, Path(args.tmp) / "tailor-arm", progress=False)
    peak = peak_rss_mb()
    for row in task.splits["train"]:   # the answer TRL distils on: the teacher's label
        row.target = labels.rows[row.id]["label"]
    t = adapted.recipe.train
    return {"tokens": row_tokens(task, base.tokenizer), "train_s": t["training_s"], "steps": t["steps"],
            "final_loss": t["final_loss"], "peak_rss_mb": peak, "labelling_s": labelling_s,
            "accuracy": accuracy(adapted.model, adapted.tokenizer, task, args.test)}


def side_trl(args, paths) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from tailor.distill.teacher import label_rows
    from tailor.models import load_tokenizer
    task = task_rows(args.rows)
    tok = load_tokenizer(paths["student"])
    labels = label_rows(paths["teacher"], task.splits["train"], progress=False).rows
    for row in task.splits["train"]:
        row.target = labels[row.id]["label"]
    from tailor.prompts import builder_for
    builder = builder_for(task, tok)   # the chat Tailor's builder renders, the teacher's label as the answer
    rows = [{"messages": builder.messages(ex) + [{"role": "assistant", "content": ex.target}]}
            for ex in task.splits["train"]]
    student = AutoModelForCausalLM.from_pretrained(paths["student"], dtype=torch.bfloat16)
    teacher = AutoModelForCausalLM.from_pretrained(paths["merged"], dtype=torch.bfloat16)

    cfg = GKDConfig(output_dir=os.path.join(args.tmp, "trl-gkd"), per_device_train_batch_size=BATCH,
                    num_train_epochs=1, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.05, bf16=True,
                    use_cpu=True, logging_steps=1, save_strategy="no", report_to=[], lmbda=0.0, beta=0.0,
                    temperature=TEMPERATURE, max_length=512, dataloader_num_workers=0, seed=0, disable_tqdm=True,
                    gradient_checkpointing=False)
    from trl_clock import Clock  # bench/ is on the path when a bench runs
    clock = Clock()
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[clock])
    trainer.train()
    peak = peak_rss_mb()
    return {"tokens": row_tokens(task, tok), "train_s": clock.end - clock.start, "steps": trainer.state.global_step,
            "final_loss": clock.losses[-1] if clock.losses else float("nan"), "peak_rss_mb": peak,
            "accuracy": accuracy(trainer.model, tok, task, args.test)}


def side_reference(args, paths) -> dict:
    """The teacher and the untrained student on the same test rows, and their sizes."""
    from transformers import AutoModelForCausalLM

    from tailor.methods import load_adapted
    from tailor.models import load_base, load_tokenizer
    task = task_rows(args.rows)
    base = load_base("smollm2-135m", dtype="bf16", device="cpu")
    teacher = load_adapted(paths["teacher"], base)
    student = AutoModelForCausalLM.from_pretrained(paths["student"], dtype=torch.bfloat16)
    teacher_params = base.n_params + teacher.trainable_params
    return {"teacher_accuracy": accuracy(teacher.model, teacher.tokenizer, task, args.test),
            "student_untrained_accuracy": accuracy(student, load_tokenizer(paths["student"]), task, args.test),
            "student_params_ratio": sum(p.numel() for p in student.parameters()) / teacher_params}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", help="a LoRA arm folder on smollm2-135m for tweet-sentiment")
    p.add_argument("--rows", type=int, default=1600)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--side", choices=["prepare", "tailor", "trl", "reference"])
    p.add_argument("--tmp", default="/tmp/tailor-bench-distill")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.side:
        paths = None if args.side == "prepare" else json.loads(Path(args.tmp, "paths.json").read_text())
        out = prepare(args) if args.side == "prepare" else \
            {"tailor": side_tailor, "trl": side_trl, "reference": side_reference}[args.side](args, paths)
        print(json.dumps(out))
        return
    results = {}
    for side in ("prepare", "reference", "tailor", "trl"):
        cmd = [sys.executable, __file__, "--side", side, "--rows", str(args.rows), "--test", str(args.test),
               "--tmp", args.tmp] + (["--teacher", args.teacher] if args.teacher else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        if side == "prepare":
            Path(args.tmp, "paths.json").write_text(json.dumps(results[side]))
        print(f"{side}: {results[side]}", flush=True)
    t, trl, ref = results["tailor"], results["trl"], results["reference"]
    for r in (t, trl):
        r["tps"] = r["tokens"] / r["train_s"]
    print(f"tweet-sentiment: {args.rows} rows, batch {BATCH}, 1 epoch ({t['steps']} steps), student smollm2-135m with "
          f"{LAYERS} of 30 layers ({ref['student_params_ratio']:.2f} of the teacher's parameters), lr {LR}, T "
          f"{TEMPERATURE}, {torch.get_num_threads()} threads; accuracy on {args.test} test rows")
    print(f"{'':10}{'tokens/s':>10}{'train s':>10}{'peak RSS MB':>13}{'final loss':>12}{'accuracy':>10}")
    for side, v in (("tailor", t), ("trl-gkd", trl)):
        print(f"{side:10}{v['tps']:>10.0f}{v['train_s']:>10.1f}{v['peak_rss_mb']:>13.0f}{v['final_loss']:>12.4f}"
              f"{v['accuracy']:>10.3f}")
    print(f"teacher accuracy {ref['teacher_accuracy']:.3f}; untrained student {ref['student_untrained_accuracy']:.3f}; "
          f"Tailor's offline teacher labelling {t['labelling_s']:.1f} s")
    end_to_end = t["tokens"] / (t["train_s"] + t["labelling_s"])
    print(json.dumps({"tokens_per_s_ratio": t["tps"] / trl["tps"], "tokens_per_s_ratio_with_labelling":
                      end_to_end / trl["tps"], "peak_rss_ratio": t["peak_rss_mb"] / trl["peak_rss_mb"],
                      "accuracy_tailor": t["accuracy"], "accuracy_trl": trl["accuracy"],
                      "accuracy_teacher": ref["teacher_accuracy"], "accuracy_untrained_student":
                      ref["student_untrained_accuracy"], "student_params_ratio": ref["student_params_ratio"],
                      "tokens_per_s": {"tailor": round(t["tps"], 1), "trl": round(trl["tps"], 1)},
                      "train_s": {"tailor": t["train_s"], "trl": trl["train_s"]}, "labelling_s": t["labelling_s"],
                      "peak_rss_mb": {"tailor": round(t["peak_rss_mb"]), "trl": round(trl["peak_rss_mb"])},
                      "steps": t["steps"], "rows": args.rows, "test_rows": args.test}))


if __name__ == "__main__":
    main()
