"""Attention for packed training rows, computed example by example.

A packed row holds several examples with restarting position ids; sdpa then runs over the whole
row under a block-diagonal mask, and torch's CPU flash kernel spends most of its time on blocks
the mask throws away (a fifth of a LoRA step on the tweet task). Here the examples are gathered
out of the rows into one batch padded to the longest example, attention runs there under a plain
causal mask (scores and softmax in fp32, as the flash kernel keeps them; the value product and
the backward's big matmuls in bf16; grouped-query heads share their key/value without copies),
and the outputs are gathered back. Same attention, a fraction of the work.

Used only by the training loop, only for packed rows whose position ids restart at 0 and count
up by one per example; anything else (a 4D mask, sliding windows, soft-capping, dropout) falls
back to sdpa with the block mask transformers built.
"""

from __future__ import annotations

import contextlib
import functools

import torch

NAME = "tailor_segments"


class _Layout:
    """Where each example of a packed batch sits: gather indices in both directions."""

    def __init__(self, position_ids: torch.Tensor, heads: int, kv_heads: int):
        flat = position_ids.reshape(-1)
        starts = (flat == 0).nonzero().squeeze(1)
        lengths = torch.diff(starts, append=torch.tensor([flat.numel()], device=flat.device))
        segment = torch.cumsum(flat == 0, 0) - 1
        self.ok = bool(starts.numel()) and starts[0].item() == 0 and bool(
            (flat == torch.arange(flat.numel(), device=flat.device) - starts[segment]).all())
        if not self.ok:
            return
        self.n, self.length = starts.numel(), int(lengths.max())
        j = torch.arange(self.length, device=flat.device)
        # padded slots repeat an example's last token: the causal mask hides them from real queries
        token = starts[:, None] + torch.minimum(j[None, :], lengths[:, None] - 1)           # [n, length]
        head, kv_head = torch.arange(heads, device=flat.device), torch.arange(kv_heads, device=flat.device)
        self.q_index = (token[:, None, :] * heads + head[None, :, None]).reshape(-1)
        self.kv_index = (token[:, None, :] * kv_heads + kv_head[None, :, None]).reshape(-1)
        self.back_index = ((segment[:, None] * heads + head[None, :]) * self.length + flat[:, None]).reshape(-1)
        self.group = heads // kv_heads
        self.mask = torch.full((self.length, self.length), float("-inf"), device=flat.device).triu_(1) \
            .repeat(self.group, 1)                                                         # [group*length, length]


class _CausalAttention(torch.autograd.Function):
    """softmax(q k^T * scale + mask) v with q [n, kv, group*length, d], k and v [n, kv, length, d]."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):
        # Autocast would run the fp32 matmul below in bf16 and round the scores (a score of 20 is
        # then off by up to 0.06, its probability by 6%): switched off, the scores and the softmax
        # stay fp32, as in sdpa's flash kernel. The probabilities meet v in bf16.
        with torch.autocast(q.device.type, enabled=False):
            s = torch.matmul(q.float(), k.float().transpose(-1, -2)).mul_(scale).add_(mask)
            p = torch.softmax(s, -1).to(q.dtype)
            o = torch.matmul(p, v)
        ctx.save_for_backward(q, k, v, p, o)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, grad):
        q, k, v, p, o = ctx.saved_tensors
        with torch.autocast(q.device.type, enabled=False):
            grad = grad.contiguous()
            grad_v = torch.matmul(p.transpose(-1, -2), grad)
            # fp32: the row sum is subtracted from it next, and bf16 rounding would dominate the difference
            grad_p = torch.matmul(grad.float(), v.float().transpose(-1, -2))
            row = (grad.float() * o.float()).sum(-1, keepdim=True)
            grad_s = grad_p.sub_(row).mul_(p).to(q.dtype)
            grad_q = torch.matmul(grad_s, k).mul_(ctx.scale)
            grad_k = torch.matmul(grad_s.transpose(-1, -2), q).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None, None


_cache: dict = {}
_fallbacks = [0]   # calls sent to sdpa since the last `take_fallbacks()`


def _layout(position_ids: torch.Tensor, heads: int, kv_heads: int) -> _Layout:
    # one layout per forward pass: every layer gets the same position_ids tensor
    if _cache.get("ids") is not position_ids or _cache.get("heads") != (heads, kv_heads):
        _cache.update(ids=position_ids, heads=(heads, kv_heads), layout=_Layout(position_ids, heads, kv_heads))
    return _cache["layout"]


def segment_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                              position_ids=None, **kwargs):
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    simple = (position_ids is not None and position_ids.shape == (batch, length) and not dropout
              and kwargs.get("sliding_window") is None and kwargs.get("softcap") is None
              and query.dtype in (torch.bfloat16, torch.float16, torch.float32))
    layout = _layout(position_ids, heads, kv_heads) if simple else None
    if layout is None or not layout.ok:
        _fallbacks[0] += 1
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      position_ids=position_ids, **kwargs)
    n, seg, group = layout.n, layout.length, layout.group
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else value.dtype
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)   # rotary may leave q, k in fp32
    # [batch, heads, length, dim] -> rows of (token, head) -> [n, kv, group*seg, dim]
    q = query.transpose(1, 2).reshape(-1, dim).index_select(0, layout.q_index).view(n, kv_heads, group * seg, dim)
    k = key.transpose(1, 2).reshape(-1, dim).index_select(0, layout.kv_index).view(n, kv_heads, seg, dim)
    v = value.transpose(1, 2).reshape(-1, dim).index_select(0, layout.kv_index).view(n, kv_heads, seg, dim)
    scale = scaling if scaling is not None else dim ** -0.5
    o = _CausalAttention.apply(q, k, v, layout.mask, scale)
    out = o.reshape(-1, dim).index_select(0, layout.back_index).view(batch, length, heads, dim)
    return out, None


@functools.cache
def _register() -> None:
    """transformers dispatches on config._attn_implementation: the name gets this function and
    sdpa's mask (built once per forward, and what the fallback uses)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, segment_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def usable(model) -> bool:
    config = model.config
    return (config._attn_implementation == "sdpa" and getattr(config, "sliding_window", None) is None
            and not getattr(config, "attn_logit_softcapping", None))


@contextlib.contextmanager
def segment_attention(model):
    """Within the block a (transformers, not peft-wrapped) model that uses sdpa attends
    example by example over packed rows."""
    if not usable(model):
        yield False
        return
    _register()
    configs = [m.config for m in model.modules() if getattr(getattr(m, "config", None), "_attn_implementation", None)
               == "sdpa"]
    for c in configs:
        c._attn_implementation = NAME
    try:
        yield True
    finally:
        for c in configs:
            c._attn_implementation = "sdpa"
        _cache.clear()


def take_fallbacks() -> int:
    """How many attention calls ran sdpa instead (rows not packed with restarting positions:
    correct, only slower) since the last call; the training loop reports it once per run."""
    count, _fallbacks[0] = _fallbacks[0], 0
    return count
