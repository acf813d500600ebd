"""A ladder's judge: a *gold* reward model grading every policy arm on the held-out prompts.

A policy optimised against a reward model (PPO) or on the same preferences (DPO) can look better to
that reward model than it is; Gao et al. 2023 ("Scaling laws for reward model overoptimization")
measure this with a separate gold reward model, and InstructGPT (Ouyang et al. 2022) grades with
labelers who wrote none of the training comparisons. Here the gold model is a `reward-model` arm
trained on half of the train prompts (`train_prompts: half-b`) while the policies train on the other
half (`half-a`), or a reward-model arm folder trained elsewhere. For every policy arm (zero-shot,
SFT, DPO (Rafailov et al. 2023), PPO), on each distinct test prompt, through the one engine:

- the judge's reward of the arm's greedy answer (`Engine.generate`, then `Engine.reward`), its mean,
  and the win rate against the reference arm's answer to the same prompt (ties count half);
- the mean answer length in tokens, and its change against the base arm;
- the KL to the reference: the mean over one temperature-1 sample y per prompt of
  log π(y|x) − log π_ref(y|x), both summed over the answer's tokens (`Engine.score`): nats per answer;
- for PPO arms, the same at each saved checkpoint (`save_every`), so the judge's reward can be read
  against KL and the best checkpoint picked.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..methods.base import method_class
from ..progress import console
from ..results import Judged, JudgedCheckpoint
from ..task import primary_metric

log = logging.getLogger("tailor")


def win_rate(scores: list[float], reference: list[float]) -> tuple[float, int]:
    """The share of prompts whose score beats the reference's on the same prompt (ties half), and
    the number of ties."""
    if len(scores) != len(reference) or not scores:
        raise ValueError(f"win rate needs two equal, non-empty score lists ({len(scores)} vs {len(reference)})")
    wins = [1.0 if s > r else 0.5 if s == r else 0.0 for s, r in zip(scores, reference)]
    return sum(wins) / len(wins), sum(s == r for s, r in zip(scores, reference))


def unique_prompts(rows: list) -> list:
    """The first row of each distinct prompt, in order (a prompt's pairs are one question)."""
    from .data import prompt_key
    seen, out = set(), []
    for ex in rows:
        key = ex.meta.get("prompt_key") or prompt_key(ex.input)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def answer_text(builder, generation) -> str:
    """A generated answer in the layout training encodes answers in: with its end-of-turn only when
    the model produced one (as PPO's rollouts are scored)."""
    return builder.target_text(generation.text) if generation.finish_reason == "stop" else \
        builder.answer_prefix + generation.text


def judged_answers(adapted, judge, rows: list, *, cache=None, batch_size: int = 16, max_new_tokens: int = 64):
    """The judge's reward of the arm's greedy answer to each row, and each answer's length in tokens.
    The judge reads the plain prompt and the answer in its own builder's layout."""
    gens = adapted.engine(cache, batch_size=batch_size, progress=False).generate(
        adapted.prompts(rows), max_new_tokens=max_new_tokens)
    j = judge.builder
    rewards = judge.engine(cache, batch_size=batch_size, progress=False).reward(
        [j.build(ex).text for ex in rows], [answer_text(j, g) for g in gens])
    return [r.score for r in rewards], [g.completion_tokens for g in gens]


def kl_to_reference(policy, reference, rows: list, *, cache=None, batch_size: int = 16, max_new_tokens: int = 64,
                    seed: int = 1) -> tuple[float, list[float]]:
    """KL(π || π_ref) estimated on the rows: one temperature-1 sample y per prompt from π, and the
    mean of log π(y|x) − log π_ref(y|x) (sums over y's tokens, each model on its own prompt for x).
    Returns the mean and the per-prompt values. The reference itself gives 0 exactly."""
    engine = policy.engine(cache, batch_size=batch_size, progress=False)
    texts = policy.prompts(rows)
    gens = engine.generate(texts, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
    answers = [[answer_text(policy.builder, g)] for g in gens]
    own = [s.logprobs[0] for s in engine.score(texts, answers)]
    ref_engine = reference.engine(cache, batch_size=batch_size, progress=False)
    ref = [s.logprobs[0] for s in ref_engine.score(reference.prompts(rows), answers)]
    per = [o - r for o, r in zip(own, ref)]
    return sum(per) / len(per), per


@contextlib.contextmanager
def checkpoint_weights(adapted, checkpoint: Path):
    """The PPO arm `adapted` running the policy of one of its saved checkpoints for the block (the
    checkpoint holds the policy-with-value-head tensors; the `policy.` ones are the adapter's), its
    own weights and weights id back after."""
    import torch
    from safetensors.torch import load_file

    from ..errors import TailorError
    tensors = {k.removeprefix("policy."): v for k, v in load_file(str(checkpoint / "trainable.safetensors")).items()
               if k.startswith("policy.")}
    params = dict(adapted.model.named_parameters())
    unknown = [k for k in tensors if k not in params]
    if unknown or not tensors:
        raise TailorError(f"{checkpoint}: its tensors do not fit the arm's adapter ({len(unknown)} unknown, "
                          f"e.g. {unknown[:1]})")
    own, weights_id = {k: params[k].detach().clone() for k in tensors}, adapted.weights_id
    with torch.no_grad():
        for k, v in tensors.items():
            params[k].copy_(v.to(params[k].dtype))
    adapted.weights_id = f"{weights_id}@{checkpoint.name}"   # the engine cache keys on it
    try:
        yield adapted
    finally:
        with torch.no_grad():
            for k, v in own.items():
                params[k].copy_(v)
        adapted.weights_id = weights_id


def _train_prompts(arm, by_name: dict, seen: set | None = None) -> set[str]:
    """Which train prompts an arm's weights or shots came from, its `after:` chain included
    (zero-shot: none)."""
    seen = seen or set()
    if arm.name in seen:
        return set()
    seen.add(arm.name)
    if method_class(arm.method).bare:
        return set()
    out = {arm.options.get("train_prompts", "all")}
    after = arm.options.get("after")
    if after in by_name:
        out |= _train_prompts(by_name[after], by_name, seen)
    return out


def _disjoint(judge_half: str | None, used: set[str]) -> bool | None:
    if judge_half is None:
        return None
    if not used:
        return True
    other = {"half-a": "half-b", "half-b": "half-a"}.get(judge_half)
    return other is not None and used == {other}


def judge_ladder(arms: list, exp, ctx, test: list, progress: bool = True) -> None:
    """Fills `judge` on every ok policy arm of a ladder (see the module docstring). A failure here
    must not lose the ladder's results: it is logged and recorded in every ok arm's notes (which
    the table and report show), and the arms stay ungraded."""
    import traceback
    try:
        _judge_ladder(arms, exp, ctx, test, progress)
    except Exception as e:
        log.error("judge failed:\n%s", traceback.format_exc())
        console.print(f"[red]judge failed[/]: {type(e).__name__}: {e}", highlight=False)
        note = f"not graded: the judge failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        for arm in arms:
            if arm.ok:
                arm.notes[note] = 1


def _judge_ladder(arms: list, exp, ctx, test: list, progress: bool) -> None:
    from ..methods import load_adapted
    from .reward import pairwise_accuracy
    opts, base = exp.judge, ctx.base
    by_name = {a.name: a for a in arms}
    judge_arm = by_name.get(opts.arm)
    if judge_arm is not None and (not judge_arm.ok or not judge_arm.arm_dir):
        console.print(f"[yellow]judge:[/] the judge arm {opts.arm} failed; no policy is graded")
        return
    judge = load_adapted(judge_arm.arm_dir if judge_arm else opts.arm, base)
    if not method_class(judge.method).scorer:
        console.print(f"[yellow]judge:[/] {opts.arm} is a {judge.method} arm, not a reward model; no policy is graded")
        return
    size = {"cache": ctx.cache, "batch_size": exp.batch_size, "max_new_tokens": exp.max_new_tokens}
    if judge_arm is not None:
        accuracy, judge_half = judge_arm.metrics.get("pairwise_accuracy"), judge_arm.options.get("train_prompts", "all")
    else:   # a judge from outside the ladder: measured on the same pairs
        accuracy = pairwise_accuracy(judge.engine(ctx.cache, batch_size=exp.batch_size, progress=False), judge.builder,
                                     test)["accuracy"]
        same_data = (judge.recipe.task or {}).get("data_hash") == ctx.task.data_hash
        judge_half = judge.recipe.options.get("train_prompts", "all") if same_data else None
    metric = primary_metric(ctx.task.kind)
    policies = [a for a in arms if a.ok and a.arm_dir and metric in a.metrics]   # a reward model has no answers
    sft = lambda a: method_class(a.method).lora_adapter and method_class(a.method).trains_on_pool  # noqa: E731
    ref_name = opts.reference or next((a.name for a in policies if sft(a)), None)
    base_name = opts.base or next((a.name for a in policies if method_class(a.method).bare), None)
    if ref_name is not None and ref_name not in {a.name for a in policies}:
        console.print(f"[yellow]judge:[/] the reference arm {ref_name} has no answers; no win rate or KL")
        ref_name = None
    if base_name is not None and base_name not in {a.name for a in policies}:
        base_name = None
    rows = unique_prompts(test)
    console.print(f"[bold]judge[/] {opts.arm} (held-out pairwise accuracy "
                  f"{'?' if accuracy is None else f'{accuracy:.3f}'}) grades {len(policies)} arms on {len(rows)} "
                  f"held-out prompts" + (f", against {ref_name}" if ref_name else ""), highlight=False)
    reference = load_adapted(by_name[ref_name].arm_dir, base) if ref_name else None

    def grade(adapted):
        scores, lengths = judged_answers(adapted, judge, rows, **size)
        if reference is None:
            return scores, lengths, None
        if adapted is reference:   # log pi - log pi_ref is 0 on every sample
            return scores, lengths, 0.0
        return scores, lengths, kl_to_reference(adapted, reference, rows, seed=opts.seed, **size)[0]

    graded, saved = {}, {}
    for a in policies:
        adapted = reference if a.name == ref_name else load_adapted(a.arm_dir, base)
        graded[a.name] = grade(adapted)
        if method_class(a.method).on_policy and opts.checkpoints:
            saved[a.name] = _checkpoints(a, adapted, grade, graded[a.name])
        del adapted
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    ref_scores = graded[ref_name][0] if ref_name else None
    for a in policies:
        scores, lengths, kl = graded[a.name]
        win, ties = win_rate(scores, ref_scores) if ref_name else (None, 0)
        checkpoints = []
        if ref_name and a.name in saved and a.options.get("after") == ref_name:   # PPO's start: the reference
            r_scores, r_lengths, r_kl = graded[ref_name]
            checkpoints.append(JudgedCheckpoint(step=0, reward=mean(r_scores), kl=r_kl, win_rate=0.5,
                                                length=mean(r_lengths)))
        for c, c_scores in saved.get(a.name, []):
            c.win_rate = win_rate(c_scores, ref_scores)[0] if ref_name else None
            checkpoints.append(c)
        trained = [c for c in checkpoints if c.step > 0]
        if trained:
            max(trained, key=lambda c: c.reward).best = True
        a.judge = Judged(judge=opts.arm, judge_accuracy=accuracy,
                         disjoint=_disjoint(judge_half, _train_prompts(a, by_name)), prompts=len(rows),
                         reference=ref_name, base=base_name, reward=mean(scores), win_rate=win, ties=ties, kl=kl,
                         length=mean(lengths),
                         length_change=mean(lengths) - mean(graded[base_name][1]) if base_name else None,
                         checkpoints=checkpoints)
        _print(a)


def _print(a) -> None:
    j = a.judge
    console.print(f"  {a.name}: judge reward {j.reward:+.3f}"
                  + (f", win rate vs {j.reference} {j.win_rate:.3f}, KL {j.kl:.3f}" if j.reference else "")
                  + f", length {j.length:.1f}" + (f" ({j.length_change:+.1f})" if j.length_change is not None else "")
                  + ("" if j.disjoint else "  [yellow](the judge may share training prompts with this arm)[/]"),
                  highlight=False)
    for c in j.checkpoints:
        console.print(f"    {'start' if c.step == 0 else f'checkpoint {c.step}'}: judge reward {c.reward:+.3f} "
                      f"at KL {'?' if c.kl is None else f'{c.kl:.3f}'}{'  (best)' if c.best else ''}", highlight=False)


def _checkpoints(arm, adapted, grade, final) -> list[tuple[JudgedCheckpoint, list[float]]]:
    """A PPO arm's saved checkpoints (in its folder, or in the folder of the fit it reused), each
    graded, with its per-prompt judge scores; the last one holds the arm's own weights, so it
    takes the arm's grades (`final`)."""
    folder = Path(arm.arm_dir) / "checkpoints"
    if not any(folder.glob("step-*")) and arm.fit_reused_from:
        folder = Path(arm.fit_reused_from) / "checkpoints"
    history = {h["step"]: h for h in (arm.train or {}).get("history") or []}
    out = []
    for ckpt in sorted(p for p in folder.glob("step-*") if p.is_dir()):
        step = int(ckpt.name.split("-")[1])
        if step == (arm.train or {}).get("steps"):
            scores, lengths, kl = final
        else:
            console.print(f"  judge: {arm.name} checkpoint {step}", highlight=False)
            with checkpoint_weights(adapted, ckpt) as policy:
                scores, lengths, kl = grade(policy)
        h = history.get(step, {})
        out.append((JudgedCheckpoint(step=step, reward=sum(scores) / len(scores), kl=kl,
                                     length=sum(lengths) / len(lengths), train_kl=h.get("kl"),
                                     proxy_reward=h.get("reward")), scores))
    return out
