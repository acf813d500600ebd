"""`distill`: a smaller student learns from a teacher arm's labels and scores, on THE training loop
with a distillation loss (tailor.distill.losses).

Distillation makes a model that serves faster and cheaper (Meta's guide to adapting LLMs lists
cost reduction by distilling as a reason to fine-tune); its common form is a teacher labelling
data offline, including rows nobody labelled. Imitating a stronger model teaches style before
content (Gudibande et al. 2023, "The false promise of imitating proprietary LLMs"): the ladder
therefore measures every distilled arm against the teacher and against gold (tailor.distill.imitation).

    {method: distill, teacher: ARM, student: {layers: 10} | MODEL, labels: gold | hard | soft,
     unlabelled: FILE, alpha: 0.5, temperature: 2.0}

labels: gold trains the student on gold targets only (the control), hard on the teacher's
answers, soft on its probabilities (classify, choice: over the label set; generate: top-k token
log-probabilities, same vocabulary only). The artifact is ARM/model, a Hugging Face folder
(weights and tokenizer) that `AutoModelForCausalLM` loads.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import ClassVar, Literal

from ..errors import TailorError
from ..knobs import Knob, around
from ..recipe import Recipe
from ..schema import Options
from .base import Adapted, recipe_builder
from .finetune import Full, _weights_id

log = logging.getLogger("tailor")


class StudentLayers(Options):
    layers: int                    # decoder layers of the base to keep (evenly spread, first and last kept)


class Distill(Full):
    method: ClassVar[str] = "distill"
    own_model: ClassVar[bool] = True
    trains_on_pool: ClassVar[bool] = False   # teacher-labelled rows, not the task's pool
    teacher: str | None = None     # an arm folder; in a ladder, the name of an earlier arm
    student: StudentLayers | str | None = None   # None: the most layers within max_params_ratio
    labels: Literal["gold", "hard", "soft"] = "soft"
    unlabelled: str | None = None  # a task file of inputs without targets, labelled by the teacher
    max_unlabelled: int | None = None
    alpha: float = 0.5             # weight of the gold target on rows that have one
    temperature: float = 2.0
    top_k: int = 8                 # generate tasks, soft labels: teacher log-probabilities kept per position
    max_params_ratio: float = 0.5  # the student has at most this share of the teacher's parameters
    max_new_tokens: int = 64       # the teacher's answers on generate tasks
    lr: float = 1e-4               # a pruned student has layers to reconcile: more than full fine-tuning's 2e-5

    def knobs(self) -> dict:
        # the temperature softens only soft labels; alpha weighs the gold target against the teacher's
        soft = {"temperature": around(self.temperature, 2)} if self.labels == "soft" and self.temperature > 0 else {}
        return {**super().knobs(), **soft, "alpha": Knob(low=min(0.0, self.alpha), high=max(1.0, self.alpha))}

    def fit_inputs(self) -> dict:
        from ..utils import sha256_file
        from .base import arm_content
        unlabelled = Path(self.unlabelled) if self.unlabelled else None
        return {"teacher": arm_content(self.teacher),
                "unlabelled": sha256_file(unlabelled) if unlabelled and unlabelled.is_file() else None}

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..distill.teacher import label_rows, teacher_identity
        from ..prompts import builder_for
        from ..train.loop import train, train_pool
        if self.labels != "gold" and not self.teacher:
            raise TailorError(f"distill: labels: {self.labels} needs a teacher (an arm folder, or an earlier arm's name)")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise TailorError("distill: alpha must be in [0, 1] and temperature > 0")
        if self.teacher and not Path(self.teacher).exists():
            raise TailorError(f"distill: teacher '{self.teacher}' is not an arm folder (in a ladder, name an earlier "
                              "arm that ran)")
        who = teacher_identity(Path(self.teacher)) if self.teacher else None
        if who and (who["kind"] != task.kind or (task.kind == "classify" and set(who["labels"] or []) != set(task.labels))):
            raise TailorError(f"distill: the teacher {who['arm']} answers a {who['kind']} task with labels "
                              f"{who['labels']}, not this {task.kind} task's {task.labels}")
        torch.manual_seed(self.seed)
        teacher_params = self._teacher_params(who, base)
        model, tokenizer, student = self._student(base, teacher_params)
        log.info("distill: student %s, %d parameters (%s of the teacher's)", student["spec"], student["params"],
                 student["params_ratio"])
        builder = builder_for(task, tokenizer, model.config)
        rows = train_pool(task, self)
        extra, unlabelled = self._unlabelled(task)
        labels, labelling = {}, None
        if self.labels != "gold":
            soft_tokens = self.labels == "soft" and task.kind == "generate"
            if soft_tokens:
                _same_vocabulary(who, model, tokenizer)
            got = label_rows(self.teacher, rows + extra, base=base, top_k=self.top_k if soft_tokens else 0,
                             max_new_tokens=self.max_new_tokens, progress=progress)
            labels, labelling = got.rows, got.labelling
        data, report = self._encode(task, builder, rows, extra, labels)
        from ..distill.losses import DistillLoss
        soft = None if self.labels != "soft" else ("tokens" if task.kind == "generate" else "labels")
        result = train(model, tokenizer, builder, task, self, out, loss=DistillLoss(soft, self.temperature), data=data,
                       tag=self.method, progress=progress, resume=resume, budget_s=budget_s)
        summary = {**result.to_json(), "data": report,
                   "distill": {"teacher": who, "teacher_params": teacher_params, "student": student,
                               "labels": self.labels, "labelling": labelling, "unlabelled": unlabelled}}
        if labelling:   # the arm's cost includes its teacher's training and labelling (shared ones: what they took once)
            teacher_s = _train_time(self.teacher)
            summary.update(training_s=summary["train_time_s"], labelling_s=labelling["wall_s"], teacher_train_s=teacher_s)
            summary["train_time_s"] += labelling["wall_s"] + teacher_s
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return self.trained_arm(model, task, dataclasses.replace(base, model=model, tokenizer=tokenizer), builder,
                                summary, trainable)

    # ---------------------------------------------------------------- the two models

    def _teacher_params(self, who: dict | None, base) -> int | None:
        """The teacher's parameters: its base's (loaded here, or counted from its config) plus
        what its arm trained (an adapter adds to the base; a full model replaces it); None for
        a model behind an endpoint, whose size Tailor cannot see."""
        if who is None:
            return base.n_params
        from ..recipe import find_arm, read_recipe
        recipe, _ = read_recipe(find_arm(self.teacher))
        if str(recipe.base.get("name", "")).startswith("openai:"):
            return None
        if recipe.method in ("full", "distill"):
            return recipe.trainable_params
        own = base.n_params if recipe.base.get("weights_id") == base.weights_id else _params_of(recipe.base)
        return own + (recipe.trainable_params or 0)

    def _student(self, base, teacher_params: int):
        import copy

        from ..distill.student import decoder_layers, pruned_copy
        spec = self.student
        if isinstance(spec, str):
            from ..models import load_base
            other = load_base(spec, dtype=str(base.dtype).removeprefix("torch."), device=base.device.type)
            model, tokenizer = copy.deepcopy(other.model).requires_grad_(True), other.tokenizer
            info = {"spec": spec, "kept_layers": None}
        else:
            total = len(decoder_layers(base.model))
            budget = (teacher_params or base.n_params) * self.max_params_ratio
            keep = spec.layers if spec else _layers_within(base.model, budget, total)
            model, kept = pruned_copy(base.model, keep)
            tokenizer = base.tokenizer
            info = {"spec": f"{base.name} with {len(kept)} of {total} layers", "kept_layers": kept}
        params = sum(p.numel() for p in model.parameters())
        info.update(params=params, params_ratio=round(params / teacher_params, 4) if teacher_params else None)
        if teacher_params is None:
            log.warning("distill: the teacher is behind an endpoint; its size is unknown, so max_params_ratio is not checked")
        elif params > self.max_params_ratio * teacher_params:
            raise TailorError(f"distill: the student ({info['spec']}) has {params:,} parameters, "
                              f"{params / teacher_params:.2f} of the teacher's {teacher_params:,}; at most "
                              f"max_params_ratio {self.max_params_ratio} (keep fewer layers, or raise max_params_ratio)")
        return model, tokenizer, info

    # ---------------------------------------------------------------- data

    def _unlabelled(self, task) -> tuple[list, dict | None]:
        """Unlabelled rows for the teacher to label, minus any whose input is a dev or test row's
        (they would leak held-out rows into training), counted."""
        if not self.unlabelled:
            return [], None
        from ..task import load_inputs
        rows = load_inputs(self.unlabelled)
        held = {ex.input_text.strip() for s in ("dev", "test") for ex in task.splits.get(s) or []}
        kept = [dataclasses.replace(ex, id=f"unlabelled:{ex.id}", target="") for ex in rows
                if ex.input_text.strip() not in held]
        dropped = len(rows) - len(kept)
        if self.max_unlabelled and len(kept) > self.max_unlabelled:
            kept = random.Random(self.seed).sample(kept, self.max_unlabelled)
        if dropped:
            log.warning("distill: %d unlabelled rows repeat a dev or test input and were left out", dropped)
        return kept, {"file": self.unlabelled, "rows": len(rows), "used": len(kept), "held_out_overlap": dropped}

    def _encode(self, task, builder, rows, extra, labels) -> tuple[list, dict]:
        """Encoded examples for the loss: continuations and `extra` per labels mode."""
        from ..train.data import encode_examples
        choice = task.kind in ("classify", "choice")
        if self.labels == "gold":
            pool = [ex for ex in rows if ex.target.strip()]
        else:
            pool = [dataclasses.replace(ex, target=labels[ex.id]["label"], meta={**ex.meta, "gold": ex.target})
                    for ex in rows + extra]
        if self.labels == "soft" and choice:   # any option as the placeholder target: all are added below
            pool = [dataclasses.replace(ex, target=_options(task, ex)[0]) for ex in pool]
        data, report = encode_examples(builder, pool, self.seq_len, self.overlong)
        by_id = {ex.id: ex for ex in pool}
        for enc in data:
            ex = by_id[enc.id]
            gold = (ex.meta.get("gold") if self.labels != "gold" else ex.target) or ""
            if self.labels == "soft" and choice:
                options = _options(task, ex)
                probs = labels[ex.id].get("probs") or {}
                if set(probs) != set(options):
                    raise TailorError(f"distill: the teacher gave no probabilities over {options} for row '{ex.id}'")
                enc.targets = [builder.encode(builder.target_text(o)) for o in options]
                enc.extra = {"teacher": [probs[o] for o in options], "alpha": self.alpha,
                             "gold": options.index(gold) if gold in options else None}
                continue
            weights = [1.0]
            if self.labels != "gold" and gold.strip() and self.alpha > 0 and gold != ex.target:
                enc.targets.append(builder.encode(builder.target_text(gold)))
                weights = [1 - self.alpha, self.alpha]
            enc.extra = {"weights": weights}
            if self.labels == "soft":
                row = labels[ex.id]
                if len(row["topk_ids"]) != len(enc.targets[0]):
                    raise TailorError(f"distill: row '{ex.id}': the teacher scored {len(row['topk_ids'])} answer "
                                      f"tokens, the student reads {len(enc.targets[0])}; soft labels need one tokenizer")
                enc.extra.update(topk_ids=row["topk_ids"], topk_lp=row["topk_lp"])
        summary = report.to_json()
        summary.update(rows=len(rows), unlabelled=len(extra))
        return data, summary

    # ---------------------------------------------------------------- the artifact

    @classmethod
    def load(cls, recipe: Recipe, pool, folder: Path, base) -> Adapted:
        """The student and its own tokenizer (it may not be the base's)."""
        from ..models import load_tokenizer
        model = cls.load_model(folder, recipe, base).eval()
        tokenizer = load_tokenizer(str(folder / cls.folder))
        return Adapted(recipe, model, tokenizer, _weights_id(base, recipe.method, recipe.weights["digest"]),
                       recipe_builder(recipe, tokenizer))


def _train_time(arm: str) -> float:
    from ..recipe import find_arm, read_recipe
    recipe, _ = read_recipe(find_arm(arm))
    return float((recipe.train or {}).get("train_time_s", 0.0))


def _options(task, ex) -> list[str]:
    return list(task.labels) if task.kind == "classify" else list(ex.choices)


def _layers_within(model, max_params: float, total: int) -> int:
    """The most decoder layers a pruned copy can keep within `max_params`."""
    from ..distill.student import decoder_layers
    per_layer = sum(p.numel() for p in decoder_layers(model)[0].parameters())
    fixed = sum(p.numel() for p in model.parameters()) - per_layer * total
    keep = int((max_params - fixed) // per_layer)
    if keep < 1:
        raise TailorError(f"distill: even one layer of the base exceeds the student's budget of {max_params:,.0f} "
                          f"parameters (embeddings and head alone take {fixed:,}); raise max_params_ratio")
    return min(keep, total)


def _params_of(base_info: dict) -> int:
    """Parameters of a base named in a recipe, from its config (the weights are not loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(base_info.get("path") or base_info["name"])
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def _same_vocabulary(who: dict, model, tokenizer) -> None:
    """Token-level soft labels compare distributions over token ids: teacher and student must
    share the vocabulary (its size and the tokenizer's id for every token)."""
    from ..models import load_tokenizer, model_dir, recipe_base
    from ..recipe import find_arm, read_recipe
    folder = find_arm(who["arm"])
    name = recipe_base(read_recipe(folder)[0], folder)
    teacher_tok = load_tokenizer(name)
    from transformers import AutoConfig
    teacher_vocab = AutoConfig.from_pretrained(model_dir(name)).vocab_size
    differ = []
    if teacher_vocab != model.config.vocab_size:
        differ.append(f"config.vocab_size {teacher_vocab} (teacher) vs {model.config.vocab_size} (student)")
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        differ.append(f"tokenizers {type(teacher_tok).__name__} of {name} vs {type(tokenizer).__name__} "
                      f"({len(teacher_tok)} vs {len(tokenizer)} tokens)")
    if differ:
        raise TailorError("distill: soft labels on a generate task need the teacher's vocabulary, but "
                          + "; ".join(differ) + " (use labels: hard, or a student that shares the teacher's tokenizer)")
