"""Clients written for OpenAI-compatible servers, unchanged, against `tailor serve`: the requests
lm-evaluation-harness's `local-completions` model sends (token-id prompts, `echo`, `logprobs: 1`,
`max_tokens: 1`) answered in OpenAI's shape through the official client with strict response
validation, and the numbers checked against the engine's own option scoring (a different code
path: one tree-masked row per prompt and its options)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tailor.engine import Engine
from tailor.methods import load_adapted, make_method, save_adapted
from tailor.serve.run import build
from test_serve import KEY, Server, _greetings

CONTEXT, OPTIONS = "Greet Ada. Answer:", [" Hello Ada, nice to meet you!", " Goodbye"]


@pytest.fixture(scope="module")
def served(tiny_base, tmp_path_factory):
    lora = tmp_path_factory.mktemp("lora")
    save_adapted(make_method("lora", {"steps": 3, "batch_size": 8, "lr": 0.05, "precision": "fp32"}).fit(
        _greetings(), tiny_base, progress=False), lora)
    shots = tmp_path_factory.mktemp("fs")
    save_adapted(make_method("few-shot", {"k": 1}).fit(_greetings(), tiny_base, progress=False), shots)
    srv = Server(*build(tiny_base, {"ada": lora, "fs": shots}, api_key=KEY, batch_size=4))
    yield srv, {"ada": lora}
    srv.close()


def _engine(tiny_base, folder) -> Engine:
    if folder is None:
        return Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    return load_adapted(folder, tiny_base).engine(None, progress=False)


def _loose(srv) -> openai.OpenAI:
    """OpenAI's API answers echo with null for the first token's log-probability and alternatives
    (nothing comes before it; vLLM does the same); the client's Logprobs type declares lists of
    floats and dicts, so strict validation would refuse OpenAI's own echo answers: these calls go
    through a client that does not validate, and the tests check the shape themselves."""
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)


def test_token_id_prompts_echo_max_tokens_1_score_as_the_engine_does(served, tiny_base):
    """lm-evaluation-harness's loglikelihood request: context + continuation ids, echo, logprobs 1,
    max_tokens 1; it sums token_logprobs[ctxlen:-1] and checks each token against max(top_logprobs)."""
    srv, folders = served
    client = _loose(srv)
    tok = tiny_base.tokenizer
    ctx = tok(CONTEXT, add_special_tokens=False).input_ids
    conts = [tok(o, add_special_tokens=False).input_ids for o in OPTIONS]
    sums = {}
    for model, folder in (("tiny-test", None), ("ada", folders["ada"])):
        r = client.completions.create(model=model, prompt=[ctx + c for c in conts], echo=True, logprobs=1,
                                      max_tokens=1, temperature=0, seed=1234)
        assert [c.index for c in r.choices] == [0, 1]
        want = _engine(tiny_base, folder).score([CONTEXT], [OPTIONS])[0].logprobs
        for choice, cont, expected in zip(r.choices, conts, want):
            lp = choice.logprobs
            n = len(ctx) + len(cont) + 1                              # the prompt's tokens, then the one drawn
            assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs) == n
            assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
            assert all(isinstance(t, dict) and 1 <= len(t) <= 2 for t in lp.top_logprobs[1:])
            for token, value, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
                assert top[token] == value and max(top.values()) >= value   # the token among its alternatives
            assert lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values())   # temperature 0: the likeliest
            assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
            assert choice.text.startswith(tok.decode(ctx + cont)) and choice.finish_reason in ("length", "stop")
            assert sum(lp.token_logprobs[len(ctx):-1]) == pytest.approx(expected, abs=1e-4)
        assert r.usage.prompt_tokens == len(ctx) * 2 + sum(map(len, conts)) and r.usage.completion_tokens == 2
        sums[model] = [sum(c.logprobs.token_logprobs[len(ctx):-1]) for c in r.choices]
    assert sums["ada"] != pytest.approx(sums["tiny-test"], abs=1e-3)   # the adapter's weights scored


def test_echo_against_an_adapter_scores_the_clients_text_unwrapped(served, tiny_base):
    """The arm's weights over exactly the text sent (no instruction, no chat template): the tokens
    returned are the client's, and their offsets index its text (Tailor's remote base reads them)."""
    srv, _ = served
    client = _loose(srv)
    text = CONTEXT + OPTIONS[0]
    r = client.completions.create(model="ada", prompt=text, echo=True, logprobs=3, max_tokens=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text and "".join(lp.tokens) == text
    assert r.usage.prompt_tokens == len(tiny_base.tokenizer(text, add_special_tokens=False).input_ids)
    assert all(text[o:o + len(t)] == t for t, o in zip(lp.tokens, lp.text_offset))
    assert all(len(top) in (3, 4) for top in lp.top_logprobs[1:])
    ids = client.completions.create(model="ada", prompt=tiny_base.tokenizer(text, add_special_tokens=False).input_ids,
                                    echo=True, logprobs=3, max_tokens=0).choices[0].logprobs
    assert ids.token_logprobs == pytest.approx(lp.token_logprobs) and ids.tokens == lp.tokens


@pytest.mark.parametrize("body, param", [
    ({"model": "fs", "prompt": "Greet Ada.", "echo": True, "logprobs": 1, "max_tokens": 1}, "echo"),
    ({"model": "ada", "prompt": "Greet Ada.", "echo": True, "logprobs": 1, "max_tokens": 1, "stop": "x"}, "stop"),
    ({"model": "ada", "prompt": [1, 2, 10 ** 6], "echo": True, "logprobs": 1, "max_tokens": 1}, "prompt"),
    ({"model": "ada", "prompt": [[1, 2], []], "echo": True, "logprobs": 1, "max_tokens": 0}, "prompt"),
    ({"model": "ada", "prompt": "Greet Ada.", "echo": True, "max_tokens": 4}, "echo"),       # echo without logprobs
    ({"model": "ada", "prompt": "Greet Ada.", "max_tokens": 0}, "max_tokens"),             # nothing to generate
])
def test_what_echo_cannot_answer_is_a_400_that_says_why(served, body, param):
    srv, _ = served
    r = httpx.post(srv.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["param"] or "").startswith(param), r.text


def test_token_id_prompts_generate_as_their_text(served, tiny_base):
    srv, _ = served
    client = srv.client()
    ids = tiny_base.tokenizer("Greet Bob.", add_special_tokens=False).input_ids
    by_ids = client.completions.create(model="ada", prompt=ids, max_tokens=5, temperature=0).choices[0].text
    by_text = client.completions.create(model="ada", prompt="Greet Bob.", max_tokens=5, temperature=0).choices[0].text
    assert by_ids == by_text
