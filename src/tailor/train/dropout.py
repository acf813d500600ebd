"""Dropout that draws one random number per dropped element, not one per element.

torch's CPU generator makes a few hundred million values a second here, so `nn.Dropout` on
LoRA's seven inputs per layer (a Bernoulli draw for every activation) was a third of a LoRA
training step. The gaps between the dropped elements of an i.i.d. Bernoulli(p) mask are
geometric: drawing the gaps (p * n uniforms, inverted) gives the same distribution of masks, up
to the float32 rounding of the uniforms, for a twentieth of the random numbers at p = 0.05. The
draws come from torch's seeded generator, so runs stay reproducible, resumable, and recomputable
under gradient checkpointing (which restores the generator state). On CUDA a plain Bernoulli
mask is cheap and is used as is.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def drop_sites(x: torch.Tensor, p: float) -> torch.Tensor:
    """Which elements of `x` an i.i.d. Bernoulli(p) dropout zeroes: flat indices (CPU) or a
    boolean mask (CUDA)."""
    if x.device.type != "cpu":
        return torch.rand(x.shape, device=x.device) < p
    n = x.numel()
    log_keep = math.log1p(-p)
    expected = n * p
    chunk = int(expected + 6 * math.sqrt(expected) + 64)   # almost always one draw covers n
    parts, last = [], -1
    while last < n:
        # gap ~ Geometric(p) on {1, 2, ...}: P(gap > k) = (1 - p)^k
        gaps = torch.log1p(-torch.rand(chunk)).div_(log_keep).floor_().long().add_(1)
        sites = gaps.cumsum_(0).add_(last)
        last = int(sites[-1])
        parts.append(sites)
    sites = torch.cat(parts) if len(parts) > 1 else parts[0]
    return sites[: int(torch.searchsorted(sites, n))]


def zero_sites(t: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
    """Zeroes the elements `drop_sites` chose, in place (`t` contiguous)."""
    if sites.dtype == torch.bool:
        return t.masked_fill_(sites, 0)
    t.view(-1)[sites] = 0
    return t


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sites, scale):
        ctx.save_for_backward(sites)
        ctx.scale = scale
        return zero_sites((x * scale).contiguous(), sites)

    @staticmethod
    def backward(ctx, grad):
        (sites,) = ctx.saved_tensors
        return zero_sites((grad * ctx.scale).contiguous(), sites), None, None


class SparseDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return _Dropout.apply(x, drop_sites(x, self.p), 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
