"""The engine against first principles: choice scores equal a direct computation from the model's
full-sequence logits; batching changes nothing; the cache returns what was computed; generation
honours greedy determinism, max tokens, stop strings and EOS."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from tailor.engine import Engine, ResultCache

PROMPTS = [
    "<|im_start|>user\nHello there, how are you doing today my friend?<|im_end|>\n<|im_start|>assistant\n",
    "Hi",
    "A much longer prompt that goes on and on. " * 6,
    "Short one.",
    "The quick brown fox jumps over the lazy dog",  # tiny-test's greedy output changes token midway
]
OPTIONS = [
    ["positive<|im_end|>", "negative<|im_end|>", "neutral<|im_end|>"],
    ["yes", "no way at all, never", "x"],
    ["a b c", "d"],
    [" one", " two three four five six", " seven eight"],
    [" cat", " dog"],
]


def direct_logprob(base, prompt: str, option: str) -> tuple[float, int]:
    """Sum of log p(option token | everything before it) from one full-sequence forward pass."""
    tok = base.tokenizer
    p = tok(prompt, add_special_tokens=False).input_ids
    o = tok(option, add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = base.model(torch.tensor([p + o], device=base.device)).logits[0].float().log_softmax(-1)
    return sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(o)), len(o)


def make_engine(base, cache=None, **kw) -> Engine:
    return Engine(base.model, base.tokenizer, base.weights_id, cache, progress=False, **kw)


# ---------------------------------------------------------------- choice scoring


def test_choice_scores_equal_direct_computation(tiny_base):
    assert tiny_base.dtype == torch.float32
    # prompts of different lengths (so padding is exercised) in one batch
    assert len({len(tiny_base.tokenizer(p).input_ids) for p in PROMPTS}) == len(PROMPTS)
    results = make_engine(tiny_base, batch_size=16).score(PROMPTS, OPTIONS)
    assert len(results) == len(PROMPTS)
    for prompt, opts, r in zip(PROMPTS, OPTIONS, results):
        assert r.prompt_tokens == len(tiny_base.tokenizer(prompt, add_special_tokens=False).input_ids)
        assert not r.cached and r.latency_s > 0
        for j, option in enumerate(opts):
            want, n = direct_logprob(tiny_base, prompt, option)
            assert r.n_tokens[j] == n
            assert r.logprobs[j] == pytest.approx(want, abs=1e-4)
            assert r.mean_logprobs[j] == pytest.approx(want / n, abs=1e-4)


def test_sliding_window_rows_fall_back_to_whole_sequences(tiny_base, monkeypatch):
    """One 4D mask serves every layer, so rows longer than a sliding window are scored as plain
    causal sequences instead; both paths give the same scores."""
    tree = make_engine(tiny_base).score(PROMPTS, OPTIONS)
    calls = []
    engine = make_engine(tiny_base)
    whole = engine._score_batch_whole
    monkeypatch.setattr(engine, "_score_batch_whole", lambda *a: calls.append(1) or whole(*a))
    monkeypatch.setattr(tiny_base.model.config, "sliding_window", 4, raising=False)
    fallback = engine.score(PROMPTS, OPTIONS)
    assert calls
    for a, b in zip(tree, fallback):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_length_normalisation_can_change_the_winner(tiny_base):
    r = make_engine(tiny_base).score([PROMPTS[3]], [OPTIONS[3]])[0]
    # a long option pays for every token in the sum, not in the mean
    assert r.n_tokens[1] > r.n_tokens[0]
    assert r.logprobs[1] < r.logprobs[0]
    assert r.mean_logprobs == [lp / n for lp, n in zip(r.logprobs, r.n_tokens)]


def test_scores_do_not_depend_on_batch_size(tiny_base):
    one = make_engine(tiny_base, batch_size=1).score(PROMPTS, OPTIONS)
    many = make_engine(tiny_base, batch_size=16).score(PROMPTS, OPTIONS)
    tight = make_engine(tiny_base, batch_size=16, max_batch_tokens=64).score(PROMPTS, OPTIONS)
    for a, b, c in zip(one, many, tight):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.logprobs == pytest.approx(c.logprobs, abs=1e-4)


def test_cache_hit_returns_identical_results(tiny_base, engine_cache):
    engine = make_engine(tiny_base, engine_cache)
    first = engine.score(PROMPTS, OPTIONS)
    again = engine.score(PROMPTS, OPTIONS)
    assert not any(r.cached for r in first) and all(r.cached for r in again)
    for a, b in zip(first, again):
        assert (a.logprobs, a.n_tokens, a.prompt_tokens, a.latency_s) == \
               (b.logprobs, b.n_tokens, b.prompt_tokens, b.latency_s)
    # another process opening the same file sees the results (the cache is persistent)
    reopened = make_engine(tiny_base, ResultCache(engine_cache.path)).score(PROMPTS[:2], OPTIONS[:2])
    assert all(r.cached for r in reopened)
    # a partly new request computes only what is new
    mixed = engine.score(PROMPTS[:1] + ["a prompt never seen"], OPTIONS[:1] + [["p", "q"]])
    assert [r.cached for r in mixed] == [True, False]
    # other options for the same prompt are another request
    assert engine.score(PROMPTS[:1], [["neutral<|im_end|>", "positive<|im_end|>"]])[0].cached is False


def test_weights_id_change_misses_the_cache(tiny_base, engine_cache):
    make_engine(tiny_base, engine_cache).score(PROMPTS, OPTIONS)
    other = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id + ":adapter-1",
                   engine_cache, progress=False)
    assert not any(r.cached for r in other.score(PROMPTS, OPTIONS))
    assert all(r.cached for r in other.score(PROMPTS, OPTIONS))


# ---------------------------------------------------------------- generation


def greedy_reference(base, prompt: str, n: int) -> list[int]:
    """Greedy decoding by hand: n argmax steps over full-sequence forward passes."""
    ids = base.tokenizer(prompt, add_special_tokens=False).input_ids
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(base.model(torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
    return out


def test_greedy_generation_matches_argmax_and_is_deterministic(tiny_base, engine_cache):
    engine = make_engine(tiny_base)
    gens = engine.generate(PROMPTS, max_new_tokens=8)
    for prompt, g in zip(PROMPTS, gens):
        want = greedy_reference(tiny_base, prompt, 8)
        assert g.text == tiny_base.tokenizer.decode(want, skip_special_tokens=True)
        assert g.prompt_tokens == len(tiny_base.tokenizer(prompt, add_special_tokens=False).input_ids)
        assert g.completion_tokens == 8 and g.finish_reason == "length" and not g.cached
    # the same request again, and each prompt alone, give the same text
    assert [g.text for g in engine.generate(PROMPTS, max_new_tokens=8)] == [g.text for g in gens]
    assert [engine.generate([p], max_new_tokens=8)[0].text for p in PROMPTS] == [g.text for g in gens]


def test_max_new_tokens_bounds_the_completion(tiny_base):
    engine = make_engine(tiny_base)
    for n in (1, 3, 11):
        g = engine.generate([PROMPTS[1]], max_new_tokens=n)[0]
        assert g.completion_tokens == n and g.finish_reason == "length"


def _first_change(tokens: list[int]) -> int:
    return next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])


def test_stop_string_cuts_the_text(tiny_base):
    engine = make_engine(tiny_base)
    fox = PROMPTS[4]
    free = greedy_reference(tiny_base, fox, 16)
    k = _first_change(free)  # the random model repeats one token, then switches to another
    stop = tiny_base.tokenizer.decode([free[k]])
    full = engine.generate(PROMPTS, max_new_tokens=16)
    gens = engine.generate(PROMPTS, max_new_tokens=16, stop=[stop])
    assert gens[4].text == tiny_base.tokenizer.decode(free[:k]) and stop in full[4].text
    assert gens[4].finish_reason == "stop"
    assert gens[4].completion_tokens == k + 1  # generation ended at the stop string, not the limit
    for f, g in zip(full, gens):
        if stop in f.text:
            assert g.text == f.text[:f.text.index(stop)] and g.finish_reason == "stop"
        else:  # the other prompts in the batch run on to the limit
            assert g.text == f.text and g.finish_reason == "length" and g.completion_tokens == 16


def test_stopped_sequence_counts_no_padding_when_pad_is_not_eos(tiny_base):
    """A tokenizer whose pad token differs from EOS (as Gemma's does): a sequence stopped by a
    stop string inside a batch is padded by generate; the padding is not completion tokens."""
    tok = copy.deepcopy(tiny_base.tokenizer)
    tok.pad_token = "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    engine = Engine(tiny_base.model, tok, tiny_base.weights_id, None, progress=False)
    free = greedy_reference(tiny_base, PROMPTS[4], 16)
    stop = tok.decode([free[_first_change(free)]])
    batched = engine.generate(PROMPTS, max_new_tokens=16, stop=[stop])
    alone = engine.generate(PROMPTS[4:], max_new_tokens=16, stop=[stop])[0]
    assert batched[4].completion_tokens == alone.completion_tokens < 16
    assert batched[4].text == alone.text
    assert [g.completion_tokens for g in batched[:4]] == [16] * 4


def test_eos_ends_generation_early(tiny_base, monkeypatch):
    tok = tiny_base.tokenizer
    free = greedy_reference(tiny_base, PROMPTS[4], 12)
    k = _first_change(free)
    # make that token an end-of-sequence token (a generation-config choice, as with chat models
    # whose end-of-turn token is an extra EOS)
    config = copy.deepcopy(tiny_base.model.generation_config)
    config.eos_token_id = [tok.eos_token_id, free[k]]
    monkeypatch.setattr(tiny_base.model, "generation_config", config)
    gens = make_engine(tiny_base).generate([PROMPTS[4], PROMPTS[1]], max_new_tokens=12)
    assert gens[0].completion_tokens == k  # the EOS token itself is not part of the completion
    assert gens[0].text == tok.decode(free[:k], skip_special_tokens=True)
    assert gens[0].finish_reason == "stop"
    # the other sequence in the same batch runs on to the limit
    assert gens[1].completion_tokens == 12 and gens[1].finish_reason == "length"
    assert free[k] not in greedy_reference(tiny_base, PROMPTS[1], 12)


def test_sampling_is_seeded(tiny_base):
    engine = make_engine(tiny_base)
    a = engine.generate(PROMPTS[:2], max_new_tokens=10, temperature=1.5, seed=1)
    b = engine.generate(PROMPTS[:2], max_new_tokens=10, temperature=1.5, seed=1)
    c = engine.generate(PROMPTS[:2], max_new_tokens=10, temperature=1.5, seed=2)
    greedy = engine.generate(PROMPTS[:2], max_new_tokens=10)
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.text for g in a] != [g.text for g in c]
    assert [g.text for g in a] != [g.text for g in greedy]
    assert all(g.completion_tokens == 10 for g in a)


def test_generation_cache(tiny_base, engine_cache):
    engine = make_engine(tiny_base, engine_cache)
    first = engine.generate(PROMPTS, max_new_tokens=6)
    again = engine.generate(PROMPTS, max_new_tokens=6)
    assert all(g.cached for g in again)
    assert [(g.text, g.completion_tokens, g.finish_reason) for g in first] == \
           [(g.text, g.completion_tokens, g.finish_reason) for g in again]
    # other decoding parameters are other requests
    assert not any(g.cached for g in engine.generate(PROMPTS, max_new_tokens=7))
    assert not any(g.cached for g in engine.generate(PROMPTS, max_new_tokens=6, stop=["zz"]))


# ---------------------------------------------------------------- many adapters over one base


@pytest.fixture(scope="module")
def three_adapters(tiny_base, tmp_path_factory):
    from tailor.datasets import load_task
    from tailor.methods import make_method, save_adapted
    task = load_task("tweet-sentiment")
    folders = {}
    for seed, name in enumerate(("ada", "bob", "cyd")):
        adapted = make_method("lora", {"steps": 3, "batch_size": 8, "lr": 0.05, "seed": seed, "precision": "fp32",
                                       "max_train_examples": 48}).fit(task, tiny_base, progress=False)
        folders[name] = tmp_path_factory.mktemp(name)
        save_adapted(adapted, folders[name])
    return folders


def test_one_engine_serves_three_adapters_and_the_base_in_mixed_batches(tiny_base, three_adapters, engine_cache):
    """Rows of different adapters share each forward; every request gets what its own adapter,
    run alone, gives (scores and greedy generations), and the cache keeps adapters apart."""
    from tailor.methods import load_adapted
    from tailor.methods.finetune import lora_stack
    model, ids = lora_stack(tiny_base, three_adapters)
    engine = Engine(model, tiny_base.tokenizer, tiny_base.weights_id, engine_cache, batch_size=16, progress=False,
                    adapters=ids)
    prompts = [f"{p} ({i})" for i in range(3) for p in PROMPTS]            # 12 requests
    options = [OPTIONS[i % len(OPTIONS)] for i in range(len(prompts))]
    names = [("ada", "bob", "cyd", None)[i % 4] for i in range(len(prompts))]
    mixed = engine.score(prompts, options, adapters=names)
    texts = engine.generate(prompts, max_new_tokens=6, adapters=names)
    alone = {None: make_engine(tiny_base)}
    alone.update({n: load_adapted(f, tiny_base).engine(None, progress=False) for n, f in three_adapters.items()})
    for name, single in alone.items():
        rows = [i for i, n in enumerate(names) if n == name]
        want = single.score([prompts[i] for i in rows], [options[i] for i in rows])
        gens = single.generate([prompts[i] for i in rows], max_new_tokens=6)
        for i, w, g in zip(rows, want, gens):
            assert mixed[i].logprobs == pytest.approx(w.logprobs, abs=1e-5)
            assert texts[i].text == g.text
    # cached per adapter: the same prompt on another adapter is another result
    assert all(r.cached for r in engine.score(prompts, options, adapters=names))
    swapped = ["bob" if n == "ada" else n for n in names]                # each prompt appears once
    assert [r.cached for r in engine.score(prompts, options, adapters=swapped)] == [n != "ada" for n in names]
    # the adapters really differ from each other and from the base (the test is not vacuous)
    on_all = {n: engine.score(prompts[:1], options[:1], adapters=[n])[0].logprobs for n in ("ada", "bob", "cyd", None)}
    assert min(abs(a - b) for x, y in itertools.combinations(on_all.values(), 2) for a, b in zip(x, y)) > 1e-3
    # a prefix all prompts share runs once per adapter in the call, each row attending to its own
    shared = "Classify the sentiment of the short text that follows, answering with one word only. "
    long = [shared + p for p in prompts]
    assert engine._shared_prefix([engine.encode(p) for p in long], ["ada", None])[0] >= 16
    mixed = Engine(model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False, adapters=ids) \
        .score(long, options, adapters=names)
    for name, single in alone.items():
        rows = [i for i, n in enumerate(names) if n == name]
        for i, w in zip(rows, single.score([long[i] for i in rows], [options[i] for i in rows])):
            assert mixed[i].logprobs == pytest.approx(w.logprobs, abs=1e-5)
    with pytest.raises(KeyError, match="unknown adapter"):
        engine.score(prompts[:1], options[:1], adapters=["nope"])


# ---------------------------------------------------------------- the decoder (continuous batching)


def _decode(engine, prompts, **kw):
    from tailor.decode import Decoder, Sequence
    seqs = [Sequence(engine.encode(p), **kw) for p in prompts]
    return Decoder(engine).run(seqs)


def test_a_row_that_joins_mid_generation_gets_what_it_gets_alone(tiny_base):
    from tailor.decode import Decoder, Sequence
    engine = make_engine(tiny_base)
    early = [Sequence(engine.encode(p), max_new_tokens=12) for p in PROMPTS[:3]]
    late = [Sequence(engine.encode(p), max_new_tokens=12) for p in PROMPTS[3:]]
    decoder = Decoder(engine)
    decoder.join(early)
    for _ in range(4):
        decoder.step()
    decoder.join(late)                          # joins rows that are 5 tokens in, of other lengths
    assert len(decoder.rows) == 5
    while decoder.busy:
        decoder.step()
    for seq, prompt in zip(early + late, PROMPTS):
        alone = _decode(engine, [prompt], max_new_tokens=12)[0]
        assert seq.tokens == alone.tokens and seq.finish_reason == alone.finish_reason
        assert seq.tokens == greedy_reference(tiny_base, prompt, len(seq.tokens))


def test_prompts_that_start_alike_reuse_the_prefix_and_get_what_they_get_alone(tiny_base, three_adapters):
    """An arm's prompts share their start (instruction, template): a prompt that begins with at
    least REUSE_MIN tokens of its adapter's remembered prompt prefills only the rest, joining mid-
    generation beside other adapters' rows, and decodes what it decodes alone."""
    from tailor.decode import REUSE_MIN, Decoder, Sequence
    from tailor.methods import load_adapted
    from tailor.methods.finetune import lora_stack
    model, ids = lora_stack(tiny_base, three_adapters)
    engine = Engine(model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False, adapters=ids)
    shared = "<|im_start|>system\nAnswer in one short sentence, politely and to the point.<|im_end|>\n<|im_start|>user\n"
    asks = [shared + q + "<|im_end|>\n<|im_start|>assistant\n"
            for q in ("Hello?", "What is the capital of France, please tell me?", "Hi", "Why is the sky blue?")]
    assert len(engine.encode(shared)) >= REUSE_MIN + 4
    names = ("ada", "bob", None)
    decoder = Decoder(engine)
    first = [Sequence(engine.encode(asks[0]), name, 10) for name in names]
    decoder.join(first)                                   # nothing to reuse yet: each adapter remembers its prompt
    assert engine.prompt_tokens["reused"] == 0
    for _ in range(3):
        decoder.step()
    # and a prompt that shares nothing, about as long as a question: it prefills whole, in the same forward
    other = "Tell me: what is the capital of Spain, please?<|im_end|>\n<|im_start|>assistant\n"
    later = [Sequence(engine.encode(a), name, 10) for a in asks[1:] for name in names]
    later.append(Sequence(engine.encode(other), "bob", 10))
    forwards = []
    prefill = decoder._prefill
    decoder._prefill = lambda seqs, reuse, starts=None: (forwards.append(list(reuse)), prefill(seqs, reuse, starts))[1]
    decoder.join(later)
    assert any(0 in reuse and max(reuse) > 0 for reuse in forwards)   # rows reusing and not, in one forward
    counts = engine.prompt_tokens
    assert counts["reused"] >= (len(later) - 1) * (len(engine.encode(shared)) - 1)
    assert counts["reused"] + counts["prefilled"] == sum(len(s.prompt) for s in first + later)
    alone = {None: make_engine(tiny_base)}
    alone.update({n: load_adapted(three_adapters[n], tiny_base).engine(None, progress=False) for n in names if n})
    _assert_cached_as_alone(decoder, later, alone)
    while decoder.busy:
        decoder.step()
    texts = [asks[0]] * len(names) + [a for a in asks[1:] for _ in names] + [other]
    for seq, text in zip(first + later, texts):
        want = _decode(alone[seq.adapter], [text], max_new_tokens=10)[0]
        assert seq.tokens == want.tokens and seq.finish_reason == want.finish_reason
    # the adapters decode differently here (the test is not vacuous)
    assert len({tuple(s.tokens) for s in later[:3]}) > 1


def test_rows_joining_a_fresh_decoder_together_reuse_one_leader_s_start(tiny_base, three_adapters, monkeypatch):
    """A batch job's chunk joins a fresh decoder all at once: with nothing remembered, one row per
    adapter leads (prefilled first) and the others reuse its start; each row still decodes what
    it decodes alone, and what reuse off decodes."""
    from tailor import decode
    from tailor.decode import Decoder, Sequence
    from tailor.methods import load_adapted
    from tailor.methods.finetune import lora_stack
    model, ids = lora_stack(tiny_base, three_adapters)
    shared = ("<|im_start|>system\nAnswer in one short sentence, politely and to the point, and never "
              "with more words than the question has; say so when you do not know the answer, and never guess "
              "a number or a name.<|im_end|>\n<|im_start|>user\n")
    asks = [shared + q + "<|im_end|>\n<|im_start|>assistant\n" for q in ("Hello?", "Why is the sky blue?", "Hi")]

    def chunk(engine):
        rows = [Sequence(engine.encode(a), name, 8) for name in ("ada", None) for a in asks]
        return rows + [Sequence(engine.encode(asks[0]), "bob", 8)]   # alone in its adapter: no leader

    engine = Engine(model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False, adapters=ids)
    n_shared = len(engine.encode(shared))
    assert 2 * (n_shared - 1) >= decode.LEAD_MIN
    decoder, rows = Decoder(engine), chunk(engine)
    decoder.join(rows)
    counts = engine.prompt_tokens
    assert counts["reused"] >= 2 * 2 * (n_shared - 1)     # two followers of each of ada and the base
    assert counts["reused"] + counts["prefilled"] == sum(len(s.prompt) for s in rows)
    alone = {None: make_engine(tiny_base)}
    alone.update({n: load_adapted(three_adapters[n], tiny_base).engine(None, progress=False) for n in ("ada", "bob")})
    _assert_cached_as_alone(decoder, rows, alone)
    while decoder.busy:
        decoder.step()
    monkeypatch.setattr(decode, "LEAD_MIN", 1 << 30)      # no leaders: every row prefills whole
    engine.prompt_tokens = {"prefilled": 0, "reused": 0}
    plain = Decoder(engine).run(chunk(engine))
    assert engine.prompt_tokens["reused"] == 0
    assert [s.tokens for s in rows] == [s.tokens for s in plain]
    assert rows[0].tokens != rows[3].tokens or rows[0].tokens != rows[6].tokens   # adapters differ: not vacuous


def test_rows_reusing_spans_of_different_lengths_share_one_forward(tiny_base):
    from tailor.decode import REUSE_MIN, Decoder, Sequence
    engine = make_engine(tiny_base)
    shared = "<|im_start|>system\nAnswer in one short sentence, politely and to the point.<|im_end|>\n<|im_start|>user\n"
    decoder = Decoder(engine)
    decoder.join([Sequence(engine.encode(shared + "Hello? Tell me about the sea, and the ships."), None, 4)])
    rows = [Sequence(engine.encode(text), None, 4) for text in
            (shared + "Hello? Tell me about the sky.", shared + "Why?", "Nothing alike at all, not one token.")]
    reuse = [decoder._reusable(s) for s in rows]
    assert reuse[0] > reuse[1] >= REUSE_MIN and reuse[2] == 0
    decoder._prefill(rows, reuse)
    _assert_cached_as_alone(decoder, rows, {None: engine})


def _assert_cached_as_alone(decoder, seqs, engines) -> None:
    """Each row's keys and values, on its real columns, are those of its prompt prefilled alone."""
    from tailor.decode import Decoder, Sequence
    for seq in seqs:
        row = next(i for i, s in enumerate(decoder.rows) if s is seq)
        single = Decoder(engines[seq.adapter])
        single.join([Sequence(list(seq.prompt), None, 10)])
        real = decoder.mask[row].bool()
        assert int(real.sum()) == len(seq.prompt)
        for ours, theirs in zip(decoder.cache.layers, single.cache.layers):
            assert torch.allclose(ours.keys[row][:, real], theirs.keys[0], atol=1e-5)
            assert torch.allclose(ours.values[row][:, real], theirs.values[0], atol=1e-5)


def test_a_prefill_projects_only_the_last_positions_and_never_copies_the_head_per_row(tiny_base):
    """logits_to_keep=1 slices a strided view, and linear() on it falls back to a batched matmul that
    copies the vocabulary head once per row (1.7 s of a 2.5 s prefill of 32 prompts of smollm2)."""
    from torch.profiler import ProfilerActivity, profile

    from tailor.decode import Decoder, Sequence
    engine = make_engine(tiny_base)
    vocab = tiny_base.model.config.vocab_size
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        Decoder(engine).join([Sequence(engine.encode(p), max_new_tokens=1) for p in PROMPTS[:4] * 2])
        engine.generate(PROMPTS[:4], max_new_tokens=1)   # the engine's shared-prefix cache path too
    per_row_heads = [e for e in prof.events() if e.name == "aten::bmm" and any(vocab in s for s in e.input_shapes if s)]
    assert not per_row_heads


def test_sampling_draws_from_each_row_s_own_seed(tiny_base):
    engine = make_engine(tiny_base)
    together = _decode(engine, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    for seq, prompt in zip(together, PROMPTS):
        assert seq.tokens == _decode(engine, [prompt], max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)[0].tokens
    other = _decode(engine, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=8)
    assert [s.tokens for s in other] != [s.tokens for s in together]


def test_streamed_text_is_the_final_text_and_never_shows_a_stop_string(tiny_base):
    from tailor.decode import Decoder, Sequence
    engine = make_engine(tiny_base)
    free = _decode(engine, PROMPTS[:1], max_new_tokens=16)[0]
    stop = free.text[len(free.text) // 2:][:3]           # a stop string the model will produce
    assert len(stop) == 3
    deltas: list[str] = []
    seq = Sequence(engine.encode(PROMPTS[0]), max_new_tokens=16, stop=[stop], on_text=deltas.append)
    Decoder(engine).run([seq])
    assert seq.finish_reason == "stop" and seq.text == free.text[:free.text.index(stop)]
    assert "".join(deltas) == seq.text and all(stop not in d for d in deltas)


def test_on_the_static_path_a_sampled_answer_depends_on_its_seed_not_on_its_batch_mates(tiny_base, monkeypatch):
    """Models the decoder does not run go through transformers' generate, one seeded generator per
    batch: rows of different seeds (GRPO's group) are batched by seed, so each row's answer is the
    one it gets alone with that seed."""
    import tailor.engine as engine_module
    monkeypatch.setattr(engine_module, "supported", lambda model: False)
    prompt = PROMPTS[0]
    group = make_engine(tiny_base).generate([prompt] * 3, max_new_tokens=6, temperature=1.0, seed=[11, 12, 13])
    alone = [make_engine(tiny_base).generate([prompt], max_new_tokens=6, temperature=1.0, seed=s)[0] for s in (11, 12, 13)]
    assert [g.text for g in group] == [a.text for a in alone]
    assert len({g.text for g in group}) > 1   # the seeds do differ (a tiny random model's samples vary)
