"""GRPO: group relative policy optimisation (Shao et al. 2024, "DeepSeekMath"), with the loss
variants in use today, on a compact loop of its own as PPO's (preference/ppo.py): THE prompt
builder, THE engine's continuous-batching decoder for sampling (the adapter being trained is
live in it), THE loop's precision and what every loop shares (train/scaffold.py: autocast, the
optimiser, the non-finite-loss guard, the clipped update, checkpoints with exact resume, the
metrics log, the wall-clock budget) and the progress display (progress.py).

One step:
1. `prompts_per_step` prompts, in the order THE loop reads rows (`step_examples`: epochs of a
   seeded shuffle, a pure function of seed and step); each is sampled `group_size` times through
   the engine with the current adapter, every sample with its own seed (a function of seed,
   step, prompt and sample), so a resumed run draws exactly what an uninterrupted one drew;
2. every reward scores every sample; the reward is their weighted sum; each reward's mean is
   logged on its own, format rewards apart from correctness rewards (a format fix can look like
   a reasoning gain);
3. group-relative advantages: each sample's reward minus its group's mean, divided by the
   group's standard deviation (GRPO, DAPO) or not (Dr. GRPO: Liu et al. 2025, "Understanding
   R1-Zero-Like Training", which shows the division weights questions by their difficulty);
4. `inner_epochs` passes over `minibatches` of the groups, each an optimiser update on the
   clipped objective min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A) per response token, ρ = π/π_old; a
   group's samples share one packed row under a tree mask (`tailor.tree`), so its prompt runs
   once, not `group_size` times; optionally + β·KL to the reference with the k3 estimator
   exp(r) - r - 1, r = log π_ref - log π (Schulman 2020, "Approximating KL divergence"; the
   GRPO paper's form). β defaults to 0: DAPO (Yu et al. 2025) and Dr. GRPO drop the KL term, and
   TRL's GRPOConfig defaults to beta 0.0 (TRL 1.16), which also spares the reference forward.

The loss variants (how token losses become one number):
- `grpo` (Shao et al. 2024): each sequence's mean token loss, averaged over the sequences;
- `dr_grpo` (Liu et al. 2025): the sum of token losses over (sequences x max_new_tokens), a
  constant, so a long wrong answer is not penalised less per token than a short one;
- `dapo` (Yu et al. 2025): the sum of token losses over the number of response tokens in the
  step's batch (token-level), with clip-higher (ε_high 0.28 > ε_low 0.2 by default) and optional
  dynamic sampling: groups whose samples all got the same reward (no advantage, no gradient) are
  dropped and more prompts drawn, up to `SAMPLING_ROUNDS` draws per step (counted in the log).

Invariant: on the first update of a step the weights are those that sampled the batch and that
computed the old log-probabilities (the same forward on the same packed batch), so ρ = 1 and
nothing is clipped; it is logged (`first_ratio_max_dev`) and tested.

A budget (`budget_minutes`, or a ladder's share) is checked after each step, as in PPO: the run
stops after the step that passes it, saves a checkpoint there when checkpoints are on, and says
`stopped: budget`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import TailorError
from ..train.data import Batch, Encoded, pack, step_examples
from ..train.loop import prepare_precision, use_bf16
from ..train.scaffold import OnPolicyLoop, adamw, autocast, check_finite, clip_and_step, metrics_log, resume_state, wall_budget

log = logging.getLogger("tailor")

LOSSES = ("grpo", "dr_grpo", "dapo")
STD_EPS = 1e-4         # added to the group's std before dividing (TRL's constant): a group of equal rewards gets 0
SAMPLING_ROUNDS = 4    # dynamic sampling: draws of prompts per step at most (the first included)


@dataclass
class RewardFn:
    """One reward: `grade(samples, examples)` -> one float per sample (the sample's text, the row
    it answers); `kind` format or correctness; the step's reward is the sum of weight x score."""
    name: str
    kind: str
    weight: float
    grade: Callable[[list[str], list], list[float]]


# ---------------------------------------------------------------- the pieces, pure functions


def group_advantages(rewards: torch.Tensor, scale: bool) -> torch.Tensor:
    """[groups, group_size] rewards -> advantages: minus the group's mean, divided by the group's
    standard deviation (Bessel-corrected, as TRL's `std()`) plus STD_EPS when `scale`."""
    adv = rewards - rewards.mean(-1, keepdim=True)
    return adv / (rewards.std(-1, keepdim=True) + STD_EPS) if scale else adv


def scales_rewards(loss: str) -> bool:
    """GRPO and DAPO divide by the group's std; Dr. GRPO does not."""
    return loss != "dr_grpo"


def policy_loss(lp: torch.Tensor, old_lp: torch.Tensor, adv: torch.Tensor, sequence: torch.Tensor, n_seq: int,
                loss: str, clip_low: float, clip_high: float, beta: float = 0.0, ref_lp: torch.Tensor | None = None,
                max_new_tokens: int = 1, token_norm: float | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate over the response tokens of `n_seq` sequences (flat: token t belongs
    to sequence `sequence[t]` and has advantage `adv[t]`), aggregated as `loss` says (module
    docstring). `token_norm`: dapo's denominator (the step's response tokens per update; default
    the tokens given). Returns the loss and what is logged."""
    ratio = torch.exp(lp - old_lp)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta:
        log_r = ref_lp - lp
        kl = torch.exp(log_r) - log_r - 1     # k3: unbiased, always >= 0
        per_token = per_token + beta * kl
    if loss == "grpo":
        seq = sequence.to(per_token.device)
        sums = torch.zeros(n_seq, device=per_token.device, dtype=per_token.dtype).index_add_(0, seq, per_token)
        counts = torch.zeros(n_seq, device=per_token.device, dtype=per_token.dtype).index_add_(
            0, seq, torch.ones_like(per_token))
        out = (sums / counts.clamp(min=1)).mean()
    elif loss == "dr_grpo":
        out = per_token.sum() / (n_seq * max_new_tokens)
    elif loss == "dapo":
        out = per_token.sum() / (token_norm if token_norm else len(per_token))
    else:
        raise TailorError(f"grpo: loss '{loss}' is not one of {', '.join(LOSSES)}")
    with torch.no_grad():
        stats = {"ratio_max_dev": (ratio - 1).abs().max().item(),
                 "clip_low_fraction": ((ratio < 1 - clip_low) & (adv < 0)).float().mean().item(),
                 "clip_high_fraction": ((ratio > 1 + clip_high) & (adv > 0)).float().mean().item()}
        if kl is not None:
            stats["kl"] = kl.mean().item()
    return out, stats


def sample_seed(seed: int, step: int, row: int) -> int:
    """The seed of sample `row` of step `step`: distinct for every sample of a run, so the samples
    of a group differ, and the same in a resumed run."""
    return (seed << 40) + (step << 20) + row


# ---------------------------------------------------------------- the loop


@dataclass
class GRPOState:
    step: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0                 # response tokens trained on (each update counts its batch)
    sampled_tokens: int = 0         # prompt + response tokens of every sample drawn
    sampling_s: float = 0.0
    history: list = field(default_factory=list)   # per step: rewards, loss, ... (the report's curves)


@dataclass
class Groups:
    examples: list                  # the rows sampled, one per group
    data: list[Encoded]             # per group: the prompt and its group_size responses (adv in extra)
    rewards: torch.Tensor           # [groups, group_size], the weighted sum
    stats: dict


class GRPOTrainer(OnPolicyLoop):
    def __init__(self, model, tokenizer, builder, prompts: list, rewards: list[RewardFn], opts, out: Path | None,
                 reference: dict | None = None, resume: str | None = None, progress: bool = False,
                 budget_s: float | None = None):
        """`model`: the peft policy (its LoRA adapter trains); `prompts`: the rows sampled from;
        `reference` (used only when beta > 0): None (the adapter switched off is the reference)
        or the frozen SFT adapter's LoRA tensors, swapped in for the reference forward."""
        if opts.loss not in LOSSES:
            raise TailorError(f"grpo: loss '{opts.loss}' is not one of {', '.join(LOSSES)}")
        if not rewards:
            raise TailorError("grpo: no reward to train on")
        self.model, self.tok, self.builder, self.prompts, self.rewards = model, tokenizer, builder, prompts, rewards
        self.o, self.out, self.reference, self.progress = opts, out, reference, progress
        self.device = next(model.parameters()).device
        self.bf16 = use_bf16(opts.precision, self.device)
        prepare_precision(model, self.bf16)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = adamw(self.trainable, opts.lr, opts.weight_decay)
        self.clip_high = opts.clip_high if opts.clip_high is not None else (0.28 if opts.loss == "dapo" else opts.clip_low)
        self.state = GRPOState()
        self.resumed_from = None
        torch.manual_seed(opts.seed)
        random.seed(opts.seed)
        if resume:
            self.state, self.resumed_from = resume_state(resume, model, self.optimizer, GRPOState)
            log.info("resumed from %s at step %d", self.resumed_from, self.state.step)
        if out:
            out.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics_log(out, opts.report_to, "grpo", self.state.step if resume else None)
        self.budget = wall_budget(opts.budget_minutes, budget_s)

    def autocast(self):
        return autocast(self.device, self.bf16)

    @contextlib.contextmanager
    def as_reference(self):
        """The reference policy for a block: the adapter off, or the SFT adapter's weights."""
        if self.reference is None:
            with self.model.disable_adapter():
                yield
            return
        params = dict(self.model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.reference}
        with torch.no_grad():
            for n, t in self.reference.items():
                params[n].copy_(t)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, t in saved.items():
                    params[n].copy_(t)

    # ---------------------------------------------------------------- sampling and rewards

    def _draw(self, step: int, rnd: int) -> list:
        o = self.o
        if rnd == 0:   # the step's own prompts, in THE loop's order
            return step_examples(self.prompts, o.prompts_per_step, o.seed, step)
        return random.Random(f"{o.seed}:grpo-extra:{step}:{rnd}").sample(
            self.prompts, min(o.prompts_per_step, len(self.prompts)))

    def sample(self, step: int) -> Groups:
        """The step's groups: sampled, rewarded, with advantages (dynamic sampling drops groups
        of equal rewards and draws again)."""
        from ..engine import Engine
        o, G = self.o, self.o.group_size
        kept: list[tuple] = []
        stats = {"groups_sampled": 0, "groups_dropped": 0}
        by_reward: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for rnd in range(SAMPLING_ROUNDS if o.dynamic_sampling else 1):
            chosen = self._draw(step, rnd)
            texts = [self.builder.build(ex).text for ex in chosen]
            rows = [t for t in texts for _ in range(G)]
            seeds = [sample_seed(o.seed, step, rnd * 100_000 + k) for k in range(len(rows))]
            self.model.eval()
            with self.autocast():
                engine = Engine(self.model, self.tok, f"grpo-rollout:{step}", cache=None, progress=False,
                                batch_size=len(rows))
                gens = engine.generate(rows, max_new_tokens=o.max_new_tokens, temperature=o.temperature,
                                       top_p=o.top_p, seed=seeds)
            samples = [g.text.strip() for g in gens]
            rowsx = [ex for ex in chosen for _ in range(G)]
            total = torch.zeros(len(rows))
            for fn in self.rewards:
                scores = fn.grade(samples, rowsx)
                if len(scores) != len(rows) or not all(isinstance(s, (int, float)) and s == s and abs(s) != float("inf")
                                                       for s in scores):
                    raise TailorError(f"grpo: reward '{fn.name}' gave {len(scores)} scores for {len(rows)} samples "
                                      "(one finite number each expected)")
                by_reward.setdefault(fn.name, []).extend(float(s) for s in scores)
                total += fn.weight * torch.tensor(scores, dtype=torch.float32)
            stats["sampled_tokens"] = stats.get("sampled_tokens", 0) + sum(g.prompt_tokens + g.completion_tokens
                                                                           for g in gens)
            stats.setdefault("_lengths", []).extend(g.completion_tokens for g in gens)
            stats.setdefault("_stopped", []).extend(g.finish_reason == "stop" for g in gens)
            stats.setdefault("_totals", []).append(total)
            for i, ex in enumerate(chosen):
                stats["groups_sampled"] += 1
                r = total[i * G:(i + 1) * G]
                if o.dynamic_sampling and bool((r == r[0]).all()):
                    stats["groups_dropped"] += 1
                    continue
                if len(kept) < o.prompts_per_step:
                    kept.append((ex, texts[i], gens[i * G:(i + 1) * G], r))
            if len(kept) >= o.prompts_per_step:
                break
        all_totals = torch.cat(stats.pop("_totals"))
        lengths, stopped = stats.pop("_lengths"), stats.pop("_stopped")
        data, examples = [], []
        rewards = torch.stack([r for *_, r in kept]) if kept else torch.zeros(0, G)
        adv = group_advantages(rewards, scales_rewards(o.loss)) if kept else rewards
        for k, (ex, text, gs, _) in enumerate(kept):
            targets = []
            prefix = self.builder.answer_prefix
            for g in gs:
                # the response as training sees it: the builder's answer layout (the sampled text
                # already starts with its prefix, a space after a plain prompt: not doubled), with its
                # end-of-turn only when the policy produced one
                said = g.text[len(prefix):] if prefix and g.text.startswith(prefix) else g.text
                answer = self.builder.target_text(said) if g.finish_reason == "stop" else prefix + said
                targets.append(self.builder.encode(answer) or [self.tok.eos_token_id])
            # the prompt the group was sampled from (`text`): its samples are trained conditioned on it
            data.append(Encoded(f"{ex.id}@{step}", self.builder.encode(text), targets, {"adv": adv[k].tolist()}))
            examples.append(ex)
        kinds: dict[str, float] = {}
        for fn in self.rewards:   # each kind's mean weighted contribution, and each reward's raw mean
            mean = sum(by_reward[fn.name]) / len(by_reward[fn.name])
            kinds[fn.kind] = kinds.get(fn.kind, 0.0) + fn.weight * mean
            stats[f"reward/{fn.name}"] = mean
        stats.update({f"reward_{k}": v for k, v in kinds.items()})
        stats.update({"reward": all_totals.mean().item(), "reward_std": all_totals.std().item() if len(all_totals) > 1
                      else 0.0, "group_reward_std": rewards.std(-1).mean().item() if kept else 0.0,
                      "response_length": sum(lengths) / len(lengths),
                      "stop_fraction": sum(stopped) / len(stopped), "groups": len(kept),
                      "sampling_s": time.perf_counter() - t0})
        return Groups(examples, data, rewards, stats)

    # ---------------------------------------------------------------- optimisation

    def _batch(self, examples: list[Encoded]) -> Batch:
        row = max(self.o.pack_len, max(len(e) for e in examples))
        (batch,) = pack(examples, row, self.pad_id, 10 ** 6)
        return batch

    def _logprobs(self, batch: Batch) -> torch.Tensor:
        from ..train.losses import target_logits, token_logprobs
        with self.autocast():
            return token_logprobs(target_logits(self.model, batch), batch.labels)

    def optimise(self, groups: Groups) -> dict:
        o = self.o
        if not groups.data:
            return {"updates": 0}
        # minibatches of whole groups; their composition is fixed for the step (old log-probs are
        # computed on exactly these packed batches), their order shuffled from the second pass on
        chunks = [groups.data[i::o.minibatches] for i in range(min(o.minibatches, len(groups.data)))]
        batches = [self._batch(c) for c in chunks]
        response_tokens = sum(len(t) for e in groups.data for t in e.targets)
        token_norm = response_tokens / len(batches)   # dapo: the step's tokens, per update
        adv = [torch.tensor([b.examples[i].extra["adv"][j] for i, j in b.sequences], device=self.device)[
            b.sequence.to(self.device)] for b in batches]
        reuse = o.inner_epochs * len(batches) > 1
        old, ref = [None] * len(batches), [None] * len(batches)
        self.model.eval()
        with torch.no_grad():
            for k, b in enumerate(batches):
                if reuse:   # one update only: the old log-probs are the update's own, detached
                    old[k] = self._logprobs(b)
                if o.beta:
                    with self.as_reference():
                        ref[k] = self._logprobs(b)
        self.model.train()
        logs: dict[str, list] = {}
        updates = 0
        for epoch in range(o.inner_epochs):
            order = list(range(len(batches)))
            if epoch:
                random.Random(f"{o.seed}:grpo-mb:{self.state.step}:{epoch}").shuffle(order)
            for k in order:
                b = batches[k]
                lp = self._logprobs(b)
                loss, stats = policy_loss(lp, old[k] if reuse else lp.detach(), adv[k], b.sequence, len(b.sequences),
                                          o.loss, o.clip_low, self.clip_high, o.beta, ref[k], o.max_new_tokens,
                                          token_norm)
                updates += 1
                n = self.state.step
                check_finite(loss, f"step {n + 1}, update {updates}",
                             f"after step {n}" if updates == 1 else f"after {updates - 1} updates of step {n + 1}",
                             self._last_checkpoint)
                loss.backward()
                norm = clip_and_step(self.optimizer, self.trainable, o.max_grad_norm)
                if norm is not None:
                    stats["grad_norm"] = float(norm)
                if updates == 1:
                    stats["first_ratio_max_dev"] = stats["ratio_max_dev"]
                for name, value in {**stats, "loss": loss.item()}.items():
                    logs.setdefault(name, []).append(value)
                self.state.tokens += len(b.labels)
        self.model.eval()
        return {"updates": updates, **{k: sum(v) / len(v) for k, v in logs.items()}}

    # ---------------------------------------------------------------- the run

    name, unit = "grpo", "step"

    def step(self) -> tuple[dict, int]:
        s = self.state
        groups = self.sample(s.step)
        s.sampled_tokens += groups.stats["sampled_tokens"]
        s.sampling_s += groups.stats["sampling_s"]
        return {**groups.stats, **self.optimise(groups)}, groups.stats["sampled_tokens"]

    def shown(self, stats: dict) -> dict:
        return {"reward": f"{stats['reward']:.3f}",
                **{k[7:]: f"{v:.3f}" for k, v in stats.items() if k in ("reward_format", "reward_correctness")}}

    def log_line(self, stats: dict) -> str:
        rewards = ", ".join(f"{k} {v:.3f}" for k, v in stats.items() if k.startswith("reward/"))
        return f"reward {stats['reward']:.3f} ({rewards}) len {stats['response_length']:.1f} groups {stats['groups']}"

    def summary(self) -> dict:
        o, s = self.o, self.state
        return {"sampled_tokens": s.sampled_tokens, "sampling_s": s.sampling_s,
                "final_loss": s.history[-1].get("loss", float("nan")) if s.history else float("nan"),
                "rewards": [{"name": r.name, "kind": r.kind, "weight": r.weight} for r in self.rewards],
                "loss": o.loss, "clip": [o.clip_low, self.clip_high]}

    def _announce(self) -> None:
        o, s = self.o, self.state
        budget = (f"; budget {self.budget / 60:.1f} min: stops after the step that passes it" if self.budget else "")
        text = (f"grpo: {o.steps - s.step} steps of {o.prompts_per_step} prompts x {o.group_size} samples of at most "
                f"{o.max_new_tokens} tokens, {o.loss} loss, {o.inner_epochs} pass(es) over {o.minibatches} "
                f"minibatch(es), rewards {', '.join(f'{r.name} ({r.kind}, x{r.weight:g})' for r in self.rewards)}"
                f"{budget}")
        self._say(text)

