"""The OpenAI-compatible server, driven by the official `openai` client with strict response
validation: every endpoint, streaming equal to non-streaming, n choices, auth, errors in OpenAI's
shape, a burst of malformed requests, and adapters batched together each giving its own output."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from conftest import write_tickets
from tailor.errors import TailorError
from tailor.methods import load_adapted, make_method, save_adapted
from tailor.serve.run import build, check_bind
from tailor.task import Example, Task, load_task_file

KEY = "sk-test-tailor"
NAMES = ["Ada", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou"]


def _greetings() -> Task:
    rows = [Example(f"g{i}", f"Greet {n}.", f"Hello {n}, nice to meet you!") for i, n in enumerate(NAMES * 4)]
    task = Task("greetings", "generate", "Answer with a greeting.", rows)
    task.splits = {"train": rows[:40], "dev": rows[40:44], "test": rows[44:]}
    return task


@pytest.fixture(scope="module")
def arms(tiny_base, tmp_path_factory):
    """Three LoRA arms of a generate task, a LoRA classifier and a few-shot classifier."""
    folders = {}
    greet = _greetings()
    for seed, name in enumerate(("ada", "bob", "cyd")):
        adapted = make_method("lora", {"steps": 4, "batch_size": 8, "lr": 0.05, "seed": seed, "precision": "fp32"}).fit(
            greet, tiny_base, progress=False)
        folders[name] = tmp_path_factory.mktemp(name)
        save_adapted(adapted, folders[name])
    tickets = load_task_file(write_tickets(tmp_path_factory.mktemp("t") / "tickets.jsonl", 60)).split(seed=0)
    for name, method, options in (("clf", "lora", {"steps": 3, "batch_size": 8, "precision": "fp32"}),
                                  ("fs", "few-shot", {"k": 2})):
        adapted = make_method(method, options).fit(tickets, tiny_base, progress=False)
        folders[name] = tmp_path_factory.mktemp(name)
        save_adapted(adapted, folders[name])
    return folders, tickets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, app, scheduler):
        self.port, self.scheduler = _free_port(), scheduler
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.uvicorn.started and time.time() < deadline:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0,
                             _strict_response_validation=True)

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=10)
        self.scheduler.stop()


@pytest.fixture(scope="module")
def server(tiny_base, arms):
    folders, _ = arms
    srv = Server(*build(tiny_base, folders, api_key=KEY, batch_size=8))
    yield srv
    srv.close()


def test_models_lists_the_base_and_every_arm_with_its_parent(server, tiny_base):
    models = {m.id: m for m in server.client().models.list().data}
    assert set(models) == {tiny_base.name, "ada", "bob", "cyd", "clf", "fs"}
    assert models["ada"].model_extra["parent"] == tiny_base.name and models["ada"].model_extra["method"] == "lora"
    assert models[tiny_base.name].model_extra["parent"] is None


def test_chat_streaming_equals_non_streaming_at_temperature_zero(server):
    client = server.client()
    for model in ("ada", "tiny-test"):
        ask = dict(model=model, messages=[{"role": "user", "content": "Greet Ivy."}], max_tokens=12, temperature=0)
        whole = client.chat.completions.create(**ask)
        parts, finishes, usage = [], [], None
        for chunk in client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}):
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                finishes += [c.finish_reason] if c.finish_reason else []
        assert "".join(parts) == whole.choices[0].message.content
        assert finishes == [whole.choices[0].finish_reason]                       # once per choice
        assert usage.completion_tokens == whole.usage.completion_tokens > 0
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_completions_n_choices_stop_and_streaming(server):
    client = server.client()
    many = client.completions.create(model="bob", prompt="Greet Kim.", n=3, max_tokens=8, temperature=0.9, seed=3)
    assert [c.index for c in many.choices] == [0, 1, 2] and many.object == "text_completion"
    again = client.completions.create(model="bob", prompt="Greet Kim.", n=3, max_tokens=8, temperature=0.9, seed=3)
    assert [c.text for c in again.choices] == [c.text for c in many.choices]   # a seed reproduces
    free = client.completions.create(model="bob", prompt="Greet Kim.", max_tokens=8, temperature=0).choices[0]
    if len(free.text) > 3:
        stop = free.text[2:4]
        cut = client.completions.create(model="bob", prompt="Greet Kim.", max_tokens=8, temperature=0, stop=[stop])
        assert cut.choices[0].text == free.text[:free.text.index(stop)] and cut.choices[0].finish_reason == "stop"
    # Streamed completions say finish_reason null until the last chunk, as OpenAI's API does; the
    # client's Completion type requires one in every chunk, so strict validation would refuse
    # OpenAI's own stream: this one call goes through a client that does not validate.
    loose = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    chunks = list(loose.completions.create(model="bob", prompt="Greet Kim.", max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == free.text
    assert [c.choices[0].finish_reason for c in chunks][-1] == free.finish_reason
    empty = client.completions.create(model="tiny-test", prompt="", max_tokens=3, temperature=0)
    assert empty.usage.prompt_tokens == 1 and empty.usage.completion_tokens == 3   # from beginning of text


def test_a_classifier_arm_answers_with_the_label_its_recipe_picks(server, tiny_base, arms):
    folders, tickets = arms
    client = server.client()
    for name in ("clf", "fs"):
        adapted = load_adapted(folders[name], tiny_base)
        rows = tickets.splits["test"][:6]
        want = [p.prediction for p in adapted.predict(adapted.engine(None, progress=False), tickets, rows)]
        with ThreadPoolExecutor(6) as pool:   # concurrent: scored together in one batch
            got = list(pool.map(lambda ex, name=name: client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": ex.input}]).choices[0].message.content, rows))
        assert got == want and set(got) <= set(tickets.labels)


def test_three_adapters_in_one_batch_each_give_their_own_output(server, tiny_base, arms):
    folders, _ = arms
    client = server.client()
    requests = [(name, f"Greet {n}.") for n in NAMES[:6] for name in ("ada", "bob", "cyd")]
    with ThreadPoolExecutor(len(requests)) as pool:
        got = list(pool.map(lambda r: client.chat.completions.create(
            model=r[0], messages=[{"role": "user", "content": r[1]}], max_tokens=10, temperature=0)
            .choices[0].message.content, requests))
    for (name, text), answer in zip(requests, got):
        adapted = load_adapted(folders[name], tiny_base)
        prompt = adapted.builder.build(Example("q", [{"role": "user", "content": text}], "")).text
        alone = adapted.engine(None, progress=False).generate([prompt], max_new_tokens=10)[0].text
        assert answer == alone, (name, text)
    assert len({answer for (name, _), answer in zip(requests, got) if _ == "Greet Ada."}) > 1   # adapters differ


def test_a_tiny_temperature_samples_the_greedy_answer(server):
    """Found by the fuzzer: temperature 5e-324 (0 in float32) made 0/0 probabilities; the prefill failed and
    the request was lost (it never answered)."""
    client = server.client()
    ask = dict(model="ada", prompt="Greet Ada.", max_tokens=6)
    greedy = client.completions.create(**ask, temperature=0).choices[0].text
    assert client.completions.create(**ask, temperature=5e-324, seed=1).choices[0].text == greedy


def test_health_counts_the_prompt_tokens_reused_from_a_shared_start(server):
    """A request whose prompt starts like the adapter's last one (instruction, chat template) prefills only
    the rest; /health says how many prompt tokens were prefilled and how many reused."""
    client = server.client()
    ask = "Please write a short and warm greeting, in one sentence, for my old friend"
    before = httpx.get(server.url + "/health").json()["prompt_tokens"]
    usage = [client.chat.completions.create(model="bob", messages=[{"role": "user", "content": f"{ask} {n}."}],
                                            max_tokens=2, temperature=0).usage.prompt_tokens for n in ("Ada", "Kim")]
    after = httpx.get(server.url + "/health").json()["prompt_tokens"]
    prefilled, reused = (after[k] - before[k] for k in ("prefilled", "reused"))
    assert prefilled + reused == sum(usage)
    assert reused >= usage[1] // 2   # the prompts differ only near their end


def test_without_mixing_one_adapter_runs_per_batch_until_it_drains():
    """The switching baseline of bench/serve_load.py: a server without mixed-adapter forwards."""
    from types import SimpleNamespace

    from tailor.serve.scheduler import Job, Scheduler
    jobs = [Job(SimpleNamespace(adapter=a), f"p{i}") for i, a in enumerate("aabab")]
    mixed, switching = Scheduler([], batch_size=4), Scheduler([], batch_size=4, mix_adapters=False)
    assert mixed._admit(jobs, []) == (jobs[:4], jobs[4:])
    joining, waiting = switching._admit(jobs, [])
    assert [j.prompt for j in joining] == ["p0", "p1", "p3"] and [j.prompt for j in waiting] == ["p2", "p4"]
    joining, waiting = switching._admit(waiting, [jobs[0]] * 3)   # a's batch still runs: b waits
    assert joining == [] and len(waiting) == 2


def test_auth_unknown_models_and_errors_in_openai_shape(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    with pytest.raises(openai.NotFoundError) as e:
        server.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(model="ada", messages=[{"role": "user", "content": "hi " * 3000}])
    assert e.value.body["code"] == "context_length_exceeded"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"   # health needs no key


def test_a_burst_of_malformed_requests_gets_4xx_and_the_server_keeps_serving(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad = [b"{not json", b"[]", json.dumps({"model": "ada"}).encode(),
           json.dumps({"model": "ada", "messages": []}).encode(),
           json.dumps({"model": "ada", "messages": [{"role": "robot", "content": "x"}]}).encode(),
           json.dumps({"model": "ada", "messages": [{"role": "user", "content": "x"}], "n": 99}).encode(),
           json.dumps({"model": "ada", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(),
           json.dumps({"model": "ada", "messages": [{"role": "user", "content": "x"}], "logit_bias": {}}).encode(),
           json.dumps({"model": "../../etc/passwd", "messages": [{"role": "user", "content": "x"}]}).encode(),
           b"x" * (2 << 20)]
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        codes = [http.post("/v1/chat/completions", content=body).status_code for body in bad * 3]
        assert all(400 <= c < 500 for c in codes), codes
        assert {413, 404, 400} <= set(codes)
        body = http.post("/v1/chat/completions", content=bad[7]).json()
        assert body["error"]["type"] == "invalid_request_error" and "logit_bias" in body["error"]["message"]
    ok = server.client().chat.completions.create(model="cyd", messages=[{"role": "user", "content": "Greet Eve."}],
                                                max_tokens=4, temperature=0)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_a_client_that_leaves_frees_its_slot(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": "ada", "messages": [{"role": "user", "content": "Greet Lou."}], "max_tokens": 2000,
                "temperature": 1.0, "stream": True}) as response:
            next(response.iter_lines())                      # started, then the client goes away
    deadline = time.time() + 20
    while server.scheduler.waiting and time.time() < deadline:
        time.sleep(0.1)
    assert server.scheduler.waiting == 0


def test_a_full_queue_is_a_429_and_only_loopback_goes_without_a_key(tiny_base, arms):
    folders, _ = arms
    app, scheduler = build(tiny_base, {"ada": folders["ada"]}, api_key=None, max_queue=2)
    scheduler.stop()   # a stopped worker: what is queued stays queued
    srv = Server(app, scheduler)
    try:
        with ThreadPoolExecutor(2) as pool:
            pending = [pool.submit(httpx.post, srv.url + "/v1/completions", json={"model": "ada", "prompt": "hi"},
                                   timeout=5) for _ in range(2)]
            time.sleep(1.0)
            third = httpx.post(srv.url + "/v1/completions", json={"model": "ada", "prompt": "hi"}, timeout=5)
            assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limit_exceeded"
            assert third.headers["retry-after"] == "1"
            for f in pending:
                with pytest.raises(httpx.ReadTimeout):
                    f.result()
    finally:
        srv.close()
    with pytest.raises(TailorError, match="without an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "key")
    check_bind("127.0.0.1", None)


def test_a_model_behind_the_server_is_a_base_that_measures_like_the_local_one(server, tmp_path, monkeypatch):
    """The loop closed: a zero-shot and a few-shot arm on `openai:URL#tiny-test` (Tailor's own
    server on loopback) score the same test rows as the local model does, options by log-likelihood."""
    from tailor.arm_run import EvalConfig, run_eval
    monkeypatch.setenv("TAILOR_REMOTE_API_KEY", KEY)
    tickets = write_tickets(tmp_path / "tickets.jsonl", 60)
    results = {}
    for model in ("tiny-test", f"openai:{server.url}/v1#tiny-test"):
        for method, options in (("zero-shot", {}), ("few-shot", {"k": 2})):
            r = run_eval(EvalConfig(model=model, task=str(tickets), method=method, method_options=options,
                                    dtype="fp32", cache=False, latency_requests=0,
                                    runs_dir=str(tmp_path / "runs")), progress=False)
            preds = [json.loads(line) for line in (Path(r["run_dir"]) / "predictions.jsonl").read_text().splitlines()]
            results[model, method] = [(p["prediction"], round(max(p["probs"].values()), 4)) for p in preds]
    for method in ("zero-shot", "few-shot"):
        assert results["tiny-test", method] == results[f"openai:{server.url}/v1#tiny-test", method]


def test_without_log_probabilities_a_remote_engine_matches_generated_answers_and_says_so(server, monkeypatch,
                                                                                          tmp_path):
    from tailor.engine import ResultCache
    from tailor.models import load_base
    from tailor.remote import RemoteEngine
    monkeypatch.setenv("TAILOR_REMOTE_API_KEY", KEY)
    remote = load_base(f"openai:{server.url}/v1#tiny-test")
    assert remote.n_params == 0 and remote.weights_id.startswith("openai:")
    cache = ResultCache(tmp_path / "engine.sqlite")
    counted = {"scored by matching generated text (the endpoint returns no log-probabilities)": 2,
               "generated answers that matched no option (counted as the first option)": 1}
    for replay in (False, True):   # a result replayed from the cache is counted as the computed one was
        engine = RemoteEngine(remote.model, remote.tokenizer, remote.weights_id, cache, progress=False)
        engine.logprobs = False   # as if the endpoint gave none
        free = engine.generate(["Greet Ada."], max_new_tokens=3)[0].text.strip()
        scores = engine.score(["Greet Ada.", "Greet Ada."], [[free or "x", "zzz"], ["zzz", "yyy"]])
        assert [s.cached for s in scores] == [replay, replay]
        assert scores[0].logprobs[0] == 0.0 and scores[0].logprobs[1] == float("-inf")
        assert engine.notes == counted


def test_a_teacher_behind_the_server_labels_for_distillation_as_the_arm_does_locally(server, arms, tiny_base,
                                                                                        tmp_path, monkeypatch):
    """A remote teacher (the served LoRA classifier, reached through its endpoint): its label
    probabilities are the local arm's, and a student distils from them."""
    from tailor.distill.teacher import label_rows
    from tailor.models import load_base
    folders, tickets = arms
    monkeypatch.setenv("TAILOR_REMOTE_API_KEY", KEY)
    remote = load_base(f"openai:{server.url}/v1#clf?tokenizer=tiny-test")
    teacher = tmp_path / "remote-teacher"
    save_adapted(make_method("zero-shot").fit(tickets, remote, progress=False), teacher)
    rows = tickets.splits["train"][:8]
    far = label_rows(teacher, rows, progress=False).rows
    near = label_rows(folders["clf"], rows, progress=False).rows
    for ex in rows:
        assert far[ex.id]["label"] == near[ex.id]["label"]
        assert far[ex.id]["probs"] == pytest.approx(near[ex.id]["probs"], abs=2e-3)
    student = make_method("distill", {"teacher": str(teacher), "labels": "soft", "student": {"layers": 1},
                                      "steps": 2, "batch_size": 4, "precision": "fp32"})
    adapted = student.fit(tickets, tiny_base, tmp_path / "student", progress=False)
    assert adapted.recipe.train["distill"]["student"]["params_ratio"] is None   # an endpoint's size is unknown
