"""Dropout whose mask costs a quarter of the random numbers on CPU.

torch's CPU generator produces about 250M values/s here, so `nn.Dropout` on LoRA's seven inputs
per layer was a third of a LoRA training step. One 64-bit draw holds four 16-bit lanes, and a
lane below a threshold drops its element: the same independent Bernoulli mask (drop probability
rounded to 1/65536), from the same seeded generator, so runs stay reproducible and resumable.
CUDA's fused dropout is already cheap and is left alone.
"""

from __future__ import annotations

import torch
from torch import nn


class LaneDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p
        # int16 lanes are uniform on [-32768, 32767]; the lowest round(p * 65536) values drop
        self.threshold = -32768 + round(p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2 ** 63, 2 ** 63 - 1)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return torch.where(keep, x, 0).mul_(1.0 / (1.0 - (self.threshold + 32768) / 65536))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_lane_dropout(model: nn.Module) -> int:
    """Replaces the `nn.Dropout` modules of a model on CPU by `LaneDropout`; returns how many."""
    if next(model.parameters()).device.type != "cpu":
        return 0
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Dropout and child.p > 0]
    for parent, name, child in swaps:
        setattr(parent, name, LaneDropout(child.p))
    return len(swaps)
