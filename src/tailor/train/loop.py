"""THE training loop. Every fine-tuning arm runs through `train()`.

What makes it cheaper than a generic trainer on short-target tasks:
- sequences are packed (no compute spent on padding), with position ids restarting per example,
  so no attention crosses examples; where rows hold many short examples, attention runs example
  by example (`segment_attention`) and skips the masked-out blocks of a packed row;
- the loss is on target tokens only, and the vocabulary projection is computed only for the
  hidden states that predict a target token (with a 49k vocabulary and 2-token labels this
  skips most of the head's work);
- bf16 compute (AMX on this CPU, tensor cores on CUDA) with fp32 master copies of the trainable
  weights; frozen weights stay in the base dtype, so nothing is cast back and forth needlessly;
- LoRA layers run one fused autograd function each (`fused_lora`), and dropout draws random
  numbers only for the elements it drops (`dropout`).

The lr schedule is a pure function of the step, so the scheduler's whole state is the step; the
data order is a pure function of (seed, epoch); together with the RNG states in the checkpoint a
resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..engine import causal_lm_of, head_logits
from ..errors import TailorError
from ..progress import Meter
from ..prompts import PromptBuilder
from ..task import Task
from .checkpoint import load_checkpoint, load_weights_into, save_checkpoint, save_weights, trainable_state
from .dropout import use_sparse_dropout
from .fused_lora import fused_lora
from .segment_attention import segment_attention, take_counts
from .data import encode_examples, pack, padded, step_examples
from .logs import MetricsLog

log = logging.getLogger("tailor")


@dataclass
class TrainConfig:
    """Options every training arm shares (each arm adds its own fields)."""

    steps: int = 0                 # optimiser steps; 0 = derive from epochs
    epochs: float = 1.0
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    schedule: str = "cosine"       # cosine | linear | constant (after warmup)
    min_lr_ratio: float = 0.1
    batch_size: int = 16           # examples per optimiser step
    micro_batch_tokens: int = 4096  # tokens per forward pass (gradient accumulation beyond)
    seq_len: int = 1024            # longest example allowed; longer ones follow `overlong`
    pack_len: int = 256            # packed row length (attention cost per token grows with it)
    pack: bool = True
    overlong: str = "drop"         # drop (counted and reported) | error
    max_train_examples: int | None = 2000
    max_grad_norm: float = 1.0
    precision: str = "auto"        # auto (bf16 where the hardware has it) | bf16 | fp32
    grad_checkpointing: bool = False
    seed: int = 0
    eval_every: int = 0            # dev evaluation every N steps (0: only at the end if patience)
    eval_examples: int = 200
    patience: int = 0              # evals without improvement before stopping (0: never stop)
    load_best: bool = True
    save_every: int = 0            # checkpoint every N steps (0: none except the best)
    keep_checkpoints: int = 1
    log_every: int = 10
    report_to: list = field(default_factory=list)  # tensorboard, mlflow
    resume: str | None = None      # a run directory or checkpoint to continue from
    progress: bool = True

    def train_options(self) -> dict:
        return {f: getattr(self, f) for f in TrainConfig.__dataclass_fields__}


@dataclass
class TrainResult:
    steps: int
    train_tokens: int          # real (non-padding) tokens processed
    target_tokens: int
    train_time_s: float
    final_loss: float
    padding_fraction: float
    data: dict
    best_metric: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    dev_history: list = field(default_factory=list)
    resumed_from: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if precision != "auto":
        raise TailorError(f"precision '{precision}' is not one of auto, bf16, fp32")
    from ..models import cpu_has_bf16_units
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_units()


def prepare_precision(model: torch.nn.Module, bf16: bool) -> None:
    """fp32 master copies for everything trained; frozen weights keep the base dtype under bf16
    autocast, or are upcast when training in fp32. Upcasts are new Parameters, never in-place
    changes: frozen tensors may be shared with the base model of other arms. Tied weights stay tied."""
    upcast: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if (p.requires_grad or not bf16) and p.is_floating_point() and p.dtype != torch.float32:
                if id(p) not in upcast:
                    upcast[id(p)] = torch.nn.Parameter(p.detach().float(), requires_grad=p.requires_grad)
                setattr(module, name, upcast[id(p)])


def no_input_upcast(model, bf16: bool):
    """peft casts each adapter's input to the adapter's fp32 dtype; under bf16 autocast the
    matmul runs in bf16 anyway, so that copy only costs memory (it is kept for backward)."""
    if not (bf16 and getattr(getattr(model, "active_peft_config", None), "peft_type", None) == "LORA"):
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting
    return disable_input_dtype_casting(model)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise TailorError(f"schedule '{schedule}' is not one of cosine, linear, constant")


def batch_loss(model, batch, layout: str, soft_tokens: int) -> torch.Tensor:
    """Summed cross-entropy over the batch's target tokens."""
    device = next(model.parameters()).device
    rows, cols = (t.to(device) for t in batch.select)
    labels = batch.labels.to(device)
    causal = causal_lm_of(model)
    if layout == "packed":
        hidden = causal.get_decoder()(input_ids=batch.input_ids.to(device),
                                      position_ids=batch.position_ids.to(device), use_cache=False).last_hidden_state
        logits = head_logits(causal, hidden[rows, cols])
    else:
        # A soft prompt or prefix must run through PEFT's own forward (which soft-caps); only the
        # columns that predict a target are projected onto the vocabulary (logits_to_keep as indices).
        keep = torch.unique(cols) + soft_tokens
        out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                    logits_to_keep=keep, use_cache=False)
        logits = out.logits[rows, torch.searchsorted(keep, cols + soft_tokens)]
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")


def dev_metric(model, tokenizer, builder: PromptBuilder, task: Task, examples, metric: str, tag: str,
               autocast) -> float:
    from ..engine import Engine
    from ..evaluate import predict, score_predictions
    model.eval()
    try:
        with autocast():
            engine = Engine(model, tokenizer, f"dev-eval:{tag}", cache=None, progress=False)
            report = score_predictions(task, predict(engine, builder, task, examples))
    finally:
        model.train()
    return report.metrics[metric]


def default_metric(task: Task) -> str:
    return "rougeL" if task.kind == "generate" else "accuracy"


def train(model, tokenizer, builder: PromptBuilder, task: Task, cfg: TrainConfig, run=None, *,
          layout: str = "packed", soft_tokens: int = 0, tag: str = "train") -> TrainResult:
    """Trains the parameters of `model` that require grad, in place."""
    device = next(model.parameters()).device
    bf16 = use_bf16(cfg.precision, device)
    prepare_precision(model, bf16)
    use_sparse_dropout(model)
    causal = causal_lm_of(model)
    if cfg.grad_checkpointing:
        causal.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    pool = list(task.splits.get("train") or task.examples)
    if cfg.max_train_examples and len(pool) > cfg.max_train_examples:
        pool = random.Random(cfg.seed).sample(pool, cfg.max_train_examples)
    data, report = encode_examples(builder, pool, cfg.seq_len, cfg.overlong, soft_tokens)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch))
    warmup = int(cfg.warmup_ratio * total)
    dev = (task.splits.get("dev") or [])[: cfg.eval_examples]
    metric = default_metric(task)
    if (cfg.eval_every or cfg.patience) and not dev:
        log.warning("no dev split: dev evaluation and early stopping are off")

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TailorError("nothing to train: no parameter requires grad")
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    state = {"step": 0, "tokens": 0, "target_tokens": 0, "padded_tokens": 0, "elapsed_s": 0.0,
             "best": None, "best_step": None, "bad_evals": 0, "last_loss": float("nan"), "dev_history": []}
    if cfg.resume:
        state.update(load_checkpoint(Path(cfg.resume), model, optimizer))
        log.info("resumed from %s at step %d", state["checkpoint"], state["step"])
    root = run.path if run is not None else None
    ckpt_root = root / "checkpoints" if root else None
    best_path = root / "best.safetensors" if root else None
    best_memory: dict | None = None
    metrics = MetricsLog(root / "train_metrics.jsonl" if root else None, cfg.report_to, tag)
    if cfg.resume:
        metrics.rewind(state["step"])
    log.info("training %d steps (%d examples, %d per step, %d dropped as too long), bf16=%s, layout=%s",
             total, len(data), cfg.batch_size, len(report.too_long), bf16, layout)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stopped_early = False
    model.train()
    meter = Meter(total - state["step"], "training", cfg.progress)
    t_start = time.perf_counter() - state["elapsed_s"]
    lora_kernels = contextlib.ExitStack()   # LoRA layers run the fused function until training ends
    lora_kernels.enter_context(fused_lora(model))
    take_counts()
    try:
        while state["step"] < total:
            step = state["step"]
            lr = cfg.lr * lr_factor(step, total, warmup, cfg.schedule, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            examples = step_examples(data, cfg.batch_size, cfg.seed, step)
            n_target = sum(len(e.target) for e in examples)
            if layout == "packed" and cfg.pack:
                row_len = max(cfg.pack_len, max(len(e) for e in examples))
                batches = pack(examples, row_len, pad_id, max(1, cfg.micro_batch_tokens // row_len))
            else:
                batches = padded(examples, pad_id, max(1, cfg.micro_batch_tokens // max(len(e) for e in examples)))
            loss_sum = 0.0
            for batch in batches:
                # backward too: a checkpointed layer recomputes its attention there
                with segment_attention(causal) if layout == "packed" else contextlib.nullcontext():
                    with autocast(), no_input_upcast(model, bf16):
                        loss = batch_loss(model, batch, layout, soft_tokens)
                    if not torch.isfinite(loss):
                        last = state.get("checkpoint") or (ckpt_root and ckpt_root.exists() and str(ckpt_root))
                        raise TailorError(f"loss is {loss.item()} at step {step + 1}: training stopped; weights "
                                          f"are left as after step {step}; last good checkpoint: "
                                          f"{last or 'none saved'} (lower lr, or use precision: fp32)")
                    (loss / n_target).backward()
                loss_sum += loss.item()
                state["tokens"] += batch.real_tokens
                state["padded_tokens"] += batch.padded_tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm) if cfg.max_grad_norm else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step = step + 1
            state["target_tokens"] += n_target
            state["last_loss"] = loss_sum / n_target
            state["elapsed_s"] = time.perf_counter() - t_start
            meter.update(1, sum(b.real_tokens for b in batches), loss=f"{state['last_loss']:.4f}")
            row = {"step": step, "loss": state["last_loss"], "lr": lr,
                   "tokens_per_s": state["tokens"] / max(state["elapsed_s"], 1e-9),
                   "elapsed_s": state["elapsed_s"]}
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            if step % cfg.log_every == 0 or step == total:
                metrics.write(row)
                log.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", step, total, row["loss"], lr, row["tokens_per_s"])
            due = (cfg.eval_every and step % cfg.eval_every == 0) or (step == total and (cfg.eval_every or cfg.patience))
            if dev and due:
                value = dev_metric(model, tokenizer, builder, task, dev, metric, f"{tag}:{step}", autocast)
                state["dev_history"].append({"step": step, metric: value})
                metrics.write({"step": step, f"dev_{metric}": value})
                log.info("step %d dev %s %.4f", step, metric, value)
                if state["best"] is None or value > state["best"]:
                    state.update(best=value, best_step=step, bad_evals=0)
                    if best_path:
                        save_weights(best_path, trainable_state(model))
                    else:
                        best_memory = {k: v.clone() for k, v in trainable_state(model).items()}
                else:
                    state["bad_evals"] += 1
                    if cfg.patience and state["bad_evals"] >= cfg.patience:
                        log.info("early stop at step %d: dev %s did not improve for %d evals", step, metric, cfg.patience)
                        stopped_early = True
            if ckpt_root and ((cfg.save_every and step % cfg.save_every == 0) or (cfg.save_every and step == total)):
                save_checkpoint(ckpt_root, model, optimizer, {k: v for k, v in state.items() if k != "checkpoint"},
                                cfg.keep_checkpoints)
            if stopped_early:
                break
    finally:
        lora_kernels.close()
        meter.close()
        metrics.close()
        counts = take_counts()
        if any(counts.values()):
            log.info("attention over packed rows, calls of this run: %d per example, %d sdpa over the rows (fewer "
                     "scores there), %d sdpa as fallback (rows not packed with restarting positions: correct, "
                     "slower)", counts["per_example"], counts["packed"], counts["fallback"])
    if cfg.grad_checkpointing:
        causal.gradient_checkpointing_disable()
    if cfg.load_best and state["best_step"] is not None and state["best_step"] != state["step"]:
        if best_path and best_path.exists():
            load_weights_into(model, best_path)
        elif best_memory:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in best_memory:
                        p.copy_(best_memory[n])
        log.info("loaded the best dev checkpoint (step %d, %s %.4f)", state["best_step"], metric, state["best"])
    model.eval()
    all_tokens = state["tokens"] + state["padded_tokens"]
    return TrainResult(steps=state["step"], train_tokens=state["tokens"], target_tokens=state["target_tokens"],
                       train_time_s=state["elapsed_s"], final_loss=state["last_loss"],
                       padding_fraction=state["padded_tokens"] / max(all_tokens, 1), data=report.to_json(),
                       best_metric=state["best"], best_step=state["best_step"], stopped_early=stopped_early,
                       dev_history=state["dev_history"], resumed_from=state.get("checkpoint"))
