"""The engine runs a prefix shared by every prompt (instruction, fixed shots) once per call;
scores must equal a direct full-sequence computation all the same."""

from __future__ import annotations

import torch

from tailor.engine import Engine

SHARED = "You are a careful classifier. Here are examples of what to do with each input. " * 2


def _direct(base, engine, prompt, option):
    p, o = engine.encode(prompt), engine.encode(option)
    with torch.no_grad():
        lp = base.model(torch.tensor([p + o])).logits[0].float().log_softmax(-1)
    return sum(lp[len(p) - 1 + t, o[t]].item() for t in range(len(o)))


def test_shared_prefix_scores_equal_direct_computation(tiny_base):
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, progress=False, batch_size=3)
    prompts = [SHARED + s for s in ("Hello there, how", "A much longer input that goes on and on", "x", "y y y y")]
    options = [["are you<|im_end|>", "is it"], ["x", "y z w", "q"], ["a"], ["b", "c d"]]
    n_shared, _, _ = engine._shared_prefix([engine.encode(p) for p in prompts], [None])
    assert n_shared >= len(engine.encode(SHARED)) - 1
    for prompt, opts, got in zip(prompts, options, engine.score(prompts, options)):
        for option, lp in zip(opts, got.logprobs):
            assert abs(lp - _direct(tiny_base, engine, prompt, option)) < 1e-4


def test_no_shared_prefix_for_unrelated_prompts(tiny_base):
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, progress=False)
    assert engine._shared_prefix([engine.encode("alpha beta"), engine.encode("gamma delta")], [None]) is None
