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
from typing import ClassVar, Literal

from ..errors import TailorError
from ..recipe import Recipe
from ..train.options import TrainConfig
from ..utils import atomic_dir, atomic_write_json
from .base import Adapted, Method, base_recipe, frozen_copy, recipe_builder

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
    layout: ClassVar[str] = "packed"     # padded: every sequence alone (soft prompts, prefixes)
    folder: ClassVar[str] = "adapter"    # where the weights go in the arm folder

    def trainable_model(self, task, base):
        raise NotImplementedError

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
    if method == "qlora":
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
    """Low-rank adapters on the linear layers (default: all of them except the output head)."""

    method: ClassVar[str] = "lora"
    lora_adapter: ClassVar[bool] = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    lr: float = 1e-3

    def peft_config(self):
        from peft import LoraConfig
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")

    def trainable_model(self, task, base):
        from peft import get_peft_model
        return get_peft_model(frozen_copy(base), self.peft_config())


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
        if recipe.method != "lora":
            raise TailorError(f"{folder}: a {recipe.method} arm cannot share a batch with other adapters "
                              "(only lora arms can; serve it on its own)")
        if model is None:
            model = PeftModel.from_pretrained(frozen_copy(base), folder / LoRA.folder, adapter_name=name)
        else:
            model.load_adapter(folder / LoRA.folder, adapter_name=name)
        ids[name] = _weights_id(base, "lora", recipe.weights["digest"])
    if model is None:
        raise TailorError("no adapters given")
    for_inference(model, "lora", base.dtype)
    return model.eval(), ids


def merge_arm(adapted: Adapted, out: Path) -> Path:
    """Writes a merged safetensors Hugging Face folder that AutoModelForCausalLM loads."""
    from .base import method_class
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


FINETUNE_METHODS = {cls.method: cls for cls in (Full, LoRA, QLoRA, PromptTuning, Prefix, IA3, BitFit)}
