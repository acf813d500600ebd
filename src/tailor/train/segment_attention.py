"""Attention for packed training rows, computed example by example.

A packed row holds several examples with restarting position ids; sdpa then runs over the whole
row under a block-diagonal mask, and torch's CPU flash kernel spends its time on every block of
the row, most of which the mask throws away when a row holds many short examples. Here the
examples are gathered out of the rows into one batch padded to the longest example, attention
runs there under a plain causal mask (grouped-query heads share their key/value without
copies), and the outputs are gathered back.

Per score it costs about what flash does over short rows (twice as much over long ones), so it
is used only where it computes fewer scores than the packed rows would (examples x longest
example^2 <= rows x row length^2: many short examples per row); rows of one or two long examples
keep sdpa, which also keeps no score matrix for the backward (`bench/packed_attention.py`).
Used only by the training loop, only for packed rows whose position ids restart at 0 and count
up by one per example; anything else (a 4D mask, sliding windows, soft-capping,
dropout) falls back to sdpa with the block mask transformers built.
"""

from __future__ import annotations

import functools

import torch

NAME = "tailor_segments"


class _Layout:
    """Where each example of a packed batch sits: gather indices in both directions."""

    def __init__(self, position_ids: torch.Tensor, heads: int, kv_heads: int, always: bool = False):
        """`always`: build the gathers even where sdpa over the rows is cheaper (to time both)."""
        flat = position_ids.reshape(-1)
        starts = (flat == 0).nonzero().squeeze(1)
        lengths = torch.diff(starts, append=torch.tensor([flat.numel()], device=flat.device))
        segment = torch.cumsum(flat == 0, 0) - 1
        self.ok = bool(starts.numel()) and starts[0].item() == 0 and bool(
            (flat == torch.arange(flat.numel(), device=flat.device) - starts[segment]).all())
        if not self.ok:
            return
        self.n, self.length = starts.numel(), int(lengths.max())
        rows, width = position_ids.shape
        self.cheaper = self.n * self.length ** 2 <= rows * width ** 2   # scores computed: per example vs per row
        if not (self.cheaper or always):
            return
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
    """softmax(q k^T * scale + mask) v with q [n, kv, group*length, d], k and v [n, kv, length, d].

    In bf16 every matmul runs in bf16 (fp32 matmuls cost 8x here) but rounds its output to bf16,
    relative to the output's size: a score of 20 would be off by up to 0.06 and its probability
    by 6%. So what matters is subtracted inside the matmul's fp32 accumulation (baddbmm adds its
    input there before the one rounding): each row's max score before the softmax, so the scores
    that carry the probability come out small and nearly exact; and, backward, the row term of
    the softmax gradient, so grad_p - row is rounded relative to itself, not to grad_p."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):
        n, kv, rows, d = q.shape
        qf, kt, vf = q.reshape(n * kv, rows, d), k.reshape(n * kv, -1, d).transpose(1, 2), v.reshape(n * kv, -1, d)
        with torch.autocast(q.device.type, enabled=False):
            if q.dtype != torch.float32:
                top = torch.baddbmm(mask, qf, kt, alpha=scale).amax(-1, keepdim=True)   # a bf16 value: exact
                mask = mask - top
            p = torch.softmax(torch.baddbmm(mask, qf, kt, alpha=scale), -1)   # fp32 inside, q's dtype out
            o = torch.bmm(p, vf).view(n, kv, rows, d)
        ctx.save_for_backward(q, k, v, p, o)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, grad):
        q, k, v, p, o = ctx.saved_tensors
        n, kv, rows, d = q.shape
        g = grad.reshape(n * kv, rows, d)
        qf, kf, vf = q.reshape(n * kv, rows, d), k.reshape(n * kv, -1, d), v.reshape(n * kv, -1, d)
        with torch.autocast(q.device.type, enabled=False):
            grad_v = torch.bmm(p.transpose(1, 2), g).view(n, kv, -1, d)
            row = (grad.float() * o.float()).sum(-1, keepdim=True).reshape(n * kv, rows, 1)
            head = row.to(q.dtype)                                  # its q-dtype part goes into the matmul,
            grad_s = torch.baddbmm(head.neg().expand(-1, -1, p.shape[-1]), g, vf.transpose(1, 2))
            if q.dtype != torch.float32:
                grad_s.sub_((row - head.float()).to(q.dtype))       # the remainder after
            grad_s.mul_(p)
            grad_q = torch.bmm(grad_s, kf).mul_(ctx.scale).view(n, kv, rows, d)
            grad_k = torch.bmm(grad_s.transpose(1, 2), qf).mul_(ctx.scale).view(n, kv, -1, d)
        return grad_q, grad_k, grad_v, None, None


_cache: dict = {}
_counts = dict.fromkeys(("per_example", "packed", "fallback"), 0)   # since the last `take_counts()`


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
    kind = "fallback" if layout is None or not layout.ok else "packed" if not layout.cheaper else "per_example"
    _counts[kind] += 1
    if kind != "per_example":
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
    o = _CausalAttention.apply(q, k, v, layout.mask.to(dtype), scale)
    out = o.reshape(-1, dim).index_select(0, layout.back_index).view(batch, length, heads, dim)
    return out, None


@functools.cache
def register() -> None:
    """transformers dispatches on the attention implementation's name: the name gets this
    function and sdpa's mask (built once per forward, and what the fallback uses). Training
    selects it with `set_attn_implementation` (train/kernels.py)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, segment_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def forget_layout() -> None:
    """Drops the last batch's layout (its index tensors) once training is done with it."""
    _cache.clear()


def usable(model) -> bool:
    config = model.config
    return (config._attn_implementation == "sdpa" and getattr(config, "sliding_window", None) is None
            and not getattr(config, "attn_logit_softcapping", None))


def take_counts() -> dict:
    """Attention calls since the last call, by path: `per_example`; `packed` (sdpa over the rows,
    where that computes fewer scores); `fallback` (sdpa: rows not packed with restarting
    positions, correct but slower). The training loop reports them once per run."""
    counts = dict(_counts)
    _counts.update(dict.fromkeys(_counts, 0))
    return counts
