"""The training loop's own kernels compute what they replace: sparse dropout is a seeded
Bernoulli(p) dropout, the fused LoRA layer equals peft's, per-example attention equals sdpa over
packed rows (values and gradients, in fp32 where they must agree to rounding)."""

from __future__ import annotations

import contextlib
import copy
import random

import pytest
import torch

from tailor.datasets import load_task
from tailor.engine import causal_lm_of
from tailor.prompts import builder_for
from tailor.train.data import encode_examples, pack
from tailor.train.dropout import SparseDropout, drop_sites
from tailor.train.fused_lora import fused_lora
from tailor.train.kernels import TrainingKernels, _sparse_dropout
from tailor.train.losses import SFT
from tailor.train.segment_attention import NAME, register, segment_attention_forward, take_counts


def batch_loss(model, batch):
    return SFT()(model, batch)[0]


@contextlib.contextmanager
def segment_attention(causal):
    """Per-example attention alone, selected as the training kernels select it."""
    register()
    causal.set_attn_implementation(NAME)
    try:
        yield
    finally:
        causal.set_attn_implementation("sdpa")


def test_sparse_dropout_is_a_seeded_bernoulli_mask_with_the_right_rate():
    drop = SparseDropout(0.1).train()
    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b)                                   # same seed, same mask
    assert abs((a == 0).float().mean().item() - 0.1) < 0.005   # drop rate p (200k elements)
    assert abs(a.mean().item() - 1.0) < 0.01                   # kept values scaled by 1/(1-p)
    a.sum().backward()
    assert torch.equal(x.grad, a.detach())                     # backward drops the same elements
    assert torch.equal(drop.eval()(x), x)                      # identity at inference
    gaps = torch.diff(drop_sites(torch.empty(10 ** 6), 0.05)).float()
    assert abs(gaps.mean().item() - 20) < 0.5 and abs((gaps == 1).float().mean().item() - 0.05) < 0.005
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.05), torch.nn.Dropout(0.0))
    plain = model[1]
    with _sparse_dropout(model) as swapped:
        assert swapped == 1 and isinstance(model[1], SparseDropout) and model[1].p == 0.05
    assert model[1] is plain                                   # given back when training ends


def lora_model(base, dropout: float):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                           target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)   # peft starts B at zero: make the adapter matter
    return model


def loss_and_grads(model, batch, fused: bool, attention: bool = False, seed: int = 0):
    model.zero_grad()
    torch.manual_seed(seed)
    with (fused_lora(model) if fused else contextlib.nullcontext(),
          segment_attention(causal_lm_of(model)) if attention else contextlib.nullcontext()):
        loss = batch_loss(model, batch)
        loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def packed_batch(tiny_base):
    task = load_task("tweet-sentiment")
    builder = builder_for(task, tiny_base.tokenizer, tiny_base.model.config)
    enc, _ = encode_examples(builder, random.Random(0).sample(task.splits["train"], 12), 1024)
    return pack(enc, 256, tiny_base.tokenizer.pad_token_id, 16)[0]


def assert_same(a, b, tol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=tol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=tol, atol=tol * grads_a[name].abs().max())


def test_fused_lora_equals_peft_without_dropout(tiny_base, packed_batch):
    model = lora_model(tiny_base.model, 0.0).train()
    assert_same(loss_and_grads(model, packed_batch, fused=False), loss_and_grads(model, packed_batch, fused=True))
    with fused_lora(model) as layers:
        assert layers == 2 * 7                       # every linear of both layers
    assert "forward" not in vars(model.base_model.model.model.layers[0].self_attn.q_proj)  # restored


def test_fused_lora_with_dropout_equals_peft_given_the_same_mask(tiny_base, packed_batch):
    """Dropout masks come from the seeded generator in call order; peft's layers, made to draw the
    same sites through SparseDropout, give the same loss and gradients."""
    model = lora_model(tiny_base.model, 0.2).train()
    with _sparse_dropout(model) as swapped:
        assert swapped == 14
        fused = loss_and_grads(model, packed_batch, fused=True, seed=5)
        plain = loss_and_grads(model, packed_batch, fused=False, seed=5)
        other = loss_and_grads(model, packed_batch, fused=True, seed=6)
    assert_same(plain, fused)
    assert other[0] != pytest.approx(fused[0], rel=1e-6)   # the mask does change with the seed


def test_segment_attention_equals_sdpa_over_packed_rows(tiny_base, packed_batch):
    assert packed_batch.input_ids.shape[0] < len(packed_batch.examples)   # several examples share a row
    model = lora_model(tiny_base.model, 0.0).train()
    take_counts()
    assert_same(loss_and_grads(model, packed_batch, fused=True),
                loss_and_grads(model, packed_batch, fused=True, attention=True))
    layers = model.config.num_hidden_layers
    assert take_counts() == {"per_example": layers, "packed": 0, "fallback": 0}   # every layer took it
    assert causal_lm_of(model).config._attn_implementation == "sdpa"   # restored after the block


def test_segment_attention_falls_back_to_sdpa_for_other_masks(tiny_base):
    """The engine's tree mask (positions that do not restart per example) must not be
    mistaken for packing: the function hands such calls to sdpa with the mask it was given."""
    model = tiny_base.model
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    pos = torch.tensor([[0, 1, 2, 3, 2, 3]])                 # two options after a 2-token prompt
    mask = torch.full((1, 1, 6, 6), float("-inf")).triu(1)
    mask[0, 0, 4:, 2:4] = float("-inf")
    take_counts()
    with torch.no_grad():
        ref = model(input_ids=ids, position_ids=pos, attention_mask=mask).logits
        with segment_attention(model):
            got = model(input_ids=ids, position_ids=pos, attention_mask=mask).logits
    torch.testing.assert_close(got, ref)
    assert take_counts()["fallback"] == model.config.num_hidden_layers        # counted, to be reported


def test_segment_attention_keeps_sdpa_where_it_would_compute_more_scores():
    """Rows of one long example and a short one: per example, both would be padded to the long
    one (2 x 90^2 scores against 100^2 over the row), so the call goes to sdpa over the rows."""
    pos = torch.tensor([list(range(90)) + list(range(10))])
    q, k, v = (torch.randn(1, 2, 100, 8) for _ in range(3))
    block = torch.zeros(1, 1, 100, 100, dtype=torch.bool)
    block[0, 0, :90, :90] = block[0, 0, 90:, 90:] = True
    block &= torch.ones(100, 100, dtype=torch.bool).tril()
    take_counts()
    out = segment_attention_forward(None, q, k, v, block, position_ids=pos)[0]
    assert take_counts() == {"per_example": 0, "packed": 1, "fallback": 0}
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=block).transpose(1, 2)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dim", [64, 48])   # 48: a scale that is no power of two, applied inside the matmul
def test_segment_attention_in_bf16_is_as_accurate_as_sdpa(dim):
    """In bf16 the score and softmax-gradient matmuls round their outputs: output and gradients
    must still be no further from the fp32 result than sdpa's own bf16 kernel is (plain bf16
    scores fail this: 2.8x sdpa's output error)."""
    lengths = [[30, 50, 20], [60, 40]]                       # two packed rows of 100 tokens
    pos = torch.tensor([[i for n in row for i in range(n)] for row in lengths])
    heads, kv_heads = 6, 2
    gen = torch.Generator().manual_seed(0)
    q, k = (2 * torch.randn(2, h, 100, dim, generator=gen) for h in (heads, kv_heads))  # scores of sd 4
    v = torch.randn(2, kv_heads, 100, dim, generator=gen)
    upstream = torch.randn(2, 100, heads, dim, generator=gen)
    q, k, v = (t.bfloat16().float() for t in (q, k, v))      # inputs exactly representable in bf16
    block = torch.zeros(2, 1, 100, 100, dtype=torch.bool)
    for r, row in enumerate(lengths):
        start = 0
        for n in row:
            block[r, 0, start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            start += n

    def run(fn, dtype, autocast):
        inputs = [t.detach().to(dtype, copy=True).requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = fn(*inputs)
        out.float().backward(upstream)
        return [out.float()] + [t.grad.float() for t in inputs]

    def seg(q, k, v):
        return segment_attention_forward(None, q, k, v, None, scaling=dim ** -0.5, position_ids=pos)[0]

    def sdpa(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=block, enable_gqa=True) \
            .transpose(1, 2)

    take_counts()
    truth = run(seg, torch.float32, False)
    torch.testing.assert_close(truth, run(sdpa, torch.float32, False), rtol=1e-4, atol=1e-4)
    ours, theirs = run(seg, torch.bfloat16, True), run(sdpa, torch.bfloat16, True)
    assert take_counts()["per_example"] == 2                 # 5 x 60^2 scores per example, 2 x 100^2 per row
    for name, t, a, b in zip(("output", "grad q", "grad k", "grad v"), truth, ours, theirs):
        err_ours, err_sdpa = ((x - t).norm() / t.norm() for x in (a, b))
        assert err_ours < 1.5 * err_sdpa, f"{name}: {err_ours:.4f} vs sdpa {err_sdpa:.4f}"


def test_training_kernels_are_given_back_when_training_ends(tiny_base):
    """After training an arm's model is a plain peft model: stock dropout modules, peft's own
    LoRA forwards, sdpa attention (nothing left swapped or patched)."""
    model = lora_model(tiny_base.model, 0.1).train()
    causal = causal_lm_of(model)

    def state():
        return ([type(m).__name__ for m in model.modules()], sorted(n for n, m in model.named_modules()
                                                                   if "forward" in vars(m)),
                causal.config._attn_implementation)
    before = state()
    with TrainingKernels(model) as kernels:
        during = state()
        with kernels.paused():   # dev evaluation runs the engine's own masks on stock attention
            assert causal.config._attn_implementation == "sdpa"
        assert causal.config._attn_implementation == NAME
    assert during != before and "SparseDropout" in during[0] and during[1]
    assert state() == before == (before[0], [], "sdpa")
