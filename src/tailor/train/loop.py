"""THE training loop. Every training arm runs through `train()`; what it optimises is the `loss`
it passes (cross-entropy on targets by default; see losses.py).

What makes it cheaper than a generic trainer on short-target tasks:
- sequences are packed (no compute spent on padding), with position ids restarting per example,
  so no attention crosses examples; several continuations of one prompt share a row under a
  tree mask, so a pair's prompt runs once;
- the loss is on target tokens only, and the vocabulary projection is computed only for the
  hidden states that predict a target token (with a 49k vocabulary and 2-token labels this
  skips most of the head's work);
- bf16 compute (AVX512-BF16/AMX on CPUs that have them, tensor cores on CUDA) with fp32 master
  copies of the trainable weights; frozen weights stay in the base dtype;
- on a single-process CPU run, Tailor's kernels (kernels.py).

The lr schedule is a pure function of the step, so the scheduler's whole state is the step; the
data order is a pure function of (seed, epoch); together with the RNG states in the checkpoint a
resumed run repeats an uninterrupted one exactly. Before the first step the loop times one
step's forward and backward (weights and RNG left as they were), prints the estimated time, and
fits the number of steps to a wall-clock budget when one is given.

Under a launcher (torchrun, accelerate launch, `tailor train --processes N`) each rank trains on
its shard of every step, with the loss normalised and the gradients summed over all ranks, so N
processes train what one does at the same batch; rank 0 alone writes (distributed.py). Under
FSDP2 the same happens with the trained weights sharded: the loss runs on a sharded copy of the
model, and the plain model gets the weights back where it is read (train/fsdp.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import TailorError
from ..progress import Meter, console
from ..prompts import PromptBuilder
from ..task import Task, primary_metric
from . import distributed
from .checkpoint import load_weights_into, rng_state, save_checkpoint, save_weights, trainable_state
from .data import Batch, Encoded, encode_examples, pack, padded, step_examples
from .kernels import TrainingKernels, wanted
from .losses import SFT, Loss
from .options import TrainConfig
from .scaffold import adamw, autocast, check_finite, clip_and_step, metrics_log, resume_state, wall_budget
from .segment_attention import take_counts

log = logging.getLogger("tailor")
# Whoever watches the dev metric as a run trains (the tuner's pruning, tailor.tune): an object whose
# due(step, total) asks for a dev evaluation and seen(step, total, value) gets it (and may raise to
# end the run there). Its evaluations are its own: the run's history, best weights and early
# stopping never see them, so a watched run trains and ends exactly as an unwatched one.
DEV_WATCH: contextvars.ContextVar = contextvars.ContextVar("tailor_dev_watch", default=None)


@dataclass
class TrainResult:
    steps: int
    train_tokens: int          # real (non-padding) tokens processed
    target_tokens: int
    train_time_s: float
    final_loss: float
    padding_fraction: float
    data: dict
    planned_steps: int = 0     # what epochs / steps asked for, before a budget
    budget_s: float | None = None
    probe_s_per_step: float | None = None
    kernels: list = field(default_factory=list)   # the CPU kernels it ran (train/kernels.py)
    attention_calls: dict = field(default_factory=dict)
    best_metric: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    dev_history: list = field(default_factory=list)
    resumed_from: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LoopState:
    """Everything the loop carries from step to step; a checkpoint saves it whole."""

    total: int = 0
    step: int = 0
    tokens: int = 0
    target_tokens: int = 0
    padded_tokens: int = 0
    elapsed_s: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    last_loss: float = float("nan")
    dev_history: list = field(default_factory=list)


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
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
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(model, tokenizer, builder: PromptBuilder, task: Task, cfg: TrainConfig, out: Path | None = None, *,
          loss: Loss | None = None, data: list[Encoded] | None = None, layout: str = "packed",
          soft_tokens: int = 0, tag: str = "train", progress: bool = True, resume: str | None = None,
          budget_s: float | None = None, passages_for=None) -> TrainResult:
    """Trains the parameters of `model` that require grad, in place. `data`: pre-encoded
    examples (default: the task's train split, encoded for SFT); `out`: where the metrics log,
    checkpoints and best weights go; `passages_for`: the retriever dev evaluation prompts with
    (an arm trained on retrieved passages is evaluated with them)."""
    return Trainer(model, tokenizer, builder, task, cfg, out, loss=loss or SFT(), data=data, layout=layout,
                   soft_tokens=soft_tokens, tag=tag, progress=progress, resume=resume, budget_s=budget_s,
                   passages_for=passages_for).run()


def train_pool(task, cfg) -> list:
    """The train rows a run trains on (a seeded sample of at most max_train_examples); `tailor
    debug` looks for a failure's neighbours among the same rows."""
    pool = list(task.splits.get("train") or [])
    if not pool:   # never fall back to all rows: dev and test rows would be trained on
        raise TailorError(f"{task.name}: the train split is empty, so there is nothing to train on")
    if getattr(cfg, "train_prompts", "all") != "all":
        from ..preference.data import prompt_half
        pool = prompt_half(pool, cfg.train_prompts)
    if cfg.max_train_examples and len(pool) > cfg.max_train_examples:
        pool = random.Random(cfg.seed).sample(pool, cfg.max_train_examples)
    return pool


class Trainer:
    """One training run in named steps: `plan`, then for each step `batches` ->
    `forward_backward` -> `update` -> `record` -> `evaluate` -> `checkpoint`, then `finish`."""

    def __init__(self, model, tokenizer, builder, task, cfg: TrainConfig, out: Path | None, *, loss: Loss,
                 data: list[Encoded] | None, layout: str, soft_tokens: int, tag: str, progress: bool,
                 resume: str | None, budget_s: float | None, passages_for=None):
        self.model, self.tokenizer, self.builder, self.task, self.cfg = model, tokenizer, builder, task, cfg
        self.loss, self.layout, self.soft_tokens, self.tag, self.progress = loss, layout, soft_tokens, tag, progress
        self.resume, self.budget_s, self.passages_for = resume, budget_s, passages_for
        self.device = next(model.parameters()).device
        self.bf16 = use_bf16(cfg.precision, self.device)
        prepare_precision(model, self.bf16)
        # Several processes (train/distributed.py): only rank 0 writes anything or shows progress;
        # each rank draws its own dropout masks (seed + rank; rank 0 is the single-process run).
        self.world = world = distributed.world()
        self.progress = progress and world.is_main
        torch.manual_seed(cfg.seed + world.rank)
        random.seed(cfg.seed)
        self.data, self.report = (data, None) if data is not None else self._encode_train_split()
        self.dev = (task.splits.get("dev") or [])[: cfg.eval_examples]
        self.metric = primary_metric(task)   # a task's grader where it has one, like the ladder's ranking
        if (cfg.eval_every or cfg.patience) and not self.dev:
            log.warning("no dev split: dev evaluation and early stopping are off")
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        if not self.trainable:
            raise TailorError("nothing to train: no parameter requires grad")
        distributed.broadcast_parameters(self.trainable, world)
        self.optimizer = self._adamw(self.trainable)
        self.state, self.resumed_from = LoopState(), None
        if resume:
            self.state, self.resumed_from = resume_state(resume, model, self.optimizer, LoopState, world.rank)
            log.info("resumed from %s at step %d", self.resumed_from, self.state.step)
        # FSDP (train/fsdp.py): the loss runs on a sharded copy cut from the weights above (rank 0's,
        # or the checkpoint's), and the optimiser moves onto the shards with whatever state it resumed
        self.sharded, self.train_model = None, model
        if world.fsdp and world.distributed:
            from .fsdp import Sharded, load_sharded_state
            self.sharded = Sharded(model, self.loss, world, world.fsdp)
            self.train_model = self.sharded.model
            plain = self.optimizer.state_dict()
            self.trainable = self.sharded.parameters([n for n, p in model.named_parameters() if p.requires_grad])
            self.optimizer = self._adamw(self.trainable)
            load_sharded_state(self.optimizer, plain)
        self.out = out = out if world.is_main else None
        if out:
            out.mkdir(parents=True, exist_ok=True)
        self.best_path = out / "best.safetensors" if out else None
        self.best_memory: dict | None = None
        self.metrics = metrics_log(out, cfg.report_to if world.is_main else [], tag, self.state.step if resume else None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.kernels = TrainingKernels(model, wanted(cfg.kernels, self.device, world.size))
        self.stopped_early = False
        self.planned = self.probe_s = None

    # ---------------------------------------------------------------- named steps

    def _adamw(self, params: list) -> torch.optim.Optimizer:
        return adamw(params, self.cfg.lr, self.cfg.weight_decay)

    def autocast(self):
        return autocast(self.device, self.bf16)

    def batches(self, step: int) -> tuple[list[Batch], int]:
        """The step's micro-batches and the number of loss units the step averages over."""
        cfg = self.cfg
        examples = distributed.shard(step_examples(self.data, cfg.batch_size, cfg.seed, step), self.world)
        # the step's mean is over every rank's units, so N ranks sum to one process's gradient
        units = int(distributed.sum_numbers([self.loss.units(examples)], self.world)[0])
        if not examples:   # a short last step of an epoch can leave a rank nothing
            return [], units
        return self._micro_batches(examples), units

    def _micro_batches(self, examples: list[Encoded]) -> list[Batch]:
        cfg = self.cfg
        if self.layout == "packed" and cfg.pack:
            row_len = max(cfg.pack_len, max(len(e) for e in examples))
            return pack(examples, row_len, self.pad_id, max(1, cfg.micro_batch_tokens // row_len))
        return padded(examples, self.pad_id, max(1, cfg.micro_batch_tokens // max(len(e) for e in examples)),
                      self.soft_tokens)

    def forward_backward(self, batches: list[Batch], units: int) -> tuple[float, dict]:
        """Gradients of the step's mean loss, accumulated over its micro-batches."""
        loss_sum, logs = 0.0, {}
        runs = [(batch, True) for batch in batches]
        if self.sharded:
            # every forward gathers weights with the other ranks, so all run as many as the busiest
            # rank; a filler (a batch again, or any example) counts zero
            fillers = int(distributed.max_number(len(batches), self.world)) - len(batches)
            runs += [(batches[-1] if batches else self._micro_batches(self.data[:1])[0], False)] * fillers
        for batch, counts in runs:
            with self.autocast(), no_input_upcast(self.train_model, self.bf16):
                loss, extra = self.sharded.root(batch) if self.sharded else self.loss(self.model, batch)
                if not counts:
                    loss, extra = loss * 0.0, {}
            check_finite(loss, f"step {self.state.step + 1}", f"after step {self.state.step}",
                         lambda: self.resumed_from or self._last_checkpoint())
            (loss / units).backward()
            if not counts:
                continue
            loss_sum += loss.item()
            for k, v in extra.items():
                logs[k] = logs.get(k, 0.0) + float(v)
        # what the step did on every rank together: its loss, tokens and logs
        loss_sum, real, padding, targets = distributed.sum_numbers(
            [loss_sum, sum(b.real_tokens for b in batches), sum(b.padded_tokens for b in batches),
             sum(len(b.labels) for b in batches)], self.world)
        logs = distributed.sum_logs(logs, self.world)
        self.step_tokens, self.step_targets = int(real), int(targets)
        self.state.tokens += int(real)
        self.state.padded_tokens += int(padding)
        return loss_sum / units, {k: v / units for k, v in logs.items()}

    def update(self, step: int) -> float | None:
        cfg = self.cfg
        lr = cfg.lr * lr_factor(step, self.state.total, self.warmup, cfg.schedule, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if not self.sharded:   # FSDP summed them in backward (reduce-scatter into the shards)
            distributed.sum_gradients(self.trainable, self.world)
        norm = clip_and_step(self.optimizer, self.trainable, cfg.max_grad_norm)
        if norm is not None and self.sharded:
            from .fsdp import global_norm
            return global_norm(norm)
        return None if norm is None else float(norm)

    def record(self, step: int, loss: float, logs: dict, grad_norm: float | None, tokens: int) -> None:
        s = self.state
        s.last_loss = loss
        s.elapsed_s = time.perf_counter() - self.t_start
        self.meter.update(1, tokens, loss=f"{loss:.4f}")
        if step % self.cfg.log_every == 0 or step == s.total:
            row = {"step": step, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                   "tokens_per_s": s.tokens / max(s.elapsed_s, 1e-9), "elapsed_s": s.elapsed_s, **logs}
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            self.metrics.write(row)
            log.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", step, s.total, loss, row["lr"], row["tokens_per_s"])

    def evaluate(self, step: int) -> None:
        cfg, s = self.cfg, self.state
        due = (cfg.eval_every and step % cfg.eval_every == 0) or (step == s.total and (cfg.eval_every or cfg.patience))
        watch = DEV_WATCH.get() if self.world.size == 1 else None
        watched = watch is not None and watch.due(step, s.total)
        if not (self.dev and (due or watched)):
            return
        if self.sharded:   # rank 0 evaluates the plain model: every rank gathers the weights into it
            self.sharded.gather_into(self.model)
        # rank 0 evaluates; every rank takes its value, so all make the same best / early-stop decision
        value = distributed.broadcast(self._dev_metric(step) if self.world.is_main else None, self.world)
        if watched:
            watch.seen(step, s.total, value)
        if not due:
            return
        s.dev_history.append({"step": step, self.metric: value})
        self.metrics.write({"step": step, f"dev_{self.metric}": value})
        log.info("step %d dev %s %.4f", step, self.metric, value)
        if s.best is None or value > s.best:
            s.best, s.best_step, s.bad_evals = value, step, 0
            if self.best_path:
                save_weights(self.best_path, trainable_state(self.model))
            elif self.world.is_main:
                self.best_memory = {k: v.clone() for k, v in trainable_state(self.model).items()}
        else:
            s.bad_evals += 1
            if cfg.patience and s.bad_evals >= cfg.patience:
                log.info("early stop at step %d: dev %s did not improve for %d evals", step, self.metric, cfg.patience)
                self.stopped_early = True

    def checkpoint(self, step: int) -> None:
        cfg = self.cfg
        if cfg.save_every and (step % cfg.save_every == 0 or step == self.state.total):
            # every rank's RNG goes into rank 0's checkpoint: a resumed rank draws what it would have
            rngs = distributed.gather_on_main(rng_state(), self.world) if self.world.distributed else None
            optimizer_state = None
            if self.sharded:   # whole tensors, in the one-process format (every rank gathers)
                from .fsdp import full_optimizer_state
                self.sharded.gather_into(self.model)
                optimizer_state = full_optimizer_state(self.optimizer)
            if self.out:
                save_checkpoint(self.out / "checkpoints", self.model, self.optimizer, asdict(self.state),
                                cfg.keep_checkpoints, rank_rngs=rngs, optimizer_state=optimizer_state)

    # ---------------------------------------------------------------- the run

    def plan(self) -> None:
        """The number of steps: from steps / epochs, cut to the budget if one is given (a resumed
        run keeps the plan it started with); the estimated time is printed either way."""
        cfg, s = self.cfg, self.state
        per_epoch = math.ceil(len(self.data) / cfg.batch_size)
        self.planned = cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch))
        self.probe_s = distributed.max_number(self._probe(), self.world)   # ranks must agree on the plan
        self.budget = wall_budget(cfg.budget_minutes, self.budget_s)
        if not s.total:
            s.total = self.planned
            if self.budget and self.planned * self.probe_s > self.budget:
                s.total = max(1, int(self.budget / self.probe_s))
        self.warmup = int(cfg.warmup_ratio * s.total)
        examples = min(len(self.data), s.total * cfg.batch_size)
        fitted = (f"; budget {self.budget / 60:.1f} min: {s.total} of {self.planned} steps, {examples:,} of "
                  f"{len(self.data):,} examples" if s.total < self.planned else "")
        eta = (s.total - s.step) * self.probe_s
        text = (f"{self.tag}: {s.total - s.step} steps of {cfg.batch_size} examples, about {_duration(eta)} "
                f"({self.probe_s:.2f} s a step, measured){fitted}")
        log.info("%s", text)
        if self.progress:
            console.print(f"  {text}", highlight=False)

    def run(self) -> TrainResult:
        cfg = self.cfg
        causal = _causal(self.train_model)
        if cfg.grad_checkpointing:
            causal.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        self.train_model.train()
        take_counts()
        try:
            with self.kernels:
                self.plan()
                log.info("training %d steps (%d examples, %d per step), bf16=%s, layout=%s, kernels=%s, processes=%d%s",
                         self.state.total, len(self.data), cfg.batch_size, self.bf16, self.layout,
                         ",".join(self.kernels.kernels) or "none", self.world.size,
                         " (FSDP2: trained weights, gradients, optimiser states sharded)" if self.sharded else "")
                self.meter = Meter(self.state.total - self.state.step, f"training {self.tag}", self.progress, "steps")
                self.t_start = time.perf_counter() - self.state.elapsed_s
                try:
                    while self.state.step < self.state.total and not self.stopped_early:
                        step = self.state.step
                        batches, units = self.batches(step)
                        loss, logs = self.forward_backward(batches, units)
                        grad_norm = self.update(step)
                        self.state.step = step + 1
                        self.state.target_tokens += self.step_targets
                        self.record(step + 1, loss, logs, grad_norm, self.step_tokens)
                        self.evaluate(step + 1)
                        self.checkpoint(step + 1)
                finally:
                    self.meter.close()
                    self.metrics.close()
        finally:
            if cfg.grad_checkpointing:
                causal.gradient_checkpointing_disable()
        return self.finish()

    def finish(self) -> TrainResult:
        s = self.state
        if self.sharded:   # the caller's model gets the trained weights on every rank; the shards go
            self.sharded.gather_into(self.model)
            self.sharded = self.train_model = None
            self.optimizer.state.clear()
        counts = take_counts()
        if any(counts.values()):
            log.info("attention over packed rows, calls of this run: %d per example, %d sdpa over the rows (fewer "
                     "scores there), %d sdpa as fallback (rows not packed with restarting positions: correct, "
                     "slower)", counts["per_example"], counts["packed"], counts["fallback"])
        if self.cfg.load_best and s.best_step is not None and s.best_step != s.step:
            if self.best_path and self.best_path.exists():
                load_weights_into(self.model, self.best_path)
            elif self.best_memory:
                with torch.no_grad():
                    for n, p in self.model.named_parameters():
                        if n in self.best_memory:
                            p.copy_(self.best_memory[n])
            log.info("loaded the best dev checkpoint (step %d, %s %.4f)", s.best_step, self.metric, s.best)
        self.model.eval()
        return TrainResult(steps=s.step, train_tokens=s.tokens, target_tokens=s.target_tokens,
                           train_time_s=s.elapsed_s, final_loss=s.last_loss,
                           padding_fraction=s.padded_tokens / max(s.tokens + s.padded_tokens, 1),
                           data=self.report.to_json() if self.report else {"kept": len(self.data)},
                           planned_steps=self.planned, budget_s=self.budget, probe_s_per_step=self.probe_s,
                           kernels=list(self.kernels.kernels), attention_calls=counts, best_metric=s.best,
                           best_step=s.best_step, stopped_early=self.stopped_early, dev_history=s.dev_history,
                           resumed_from=self.resumed_from)

    # ---------------------------------------------------------------- helpers

    def _encode_train_split(self):
        cfg = self.cfg
        return encode_examples(self.builder, train_pool(self.task, cfg), cfg.seq_len, cfg.overlong, self.soft_tokens)

    def _probe(self) -> float:
        """Seconds one step takes: the forward and backward of the next step's micro-batches,
        timed, then undone (gradients dropped, RNG restored), so the run is the one it would
        have been without the measurement. The optimizer step is small beside it and not timed."""
        cpu, cuda = torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        python = random.getstate()
        tokens, padded_tokens = self.state.tokens, self.state.padded_tokens
        t0 = time.perf_counter()
        batches, units = self.batches(self.state.step)
        self.forward_backward(batches, units)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - t0
        self.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(python)
        self.state.tokens, self.state.padded_tokens = tokens, padded_tokens
        return took

    def _dev_metric(self, step: int) -> float:
        from ..engine import Engine
        from ..evaluate import predict, score_predictions
        self.model.eval()
        try:
            with self.kernels.paused(), self.autocast():
                engine = Engine(self.model, self.tokenizer, f"dev-eval:{self.tag}:{step}", cache=None, progress=False)
                preds = predict(engine, self.builder, self.task, self.dev, passages_for=self.passages_for)
                self.cfg.grade(self.task, self.dev, preds)   # the task's grader, where its primary metric is one
                report = score_predictions(self.task, preds)
        finally:
            self.model.train()
        return report.metrics[self.metric]

    def _last_checkpoint(self) -> str | None:
        root = self.out / "checkpoints" if self.out else None
        return str(root) if root and root.exists() else None


def _causal(model):
    from ..engine import causal_lm_of
    return causal_lm_of(model)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
