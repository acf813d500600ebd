"""Fine-tuning arms. Each is thin: it decides which parameters train (peft provides the adapter
layers) and hands the model to THE training loop (`tailor.train.train`), which formats every
example through the same prompt builder inference uses.

Options are dataclass fields: the loop's shared ones (`TrainConfig`: steps, epochs, lr,
batch_size, seq_len, max_train_examples, ...) plus each arm's own.

BitFit on Llama: the Llama family has no bias terms, so "train only the biases" would train
nothing. The faithful variant used here adds zero-initialised biases to every attention and MLP
projection (the model computes exactly the same function at step 0) and trains only those,
everything else frozen. The config's `attention_bias`/`mlp_bias` flags are set, so a merged
folder is a standard Llama checkpoint that `AutoModelForCausalLM` loads with its biases.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import asdict, dataclass

import torch

from ..errors import TailorError
from ..models import Base
from ..prompts import builder_for
from ..task import Task
from ..train import TrainConfig, train
from ..train.checkpoint import trainable_state, weights_digest
from .base import Adapted

log = logging.getLogger("tailor")
# bitsandbytes (imported by peft when installed) logs on every import that an optional CPU
# kernel package (fetched from the hub) is missing; its own 4-bit CPU path still works, so the
# line is noise for every arm that is not qlora.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` on every wrap: not ours to fix.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def for_inference(model, method: str, dtype: torch.dtype) -> None:
    """Trained weights are fp32 masters; inference runs in the base dtype. LoRA adapters stay
    fp32 (peft casts around them, as it does when loading an adapter); the others are cast so
    that every matmul sees one dtype."""
    if method in ("lora", "qlora"):
        return
    for p in model.parameters():
        if p.dtype != dtype and p.is_floating_point():
            p.data = p.data.to(dtype)


def fit_arm(arm: TrainConfig, method: str, task: Task, base: Base, run, model, *, layout: str = "packed",
            soft_tokens: int = 0, extra: dict | None = None) -> Adapted:
    builder = builder_for(task, base.tokenizer, base.model.config)
    trainable = count_trainable(model)
    log.info("%s: %d trainable parameters (%.3f%% of %d)", method, trainable,
             100 * trainable / max(base.n_params, 1), base.n_params)
    result = train(model, base.tokenizer, builder, task, arm, run, layout=layout, soft_tokens=soft_tokens,
                   tag=method)
    for_inference(model, method, base.dtype)
    model.eval()
    digest = weights_digest(trainable_state(model) if method != "bitfit" else _biases(model))
    weights_id = f"{base.weights_id}+{method}:{digest[:16]}"
    meta = {"base": base.name, "base_path": str(base.path), "base_weights_id": base.weights_id,
            "digest": digest, "weights_id": weights_id, "kind": task.kind, "instruction": task.instruction,
            "max_prompt_tokens": builder.max_prompt_tokens, "task": task.name, "options": asdict(arm),
            "trainable_params": trainable, "train_time_s": result.train_time_s,
            "train_tokens": result.train_tokens, "train": result.to_json(), **(extra or {})}
    artifact_dir, artifact_bytes = None, 0
    if run is not None:
        from ..export import save_artifact
        artifact_dir = run.path / ("model" if method == "full" else "adapter")
        artifact_bytes = save_artifact(model, base.tokenizer, method, artifact_dir, meta)
        run.write_json("train_result.json", {"method": method, "trainable_params": trainable,
                                             "artifact_bytes": artifact_bytes, **result.to_json()})
    return Adapted(method, model, base.tokenizer, weights_id, builder, trainable_params=trainable,
                   artifact_bytes=artifact_bytes, train_time_s=result.train_time_s,
                   train_tokens=result.train_tokens, artifact_dir=artifact_dir,
                   info={"train": result.to_json(), **(extra or {})})


def _biases(model) -> dict:
    from ..export import bias_tensors
    return bias_tensors(model)


def _frozen_copy(base: Base):
    """A private module tree over the base's own frozen weight tensors. Arms of a ladder share one
    loaded base, which must stay intact: peft and BitFit change modules (wrap them, add biases),
    never the frozen weights, so copying the modules but not the weights keeps the base intact
    without a second copy of the model in memory (the training loop never mutates a frozen
    tensor either: see `prepare_precision`)."""
    shared = {id(p): p for p in base.model.parameters()}
    model = copy.deepcopy(base.model, shared)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class Full(TrainConfig):
    """Full fine-tuning: every weight trains (fp32 masters, bf16 compute)."""

    lr: float = 2e-5
    weight_decay: float = 0.0

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        model = copy.deepcopy(base.model)
        for p in model.parameters():
            p.requires_grad_(True)
        return fit_arm(self, "full", task, base, run, model)


@dataclass
class LoRA(TrainConfig):
    """Low-rank adapters on the linear layers (default: all of them except the output head)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list | str = "all-linear"
    lr: float = 1e-3

    def peft_config(self):
        from peft import LoraConfig
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from peft import get_peft_model
        torch.manual_seed(self.seed)  # adapter init is part of the run's reproducibility
        return fit_arm(self, "lora", task, base, run, get_peft_model(_frozen_copy(base), self.peft_config()))


def quantized_base(base: Base):
    """The base reloaded with 4-bit NF4 weights through bitsandbytes, or a clear error where the
    installed bitsandbytes cannot do that on this device."""
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


@dataclass
class QLoRA(LoRA):
    """LoRA on a 4-bit (NF4) quantised base: the base's memory drops ~4x; training is slower."""

    lr: float = 1e-3

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from peft import get_peft_model, prepare_model_for_kbit_training
        model = quantized_base(base)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.grad_checkpointing)
        torch.manual_seed(self.seed)
        return fit_arm(self, "qlora", task, base, run, get_peft_model(model, self.peft_config()))


@dataclass
class PromptTuning(TrainConfig):
    """Soft prompt: `n_virtual_tokens` trainable embeddings prepended to every input, initialised
    from the task instruction's tokens (init: text) or at random (init: random)."""

    n_virtual_tokens: int = 20
    init: str = "text"
    init_text: str | None = None  # default: the task instruction
    lr: float = 3e-2
    warmup_ratio: float = 0.1

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from peft import PromptTuningConfig, get_peft_model
        if self.init not in ("text", "random"):
            raise TailorError(f"prompt-tuning init '{self.init}' is not one of text, random")
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.n_virtual_tokens,
                                 prompt_tuning_init="TEXT" if self.init == "text" else "RANDOM",
                                 prompt_tuning_init_text=(self.init_text or task.instruction) if self.init == "text" else None,
                                 tokenizer_name_or_path=str(base.path) if self.init == "text" else None)
        torch.manual_seed(self.seed)
        model = get_peft_model(_frozen_copy(base), cfg)
        return fit_arm(self, "prompt-tuning", task, base, run, model, layout="padded",
                       soft_tokens=self.n_virtual_tokens)


@dataclass
class Prefix(TrainConfig):
    """Prefix tuning: trainable key/value vectors prepended at every layer."""

    n_virtual_tokens: int = 20
    projection: bool = False  # reparameterise through an MLP during training (as in the paper)
    lr: float = 1e-2
    warmup_ratio: float = 0.1

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from peft import PrefixTuningConfig, get_peft_model
        cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.n_virtual_tokens,
                                 prefix_projection=self.projection)
        torch.manual_seed(self.seed)
        model = get_peft_model(_frozen_copy(base), cfg)
        return fit_arm(self, "prefix", task, base, run, model, layout="padded")


@dataclass
class IA3(TrainConfig):
    """(IA)^3: learned per-channel rescaling of keys, values and the MLP's inner activations."""

    target_modules: list | None = None         # default: peft's choice for the model type
    feedforward_modules: list | None = None
    lr: float = 5e-3

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from peft import IA3Config, get_peft_model
        kwargs = {}
        if self.target_modules:
            kwargs = {"target_modules": self.target_modules,
                      "feedforward_modules": self.feedforward_modules or []}
        torch.manual_seed(self.seed)
        model = get_peft_model(_frozen_copy(base), IA3Config(task_type="CAUSAL_LM", **kwargs))
        return fit_arm(self, "ia3", task, base, run, model)


@dataclass
class BitFit(TrainConfig):
    """Bias terms only (zero-initialised biases added to the Llama projections; see module doc)."""

    lr: float = 1e-3

    def fit(self, task: Task, base: Base, run=None) -> Adapted:
        from ..export import add_zero_biases
        model = _frozen_copy(base)
        for p in add_zero_biases(model):
            p.requires_grad_(True)
        return fit_arm(self, "bitfit", task, base, run, model)


FINETUNE_METHODS = {"full": Full, "lora": LoRA, "qlora": QLoRA, "prompt-tuning": PromptTuning,
                    "prefix": Prefix, "ia3": IA3, "bitfit": BitFit}
