"""Fine-tuning arms. Each is thin: it decides which parameters train (peft provides the adapter
layers) and hands the model to THE training loop (`tailor.train.loop.train`), which formats
every example through the same prompt builder inference uses. The family also owns its
artifacts, in the formats the field already reads:

- PEFT arms (lora, qlora, ia3, prompt-tuning, prefix): ARM/adapter, a standard PEFT adapter
  folder that `peft.PeftModel.from_pretrained(base, folder)` loads unchanged;
- full: ARM/model, a Hugging Face model folder (safetensors) that `AutoModelForCausalLM` loads;
- bitfit: ARM/bitfit.safetensors, the trained bias tensors; merging them gives an HF folder
  whose config turns the Llama bias flags on.

BitFit on Llama: the Llama family has no bias terms, so "train only the biases" would train
nothing. The faithful variant used here adds zero-initialised biases to every attention and MLP
projection (the model computes exactly the same function at step 0) and trains only those,
everything else frozen.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import TailorError
from ..knobs import Knob, around, choices
from ..recipe import Recipe
from ..schema import Options
from ..train.options import TrainConfig
from ..utils import atomic_dir, atomic_write_json
from .base import Adapted, Method, base_recipe, frozen_copy, method_class, recipe_builder

log = logging.getLogger("tailor")
# bitsandbytes (imported by peft when installed) logs on every import that an optional CPU
# kernel package (fetched from the hub) is missing; its own 4-bit CPU path still works, so the
# line is noise for every arm that is not qlora.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` on every wrap: not ours to fix.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class _Trained(TrainConfig, Method):
    """What the training arms share: fit through the loop, save and load an artifact."""

    changes_weights: ClassVar[bool] = True
    trains_on_pool: ClassVar[bool] = True
    runs_on_ranks: ClassVar[bool] = True
    layout: ClassVar[str] = "packed"     # padded: every sequence alone (soft prompts, prefixes)
    folder: ClassVar[str] = "adapter"    # where the weights go in the arm folder

    def trainable_model(self, task, base):
        raise NotImplementedError

    def grade(self, task, rows, preds) -> None:
        if not task.grader:
            return
        from ..graders import grade_predictions  # deferred: a model judge loads torch when it grades
        for why, n in grade_predictions(task, rows, preds).items():
            log.warning("dev evaluation: %s on %d answers", why, n)

    def knobs(self) -> dict:
        # the learning rate within 10x either way, and the length of training from half to twice
        out = {"lr": around(self.lr, 10)} if self.lr > 0 else {}
        if self.steps:
            out["steps"] = around(self.steps, 2, whole=True)
        elif "epochs" in type(self).model_fields and self.epochs > 0:
            out["epochs"] = Knob(low=self.epochs / 2, high=self.epochs * 2)
        return {**super().knobs(), **out}

    def soft_tokens(self) -> int:
        return 0

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..prompts import builder_for
        from ..train.loop import train
        torch.manual_seed(self.seed)  # adapter init is part of the run's reproducibility
        model = self.trainable_model(task, base)
        builder = builder_for(task, base.tokenizer, base.model.config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("%s: %d trainable parameters (%.3f%% of %d)", self.method, trainable,
                 100 * trainable / max(base.n_params, 1), base.n_params)
        result = train(model, base.tokenizer, builder, task, self, out, layout=self.layout,
                       soft_tokens=self.soft_tokens(), tag=self.method, progress=progress, resume=resume,
                       budget_s=budget_s)
        return self.trained_arm(model, task, base, builder, result.to_json(), trainable)

    def trained_arm(self, model, task, base, builder, train: dict, trainable: int, **recipe_fields) -> Adapted:
        """The arm a finished training run makes: the model set for inference, its weights'
        digest, the recipe (every training arm of every family ends here)."""
        from ..train.checkpoint import weights_digest
        for_inference(model, self.method, base.dtype)
        model.eval()
        digest = weights_digest(self.trained_tensors(model))
        recipe = base_recipe(self, task, base, builder, weights={"digest": digest}, train=train,
                             trainable_params=trainable, **recipe_fields)
        return Adapted(recipe, model, base.tokenizer, _weights_id(base, self.method, digest), builder)

    @classmethod
    def trained_tensors(cls, model) -> dict:
        from ..train.checkpoint import trainable_state
        return trainable_state(model)

    # ---- artifacts
    @classmethod
    def save_weights(cls, adapted: Adapted, folder: Path) -> dict:
        adapted.model.save_pretrained(folder / cls.folder, safe_serialization=True)
        return {"files": _files(folder, cls.folder)}

    @classmethod
    def load_model(cls, folder: Path, recipe: Recipe, base):
        from peft import PeftModel
        model = PeftModel.from_pretrained(frozen_copy(base), folder / cls.folder)
        for_inference(model, recipe.method, base.dtype)
        return model

    @classmethod
    def load(cls, recipe: Recipe, pool, folder: Path, base) -> Adapted:
        model = cls.load_model(folder, recipe, base).eval()
        return Adapted(recipe, model, base.tokenizer, _weights_id(base, recipe.method, recipe.weights["digest"]),
                       recipe_builder(recipe, base.tokenizer))

    @classmethod
    def merged(cls, adapted: Adapted):
        """A plain transformers model computing what the arm computes."""
        if not hasattr(adapted.model, "merge_and_unload"):
            raise TailorError(f"a {adapted.method} artifact is not a weight delta and cannot be merged into the base "
                              "(serve it as an adapter: tailor eval --adapter RUN)")
        return copy.deepcopy(adapted.model).merge_and_unload()


def _weights_id(base, method: str, digest: str) -> str:
    # names the base as loaded now (its dtype changes results) plus the trained weights
    return f"{base.weights_id}+{method}:{digest[:16]}"


def _files(folder: Path, sub: str) -> list[str]:
    return sorted(str(f.relative_to(folder)) for f in (folder / sub).rglob("*") if f.is_file())


def for_inference(model, method: str, dtype) -> None:
    """Trained weights are fp32 masters; inference runs in the base dtype, as training computed
    (bf16 autocast), and at the base's speed: fp32 LoRA adapters on a bf16 base cost a cast of
    every adapter's input, 30% more time per forward on CPU. Loading applies the same cast, so a
    reloaded arm computes what the fitted one did. (4-bit bases keep their own compute dtype.)"""
    if method_class(method).quantized:
        return
    for p in model.parameters():
        if p.dtype != dtype and p.is_floating_point():
            p.data = p.data.to(dtype)


class Full(_Trained):
    """Full fine-tuning: every weight trains (fp32 masters, bf16 compute)."""

    method: ClassVar[str] = "full"
    folder: ClassVar[str] = "model"
    lr: float = 2e-5
    weight_decay: float = 0.0

    def trainable_model(self, task, base):
        model = copy.deepcopy(base.model)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    @classmethod
    def save_weights(cls, adapted: Adapted, folder: Path) -> dict:
        adapted.model.save_pretrained(folder / cls.folder, safe_serialization=True)
        adapted.tokenizer.save_pretrained(folder / cls.folder)
        return {"files": _files(folder, cls.folder)}

    @classmethod
    def load_model(cls, folder: Path, recipe: Recipe, base):
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM.from_pretrained(folder / cls.folder, dtype=base.dtype,
                                                    use_safetensors=True).to(base.device)

    @classmethod
    def merged(cls, adapted: Adapted):
        return adapted.model


class LoRA(_Trained):
    """Low-rank adapters on the linear layers (default: all of them except the output head).
    `init_adapter` (or `after:` in a ladder): continue an earlier arm's LoRA adapter (a cpt arm's,
    an SFT arm's) instead of starting a fresh one; see `start_adapter`."""

    method: ClassVar[str] = "lora"
    lora_adapter: ClassVar[bool] = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    lr: float = 1e-3
    init_adapter: str | None = None   # a LoRA arm's folder (lora, cpt, dpo, ...) to start from
    after: str | None = None          # in a ladder: the name of an earlier arm to start from (sets init_adapter)

    def knobs(self) -> dict:
        # an adapter continued from another arm keeps that arm's rank (start_adapter)
        rank = {} if self.init_adapter or self.after else {"r": choices(self.r, 4, 8, 16, 32)}
        return {**super().knobs(), **rank}

    def peft_config(self):
        from peft import LoraConfig
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")

    def trainable_model(self, task, base):
        return start_adapter(self, base)[0]

    def fit_inputs(self) -> dict:
        from .base import arm_content
        return {"init_adapter": arm_content(self.init_adapter)} if self.init_adapter else {}


def start_adapter(arm: LoRA, base):
    """The adapter `arm` trains, and whether it continues another arm's: a fresh LoRA adapter
    over the frozen base, or a trainable copy of the adapter in `arm.init_adapter` (a ladder's
    `after:` sets it to the earlier arm's folder: `preference.chained`). A continued adapter
    keeps its own shape (r, alpha, target modules); this arm's dropout replaces its own."""
    from peft import PeftModel, get_peft_model

    from ..recipe import find_arm, read_recipe
    if arm.after and not arm.init_adapter:
        raise TailorError(f"{arm.method}: after: '{arm.after}' names an earlier arm of a ladder; outside a ladder "
                          "set init_adapter to that arm's folder")
    if not arm.init_adapter:
        return get_peft_model(frozen_copy(base), arm.peft_config()), False
    if not Path(arm.init_adapter).exists():
        raise TailorError(f"{arm.method}: init_adapter '{arm.init_adapter}' is not an arm folder (after: must name "
                          "an earlier arm of the ladder that ran)")
    folder = find_arm(arm.init_adapter)
    recipe, _ = read_recipe(folder)
    cls = method_class(recipe.method)
    if not cls.lora_adapter or cls.quantized:
        raise TailorError(f"{folder}: init_adapter must be a LoRA arm over the unchanged base (lora, cpt, dpo, ...), "
                          f"not {recipe.method}")
    model = PeftModel.from_pretrained(frozen_copy(base), folder / cls.folder, is_trainable=True)
    shape = model.peft_config["default"]
    for name in ("r", "alpha", "target_modules"):   # set here, but the continued adapter's own shape holds
        theirs = shape.lora_alpha if name == "alpha" else getattr(shape, name)
        if name in arm.model_fields_set and getattr(arm, name) != theirs and not (
                name == "target_modules" and isinstance(theirs, set) and set(getattr(arm, name)) == theirs):
            log.warning("%s: %s %s is not used: the adapter of %s continues with its own %s %s", arm.method, name,
                        getattr(arm, name), folder, name, theirs)
    import torch
    for name, module in model.named_modules():   # this arm's dropout, not the earlier arm's
        if "lora_dropout" in name and isinstance(module, torch.nn.Dropout):
            module.p = arm.dropout
    return model, True


def quantized_base(base):
    """The base reloaded with 4-bit NF4 weights through bitsandbytes, or a clear error where the
    installed bitsandbytes cannot do that on this device."""
    import torch
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TailorError("qlora needs bitsandbytes (pip install bitsandbytes); use lora instead") from None
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    dtype = torch.bfloat16 if base.dtype == torch.bfloat16 else torch.float32
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, quantization_config=qcfg, dtype=dtype,
                                                     device_map={"": str(base.device)}, use_safetensors=True)
    except Exception as e:  # bitsandbytes raises many types; the message is what the user needs
        raise TailorError(f"qlora: bitsandbytes cannot load a 4-bit model on {base.device} here "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); use lora instead") from None
    return model


class QLoRA(LoRA):
    """LoRA on a 4-bit (NF4) quantised base: the base's memory drops ~4x; training is slower."""

    method: ClassVar[str] = "qlora"
    quantized: ClassVar[bool] = True
    # not fields here: a 4-bit adapter cannot continue one trained over the full-precision base, so
    # a file that sets them is refused when it is read ("unknown setting")
    init_adapter: ClassVar[None] = None
    after: ClassVar[None] = None

    def trainable_model(self, task, base):
        from peft import get_peft_model, prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(quantized_base(base), use_gradient_checkpointing=self.grad_checkpointing)
        return get_peft_model(model, self.peft_config())

    @classmethod
    def load_model(cls, folder: Path, recipe: Recipe, base):
        from peft import PeftModel
        return PeftModel.from_pretrained(quantized_base(base), folder / cls.folder)

    @classmethod
    def merged(cls, adapted: Adapted):
        raise TailorError("merging a qlora adapter needs the unquantised base: load the base in bf16/fp32 and "
                          "merge the adapter folder with peft (rounding differs from the 4-bit model it was trained on)")


class _PromptLearning(_Trained):
    layout: ClassVar[str] = "padded"
    n_virtual_tokens: int = 20
    warmup_ratio: float = 0.1

    @classmethod
    def merged(cls, adapted: Adapted):
        raise TailorError(f"a {adapted.method} artifact is not a weight delta and cannot be merged into the base "
                          "(serve it as an adapter: tailor eval --adapter RUN)")


class PromptTuning(_PromptLearning):
    """Soft prompt: `n_virtual_tokens` trainable embeddings prepended to every input, initialised
    from the task instruction's tokens (init: text) or at random (init: random)."""

    method: ClassVar[str] = "prompt-tuning"
    init: Literal["text", "random"] = "text"
    init_text: str | None = None  # default: the task instruction
    lr: float = 3e-2

    def soft_tokens(self) -> int:
        return self.n_virtual_tokens

    def trainable_model(self, task, base):
        from peft import PromptTuningConfig, get_peft_model
        text = self.init == "text"
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.n_virtual_tokens,
                                 prompt_tuning_init="TEXT" if text else "RANDOM",
                                 prompt_tuning_init_text=(self.init_text or task.instruction) if text else None,
                                 tokenizer_name_or_path=str(base.path) if text else None)
        return get_peft_model(frozen_copy(base), cfg)


class Prefix(_PromptLearning):
    """Prefix tuning: trainable key/value vectors prepended at every layer."""

    method: ClassVar[str] = "prefix"
    projection: bool = False  # reparameterise through an MLP during training (as in the paper)
    lr: float = 1e-2

    def trainable_model(self, task, base):
        from peft import PrefixTuningConfig, get_peft_model
        cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.n_virtual_tokens,
                                 prefix_projection=self.projection)
        return get_peft_model(frozen_copy(base), cfg)


class IA3(_Trained):
    """(IA)^3: learned per-channel rescaling of keys, values and the MLP's inner activations."""

    method: ClassVar[str] = "ia3"
    target_modules: list[str] | None = None         # default: peft's choice for the model type
    feedforward_modules: list[str] | None = None
    lr: float = 5e-3

    def trainable_model(self, task, base):
        from peft import IA3Config, get_peft_model
        kwargs = {}
        if self.target_modules:
            kwargs = {"target_modules": self.target_modules, "feedforward_modules": self.feedforward_modules or []}
        return get_peft_model(frozen_copy(base), IA3Config(task_type="CAUSAL_LM", **kwargs))


class BitFit(_Trained):
    """Bias terms only (zero-initialised biases added to the Llama projections; see module doc)."""

    method: ClassVar[str] = "bitfit"
    folder: ClassVar[str] = "bitfit.safetensors"
    lr: float = 1e-3

    def trainable_model(self, task, base):
        model = frozen_copy(base)
        for p in add_zero_biases(model):
            p.requires_grad_(True)
        return model

    @classmethod
    def trained_tensors(cls, model) -> dict:
        return bias_tensors(model)

    @classmethod
    def save_weights(cls, adapted: Adapted, folder: Path) -> dict:
        from ..train.checkpoint import save_weights
        save_weights(folder / cls.folder, bias_tensors(adapted.model))
        return {"files": [cls.folder]}

    @classmethod
    def load_model(cls, folder: Path, recipe: Recipe, base):
        import torch
        from safetensors.torch import load_file
        model = frozen_copy(base)
        add_zero_biases(model)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in load_file(str(folder / cls.folder)).items():
                params[name].copy_(t.to(params[name].dtype))
        return model

    @classmethod
    def merged(cls, adapted: Adapted):
        return adapted.model   # biases live in the model; its config has the bias flags on


def bias_tensors(model) -> dict:
    return {n: p for n, p in model.named_parameters() if n.endswith(".bias")}


def add_zero_biases(model) -> list:
    """BitFit on a model without biases (the Llama family): give every attention and MLP
    projection a zero bias (so the function is unchanged at step 0) and set the config flags
    that make a saved folder load with those biases."""
    import torch
    cfg = model.config
    if not (hasattr(cfg, "attention_bias") and hasattr(cfg, "mlp_bias")):
        raise TailorError(f"bitfit: model type '{cfg.model_type}' has no attention_bias/mlp_bias config flags; "
                          "bias terms cannot be added in a way a saved folder reloads")
    added = []
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in names and module.bias is None:
            module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                         device=module.weight.device))
            added.append(module.bias)
    cfg.attention_bias = cfg.mlp_bias = True
    return added


class _Documents(Options):
    """Continued pre-training (`cpt`): the next-token loss over a team's documents, every token
    a target: the option Meta's guide to adapting LLMs (2024) places between pre-training and
    fine-tuning (domain-adaptive pre-training: Gururangan et al. 2020). `tailor.train.text` packs
    the documents into sequences of at most `seq_len` tokens, counted; THE loop trains on them
    with its own cross-entropy. The arm answers the task closed book through the task's prompt,
    as a lora arm does; a lora arm `after:` it continues its adapter (SFT on the task's rows)."""

    trains_on_pool: ClassVar[bool] = False   # the documents, not the task's rows
    # a folder of .txt/.md/.html files or a .jsonl of {id, title, text} records (what tailor index
    # reads), or a bundled knowledge base's name; default: the task's own knowledge base
    documents: str | None = None
    max_documents: Annotated[int, Field(gt=0)] | None = None   # a seeded sample; the rest counted as dropped
    nll_sample: Annotated[int, Field(ge=0)] = 32   # sequences whose NLL is measured before and after (0: off)
    # THE loop's options for task rows, which documents never meet: not fields here, so a file that
    # sets one is refused when it is read ("unknown setting"); size a run by max_documents, steps, epochs
    max_train_examples: ClassVar[None] = None
    train_prompts: ClassVar[None] = None
    overlong: ClassVar[None] = None           # a long document continues in the next sequence, never cut

    def source(self, task) -> str:
        if self.documents:
            return self.documents
        if task.knowledge:
            return task.knowledge
        raise TailorError(f"cpt: the {task.name} task has no knowledge base; set documents: to a folder of "
                          ".txt/.md/.html files or a .jsonl of {id, title, text} records")

    @staticmethod
    def read(source: str) -> list:
        """The documents as `tailor index` reads them: a bundled knowledge base, or files."""
        from ..datasets.knowledge import BUNDLED_KBS, bundled_documents
        from ..retrieval.documents import read_documents
        return bundled_documents(source) if source in BUNDLED_KBS else read_documents(source)

    def fit_inputs(self) -> dict:
        # the content of the documents named (a default bundled knowledge base is the task's own,
        # a function of the installed package as the task's rows in the key are)
        from ..utils import sha256_text
        digest = None
        if self.documents:
            digest = sha256_text("\n".join(f"{d.id}\x00{d.sha256}" for d in self.read(self.documents)))
        return {**super().fit_inputs(), "documents": digest}

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import random

        import torch

        from ..prompts import builder_for
        from ..train.loop import train, use_bf16
        from ..train.text import pack_documents, text_nll
        source = self.source(task)
        data, report = pack_documents(self.read(source), base.tokenizer, self.seq_len, self.max_documents,
                                      self.seed)
        log.info("%s: %d documents from %s (%d dropped by max_documents), %d tokens in %d sequences of at most %d "
                 "(%d documents continue across sequences)", self.method, report.trained_documents, source,
                 report.dropped_documents, report.tokens, report.sequences, self.seq_len, report.split_documents)
        torch.manual_seed(self.seed)   # adapter init is part of the run's reproducibility
        model = self.trainable_model(task, base)
        builder = builder_for(task, base.tokenizer, base.model.config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # whether the documents were learned (their NLL), apart from whether the task gains from it
        sample = random.Random(self.seed).sample(data, min(self.nll_sample, len(data)))
        pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else base.tokenizer.eos_token_id
        bf16 = use_bf16(self.precision, base.device)
        nll = {"sequences": len(sample), "tokens": sum(len(e.target) for e in sample)}
        if sample:
            nll["before"] = text_nll(model, sample, pad, self.pack_len, bf16)
        result = train(model, base.tokenizer, builder, task, self, out, data=data, tag=self.method, progress=progress,
                       resume=resume, budget_s=budget_s)
        if sample:
            nll["after"] = text_nll(model, sample, pad, self.pack_len, bf16)
            log.info("%s: NLL of %d sequences of the documents %.3f -> %.3f nats a token", self.method, len(sample),
                     nll["before"], nll["after"])
        info = {**result.to_json(), "documents": {"source": source, **report.to_json()}, "documents_nll": nll,
                "epochs_of_documents": result.target_tokens / max(report.target_tokens, 1)}
        return self.trained_arm(model, task, base, builder, info, trainable)


class CPT(_Documents, LoRA):
    """Continued pre-training of a LoRA adapter (the default), or of every weight (`adapter: full`)."""

    method: ClassVar[str] = "cpt"
    adapter: Literal["lora", "full"] = "lora"

    @model_validator(mode="wrap")
    @classmethod
    def _full_variant(cls, data, handler):
        # What an arm is (a LoRA adapter over the unchanged base, or a model of its own) belongs to
        # its class, which serving, export and the ladder find from the recipe's method name: with
        # `adapter: full` the options validate as CPTFull, recorded as cpt-full.
        if cls is CPT and isinstance(data, dict) and data.get("adapter") == "full":
            return CPTFull.model_validate(data)
        return handler(data)


class CPTFull(_Documents, Full):
    """`cpt` with `adapter: full`: every weight trains on the documents (a full model folder)."""

    method: ClassVar[str] = "cpt-full"
    adapter: Literal["full"] = "full"
    init_adapter: str | None = None
    after: str | None = None

    @field_validator("init_adapter", "after")
    @classmethod
    def _no_start(cls, value):
        if value is not None:
            raise PydanticCustomError("cpt_full_start", "nothing here: a full cpt arm trains the base's own weights; "
                                                        "only adapter: lora continues another arm's adapter")
        return value


def lora_stack(base, arms: dict[str, Path]):
    """One PeftModel over the base's frozen weights with each LoRA arm loaded under its name,
    and name -> weights id: what an engine of many adapters runs (rows of different adapters
    share one forward over the base)."""
    from peft import PeftModel

    from ..recipe import find_arm, read_recipe
    model, ids = None, {}
    for name, path in arms.items():
        folder = find_arm(path)
        recipe, _ = read_recipe(folder)
        cls = method_class(recipe.method)
        if not cls.lora_adapter or cls.quantized:
            raise TailorError(f"{folder}: a {recipe.method} arm is not a LoRA adapter of the unchanged base and cannot "
                              "share a batch with other adapters; serve it on its own")
        if model is None:
            model = PeftModel.from_pretrained(frozen_copy(base), folder / cls.folder, adapter_name=name)
        else:
            model.load_adapter(folder / cls.folder, adapter_name=name)
        ids[name] = _weights_id(base, recipe.method, recipe.weights["digest"])   # the id the arm was measured under
    if model is None:
        raise TailorError("no adapters given")
    for_inference(model, "lora", base.dtype)
    return model.eval(), ids


def merge_arm(adapted: Adapted, out: Path) -> Path:
    """Writes a merged safetensors Hugging Face folder that AutoModelForCausalLM loads."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TailorError(f"{out} exists and is not empty; choose a new folder for the merged model")
    cls = method_class(adapted.method)
    if not hasattr(cls, "merged"):
        raise TailorError(f"a {adapted.method} arm changes no weights: there is nothing to merge")
    model = cls.merged(adapted)
    with atomic_dir(out) as tmp:   # `out` is absent or empty (checked above)
        model.save_pretrained(tmp, safe_serialization=True)
        adapted.tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "tailor_merged.json", {"from": str(adapted.artifact_dir), **adapted.recipe.model_dump()})
    return out


FINETUNE_METHODS = {cls.method: cls for cls in (Full, LoRA, QLoRA, PromptTuning, Prefix, IA3, BitFit, CPT, CPTFull)}
