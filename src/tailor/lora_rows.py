"""Many LoRA adapters of one base in one forward, each row its own adapter, at inference.

peft's mixed-batch forward (`adapter_names`) loops over the adapters in every LoRA layer with
index masks and its general forward's checks: with 210 LoRA layers in SmolLM2-135M, one decoding
step of one row took 94 ms against the bare base's 32 ms on this CPU (bench/serve_load.py's
machine). Here every LoRA layer of the served adapters is two matrices: A of all adapters side by
side ([in, sum of ranks]) and B stacked with each adapter's scaling folded in ([sum of ranks, out]),
and a row mask ([rows, 1, sum of ranks], ones over the row's own adapter's columns) selects each
row's adapter: x @ A, masked, @ B, added to the base layer's output. Two matmuls and a multiply per
layer for any mix of adapters; the extra work is the other adapters' rank columns (48 for three
rank-16 adapters beside a 576-wide layer). Rows of the bare base have an all-zero mask.

Only plain LoRA (no DoRA or other variants, eval mode: dropout off) takes this path; `attach`
says whether it could, and the engine keeps peft's forward otherwise.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class RowLoRA:
    def __init__(self, names: list[str]):
        self.names = list(names)
        self.mask: torch.Tensor | None = None
        self.slots: dict[str, slice] = {}
        self.layers: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    @classmethod
    def attach(cls, model, names: list[str]) -> RowLoRA | None:
        """Swaps the forward of every LoRA layer of `model` (a PeftModel with adapters `names`), or
        None (nothing changed) where a layer is not plain LoRA."""
        from peft.tuners.lora import Linear
        layers = [m for m in model.modules() if isinstance(m, Linear)]
        if not layers or any(m.lora_variant or m.merged or set(m.lora_A) != set(names) for m in layers):
            return None
        self = cls(names)
        start = 0
        for n in names:
            r = layers[0].lora_A[n].weight.shape[0]
            self.slots[n], start = slice(start, start + r), start + r
        for m in layers:
            if any(m.lora_A[n].weight.shape[0] != self.slots[n].stop - self.slots[n].start for n in names):
                return None   # ranks differ from layer to layer (rank_pattern): keep peft's forward
            a = torch.cat([m.lora_A[n].weight.t() for n in names], 1).contiguous()
            b = torch.cat([m.lora_B[n].weight.t() * m.scaling[n] for n in names], 0).contiguous()
            self.layers.append((m, a, b))
        for m, a, b in self.layers:
            m.forward = self._forward(m, a, b)
        self.width = start
        return self

    def _forward(self, m, a: torch.Tensor, b: torch.Tensor):
        base = m.base_layer

        def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            out = base(x, *args, **kwargs)
            if self.mask is None:
                return out
            return out + ((x.to(a.dtype) @ a) * self.mask) @ b
        return forward

    @contextlib.contextmanager
    def rows(self, adapters: list[str | None], device) -> None:
        mask = torch.zeros(len(adapters), 1, self.width, device=device)
        for i, name in enumerate(adapters):
            if name is not None:
                mask[i, :, self.slots[name]] = 1
        dtype = self.layers[0][1].dtype
        self.mask = mask.to(dtype)
        try:
            yield
        finally:
            self.mask = None
