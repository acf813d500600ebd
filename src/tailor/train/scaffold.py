"""The pieces every training loop of Tailor shares: THE loop (loop.py) and the compact on-policy
loops (preference/ppo.py, preference/grpo.py) build their autocast region, optimiser, non-finite-loss guard, clipped
update, resume, metrics log and wall-clock budget here, so the two cannot drift apart."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import TailorError
from ..progress import Meter, console
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .logs import MetricsLog

log = logging.getLogger("tailor")


def autocast(device: torch.device, bf16: bool):
    """bf16 compute over fp32 master weights (use_bf16 / prepare_precision in loop.py), or none."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def adamw(params: list, lr: float, weight_decay: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (biases, norms and scalar heads' biases are not decayed)."""
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999), eps=eps)


def check_finite(loss: torch.Tensor, at: str, left: str, last_good: Callable[[], str | None]) -> None:
    """Stops training on a nan or inf loss, saying where, what state the weights are left in and
    the last checkpoint to go back to (`last_good` is asked only then)."""
    if not torch.isfinite(loss):
        raise TailorError(f"loss is {loss.item()} at {at}: training stopped; weights are left as {left}; last good "
                          f"checkpoint: {last_good() or 'none saved'} (lower lr, or use precision: fp32)")


def clip_and_step(optimizer: torch.optim.Optimizer, params: list, max_grad_norm: float) -> torch.Tensor | None:
    """One update: gradients clipped to `max_grad_norm` (0: not clipped), the step, gradients
    dropped. Returns the norm before clipping (None when not clipped)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def resume_state(path: str, model, optimizer: torch.optim.Optimizer, state_cls: type, rank: int = 0):
    """A loop's state dataclass and the checkpoint it came from; the weights, optimiser and RNG
    states are restored in place (checkpoint.py), so the run continues as if never stopped."""
    saved = load_checkpoint(Path(path), model, optimizer, rank=rank)
    resumed_from = saved.pop("checkpoint")
    return state_cls(**{k: v for k, v in saved.items() if k in state_cls.__dataclass_fields__}), resumed_from


def metrics_log(out: Path | None, report_to: list[str], tag: str, resumed_at: int | None) -> MetricsLog:
    """`out`/train_metrics.jsonl (and TensorBoard / MLflow); a resumed run first drops the rows
    its killed predecessor logged after the checkpoint it resumes from."""
    metrics = MetricsLog(out / "train_metrics.jsonl" if out else None, report_to, tag)
    if resumed_at is not None:
        metrics.rewind(resumed_at)
    return metrics


def wall_budget(budget_minutes: float | None, budget_s: float | None) -> float | None:
    """Seconds training may take: the option's and the caller's (a ladder's share), the smaller."""
    budgets = [b for b in (budget_minutes and budget_minutes * 60, budget_s) if b]
    return min(budgets) if budgets else None


class OnPolicyLoop:
    """The compact on-policy loops (PPO, GRPO): one run, step after step, until the steps or the
    budget end; each step logged, shown with its ETA and checkpointed when due. A subclass brings
    the step itself (`step`: sample, reward, update) and what it shows and returns (`shown`,
    `log_line`, `summary`), and sets o (steps, save_every, keep_checkpoints), out, model,
    optimizer, budget, state (step, elapsed_s, tokens, history), metrics, prompts, progress and
    resumed_from; `name` and `unit` name it in what it says."""

    name: str = ""
    unit: str = "step"

    def step(self) -> tuple[dict, int]:
        """One step: its logged values, and the tokens it processed (for the meter's rate)."""
        raise NotImplementedError

    def shown(self, stats: dict) -> dict:
        return {"reward": f"{stats['reward']:.3f}"}

    def log_line(self, stats: dict) -> str:
        return f"reward {stats['reward']:.3f}"

    def summary(self) -> dict:
        """What the run returns beyond what every on-policy run does."""
        return {}

    def run(self) -> dict:
        o, s = self.o, self.state
        self._announce()
        stopped = "steps"
        meter = Meter(o.steps - s.step, f"training {self.name}", self.progress, f"{self.unit}s")
        t0 = time.perf_counter() - s.elapsed_s
        try:
            while s.step < o.steps:
                if self._over_budget():   # a resumed run that had already spent its budget
                    stopped = "budget"
                    break
                stats, tokens = self.step()
                s.step += 1
                s.elapsed_s = time.perf_counter() - t0
                row = {"step": s.step, **stats, "elapsed_s": s.elapsed_s}
                s.history.append(row)
                self.metrics.write(row)
                meter.update(1, tokens, **self.shown(stats))
                log.info("%s %d/%d %s", self.name, s.step, o.steps, self.log_line(stats))
                if self._end_step(o.steps, o.save_every, o.keep_checkpoints):
                    stopped = "budget"
                    break
        finally:
            meter.close()
            self.metrics.close()
        if stopped == "budget":
            self._say_budget_stop(self.name, self.unit, o.steps)
        return {"steps": s.step, "stopped": stopped, "budget_s": self.budget, "train_time_s": s.elapsed_s,
                "train_tokens": s.tokens, "padding_fraction": 0.0, "planned_steps": o.steps, "history": s.history,
                "resumed_from": self.resumed_from, "data": {"kept": len(self.prompts)}, **self.summary()}

    def _announce(self) -> None:
        """What the run will do, said before it starts (as THE loop's plan is)."""

    def _say(self, text: str) -> None:
        log.info("%s", text)
        if self.progress:
            console.print(f"  {text}", highlight=False)

    def _over_budget(self) -> bool:
        return bool(self.budget) and self.state.elapsed_s >= self.budget

    def _end_step(self, steps: int, save_every: int, keep: int) -> bool:
        """A checkpoint every `save_every` steps, at the last, and where the budget stops training;
        True when it does."""
        s = self.state
        over = self._over_budget() and s.step < steps
        if self.out and save_every and (s.step % save_every == 0 or s.step == steps or over):
            save_checkpoint(self.out / "checkpoints", self.model, self.optimizer, asdict(s), keep)
        return over

    def _say_budget_stop(self, what: str, unit: str, steps: int) -> None:
        s = self.state
        self._say(f"{what}: stopped after {unit} {s.step} of {steps}: {s.elapsed_s:.1f} s of training passed the "
                  f"budget of {self.budget:.1f} s")

    def _last_checkpoint(self) -> str | None:
        ckpt = latest_checkpoint(self.out / "checkpoints") if self.out else None
        return str(ckpt) if ckpt else self.resumed_from
