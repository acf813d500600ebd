"""Artifacts of the fine-tuning arms, in the formats the field already reads:

- PEFT arms (lora, qlora, ia3, prompt-tuning, prefix): a standard PEFT adapter folder that
  `peft.PeftModel.from_pretrained(base, folder)` loads unchanged;
- full: a Hugging Face model folder (safetensors) that `AutoModelForCausalLM` loads;
- bitfit: the trained bias tensors only (`bitfit.safetensors`); merging them gives an HF folder
  whose config turns the Llama bias flags on.

Every artifact folder also holds `tailor_adapter.json`: the method, the base model and the
prompt recipe (instruction, kind, prompt budget), so `load_adapted` formats prompts exactly as
training did.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from .errors import TailorError
from .utils import atomic_write_json

log = logging.getLogger("tailor")

META = "tailor_adapter.json"
PEFT_METHODS = ("lora", "qlora", "ia3", "prompt-tuning", "prefix")
MERGEABLE = ("lora", "qlora", "ia3", "full", "bitfit")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def save_artifact(model, tokenizer, method: str, folder: Path, meta: dict) -> int:
    """Writes the artifact of a trained model; returns its size in bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if method in PEFT_METHODS:
        model.save_pretrained(folder, safe_serialization=True)
    elif method == "full":
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    elif method == "bitfit":
        from .train.checkpoint import save_weights
        save_weights(folder / "bitfit.safetensors", bias_tensors(model))
    else:
        raise TailorError(f"no artifact format for method '{method}'")
    atomic_write_json(folder / META, {"method": method, **meta})
    return dir_bytes(folder)


def bias_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if n.endswith(".bias")}


def add_zero_biases(model) -> list[torch.nn.Parameter]:
    """BitFit on a model without biases (the Llama family): give every attention and MLP
    projection a zero bias (so the function is unchanged at step 0) and set the config flags
    that make a saved folder load with those biases."""
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


def read_meta(run_or_artifact: str | Path) -> tuple[Path, dict]:
    path = Path(run_or_artifact)
    for folder in (path, path / "adapter", path / "model"):
        if (folder / META).exists():
            return folder, json.loads((folder / META).read_text())
    raise TailorError(f"{path}: not a trained run or artifact folder (no {META} found in it, adapter/ or model/)")


def load_model(folder: Path, meta: dict, base):
    """The trained model from an artifact folder, on top of a copy of `base` (never mutated)."""
    method = meta["method"]
    if method == "full":
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=base.dtype, use_safetensors=True)
        return model.to(base.device).eval()
    if method == "qlora":
        from .methods.finetune import quantized_base
        model = quantized_base(base)
    else:
        model = copy.deepcopy(base.model)
    if method == "bitfit":
        from safetensors.torch import load_file
        add_zero_biases(model)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in load_file(str(folder / "bitfit.safetensors")).items():
                params[name].copy_(t.to(params[name].dtype))
        return model.eval()
    from peft import PeftModel

    from .methods.finetune import for_inference  # (its module's warning filters apply here too)
    model = PeftModel.from_pretrained(model, folder)
    for_inference(model, method, base.dtype)
    return model.eval()


def load_adapted(run_dir: str | Path, base):
    """An `Adapted` from a training run directory (or its artifact folder) on a loaded base."""
    from .methods.base import Adapted
    from .prompts import PromptBuilder
    folder, meta = read_meta(run_dir)
    if meta.get("base_weights_id") and _weights_only(meta["base_weights_id"]) != _weights_only(base.weights_id):
        log.warning("adapter %s was trained on %s, loading it on %s", folder, meta["base_weights_id"], base.weights_id)
    model = load_model(folder, meta, base)
    builder = PromptBuilder(base.tokenizer, meta["kind"], meta["instruction"], meta.get("max_prompt_tokens"))
    # The id names the base as loaded now (its dtype changes results) plus the trained weights.
    weights_id = f"{base.weights_id}+{meta['method']}:{meta['digest'][:16]}"
    return Adapted(meta["method"], model, base.tokenizer, weights_id, builder,
                   trainable_params=meta.get("trainable_params", 0), artifact_bytes=dir_bytes(folder),
                   train_time_s=meta.get("train_time_s", 0.0), train_tokens=meta.get("train_tokens", 0),
                   artifact_dir=folder, info={"loaded_from": str(folder)})


def _weights_only(weights_id: str) -> str:
    return weights_id.rsplit(":", 1)[0]  # name:hash without the dtype


def merge(run_dir: str | Path, out: str | Path, base) -> Path:
    """Writes a merged safetensors Hugging Face folder that AutoModelForCausalLM loads."""
    folder, meta = read_meta(run_dir)
    method = meta["method"]
    if method not in MERGEABLE:
        raise TailorError(f"a {method} artifact is not a weight delta and cannot be merged into the base "
                          "(serve it as an adapter: tailor eval --adapter RUN)")
    if method == "qlora":
        raise TailorError("merging a qlora adapter needs the unquantised base: load the base in bf16/fp32 and "
                          "merge the adapter folder with peft (rounding differs from the 4-bit model it was trained on)")
    model = load_model(folder, meta, base)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TailorError(f"{out} exists and is not empty; choose a new folder for the merged model")
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    base.tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "tailor_merged.json", {"from": str(folder), **meta})
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
