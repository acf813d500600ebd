"""LoRA's training step as one autograd function per layer (plain `nn.Linear` bases).

peft computes `base(x) + B(A(dropout(x))) * scaling` as separate autograd ops. On a 576-wide
model the matmuls are small, so the ops around them cost as much as the matmuls: the dropout
(mask, select, rescale), the scaling and the add each read and write an activation-sized tensor
forward and again backward. Here:
- dropout's 1/(1-p) rescale is folded into the LoRA scaling, and dropout itself is a scatter of
  zeros at the sampled sites (forward, and on the gradient backward), no mask-sized pass;
- the scaling and the add ride on `addmm` (forward: into the base output; backward: into the
  base's input gradient); the scaling is applied to the rank-r tensors, not the wide ones;
- the frozen base weight gets no gradient, and the first layer's input (frozen embeddings)
  none either.
Same function, same parameters, same adapter files: only the arithmetic is regrouped. Layers
this does not cover (quantised bases, DoRA, several active adapters, merged) keep peft's forward.
"""

from __future__ import annotations

import contextlib
import logging
import types

import torch
from torch import nn

from .dropout import drop_sites, zero_sites

log = logging.getLogger("tailor")


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scale, sites):
        x2 = x.reshape(-1, x.shape[-1])
        y = nn.functional.linear(x2, weight, bias)
        xd = x2 if sites is None else zero_sites(x2.clone(), sites)
        h = xd @ a.t()
        y.addmm_(h, b.t(), alpha=scale)
        ctx.save_for_backward(weight, a, b, xd, h, sites)
        ctx.scale, ctx.x_shape = scale, x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        weight, a, b, xd, h, sites = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gh = g @ b                                   # [tokens, r]
        grad_x = None
        if ctx.needs_input_grad[0]:
            gx = gh @ a
            if sites is not None:
                zero_sites(gx, sites)
            grad_x = torch.addmm(gx, g, weight, beta=ctx.scale).view(ctx.x_shape)
        grad_a = (gh * ctx.scale).t() @ xd
        grad_b = g.t() @ (h * ctx.scale)
        return grad_x, None, None, grad_a, grad_b, None, None


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    if args or kwargs or self.merged or self.disable_adapters or name not in self.lora_A or name in self.lora_variant:
        return type(self).forward(self, x, *args, **kwargs)
    base, a, b = self.base_layer, self.lora_A[name].weight, self.lora_B[name].weight
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else base.weight.dtype
    dropout = self.lora_dropout[name]
    p = getattr(dropout, "p", 0.0) if dropout.training else 0.0
    scale = self.scaling[name] / (1.0 - p)
    x = x.to(dtype)
    sites = drop_sites(x, p) if p > 0 else None
    bias = base.bias.to(dtype) if base.bias is not None else None
    return _LoraLinear.apply(x, base.weight.to(dtype), bias, a.to(dtype), b.to(dtype), scale, sites)


@contextlib.contextmanager
def fused_lora(model: nn.Module):
    """Within the block, the model's LoRA layers on plain linear bases run `_LoraLinear`."""
    from peft.tuners.lora.layer import Linear, LoraLayer
    lora = [m for m in model.modules() if isinstance(m, LoraLayer)]
    layers = [m for m in lora if isinstance(m, Linear) and type(m.base_layer) is nn.Linear]
    if len(layers) < len(lora):
        log.info("%d of %d LoRA layers keep peft's forward (quantised or non-linear bases)",
                 len(lora) - len(layers), len(lora))
    for m in layers:
        m.forward = types.MethodType(_fused_forward, m)
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward
