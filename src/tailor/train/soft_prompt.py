"""Reading a trained soft prompt back as words: each virtual token's nearest vocabulary tokens
by cosine similarity to the input embedding matrix (as Lester et al. 2021 read their soft prompts)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import TailorError


def soft_prompt(folder: Path) -> torch.Tensor:
    tensors = load_file(str(Path(folder) / "adapter_model.safetensors"))
    for name, t in tensors.items():
        if name.endswith("prompt_embeddings"):
            return t.float()
    raise TailorError(f"{folder}: adapter_model.safetensors holds no prompt_embeddings tensor")


def nearest_tokens(folder: Path, base, top: int = 3) -> list[list[tuple[str, float]]]:
    prompt = torch.nn.functional.normalize(soft_prompt(folder), dim=-1)
    vocab = torch.nn.functional.normalize(base.model.get_input_embeddings().weight.detach().float(), dim=-1)
    sims = prompt @ vocab.T
    values, ids = sims.topk(top, dim=-1)
    return [[(base.tokenizer.decode([int(i)]), float(v)) for v, i in zip(vs, is_)]
            for vs, is_ in zip(values, ids)]
