"""Preference arms: `reward-model` (Bradley–Terry on pairs, InstructGPT: Ouyang et al. 2022),
`dpo` (DPO, Rafailov et al. 2023, or IPO, Azar et al. 2023), `kto` (KTO, Ethayarajh et al. 2024,
on thumbs up/down rows or pairs), `orpo` (ORPO, Hong et al. 2024: SFT plus an odds-ratio term, no
reference model) and `ppo` (PPO, Schulman et al. 2017, against a reward model with a KL penalty,
as InstructGPT runs it) and `grpo` (GRPO, Shao et al. 2024, and its Dr. GRPO and DAPO losses,
from graders' rewards). All but PPO and GRPO train on THE loop with their own loss (tailor.preference);
PPO and GRPO run their own compact loops over the same builder, engine and checkpoints. Every artifact is a
standard PEFT adapter folder.

`init_adapter` names an SFT arm's folder (a lora arm): DPO, KTO, ORPO and PPO then start from
that adapter, which, frozen, is also the reference model of DPO, KTO and PPO; without it a fresh
adapter starts from the base, and the base (the adapter switched off) is the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ..errors import TailorError
from ..knobs import around
from ..recipe import Recipe
from ..schema import Options
from .base import Adapted
from .finetune import LoRA, for_inference
from .finetune import start_adapter as _start_adapter  # a fresh adapter, or an SFT arm's

log = logging.getLogger("tailor")


class _Policy(LoRA):
    """A LoRA policy trained from preferences; `init_adapter`: an SFT arm to start from."""

    trains_on_pool: ClassVar[bool] = False   # pairs or rollouts, not the SFT rows in step order
    # init_adapter / after (LoRA's): an SFT arm to start from; frozen, it is the reference

    def fit_inputs(self) -> dict:
        from .base import arm_content
        return {"init_adapter": arm_content(self.init_adapter),
                "reward_model": arm_content(getattr(self, "reward_model", None))}

    def _reference(self, model, data, base, from_sft: bool) -> None:
        """The reference's log-probabilities computed once into `data`, after an SFT arm or when
        asked (reference: precomputed); otherwise the loss switches the adapter off for them."""
        from ..preference.dpo import precompute_reference
        from ..train.loop import use_bf16
        if from_sft or getattr(self, "reference", "auto") == "precomputed":
            pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else base.tokenizer.eos_token_id
            precompute_reference(model, data, pad, use_bf16(self.precision, base.device), self.pack_len,
                                 self.micro_batch_tokens)

    def _finish(self, model, task, base, builder, result_json: dict, data_report: dict | None) -> Adapted:
        trainable = sum(t.numel() for t in self.trained_tensors(model).values())
        if data_report:
            result_json["data"] = data_report
        return self.trained_arm(model, task, base, builder, result_json, trainable)


class DPO(_Policy):
    """Direct preference optimisation on pairs through THE training loop."""

    method: ClassVar[str] = "dpo"
    beta: float = 0.1
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    sft_weight: float = 0.0           # + weight x the chosen answer's token NLL (0: pure DPO)
    reference: Literal["auto", "adapter-off", "precomputed"] = "auto"   # auto: adapter-off for a fresh adapter
    lr: float = 5e-5
    warmup_ratio: float = 0.1

    def knobs(self) -> dict:
        return {**super().knobs(), **({"beta": around(self.beta, 5)} if self.beta > 0 else {})}

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..preference.dpo import DPOLoss, encode_pairs
        from ..prompts import builder_for
        from ..train.loop import train, train_pool
        torch.manual_seed(self.seed)
        model, from_sft = _start_adapter(self, base)
        if from_sft and self.reference == "adapter-off":
            raise TailorError("dpo: reference adapter-off would make the base the reference of an SFT policy; "
                              "use reference: precomputed (the default after an SFT arm)")
        builder = builder_for(task, base.tokenizer, base.model.config)
        data, report = encode_pairs(builder, train_pool(task, self), self.seq_len, self.overlong)
        self._reference(model, data, base, from_sft)
        log.info("dpo: %d pairs, beta %.3g, %s loss, reference %s", len(data), self.beta, self.loss,
                 "precomputed" if "ref" in data[0].extra else "adapter off (the base)")
        result = train(model, base.tokenizer, builder, task, self, out, loss=DPOLoss(self.beta, self.loss, self.sft_weight),
                       data=data, tag=self.method, progress=progress, resume=resume, budget_s=budget_s)
        return self._finish(model, task, base, builder, result.to_json(), report.to_json())


class KTO(_Policy):
    """KTO on thumbs up/down rows, or pairs read as one of each, through THE training loop
    (tailor.preference.kto)."""

    method: ClassVar[str] = "kto"
    beta: Annotated[float, Field(gt=0)] = 0.1
    desirable_weight: Annotated[float, Field(gt=0)] = 1.0     # raise the rarer kind's weight (Ethayarajh et al. 2024:
    undesirable_weight: Annotated[float, Field(gt=0)] = 1.0   # weight x count of the two kinds within 1:1 to 4:3)
    # auto: the base (adapter switched off) for a fresh adapter, the SFT adapter's log-probs
    # computed once after an SFT arm; precomputed: computed once either way
    reference: Literal["auto", "precomputed"] = "auto"
    lr: float = 5e-5
    warmup_ratio: float = 0.1

    def knobs(self) -> dict:
        return {**super().knobs(), "beta": around(self.beta, 5)}

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..preference.kto import KTOLoss, encode_kto
        from ..prompts import builder_for
        from ..train.loop import train, train_pool
        torch.manual_seed(self.seed)
        model, from_sft = _start_adapter(self, base)
        builder = builder_for(task, base.tokenizer, base.model.config)
        data, report, counts = encode_kto(builder, train_pool(task, self), self.seq_len, self.overlong, self.seed)
        self._reference(model, data, base, from_sft)
        log.info("kto: %d desirable and %d undesirable rows (%d repeat an earlier row), beta %.3g, reference %s",
                 counts["desirable"], counts["undesirable"], counts["repeated_rows"], self.beta,
                 "precomputed" if "ref" in data[0].extra else "adapter off (the base)")
        loss = KTOLoss(self.beta, self.desirable_weight, self.undesirable_weight)
        result = train(model, base.tokenizer, builder, task, self, out, loss=loss, data=data, tag=self.method,
                       progress=progress, resume=resume, budget_s=budget_s)
        return self._finish(model, task, base, builder, result.to_json(), {**report.to_json(), **counts})


class ORPO(_Policy):
    """ORPO on pairs through THE training loop: the chosen answer's NLL plus or_weight x the
    odds-ratio term, no reference model (tailor.preference.orpo)."""

    method: ClassVar[str] = "orpo"
    or_weight: Annotated[float, Field(gt=0)] = 0.1   # λ of Hong et al. 2024 (TRL's ORPOConfig.beta)
    lr: float = 2e-4
    warmup_ratio: float = 0.1

    def knobs(self) -> dict:
        return {**super().knobs(), "or_weight": around(self.or_weight, 5)}

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..preference.dpo import encode_pairs
        from ..preference.orpo import ORPOLoss
        from ..prompts import builder_for
        from ..train.loop import train, train_pool
        torch.manual_seed(self.seed)
        model, _ = _start_adapter(self, base)   # an SFT adapter is only a starting point: ORPO has no reference
        builder = builder_for(task, base.tokenizer, base.model.config)
        data, report = encode_pairs(builder, train_pool(task, self), self.seq_len, self.overlong)
        log.info("orpo: %d pairs, or_weight %.3g", len(data), self.or_weight)
        result = train(model, base.tokenizer, builder, task, self, out, loss=ORPOLoss(self.or_weight), data=data,
                       tag=self.method, progress=progress, resume=resume, budget_s=budget_s)
        return self._finish(model, task, base, builder, result.to_json(), report.to_json())


class RewardModel(LoRA):
    """A reward model: base + LoRA + a scalar head, Bradley–Terry on pairs (optional margin)."""

    method: ClassVar[str] = "reward-model"
    scorer: ClassVar[bool] = True        # judges answers (pairwise accuracy), does not generate them
    lora_adapter: ClassVar[bool] = False  # a LoRA over a scalar-head backbone, with the head saved whole
    trains_on_pool: ClassVar[bool] = False
    layout: ClassVar[str] = "padded"     # one row per sequence: the score is read at its last real token
    folder: ClassVar[str] = "reward"
    init_adapter: ClassVar[None] = None  # a scalar-head backbone starts from no generator's adapter ("unknown setting")
    after: ClassVar[None] = None
    margin: float = 0.0
    lr: float = 2e-4
    dropout: float = 0.0

    def trainable_model(self, task, base):
        from peft import LoraConfig, get_peft_model

        from ..preference.reward import lora_targets, reward_backbone
        cfg = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                         target_modules=lora_targets(self.target_modules), task_type="SEQ_CLS",
                         modules_to_save=["score"])
        return get_peft_model(reward_backbone(base, self.seed), cfg)

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..preference.dpo import encode_pairs
        from ..preference.reward import BradleyTerry
        from ..prompts import builder_for
        from ..train.loop import train, train_pool
        torch.manual_seed(self.seed)
        model = self.trainable_model(task, base)
        builder = builder_for(task, base.tokenizer, base.model.config)
        data, report = encode_pairs(builder, train_pool(task, self), self.seq_len, self.overlong)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result = train(model, base.tokenizer, builder, task, self, out, loss=BradleyTerry(self.margin), data=data,
                       layout="padded", tag=self.method, progress=progress, resume=resume, budget_s=budget_s)
        return self.trained_arm(model, task, base, builder, {**result.to_json(), "data": report.to_json()}, trainable)

    @classmethod
    def load_model(cls, folder: Path, recipe: Recipe, base):
        from peft import PeftModel

        from ..preference.reward import reward_backbone
        model = PeftModel.from_pretrained(reward_backbone(base), folder / cls.folder)
        for_inference(model, recipe.method, base.dtype)
        return model

    @classmethod
    def merged(cls, adapted: Adapted):
        raise TailorError("a reward-model arm is a scorer, not a generator: load its adapter folder with peft "
                          "over AutoModelForSequenceClassification(num_labels=1)")


class _OwnLoop(_Policy):
    """An on-policy arm that trains in its own compact loop over the scaffold (PPO, GRPO), not THE
    loop: THE loop's options it never reads are not fields, so a file that sets one is refused when
    it is read ("unknown setting", naming it), never silently ignored. Its length is `steps` (or
    `budget_minutes`), its batch its own option, its rows always packed, its lr constant, and it
    has no dev evaluation (the ladder measures its saved arm)."""
    on_policy: ClassVar[bool] = True
    runs_on_ranks: ClassVar[bool] = False   # its own loop over samples: every rank would train alone on all of them
    epochs: ClassVar[None] = None
    warmup_ratio: ClassVar[None] = None
    schedule: ClassVar[None] = None
    min_lr_ratio: ClassVar[None] = None
    batch_size: ClassVar[None] = None
    micro_batch_tokens: ClassVar[None] = None
    seq_len: ClassVar[None] = None
    pack: ClassVar[None] = None
    overlong: ClassVar[None] = None
    grad_checkpointing: ClassVar[None] = None
    kernels: ClassVar[None] = None
    eval_every: ClassVar[None] = None
    eval_examples: ClassVar[None] = None
    patience: ClassVar[None] = None
    load_best: ClassVar[None] = None
    log_every: ClassVar[None] = None      # every step is logged


class PPO(_OwnLoop):
    """PPO with a per-token KL penalty against a reward-model arm (tailor.preference.ppo)."""

    method: ClassVar[str] = "ppo"
    reward_model: str | None = None   # the folder of a reward-model arm (required)
    steps: int = 20                   # PPO iterations (rollout + optimisation)
    beta: float = 0.05                # KL penalty coefficient (initial, when adaptive)
    target_kl: float | None = None    # adaptive beta toward this KL per response (None: fixed beta)
    kl_horizon: int = 10000
    rollout_prompts: int = 16
    minibatch_prompts: int = 8
    ppo_epochs: int = 2
    clip: float = 0.2
    clip_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True
    max_new_tokens: int = 48
    temperature: float = 1.0
    lr: float = 5e-5
    dropout: float = 0.0              # old and new log-probs must come from the same function

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..preference.data import prompt_key
        from ..preference.ppo import PolicyWithValue, PPOTrainer
        from ..prompts import builder_for
        from ..train.loop import train_pool
        from .base import load_adapted
        if not self.reward_model:
            raise TailorError("ppo: set reward_model to the folder of a reward-model arm (tailor train with "
                              "method: reward-model, or a ladder's RUN/arms/NAME)")
        rm = load_adapted(self.reward_model, base)
        if rm.method != "reward-model":
            raise TailorError(f"ppo: reward_model {self.reward_model} is a {rm.method} arm, not a reward-model arm")
        torch.manual_seed(self.seed)
        policy, from_sft = _start_adapter(self, base)
        reference = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n} if from_sft else None
        model = PolicyWithValue(policy, base.model.config.hidden_size)
        builder = builder_for(task, base.tokenizer, base.model.config)
        pool, seen = [], set()
        for ex in train_pool(task, self):   # one rollout prompt per distinct prompt
            key = ex.meta.get("prompt_key") or prompt_key(ex.input)
            if key not in seen:
                seen.add(key)
                pool.append(ex)
        trainer = PPOTrainer(model, base.tokenizer, builder, pool, rm.engine(None, progress=False), self, out,
                             reference=reference, resume=resume, progress=progress, budget_s=budget_s)
        result = trainer.run()
        return self._finish(policy, task, base, builder, result, None)


class RewardSpec(Options):
    """One reward of a grpo arm: a grader (OpenAI's grader JSON shapes: tailor.graders), its
    weight in the sum, and whether it checks the answer's form or its correctness (the metrics
    log keeps the two apart: a format fix can look like a reasoning gain)."""

    grader: dict | str                # a grader spec, or the path of a JSON file holding one
    weight: float = 1.0
    kind: Literal["format", "correctness"] = "correctness"
    name: str | None = None           # in the metrics log (default: the grader's name, else reward-N)


class GRPO(_OwnLoop):
    """GRPO from graders' rewards on samples of the policy (tailor.preference.grpo): groups of
    samples per prompt through the engine, group-relative advantages, and the loss as published
    (grpo: Shao et al. 2024), Dr. GRPO's (dr_grpo: Liu et al. 2025) or DAPO's (dapo: Yu et al.
    2025, token-level with clip-higher; TRL's default loss)."""

    method: ClassVar[str] = "grpo"
    # the rewards summed; none: the task's primary metric of each sample against its row's target
    # (exact match after normalising for labels and choices, ROUGE-L F1 for text), as correctness
    rewards: list[RewardSpec] = []
    steps: int = 50                   # GRPO steps (sample, reward, update)
    prompts_per_step: Annotated[int, Field(ge=1)] = 8
    group_size: Annotated[int, Field(ge=2)] = 8      # samples per prompt (G)
    max_new_tokens: Annotated[int, Field(ge=1)] = 64
    temperature: Annotated[float, Field(gt=0)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    loss: Literal["grpo", "dr_grpo", "dapo"] = "dapo"
    clip_low: Annotated[float, Field(gt=0)] = 0.2     # epsilon (epsilon_low)
    clip_high: Annotated[float, Field(gt=0)] | None = None   # None: 0.28 for dapo (clip-higher), else clip_low
    beta: Annotated[float, Field(ge=0)] = 0.0        # KL to the reference (k3); 0 as DAPO, Dr. GRPO and TRL
    inner_epochs: Annotated[int, Field(ge=1)] = 1    # passes over each step's samples (mu; TRL's num_iterations)
    minibatches: Annotated[int, Field(ge=1)] = 1     # optimiser updates per pass
    dynamic_sampling: bool = False    # DAPO: drop groups of equal rewards, draw more prompts
    # LoRA's best rate is about 10x full fine-tuning's, in RL too (Schulman et al. 2025, "LoRA Without
    # Regret"); 1e-5 is a usual full-weight GRPO rate
    lr: float = 1e-4
    dropout: float = 0.0              # old and new log-probs must come from the same function

    def fit_inputs(self) -> dict:
        from ..utils import sha256_file
        files = {r.grader: sha256_file(Path(r.grader)) if Path(r.grader).is_file() else None
                 for r in self.rewards if isinstance(r.grader, str)}
        return {**super().fit_inputs(), "grader_files": files}

    def reward_functions(self, task) -> list:
        """The rewards as callables over (samples, rows)."""
        from ..preference.grpo import RewardFn
        if not self.rewards:
            return [primary_reward(task)]
        from ..graders import item_of, load_grader  # deferred: graders may load judges (torch)
        out = []
        for i, spec in enumerate(self.rewards):
            field = f"grpo rewards[{i}].grader"   # a file's errors name the file too
            grader = load_grader(spec.grader, where=f"{spec.grader} ({field})" if isinstance(spec.grader, str) else field)
            name = spec.name or getattr(grader, "name", None) or f"reward-{i}"
            out.append(RewardFn(name, spec.kind, spec.weight,
                                lambda samples, rows, g=grader: g.grade(samples, [item_of(ex) for ex in rows])))
        if len({r.name for r in out}) < len(out):
            raise TailorError(f"grpo: two rewards share a name ({', '.join(r.name for r in out)}); set name: on each")
        return out

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..preference.grpo import GRPOTrainer
        from ..prompts import builder_for
        from ..train.loop import train_pool
        rewards = self.reward_functions(task)   # a bad grader fails before the model is touched
        torch.manual_seed(self.seed)
        policy, from_sft = _start_adapter(self, base)
        reference = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n} \
            if from_sft and self.beta else None
        builder = builder_for(task, base.tokenizer, base.model.config)
        trainer = GRPOTrainer(policy, base.tokenizer, builder, train_pool(task, self), rewards, self, out,
                              reference=reference, resume=resume, progress=progress, budget_s=budget_s)
        return self._finish(policy, task, base, builder, trainer.run(), None)


def primary_reward(task):
    """The task's primary metric of each sample against its row's target, as a correctness reward:
    the task's own grader where it has one (asdiv's number check), else exact match (labels,
    choices) or ROUGE-L F1 (text)."""
    from ..evaluate import normalize, rouge_pair
    from ..preference.grpo import RewardFn
    if getattr(task, "grader", None):
        from ..graders import item_of, load_grader
        grader = load_grader(task.grader, where=f"task {task.name} grader")
        return RewardFn(str(task.grader.get("name") or task.grader.get("type")), "correctness", 1.0,
                        lambda samples, rows: grader.grade(samples, [item_of(ex) for ex in rows]))
    if task.kind in ("classify", "choice"):   # their primary metric, accuracy
        return RewardFn("exact_match", "correctness", 1.0,
                        lambda samples, rows: [float(normalize(s) == normalize(ex.target)) for s, ex in zip(samples, rows)])
    return RewardFn("rougeL", "correctness", 1.0,
                    lambda samples, rows: [rouge_pair(s, ex.target)["rougeL"]["f1"] for s, ex in zip(samples, rows)])


def chained(arm, done: list):
    """A ladder arm with `after:`, `reward_model:` and `teacher: NAME` (names of earlier arms) turned into
    those arms' folders. A name that is no earlier arm, or one that failed, is left for `fit` to
    refuse with its own one-line error (the arm fails, the ladder goes on)."""
    import dataclasses
    options, by_name, update = arm.options, {a.name: a for a in done}, {}
    after = getattr(options, "after", None)
    if after:
        prior = by_name.get(after)
        update["init_adapter"] = prior.arm_dir if prior is not None and prior.ok and prior.arm_dir else after
    for field in ("reward_model", "teacher"):
        name = getattr(options, field, None)
        if name and name in by_name:
            prior = by_name[name]
            update[field] = prior.arm_dir if prior.ok and prior.arm_dir else name
    return dataclasses.replace(arm, options=options.model_copy(update=update)) if update else arm


PREFERENCE_METHODS = {cls.method: cls for cls in (RewardModel, DPO, KTO, ORPO, PPO, GRPO)}
