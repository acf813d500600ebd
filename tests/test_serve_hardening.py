"""The server against clients that send what they should not (issue 33), over a real socket: a
chunked body past the limit, a wrong key (compared in constant time), the docs with a key set,
a request whose preparation is slow (it must not stall the other connections), numbers out of
range, a request that could never be admitted; and `tailor predict` on an OpenAI Batch file whose
one bad row must not stop the run. Every client mistake is a 4xx in OpenAI's error shape."""

from __future__ import annotations

import hmac
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import httpx
import pytest
import uvicorn

from tailor.errors import TailorError
from tailor.methods import make_method, save_adapted
from tailor.serve.app import create_app
from tailor.serve.arms import ServedArm, load_arms
from tailor.serve.run import build
from tailor.serve.scheduler import Scheduler
from tailor.task import Example, Task

KEY = "sk-hardening"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 64 * 1024


@dataclass
class Held(ServedArm):
    """The base, whose request preparation waits until the test lets it go: a stand-in for a chat
    template or a retrieval that takes long, so the test can look at the other connections meanwhile."""
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def prompt(self, request):
        self.started.set()
        self.release.wait(10)
        return super().prompt(request)


@pytest.fixture(scope="module")
def prompt_tuned(tiny_base, tmp_path_factory):
    """A prompt-tuning arm: its virtual tokens keep it off the continuous decoder, so it generates
    through transformers' generate (the static path)."""
    rows = [Example(f"g{i}", f"Greet {n}.", f"Hello {n}!") for i, n in enumerate(["Ada", "Bob", "Cyd", "Dee"] * 3)]
    task = Task("greetings", "generate", "Answer with a greeting.", rows)
    task.splits = {"train": rows[:8], "dev": rows[8:10], "test": rows[10:]}
    adapted = make_method("prompt-tuning", {"steps": 1, "batch_size": 4, "n_virtual_tokens": 4,
                                            "precision": "fp32"}).fit(task, tiny_base, progress=False)
    folder = tmp_path_factory.mktemp("pt")
    save_adapted(adapted, folder)
    return folder


class Server:
    def __init__(self, app, scheduler):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.scheduler = scheduler
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical"))
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.uvicorn.started and time.time() < deadline:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=10)
        self.scheduler.stop()


@pytest.fixture(scope="module")
def server(tiny_base, prompt_tuned):
    arms = load_arms(tiny_base, {"pt": prompt_tuned})
    base = arms[tiny_base.name]
    arms["held"] = Held(**{f.name: getattr(base, f.name) for f in fields(ServedArm)} | {"name": "held"})
    engines = list({id(a.engine): a.engine for a in arms.values()}.values())
    scheduler = Scheduler(engines, batch_size=4, max_queue=16).start()
    srv = Server(create_app(arms, scheduler, api_key=KEY, max_body=MAX_BODY, max_tokens=32), scheduler)
    srv.arms = arms
    yield srv
    srv.close()


def _openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def _alive(server) -> None:
    r = httpx.post(server.url + "/v1/completions", headers=AUTH, timeout=30,
                   json={"model": "tiny-test", "prompt": "hello", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_chunked_body_is_held_to_the_limit_as_it_arrives(server):
    def body(size: int):   # a generator: httpx sends it chunked, with no Content-Length
        yield b'{"model": "tiny-test", "max_tokens": 2, "temperature": 0, "prompt": "'
        for _ in range(size // 4096):
            yield b"a " * 2048
        yield b'"}'
    headers = AUTH | {"Content-Type": "application/json"}
    with httpx.Client(timeout=30) as http:
        big = http.post(server.url + "/v1/completions", content=body(4 * MAX_BODY), headers=headers)
        assert "content-length" not in big.request.headers
        assert _openai_error(big, 413)["code"] == "request_too_large"
        small = http.post(server.url + "/v1/completions", headers=headers, content=iter(
            [b'{"model": "tiny-test", "max_tokens": 2, ', b'"temperature": 0, "prompt": "Greet Ada."}']))
        assert small.status_code == 200, small.text
    _alive(server)


def test_the_key_is_compared_in_constant_time_and_guards_the_schema(server, monkeypatch):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    wrong = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer sk-hardeninG"})
    assert _openai_error(wrong, 401)["code"] == "invalid_api_key" and compared
    assert httpx.get(server.url + "/v1/models", headers=AUTH).status_code == 200
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        _openai_error(httpx.get(server.url + path), 401)            # nothing about the API without the key
    assert httpx.get(server.url + "/openapi.json", headers=AUTH).json()["info"]["title"] == "Tailor"
    for path in ("/docs", "/redoc"):                                 # no browsable docs when a key is set
        _openai_error(httpx.get(server.url + path, headers=AUTH), 404)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"   # the one open path


def test_a_slow_request_preparation_does_not_stall_other_connections(server):
    held = server.arms["held"]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                           json={"model": "held", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert held.started.wait(10)
        try:
            t0 = time.perf_counter()
            health = httpx.get(server.url + "/health", timeout=3)
            waited = time.perf_counter() - t0
        finally:
            held.release.set()
        assert health.status_code == 200 and waited < 3
        assert slow.result().status_code == 200


BAD_NUMBERS = {
    "seed past 64 bits": {"seed": 1 << 64, "temperature": 1.0},
    "seed below 64 bits": {"seed": -(1 << 64), "temperature": 1.0},
    "empty stop string": {"stop": [""]},
    "stop string of 10,000 characters": {"stop": "x" * 10_000},
    "n past the most": {"n": 10 ** 30},
    "max_tokens past the server's": {"max_tokens": 10 ** 30},
    "logit_bias": {"logit_bias": {str(i): 1 for i in range(1000)}},
    "top_logprobs": {"top_logprobs": 10 ** 9},
}


@pytest.mark.parametrize("model", ["tiny-test", "pt"])
def test_numbers_out_of_range_are_400s_in_openai_shape(server, model):
    for what, extra in BAD_NUMBERS.items():
        r = httpx.post(server.url + "/v1/completions", headers=AUTH, timeout=30,
                       json={"model": model, "prompt": "Greet Ada.", "max_tokens": 2, **extra})
        assert r.status_code == 400, (what, r.status_code, r.text[:200])
        _openai_error(r, 400)
    # bodies json.loads reads but Python cannot take as numbers, or nesting past the recursion limit
    raw = {"temperature NaN": b'{"model": "tiny-test", "prompt": "x", "temperature": NaN}',
           "a 5,000-digit seed": b'{"model": "tiny-test", "prompt": "x", "seed": ' + b"9" * 5000 + b"}",
           "nesting 20,000 deep": b'{"model": "tiny-test", "prompt": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
           "not UTF-8": b'{"model": "tiny-test", "prompt": "\xff\xfe"}'}
    for what, body in raw.items():
        r = httpx.post(server.url + "/v1/completions", content=body, timeout=30,
                       headers=AUTH | {"Content-Type": "application/json"})
        assert r.status_code == 400, (what, r.status_code, r.text[:200])
        _openai_error(r, 400)
    _openai_error(httpx.get(server.url + "/v1/completions", headers=AUTH), 405)
    _openai_error(httpx.post(server.url + "/v1/nothing", headers=AUTH, json={}), 404)
    _alive(server)


def test_a_tiny_temperature_on_the_static_path_answers(server):
    """transformers' sampling divided by a temperature of 5e-324 (0 in float32): the request failed (500)."""
    ask = {"model": "pt", "prompt": "Greet Ada.", "max_tokens": 4}
    greedy = httpx.post(server.url + "/v1/completions", headers=AUTH, json=ask | {"temperature": 0}, timeout=30)
    tiny = httpx.post(server.url + "/v1/completions", headers=AUTH, json=ask | {"temperature": 5e-324, "seed": 1},
                      timeout=30)
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_a_request_that_could_never_be_admitted_is_a_400_not_a_429(server):
    ask = {"model": "tiny-test", "prompt": ["Greet Ada."] * 3, "n": 8, "max_tokens": 2}   # 24 > the queue's 16
    error = _openai_error(httpx.post(server.url + "/v1/completions", headers=AUTH, json=ask, timeout=30), 400)
    assert "24" in error["message"] and "16" in error["message"] and error["code"] == "request_too_large"
    ok = httpx.post(server.url + "/v1/completions", headers=AUTH, json=ask | {"n": 4}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 12


def test_a_chat_of_only_system_messages_to_a_recipe_arm_is_a_400(server):
    r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                   json={"model": "pt", "messages": [{"role": "system", "content": "Be brief."}], "max_tokens": 2})
    assert _openai_error(r, 400)["param"] == "messages"


def test_a_batch_size_of_zero_is_refused_before_serving(tiny_base):
    with pytest.raises(TailorError, match="batch-size is 0"):
        build(tiny_base, {}, batch_size=0)
    with pytest.raises(TailorError, match="max-queue is -1"):
        build(tiny_base, {}, max_queue=-1)
    run = subprocess.run([sys.executable, "-m", "tailor.cli", "serve", "--base", "tiny-test", "--batch-size", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "batch-size" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_one_failed_row_of_a_batch_file_is_an_error_line_and_the_run_goes_on(prompt_tuned, tmp_path):
    """A seed past 64 bits on the static path failed inside torch: the whole run stopped there, and
    again on every resume."""
    from tailor.predict import run_predict

    def line(cid, **body):
        return {"custom_id": cid, "method": "POST", "url": "/v1/completions",
                "body": {"model": "pt", "prompt": "Greet Ada.", "max_tokens": 3, **body}}
    rows = [line("a", temperature=0), line("b", temperature=1.0, seed=(1 << 64) + 5), line("c", temperature=0),
            {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "pt", "messages": [{"role": "system", "content": "x"}]}}]
    src = tmp_path / "batch.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    s = run_predict(str(prompt_tuned), src, out, model="tiny-test", dtype="fp32", device="cpu", cache=False,
                    runs_dir=str(tmp_path / "runs"), progress=False)
    assert (s["written"], s["failed"]) == (2, 2)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [w["custom_id"] for w in written] == ["a", "c"] and all(w["response"]["status_code"] == 200 for w in written)
    assert written[0]["response"]["body"]["choices"][0]["text"] == written[1]["response"]["body"]["choices"][0]["text"]
    errors = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == ["b", "d"] and all(e["error"]["message"] for e in errors)
    assert "seed" in errors[0]["error"]["message"]


def test_chromium_keeps_its_sandbox_unless_run_as_root(monkeypatch):
    import os

    from tailor.report import browser
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "--no-sandbox" not in browser.flags() and "--headless" in browser.flags()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "--no-sandbox" in browser.flags()


def test_a_body_that_trickles_in_is_cut_off_with_a_408():
    """A client that sends its headers and then the body a byte now and then held its connection
    (and its place in the parser) for as long as it liked."""
    scheduler = Scheduler([])
    srv = Server(create_app({}, scheduler, body_seconds=0.5), scheduler)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
            sock.settimeout(5)
            t0 = time.perf_counter()
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in head and time.perf_counter() - t0 < 3
    finally:
        srv.close()


def test_rows_joining_together_read_the_start_their_reuse_was_counted_against(tiny_base):
    """Found by bench/serve_soak.py: of two rows joining the decoder together, a short new prompt
    was prefilled first and remembered in place of the adapter's longer start, which the other
    row, counted as reusing it, then read: a tensor size error that failed every running request."""
    from tailor.decode import Decoder, Sequence
    from tailor.engine import Engine
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    start = engine.encode("The quick brown fox jumps over the lazy dog. " * 6)

    def run(decoder, *prompts):
        seqs = [Sequence(list(p), max_new_tokens=3) for p in prompts]
        decoder.join(seqs)
        while decoder.busy:
            decoder.step()
        return [s.tokens for s in seqs]
    # (a one-token short prompt made no error: its cache broadcast silently into the 40 reused places)
    short = engine.encode("Hello there, my friend")[:4]
    follower = start[:40] + engine.encode(" and then it runs far away into the woods")
    assert len(short) == 4 and len(follower) - 40 > 2 * len(short)
    decoder = Decoder(engine)
    run(decoder, start)                               # remembered: `start`
    together = run(decoder, short, follower)          # `short` prefills first (fewer tokens), `follower` reuses 40
    assert engine.prompt_tokens["reused"] >= 40
    assert together == [run(Decoder(engine), short)[0], run(Decoder(engine), follower)[0]]
