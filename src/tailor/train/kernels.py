"""Tailor's CPU training kernels as one policy: where they run, and that they are given back.

Three kernels, each measured against what it replaces (`bench/step_profile.py`,
`bench/packed_attention.py`):
- per-example attention over packed rows (`segment_attention`), chosen through transformers'
  own `attn_implementation` mechanism (registered in its AttentionInterface);
- LoRA layers as one fused autograd function each (`fused_lora`);
- dropout that draws random numbers only for the elements it drops (`dropout`).
They are on for single-process CPU training (`kernels: auto`), where a 2-core machine gains the
most; on CUDA and under several processes the field's kernels (flash / sdpa, plain dropout,
peft's layers) run. When training ends every swapped module and attribute is given back, so an
arm's model is a plain transformers / peft model again.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

log = logging.getLogger("tailor")


KERNELS = ("attention", "lora", "dropout")


def wanted(setting, device: torch.device, processes: int = 1) -> tuple[str, ...]:
    """The kernels a run uses: a list names them; on = all; auto = all on a single-process CPU run."""
    if isinstance(setting, list):
        return tuple(k for k in KERNELS if k in setting)
    if setting == "on" or (setting == "auto" and device.type == "cpu" and processes == 1):
        return KERNELS
    return ()


class TrainingKernels:
    """Applies the kernels on entry and gives everything back on exit; `paused()` restores the
    stock attention for a while (dev evaluation runs the engine's own masks)."""

    def __init__(self, model: nn.Module, kernels: tuple[str, ...] = KERNELS):
        self.model, self.kernels = model, tuple(kernels)
        self._stack = contextlib.ExitStack()
        self._attention: tuple | None = None   # (model, the implementation it had)

    @property
    def enabled(self) -> bool:
        return bool(self.kernels)

    def __enter__(self):
        from .fused_lora import fused_lora
        if "dropout" in self.kernels:
            self._stack.enter_context(_sparse_dropout(self.model))
        if "lora" in self.kernels:
            self._stack.enter_context(fused_lora(self.model))
        if "attention" in self.kernels:
            self._set_attention()
            self._stack.callback(self._unset_attention)
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def _set_attention(self) -> None:
        from ..engine import causal_lm_of
        from .segment_attention import NAME, register, usable
        causal = causal_lm_of(self.model)
        if usable(causal):
            register()
            self._attention = (causal, causal.config._attn_implementation)
            causal.set_attn_implementation(NAME)

    def _unset_attention(self) -> None:
        if self._attention:
            from .segment_attention import forget_layout
            causal, previous = self._attention
            causal.set_attn_implementation(previous)
            forget_layout()

    @contextlib.contextmanager
    def paused(self):
        if not self._attention:
            yield
            return
        self._unset_attention()
        try:
            yield
        finally:
            self._set_attention()


@contextlib.contextmanager
def _sparse_dropout(model: nn.Module):
    """`nn.Dropout` modules swapped for `SparseDropout` (CPU only), put back on exit."""
    from .dropout import SparseDropout
    if next(model.parameters()).device.type != "cpu":
        yield 0
        return
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Dropout and 0 < child.p < 1]
    for parent, name, child in swaps:
        setattr(parent, name, SparseDropout(child.p))
    try:
        yield len(swaps)
    finally:
        for parent, name, child in swaps:
            setattr(parent, name, child)
