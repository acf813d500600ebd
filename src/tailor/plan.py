"""The plan `tailor run DATA_FILE` runs: a data summary in, an experiment out. Pure (no model, no
files), so every rule is tested on constructed summaries.

Which arms: the rules of Meta's guide to adapting LLMs as `tailor.advise` holds them, answered
from the data: zero-shot first; few-shot and in-context learning with labelled examples; RAG only
with a knowledge base; LoRA (PEFT) before full fine-tuning, and full only with plenty of data;
preference arms only with preferences (DPO on pairs, KTO on thumbs up/down rows); a reinforcement
fine-tuning file (prompts and the fields its grader reads) trains an on-policy arm (GRPO) with its
grader as the reward, and the grader is every arm's primary metric.

How big: a time model over the data's token counts and the base's measured speed (the forward
cost the driver times on the data before planning, as the training loop times one step before it
trains), sized so the whole ladder fits the budget: test rows every arm is measured on, training
steps per trained arm, and the general suite's size (or none). An arm that cannot run its minimum
within the budget is left out and says so. The training loop still times its own first step and
cuts to `budget_minutes`, so an estimate that is off cannot run a trained arm past its share.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .advise import advise
from .errors import TailorError

HEADROOM = 0.85            # the share of the budget the estimate plans to use; the rest absorbs its error
MIN_ROWS = 10              # test rows below which a measurement says nothing
MIN_STEPS = 20             # optimiser steps below which a trained arm is not worth its time (or its epochs cap)
MEASURE_SHARE = 0.4        # with trained arms: the share of the budget for measuring, before leftovers
FORGET_SHARE = 0.15        # the general suite's share, when it fits at FORGET_MIN items per benchmark
FORGET_MIN, FORGET_MAX = 50, 200   # items per benchmark (50: about +-14 points; 200: about +-7)
BENCHMARKS = 5             # the general suite: MMLU, BoolQ, OpenBookQA, CommonsenseQA, PIQA
BENCH_TOKENS = 160         # a general-suite item's prompt, and its options
BENCH_OPTION_TOKENS = 24
BATCH = 16                 # the experiment's inference batch (Experiment.batch_size)
MICRO_BATCH_TOKENS = 4096  # TrainConfig.micro_batch_tokens: tokens per training forward
CONTEXT = 2048             # prompts are capped here (prompts.builder_for); shots must fit under it
# Costs outside the model's forward passes, measured on a 2-core CPU (see the README): loading the
# MiniLM embedder (sentence-transformers import included) and embedding one short text; an arm's
# setup and save; the data checks; the report with its screenshot; reading the general suite.
EMBED_LOAD_S = 6.0
EMBED_S_PER_TEXT = 0.004
TRAIN_SETUP_S = 2.0
STEP_OVERHEAD_S = 0.2           # the loop's work around a step's passes: packing, clipping, logging
# The loop's step (packed rows, target-only head, its CPU kernels) takes about half the time of the
# plain forward and backward the driver times, per token: smollm2-135m, 16 tickets a step, 0.89 to
# 0.91 s measured by the loop against 1.8 s from the plain pass (1.1 s estimated with this factor);
# tiny-test 0.03 to 0.28 s against 0.24 s estimated, STEP_OVERHEAD_S dominating. An estimate that
# is short is caught by the loop's own budget cut.
LOOP_FACTOR = 0.5
SAVE_BYTES_PER_S = 2e8
OPTIMIZER_BYTES_PER_S = 4e9     # AdamW touches weights, gradients and two moments: 16 bytes a parameter
CURATE_S, CURATE_S_PER_ROW = 1.0, 5e-4
REPORT_S = 6.0
BENCH_LOAD_S = 5.0


@dataclass(frozen=True)
class DataSummary:
    """What the planner needs to know of a task file, after it was read, split and repaired."""

    path: str
    kind: str                                  # classify | generate | choice
    rows: int                                  # examples (pairs, for preference data)
    train: int
    dev: int
    test: int
    labels: list[str] | None = None
    label_counts: dict[str, int] | None = None
    preference: str | None = None              # "pairs" (pairs or rankings) | "unpaired" (thumbs up/down) | None
    prompts: int | None = None                 # distinct prompts of preference data
    prompt_tokens: float = 64.0                # mean tokens of the zero-shot prompt (instruction, input, template)
    input_tokens: float = 32.0                 # mean tokens of an input alone (what a shot adds, with its answer)
    target_tokens: float = 4.0                 # mean tokens of an answer (with its end of turn)
    target_tokens_p95: float = 4.0
    option_tokens: float = 0.0                 # classify / choice: tokens of all options scored per row
    split: dict = field(default_factory=dict)  # the task_options split the counts come from (test, dev)
    reinforcement: bool = False                # an RFT file: prompts ending with the user's turn, graded
    grader: str | None = None                  # a grader JSON file: every arm's primary metric (and GRPO's reward)
    answered: int | None = None                # train rows with a reference answer (RFT files; None: every row)


@dataclass(frozen=True)
class Speed:
    """The base's measured cost on this machine: a zero-shot test row and request through the
    measurement path; one forward call's fixed cost and each token's in a batched forward (what
    longer prompts add) and in a forward and backward (training); the time loading it took; its
    parameters."""

    forward_s: float
    token_s: float
    train_token_s: float = 0.0     # a forward and backward, per token (0: three forwards' worth)
    load_s: float = 0.0
    params: int = 0
    row_s: float = 0.0             # a zero-shot test row through the measurement path, in a batch (0: from the above)
    request_s: float = 0.0         # a zero-shot latency request, served alone (0: from the above)


@dataclass
class Plan:
    experiment: dict                            # valid input for config.experiment_from_dict
    reasons: dict[str, str]                     # arm name -> why it runs
    notes: list[str]                            # what was decided and why (left-out arms, sizes)
    estimate: dict[str, float]                  # seconds by part, the planner's own arithmetic
    advice: dict


# ---------------------------------------------------------------- inputs the CLI checks


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)


def parse_budget(text: str) -> float:
    """'30m', '1h', '90s', '1.5h', or a bare number of minutes ('45') -> seconds; anything else,
    zero or negative, is a one-line error naming the option."""
    m = _BUDGET.match(str(text))
    value = float(m.group(1)) if m else 0.0
    if not m or not 0 < value < float("inf"):   # 400 digits of minutes are inf, not a budget
        raise TailorError(f"--budget '{text}': expected a positive time such as 30m, 1h, 90s, or 45 (minutes)")
    return value * {"s": 1, "m": 60, "h": 3600, "": 60}[m.group(2).lower()]


def plan_split(rows: int, preference: bool = False) -> dict:
    """Test and dev sizes for a file of `rows` examples (prompts, for preference data). Enough test
    rows to measure something on small files; no dev split (no planned arm reads one), so every
    other row trains or shows examples; at most 1,000 test rows on large files."""
    if rows < 100:
        test = 0.25
    elif rows < 1000:
        test = 0.2
    else:
        test = 0.1 if rows <= 10_000 else 1000
    return {"test": test, "dev": 0}


def advice_answers(summary: DataSummary, kb: str | None) -> dict:
    """The guide's questions answered from the data: the number of labelled examples (train rows;
    pairs for preference data), whether there is outside knowledge (a knowledge base was given),
    one task, and a team that fine-tunes (Tailor runs the fine-tuning for it)."""
    n = summary.train
    bucket = "none" if n == 0 else "under-100" if n < 100 else "100-1000" if n <= 1000 else "over-1000"
    return {"labelled_examples": bucket, "external_knowledge": "yes" if kb else "no",
            "task_count": "one", "team_skills": "fine-tuning"}


# ---------------------------------------------------------------- the time model


def _score_row(s: Speed, prompt: float, options: float) -> float:
    """One test row scored in a batch of BATCH (one row per prompt and its options)."""
    return s.forward_s / BATCH + s.token_s * (prompt + options)


def _generate_row(s: Speed, prompt: float, new: int) -> float:
    """One test row generated in a batch of BATCH: its share of the prefill and of `new` decode steps."""
    return s.forward_s / BATCH + s.token_s * prompt + new * (s.forward_s / BATCH + s.token_s)


def _request(s: Speed, kind: str, prompt: float, options: float, new: int) -> float:
    """One latency request, served alone."""
    if kind == "generate":
        return s.forward_s + s.token_s * prompt + new * (s.forward_s + s.token_s)
    return s.forward_s + s.token_s * (prompt + options)


@dataclass
class _Arm:
    spec: dict                 # the experiment's arm entry (steps filled in by the budget)
    why: str
    prompt: float              # tokens of its prompt at measurement
    extra_s: float = 0.0       # fixed costs: embedder, knowledge base, setup, save
    step_s: float = 0.0        # one optimiser step (trained arms)
    max_steps: int = 0
    closed_book: bool = False  # measured again without passages (a trained arm that reads passages)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def trained(self) -> bool:
        return self.step_s > 0

    @property
    def min_steps(self) -> int:
        return min(MIN_STEPS, self.max_steps) if self.trained else 0


class _Model:
    """The ladder's time, from the summary and the measured speed."""

    def __init__(self, summary: DataSummary, speed: Speed, max_new_tokens: int, latency_requests: int):
        self.s, self.speed, self.new, self.latency = summary, speed, max_new_tokens, latency_requests

    def zero_shot_row(self) -> float:
        s, sp = self.s, self.speed
        if sp.row_s:
            return sp.row_s
        one = (_generate_row(sp, s.prompt_tokens, self.new) if s.kind == "generate"
               else _score_row(sp, s.prompt_tokens, s.option_tokens))
        if s.preference == "pairs":   # the likelihood margin of chosen over rejected, scored on every pair
            one += _score_row(sp, s.prompt_tokens, 2 * s.target_tokens)
        return one

    def row(self, arm: _Arm) -> float:
        """A test row of `arm`: the zero-shot row and what its longer prompt adds (shots and passages
        share no prefix between rows, so each extra token costs a batched forward's token)."""
        extra = max(arm.prompt - self.s.prompt_tokens, 0.0) * self.speed.token_s
        return (self.zero_shot_row() + extra) * (2 if arm.closed_book else 1)

    def fixed(self, arm: _Arm) -> float:
        s, sp = self.s, self.speed
        request = sp.request_s or _request(sp, s.kind, s.prompt_tokens, s.option_tokens, self.new)
        extra = max(arm.prompt - s.prompt_tokens, 0.0) * sp.token_s
        return arm.extra_s + self.latency * (request + extra)

    def step(self, tokens_per_example: float, batch: int, passes: float, full: bool) -> float:
        """One optimiser step: `passes` forward-equivalents over the step's tokens (3: a forward and
        backward, as measured; 4: with a reference model's forward), the loop's own work around
        them, and AdamW over the trained weights."""
        sp, tokens = self.speed, batch * tokens_per_example
        forwards = max(1, math.ceil(tokens / MICRO_BATCH_TOKENS))
        trained = LOOP_FACTOR * sp.train_token_s or 3 * sp.token_s
        optimizer = sp.params * 16 / OPTIMIZER_BYTES_PER_S if full else 0.0
        return passes / 3 * (forwards * 3 * sp.forward_s + tokens * trained) + STEP_OVERHEAD_S + optimizer

    def bench_item(self) -> float:
        return _score_row(self.speed, BENCH_TOKENS, BENCH_OPTION_TOKENS)


# ---------------------------------------------------------------- the plan


def plan_experiment(summary: DataSummary, *, model: str, budget_s: float, speed: Speed, task: str | None = None,
                    kb: str | None = None, kb_chunk_tokens: int = 256, runs_dir: str = "runs",
                    limit: int | None = None, methods=None) -> Plan:
    """The experiment (a dict `config.experiment_from_dict` reads) that fits `budget_s` seconds of
    ladder on this machine. `methods`: the registered method names (default: tailor.methods')."""
    if methods is None:
        from .methods import METHODS
        methods = set(METHODS)
    s, notes = summary, []
    answers = advice_answers(s, kb)
    advice = advise(answers)
    suggested = advice["suggested_arms"]
    new = max_new_tokens(s)
    latency = 8 if budget_s >= 600 else 2
    tm = _Model(s, speed, new, latency)
    arms = _candidates(s, suggested, advice["reasons"], tm, kb, kb_chunk_tokens, methods, notes)

    fixed = speed.load_s + CURATE_S + CURATE_S_PER_ROW * s.rows + REPORT_S
    avail = budget_s * HEADROOM - fixed
    if avail <= 0:
        raise TailorError(f"--budget {_minutes(budget_s)} min: loading the model, checking the data and writing the "
                          f"report alone take about {fixed:.0f} s on this machine; give a larger --budget")
    rows_max = min(s.test, limit) if limit else s.test
    floor_rows = min(rows_max, MIN_ROWS)

    def minimum(arms_: list[_Arm]) -> float:
        return sum(floor_rows * tm.row(a) + tm.fixed(a) + a.min_steps * a.step_s for a in arms_)

    while minimum(arms) > avail and len(arms) > 1:   # leave out the most expensive arm until the floor fits
        worst = max(arms[1:], key=lambda a: floor_rows * tm.row(a) + tm.fixed(a) + a.min_steps * a.step_s)
        arms = _drop(arms, worst, notes, f"does not fit --budget {_minutes(budget_s)} min even at {floor_rows} test "
                                         f"rows{f' and {worst.min_steps} steps' if worst.trained else ''}")
    if minimum(arms) > avail:
        raise TailorError(f"--budget {_minutes(budget_s)} min: even {arms[0].name} on {floor_rows} test rows needs about "
                          f"{minimum(arms) + fixed:.0f} s on this machine; give a larger --budget")

    trained = [a for a in arms if a.trained]
    forgetting_size = _forgetting_size(tm, avail, len(trained), notes) if trained else None
    forget_s = _forget_s(tm, forgetting_size, len(trained))
    per_row = sum(tm.row(a) for a in arms)
    fixed_arms = sum(tm.fixed(a) for a in arms)
    room = avail - forget_s - fixed_arms
    share = MEASURE_SHARE if trained else 1.0
    for_rows = min(share * room, room - sum(a.min_steps * a.step_s for a in trained))
    rows = max(floor_rows, min(rows_max, int(for_rows / per_row)))
    train_s = room - rows * per_row
    steps, used = _allocate(trained, train_s)
    if trained:   # what the trained arms could not use goes back to the test rows
        rows = max(rows, min(rows_max, int((room - used) / per_row)))
    for a in trained:
        a.spec["steps"] = steps[a.name]
        if steps[a.name] < a.max_steps:
            per = a.spec.get("batch_size") or a.spec.get("prompts_per_step", 1)
            seen = min(steps[a.name] * per, s.train)
            notes.append(f"{a.name}: {steps[a.name]} steps of {per} ({seen:,} of {s.train:,} train rows) "
                         f"fit the budget; {a.max_steps} would be {_epochs(s)} epoch{'s' if _epochs(s) > 1 else ''}")
    if rows < s.test:
        notes.append(f"every arm is measured on {rows} of the {s.test} test rows (the budget's share for measuring)")

    estimate = {"load_checks_report": fixed, "measure": rows * per_row + fixed_arms,
                "train": sum(steps[a.name] * a.step_s for a in trained), "forgetting": forget_s}
    estimate["total"] = sum(estimate.values())
    exp = {"name": _name(s.path), "model": model, "task": task or s.path,
           "task_options": {**({"labels": list(s.labels)} if s.kind == "classify" and s.labels else {}), **s.split},
           "limit": rows if rows < s.test else None, "seed": 0, "runs_dir": runs_dir,
           "max_new_tokens": new, "latency_requests": latency,
           "forgetting": forgetting_size is not None, "forgetting_size": forgetting_size,
           "budget_minutes": _guard_minutes(avail + fixed - REPORT_S, tm, trained, rows, forget_s) if trained else None,
           "advice": answers, "arms": [a.spec if a.spec != {"name": "zero-shot", "method": "zero-shot"}
                                       else "zero-shot" for a in arms]}
    if s.grader:   # every arm graded by it, the arms ranked by its mean (tailor.graders)
        exp["metric"] = {"grader": s.grader}
    if s.preference:
        # several pairs of one prompt share its input with other targets: "conflicts" are the data's
        # design here, not label noise; leakage is still checked (splits are by prompt)
        exp["max_conflicts"] = float(max(s.rows, 1))
    return Plan(exp, {a.name: a.why for a in arms}, notes, estimate, advice)


def _candidates(s: DataSummary, suggested: list[str], reasons: dict, tm: _Model, kb: str | None, chunk: int,
                methods, notes: list[str]) -> list[_Arm]:
    arms = [_Arm({"name": "zero-shot", "method": "zero-shot"}, reasons["zero-shot"], s.prompt_tokens)]
    shot = s.input_tokens + s.target_tokens + 8   # a shot: its input, its answer, the turn markers
    if s.reinforcement:
        return _reinforcement(s, arms, reasons, tm, methods, notes, shot)
    k = _shots(s, shot)
    if k == 0 and ("few-shot" in suggested or "icl" in suggested):
        notes.append(f"few-shot and icl left out: an input is about {s.prompt_tokens:.0f} tokens, no example fits "
                     f"beside it in the {CONTEXT}-token prompt")
    if "few-shot" in suggested and k:
        spec = {"name": f"few-shot-{k}", "method": "few-shot", "k": k}
        arms.append(_Arm(spec, reasons["few-shot"], s.prompt_tokens + k * shot))
    if "icl" in suggested and k:
        pool = min(s.train, 2000)
        spec = {"name": f"icl-{k}", "method": "icl", "k": k, "selector": "similarity", "pool_size": pool}
        arms.append(_Arm(spec, reasons["icl"], s.prompt_tokens + k * shot,
                         extra_s=EMBED_LOAD_S + EMBED_S_PER_TEXT * (pool + s.test)))
    passages = 4 * chunk   # the rag arms' k = 4 passages of `chunk` tokens
    if "rag" in suggested and kb:
        arms.append(_Arm({"name": "rag", "method": "rag", "kb": kb, "k": 4}, reasons["rag"], s.prompt_tokens + passages,
                         extra_s=EMBED_LOAD_S + EMBED_S_PER_TEXT * s.test))
    batch = 16 if s.train >= 64 else 8
    tokens = s.prompt_tokens + s.target_tokens
    max_steps = max(1, math.ceil(_epochs(s) * s.train / batch))
    setup = TRAIN_SETUP_S + 1.0

    def trained(spec, why, prompt, per_example, passes=3.0, full=False, extra=0.0, closed_book=False):
        step = tm.step(per_example, batch, passes, full)
        save = (tm.speed.params * 4 / SAVE_BYTES_PER_S) if full else 0.5
        spec = {**spec, "steps": max_steps, "batch_size": batch, "max_train_examples": None}
        # the loop's own timing step and a first step's warm-up come on top of the planned steps
        return _Arm(spec, why, prompt, extra_s=setup + save + extra + 2 * step, step_s=step, max_steps=max_steps,
                    closed_book=closed_book)

    sft = "lora" in suggested
    if sft:
        name = "sft" if s.preference else "lora"
        why = reasons["lora"] + ("; trained on the chosen answers, the start of the preference arms" if s.preference
                                 else "")
        arms.append(trained({"name": name, "method": "lora"}, why, s.prompt_tokens, tokens))
    if "rag+lora" in suggested and kb:
        arms.append(trained({"name": "rag+lora", "method": "rag+lora", "kb": kb, "k": 4}, reasons["rag+lora"],
                            s.prompt_tokens + passages, tokens + passages,
                            extra=EMBED_LOAD_S + EMBED_S_PER_TEXT * (s.train + s.test), closed_book=True))
    if "full" in suggested and not s.preference:
        arms.append(trained({"name": "full", "method": "full"}, reasons["full"], s.prompt_tokens, tokens, full=True))
    after = {"after": "sft"} if sft else {}
    if s.preference == "pairs":
        arms.append(trained({"name": "dpo", "method": "dpo", **after},
                            "DPO (Rafailov et al. 2023) learns from the chosen and rejected answers of each pair, "
                            "no reward model" + ("; it starts from the sft arm, which is also its reference" if sft else ""),
                            s.prompt_tokens, s.prompt_tokens + 2 * s.target_tokens, passes=4.0))
    elif s.preference == "unpaired":
        if "kto" in methods:
            arms.append(trained({"name": "kto", "method": "kto", **after},
                                "KTO (Ethayarajh et al. 2024) learns from thumbs up/down rows without pairs"
                                + ("; it starts from the sft arm, its reference" if sft else ""),
                                s.prompt_tokens, tokens, passes=4.0))
        else:
            notes.append("thumbs up/down rows: no kto arm in this Tailor, so no arm learns from the thumbs-down rows")
    return arms


GRPO_PROMPTS, GRPO_GROUP = 4, 4   # the planned arm's prompts per step and samples per prompt (G)


def _reinforcement(s: DataSummary, arms: list[_Arm], reasons: dict, tm: _Model, methods, notes: list[str],
                   shot: float) -> list[_Arm]:
    """An RFT file's ladder: zero-shot, few-shot when its rows carry reference answers to show, and
    the on-policy arm trained on the grader's reward (what OpenAI's reinforcement fine-tuning did).
    There is no SFT arm: the rows have prompts to answer, not answers to imitate."""
    if not s.grader:
        raise TailorError(f"{s.path}: a reinforcement fine-tuning file (messages ending with the user's turn) is "
                          "graded, not imitated: give its grader with --grader grader.json (OpenAI's grader JSON)")
    k = _shots(s, shot) if s.answered else 0
    if k:
        arms.append(_Arm({"name": f"few-shot-{k}", "method": "few-shot", "k": k},
                         reasons.get("few-shot", "a handful of answered rows in the prompt costs no training"),
                         s.prompt_tokens + k * shot))
    else:
        notes.append("few-shot left out: the rows have no reference_answer text to show as examples")
    if "grpo" not in methods:
        raise TailorError(f"{s.path}: a reinforcement fine-tuning file trains a grpo arm (GRPO, Shao et al. 2024, "
                          "on the grader's reward), and this Tailor has no grpo method registered")
    new = tm.new
    # a step: P x G samples generated in one batch, then a forward and backward over them
    gen = GRPO_PROMPTS * GRPO_GROUP * _generate_row(tm.speed, s.prompt_tokens, new)
    step = gen + tm.step(s.prompt_tokens + new, GRPO_PROMPTS * GRPO_GROUP, 3.0, False)
    max_steps = max(1, math.ceil(_epochs(s) * s.train / GRPO_PROMPTS))
    spec = {"name": "grpo", "method": "grpo", "rewards": [{"grader": s.grader}], "steps": max_steps,
            "prompts_per_step": GRPO_PROMPTS, "group_size": GRPO_GROUP, "max_new_tokens": new}
    arms.append(_Arm(spec, f"GRPO (Shao et al. 2024): {GRPO_GROUP} samples per prompt, each scored by the grader, "
                           "trained toward the better ones in its group (what reinforcement fine-tuning did)",
                     s.prompt_tokens, extra_s=TRAIN_SETUP_S + 1.5 + 2 * step, step_s=step, max_steps=max_steps))
    return arms


def _shots(s: DataSummary, shot: float) -> int:
    """Examples in the prompt: 4, or one per label up to 8 for classification; fewer when the prompt
    would outgrow the context; never more than the train rows."""
    want = min(max(4, len(s.labels or [])), 8) if s.kind == "classify" else 4
    fits = int((CONTEXT - 64 - s.prompt_tokens) // shot) if shot > 0 else want
    return max(0, min(want, fits, s.train))


def _epochs(s: DataSummary) -> int:
    """Epochs a trained arm plans at most: 3 over small train sets, 1 over large ones."""
    return 3 if s.train < 1000 else 1


def max_new_tokens(s: DataSummary) -> int:
    """Generated tokens: room for the long answers of the data (p95 and a quarter), 8 to 256; a
    label or choice is scored, never generated, and keeps the experiment's default."""
    if s.kind != "generate":
        return 64
    if s.reinforcement and not s.answered:
        return 128   # no answers to size by: room for a short reasoned answer the grader reads
    return int(min(256, max(8, math.ceil(s.target_tokens_p95 * 1.25) + 2)))


def _allocate(arms: list[_Arm], seconds: float) -> tuple[dict[str, int], float]:
    """Steps per trained arm: equal time shares, an arm that needs less than its share (its epochs
    cap) gives the rest to the others (water-filling). Returns the steps and the seconds used."""
    steps, left, todo = {}, max(seconds, 0.0), sorted(arms, key=lambda a: a.max_steps * a.step_s)
    while todo:
        share = left / len(todo)
        a = todo.pop(0)
        steps[a.name] = max(a.min_steps, min(a.max_steps, int(share / a.step_s)))
        left -= steps[a.name] * a.step_s
    return steps, sum(steps[a.name] * a.step_s for a in arms)


def _forgetting_size(tm: _Model, avail: float, trained: int, notes: list[str]) -> int | None:
    """Items per general benchmark that fit FORGET_SHARE of the budget (the base once, each trained
    arm once), at least FORGET_MIN; else no general suite, said in the notes."""
    per_item = BENCHMARKS * (1 + trained) * tm.bench_item()
    size = int((FORGET_SHARE * avail - BENCH_LOAD_S) / per_item) if per_item > 0 else FORGET_MAX
    if size < FORGET_MIN:
        notes.append(f"forgetting off: {FORGET_MIN} items per general benchmark do not fit the budget "
                     "(a larger --budget measures it)")
        return None
    return min(size, FORGET_MAX)


def _forget_s(tm: _Model, size: int | None, trained: int) -> float:
    return 0.0 if size is None else BENCH_LOAD_S + size * BENCHMARKS * (1 + trained) * tm.bench_item()


def _guard_minutes(until_report: float, tm: _Model, trained: list[_Arm], rows: int, forget_s: float) -> float:
    """The ladder's `budget_minutes`, counted from the ladder's start (model load and data checks
    included): when the trained arms must be done (the training loop cuts its steps to its share of
    what is left), that is the planned time less what comes after the last one trains: its
    measurement and general suite, and the report."""
    last = trained[-1]
    tail = rows * tm.row(last) + tm.fixed(last) + forget_s / (1 + len(trained))
    return round(max(until_report - tail, 6.0) / 60, 2)


def _drop(arms: list[_Arm], arm: _Arm, notes: list[str], why: str) -> list[_Arm]:
    """`arm` left out; an arm that was to start from it (`after:`) starts from the base instead."""
    notes.append(f"{arm.name} left out: {why}")
    for a in arms:
        if a.spec.get("after") == arm.name:
            del a.spec["after"]
            a.why = a.why.split(";")[0] + "; a fresh adapter on the base (its reference: the base)"
            notes.append(f"{a.name} starts from the base, not from {arm.name}")
    return [a for a in arms if a is not arm]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}".rstrip("0").rstrip(".")


def _name(path: str) -> str:
    stem = re.split(r"[\\/]", path)[-1].rsplit(".", 1)[0]
    return stem or "data"
