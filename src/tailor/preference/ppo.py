"""PPO (Schulman et al. 2017) against a reward model with a per-token KL penalty, as InstructGPT
(Ouyang et al. 2022) runs it: a compact loop of its own (TRL and torchtune do the same) that
reuses THE prompt builder (prompts), THE engine (sampling rollouts, reward-model scores), THE
loop's precision (use_bf16, prepare_precision), what every loop shares (train/scaffold.py: the
autocast region, the optimiser, the non-finite-loss guard, the clipped update, checkpoints with
exact resume, the metrics log, the wall-clock budget) and the progress display (progress.py: a
bar on a terminal, plain lines with an ETA in logs).

One iteration:
1. sample `rollout_prompts` prompts; the engine samples one response each from the policy;
2. the reward model scores each (prompt, response) at the response's last real token;
3. one no-grad forward of the training layout gives old log-probs and values (the same
   forward that trains: bf16 generation log-probs differ from training ones, so they are never
   reused), and the reference's log-probs (the adapter off, or the frozen SFT adapter);
4. per-token rewards: −β (log π_old − log π_ref) at every response token, plus the score at
   the last; GAE (γ = 1, λ = 0.95) over each response; advantages whitened over the batch;
5. `ppo_epochs` passes over minibatches: clipped policy loss (ε = 0.2) and clipped value loss
   (a value head on the policy's hidden states); optionally β adapts toward a KL target
   (the proportional controller of Ziegler et al. 2019).

Invariant: on the first minibatch of the first epoch the weights are those that computed the old
log-probs, by the same forward on the same batch, so ratio = 1 and the clip fraction is 0 exactly.

A budget (`budget_minutes`, or a ladder's share passed to fit) is checked after each iteration:
the run stops after the iteration that passes it (an iteration is not cut: its rollouts and
updates belong together), saves a checkpoint there when checkpoints are on, and says `stopped:
budget` in its result. The time counted is the run's whole training time, across resumes (as
`train_time_s` reports it): a resumed run continues only while that is under its budget.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..train.data import Batch, Encoded, pack
from ..train.loop import prepare_precision, use_bf16
from ..train.scaffold import OnPolicyLoop, adamw, autocast, check_finite, clip_and_step, metrics_log, resume_state, wall_budget

log = logging.getLogger("tailor")


class PolicyWithValue(torch.nn.Module):
    """The LoRA policy and a scalar value head on its last hidden states (one module, so the
    loop's checkpoints save both)."""

    def __init__(self, policy, hidden_size: int):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)


def forward_tokens(model: PolicyWithValue, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per response token: log π(token) and the value of the state that emits it, from one
    forward over packed rows (only the positions that predict a response token are projected)."""
    from ..engine import causal_lm_of, head_logits
    from ..train.losses import token_logprobs
    device = next(model.parameters()).device
    causal = causal_lm_of(model.policy)
    rows, cols = (t.to(device) for t in batch.select)
    mask = None if batch.attention_mask is None else batch.attention_mask[:, None].to(device)
    hidden = causal.get_decoder()(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                                  attention_mask=mask, use_cache=False).last_hidden_state[rows, cols]
    lp = token_logprobs(head_logits(causal, hidden), batch.labels)
    values = model.value_head(hidden.to(model.value_head.weight.dtype)).squeeze(-1).float()
    return lp, values


def token_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor, sequence: torch.Tensor,
                  beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token reward −β (log π − log π_ref), plus each sequence's score on its last token;
    and the per-token KL term (log π − log π_ref)."""
    kl = logprobs - ref_logprobs
    rewards = -beta * kl
    last = _last_positions(sequence, len(scores))
    rewards[last] += scores
    return rewards, kl


def _last_positions(sequence: torch.Tensor, n: int) -> torch.Tensor:
    idx = torch.arange(len(sequence))
    return torch.full((n,), -1, dtype=torch.long).scatter_reduce(0, sequence.cpu(), idx, "amax")


def gae(rewards: torch.Tensor, values: torch.Tensor, sequence: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, per token, each sequence on its own (the
    value after a sequence's last token is 0). Tokens of a sequence are contiguous and in order."""
    adv = torch.zeros_like(rewards)
    seq = sequence.tolist()
    nxt_value, running = 0.0, 0.0
    for t in range(len(seq) - 1, -1, -1):
        if t == len(seq) - 1 or seq[t + 1] != seq[t]:
            nxt_value, running = 0.0, 0.0
        delta = rewards[t] + gamma * nxt_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
        nxt_value = values[t]
    return adv, adv + values


def whiten(x: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean, var = x.mean(), x.var(unbiased=False)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def ppo_losses(lp, old_lp, values, old_values, adv, returns, clip: float, clip_value: float):
    """Token means of the clipped policy loss and the clipped value loss, and the statistics
    logged (ratio, clip fraction, approximate KL)."""
    ratio = torch.exp(lp - old_lp)
    pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_value, clip_value)
    vf = 0.5 * torch.max((values - returns) ** 2, (v_clipped - returns) ** 2).mean()
    with torch.no_grad():
        stats = {"ratio_max_dev": (ratio - 1).abs().max().item(),
                 "clip_fraction": ((ratio - 1).abs() > clip).float().mean().item(),
                 "approx_kl": (0.5 * (lp - old_lp) ** 2).mean().item(),
                 "value_clip_fraction": ((values - old_values).abs() > clip_value).float().mean().item()}
    return pg, vf, stats


class AdaptiveKL:
    """β toward a target KL per response (Ziegler et al. 2019): β ← β (1 + clip(KL/target − 1, ±0.2) n/horizon)."""

    def __init__(self, beta: float, target: float | None, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.beta *= 1 + error * n / self.horizon


@dataclass
class PPOState:
    step: int = 0
    beta: float = 0.0
    elapsed_s: float = 0.0
    tokens: int = 0
    history: list = field(default_factory=list)   # per iteration: reward, kl, ... (the report's curve)


@dataclass
class Rollout:
    batches: list[Batch]           # the first epoch's minibatches (old values computed on exactly these)
    old_lp: list[torch.Tensor]
    old_values: list[torch.Tensor]
    ref_lp: list[torch.Tensor]
    adv: list[torch.Tensor]
    returns: list[torch.Tensor]
    rewards: list[torch.Tensor]
    scores: list[torch.Tensor]     # the reward model's score of each sequence of each batch
    stats: dict


class PPOTrainer(OnPolicyLoop):
    def __init__(self, model: PolicyWithValue, tokenizer, builder, prompts: list, reward_engine, opts, out: Path | None,
                 reference=None, resume: str | None = None, progress: bool = False, budget_s: float | None = None):
        """`reference`: None (the adapter switched off is the reference) or a dict of the frozen
        SFT adapter's LoRA tensors (swapped in for the reference forward); `budget_s`: wall-clock
        seconds the iterations may take (with `opts.budget_minutes`, the smaller)."""
        self.model, self.tok, self.builder, self.prompts = model, tokenizer, builder, prompts
        self.rm, self.o, self.out, self.reference, self.progress = reward_engine, opts, out, reference, progress
        self.device = next(model.parameters()).device
        self.bf16 = use_bf16(opts.precision, self.device)
        prepare_precision(model, self.bf16)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # Adam's epsilon 1e-5, as PPO implementations use it (Huang et al. 2022, "The 37 implementation
        # details of PPO"), not torch's 1e-8; weight decay on matrices only, as THE loop decays
        self.optimizer = adamw(self.trainable, opts.lr, opts.weight_decay, eps=1e-5)
        self.state = PPOState(beta=opts.beta)
        self.resumed_from = None
        torch.manual_seed(opts.seed)
        random.seed(opts.seed)
        if resume:
            self.state, self.resumed_from = resume_state(resume, model, self.optimizer, PPOState)
            log.info("resumed from %s at iteration %d", self.resumed_from, self.state.step)
        self.kl_ctl = AdaptiveKL(self.state.beta, opts.target_kl, opts.kl_horizon)
        if out:
            out.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics_log(out, opts.report_to, "ppo", self.state.step if resume else None)
        self.budget = wall_budget(opts.budget_minutes, budget_s)

    def autocast(self):
        return autocast(self.device, self.bf16)

    @contextlib.contextmanager
    def as_reference(self):
        """The reference policy for a block: the adapter off, or the SFT adapter's weights."""
        policy = self.model.policy
        if self.reference is None:
            with policy.disable_adapter():
                yield
            return
        params = dict(policy.named_parameters())
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

    # ---------------------------------------------------------------- one iteration

    def sample(self, step: int) -> tuple[list, list[Encoded], list[str], list[str]]:
        from ..engine import Engine
        o = self.o
        rng = random.Random(f"{o.seed}:ppo:{step}")
        chosen = rng.sample(self.prompts, min(o.rollout_prompts, len(self.prompts)))
        texts = [self.builder.build(ex).text for ex in chosen]
        self.model.eval()
        with self.autocast():
            engine = Engine(self.model.policy, self.tok, f"ppo-rollout:{step}", cache=None, progress=False)
            gens = engine.generate(texts, max_new_tokens=o.max_new_tokens, temperature=o.temperature,
                                   seed=o.seed * 100003 + step)
        data, answers = [], []
        for ex, text, g in zip(chosen, texts, gens):
            # the response as training will see it: the builder's answer layout, with its
            # end-of-turn only when the policy produced one
            answer = self.builder.target_text(g.text) if g.finish_reason == "stop" else \
                self.builder.answer_prefix + g.text
            ids = self.builder.encode(answer) or [self.tok.eos_token_id]
            data.append(Encoded(f"{ex.id}@{step}", self.builder.encode(text), [ids]))
            answers.append(answer)
        return chosen, data, texts, answers

    @torch.no_grad()
    def rollout(self, step: int) -> Rollout:
        o = self.o
        chosen, data, texts, answers = self.sample(step)
        scores = torch.tensor([r.score for r in self.rm.reward(texts, answers)], dtype=torch.float32)
        # minibatches of the first epoch; old log-probs and values come from exactly these batches
        order = list(range(len(data)))
        random.Random(f"{o.seed}:mb:{step}:0").shuffle(order)
        groups = [order[i:i + o.minibatch_prompts] for i in range(0, len(order), o.minibatch_prompts)]
        out = Rollout([], [], [], [], [], [], [], [], {})
        index = {id(ex): i for i, ex in enumerate(data)}
        all_kl = []
        self.model.eval()
        for g in groups:
            batch = self._batch([data[i] for i in g])
            with self.autocast():
                lp, values = forward_tokens(self.model, batch)
            # a separate autocast region: autocast caches the bf16 casts of trainable weights for the
            # length of a region, so swapped-in reference weights would not be seen inside this one
            with self.as_reference(), self.autocast():
                ref, _ = forward_tokens(self.model, batch)
            # the reward model's scores come back as Python floats (a CPU tensor): on the policy's
            # device they add into its per-token rewards (on CUDA a CPU operand is an error)
            s = scores[[index[id(ex)] for ex in batch.examples]].to(lp.device)
            rewards, kl = token_rewards(lp, ref, s, batch.sequence, self.kl_ctl.beta)
            adv, ret = gae(rewards, values, batch.sequence, o.gamma, o.lam)
            out.batches.append(batch)
            out.old_lp.append(lp)
            out.old_values.append(values)
            out.ref_lp.append(ref)
            out.adv.append(adv)
            out.returns.append(ret)
            out.rewards.append(rewards)
            out.scores.append(s)
            all_kl.append(torch.zeros(len(batch.sequences), device=kl.device).index_add_(
                0, batch.sequence.to(kl.device), kl.float()))
        if o.whiten:
            flat = whiten(torch.cat(out.adv))
            at = 0
            for k, a in enumerate(out.adv):
                out.adv[k] = flat[at:at + len(a)]
                at += len(a)
        lengths = [len(e.targets[0]) for e in data]
        kl_seq = torch.cat(all_kl)
        out.stats = {"reward": scores.mean().item(), "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
                     "kl": kl_seq.mean().item(), "response_length": sum(lengths) / len(lengths),
                     "eos_fraction": sum(a.endswith(self.builder.answer_suffix) for a in answers) / len(answers),
                     "beta": self.kl_ctl.beta}
        return out

    def _batch(self, examples: list[Encoded]) -> Batch:
        row = max(self.o.pack_len, max(len(e) for e in examples))
        (batch,) = pack(examples, row, self.pad_id, 10 ** 6)
        return batch

    def optimise(self, ro: Rollout) -> dict:
        o = self.o
        self.model.train()
        logs: dict[str, list] = {}
        flat = [(b, lp, v, a, r) for b, lp, v, a, r in zip(ro.batches, ro.old_lp, ro.old_values, ro.adv, ro.returns)]
        updates = 0
        for epoch in range(o.ppo_epochs):
            order = list(range(len(flat)))
            if epoch:
                random.Random(f"{o.seed}:mb:{self.state.step}:{epoch}").shuffle(order)
            for k in order:
                batch, old_lp, old_v, adv, ret = flat[k]
                with self.autocast():
                    lp, values = forward_tokens(self.model, batch)
                pg, vf, stats = ppo_losses(lp, old_lp, values, old_v, adv, ret, o.clip, o.clip_value)
                loss = pg + o.vf_coef * vf
                updates += 1
                n = self.state.step
                check_finite(loss, f"iteration {n + 1}, minibatch update {updates}",
                             f"after iteration {n}" if updates == 1 else f"after {updates - 1} minibatch updates of "
                             f"iteration {n + 1}", self._last_checkpoint)
                loss.backward()
                norm = clip_and_step(self.optimizer, self.trainable, o.max_grad_norm)
                if norm is not None:
                    stats["grad_norm"] = float(norm)
                if epoch == 0 and k == order[0]:
                    logs.setdefault("first_ratio_max_dev", []).append(stats["ratio_max_dev"])
                    logs.setdefault("first_clip_fraction", []).append(stats["clip_fraction"])
                for name, value in {**stats, "policy_loss": pg.item(), "value_loss": vf.item()}.items():
                    logs.setdefault(name, []).append(value)
                self.state.tokens += batch.real_tokens
        self.model.eval()
        return {k: sum(v) / len(v) for k, v in logs.items()}

    # ---------------------------------------------------------------- the run

    name, unit = "ppo", "iteration"

    def step(self) -> tuple[dict, int]:
        s = self.state
        tokens = s.tokens
        ro = self.rollout(s.step)
        stats = {**ro.stats, **self.optimise(ro)}
        self.kl_ctl.update(ro.stats["kl"], self.o.rollout_prompts)
        s.beta = self.kl_ctl.beta
        return stats, s.tokens - tokens

    def shown(self, stats: dict) -> dict:
        return {"reward": f"{stats['reward']:.3f}", "kl": f"{stats['kl']:.3f}"}

    def log_line(self, stats: dict) -> str:
        return (f"reward {stats['reward']:.3f} kl {stats['kl']:.3f} clip {stats['clip_fraction']:.3f} "
                f"len {stats['response_length']:.1f}")

    def summary(self) -> dict:
        s = self.state
        return {"iterations": s.step, "beta": s.beta,
                "final_loss": s.history[-1]["policy_loss"] if s.history else float("nan")}

    def _announce(self) -> None:
        """What the run will do, before it starts (as THE loop's plan prints it); the ETA follows
        from the first iteration on."""
        o, s = self.o, self.state
        budget = (f"; budget {self.budget / 60:.1f} min: stops after the iteration that passes it"
                  if self.budget else "")
        text = (f"ppo: {o.steps - s.step} iterations of {o.rollout_prompts} rollouts of at most {o.max_new_tokens} "
                f"tokens, {o.ppo_epochs} epochs over minibatches of {o.minibatch_prompts}{budget}")
        self._say(text)


