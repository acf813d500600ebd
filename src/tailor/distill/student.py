"""The student: a smaller model that learns from the teacher.

Either another model (a bundled smaller base, or a Hugging Face folder), or the base itself with
only some of its decoder layers kept, initialised from the kept layers as DistilBERT (Sanh et
al. 2019: every other layer) and Minitron (Muralidharan et al. 2024: depth pruning, then
distillation) do. Kept layers are spread evenly and always include the first and the last: the
first reads the embeddings and the last writes what the head reads, so keeping them keeps the
model's input and output conventions. The pruned model is a plain transformers model of the same
class with a smaller `num_hidden_layers`, so `save_pretrained` gives a standard folder that
`AutoModelForCausalLM` loads.
"""

from __future__ import annotations

import copy
import logging

import torch

from ..errors import TailorError

log = logging.getLogger("tailor")


def kept_layers(total: int, keep: int) -> list[int]:
    """`keep` layer indices out of `total`, evenly spread, first and last included."""
    if not 1 <= keep <= total:
        raise TailorError(f"student: layers must be between 1 and the base's {total} layers, got {keep}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def decoder_layers(model) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TailorError(f"student: cannot prune layers of a {type(model).__name__} (no model.layers list); "
                          "name a smaller model as the student instead")
    return layers


def pruned_copy(model, keep: int) -> tuple[torch.nn.Module, list[int]]:
    """A trainable copy of `model` with `keep` of its decoder layers (the original is untouched)."""
    layers = decoder_layers(model)
    chosen = kept_layers(len(layers), keep)
    student = copy.deepcopy(model)
    kept = torch.nn.ModuleList([decoder_layers(student)[i] for i in chosen])
    for new_index, layer in enumerate(kept):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index   # the KV cache is indexed by position in the stack
    student.model.layers = kept
    config = student.config
    config.num_hidden_layers = len(chosen)
    if getattr(config, "layer_types", None):   # per-layer attention kinds (sliding or full) follow their layers
        config.layer_types = [config.layer_types[i] for i in chosen]
    for p in student.parameters():
        p.requires_grad_(True)
    return student, chosen

