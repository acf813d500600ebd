"""Serving soak: `tailor serve` of one base and three LoRA adapters against a crowd of clients that
do everything clients do, on loopback, bounded in count and time (it stops by itself).

The server is the real command (`tailor serve`, a subprocess on a free loopback port). The
adapters are three tiny LoRA arms trained here (a few steps each on a greeting task, different
seeds). Every valid request is first sent alone, once, for its reference answer (greedy, or
sampled with a seed: both reproducible); then `--requests` requests go out from `--clients`
concurrent clients, each request's kind drawn with a fixed seed:

- valid: chat or completion, streamed or not, n 1 or 2, to one of the adapters or the base;
  its answer must equal the reference, streamed text joined;
- slow reader: a valid streamed request read a few bytes at a time with pauses;
- slow sender: a valid body trickled in a few pieces with pauses (chunked, no Content-Length);
- malformed: not JSON, JSON of the wrong shape or types, an unknown field or model, numbers
  out of range (a seed past 64 bits, n 99), no key, a wrong key;
- oversized: a body past the server's 1 MiB limit, with a Content-Length, or chunked without one;
- disconnect: a long streamed request the client drops after its first event.

What must hold: no 5xx (nor a streamed error event), every valid request answered with its
reference, every malformed or oversized one a 4xx in OpenAI's error shape, the server's RSS
growth under 10% from the first thousand requests to the last, and the server alive at the end.

Run it alone (the CPU is shared; the server runs torch):
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/serve_soak.py [--requests 5000] [--clients 64]
Prints a table; the last line is one JSON object (requests, server_errors, valid_failed,
rss_growth, alive and the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
KEY = "sk-soak"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADAPTERS = ("ada", "bob", "cyd")
NAMES = ["Ada", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou"]
MAX_BODY = 1 << 20   # the server's default limit
# the request mix (weights): valid answers dominate, as on a real server
KINDS = {"valid": 50, "slow_reader": 6, "slow_sender": 5, "malformed": 20, "oversized": 7, "oversized_chunked": 7,
         "disconnect": 5}


def train_adapters(out: Path, model: str) -> dict[str, Path]:
    from tailor.methods import make_method, save_adapted
    from tailor.models import load_base
    from tailor.task import Example, Task
    rows = [Example(f"g{i}", f"Greet {n}.", f"Hello {n}, nice to meet you!") for i, n in enumerate(NAMES * 4)]
    task = Task("greetings", "generate", "Answer with a greeting.", rows)
    task.splits = {"train": rows[:40], "dev": rows[40:44], "test": rows[44:]}
    base = load_base(model, dtype="fp32", device="cpu")
    folders = {}
    for seed, name in enumerate(ADAPTERS):
        adapted = make_method("lora", {"steps": 4, "batch_size": 8, "lr": 0.05, "seed": seed, "precision": "fp32"}).fit(
            task, base, progress=False)
        folders[name] = out / name
        save_adapted(adapted, folders[name])
    return folders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def valid_pool(model: str) -> list[tuple[str, dict]]:
    """(path, body) of every valid request the soak sends: references are taken for each."""
    pool = []
    rng = random.Random(0)
    for target in (*ADAPTERS, model):
        for i, name in enumerate(NAMES[:6]):
            sample = {"temperature": 0.8, "seed": rng.randrange(1 << 62)} if i % 2 else {"temperature": 0}
            n = {"n": 2} if i == 5 else {}
            pool.append(("/v1/chat/completions", {"model": target, "messages": [{"role": "user", "content": f"Greet {name}."}],
                                                  "max_tokens": 8, **sample, **n}))
            pool.append(("/v1/completions", {"model": target, "prompt": f"Say hello to {name}:", "max_tokens": 8,
                                             **sample, **n}))
    return pool


def malformed(rng: random.Random) -> tuple[str, bytes, dict]:
    """(path, body, headers) of a request the server must refuse with a 4xx."""
    chat = {"model": "ada", "messages": [{"role": "user", "content": "Greet Ada."}], "max_tokens": 4}
    bad = [b"{not json", b"[]", b"null", b'"text"', json.dumps({"model": "ada"}).encode(),
           json.dumps({**chat, "messages": []}).encode(),
           json.dumps({**chat, "messages": [{"role": "robot", "content": "x"}]}).encode(),
           json.dumps({**chat, "n": 99}).encode(), json.dumps({**chat, "temperature": "hot"}).encode(),
           json.dumps({**chat, "logit_bias": {"1": 5}}).encode(), json.dumps({**chat, "seed": 1 << 70}).encode(),
           json.dumps({**chat, "model": "../../etc/passwd"}).encode(), json.dumps({**chat, "max_tokens": 10 ** 9}).encode(),
           json.dumps({**chat, "stop": [""]}).encode(), b'{"model": "ada", "prompt": "x", "temperature": NaN}',
           b'{"model": "ada", "prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"model": "ada", "prompt": "\xff"}']
    body = rng.choice(bad)
    headers = {**AUTH, "Content-Type": "application/json"}
    roll = rng.random()
    if roll < 0.1:
        headers.pop("Authorization")
    elif roll < 0.2:
        headers["Authorization"] = "Bearer sk-wrong"
    path = "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
    return path, body, headers


class Soak:
    def __init__(self, url: str, refs: dict, pool: list, requests: int, clients: int, seconds: float, pid: int):
        self.url, self.refs, self.pool, self.total, self.clients = url, refs, pool, requests, clients
        self.deadline = time.monotonic() + seconds
        self.proc = psutil.Process(pid)
        self.next = 0
        self.done = 0
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.problems: dict[str, Counter] = defaultdict(Counter)
        self.examples: list[str] = []
        self.server_errors = 0
        self.valid_failed = 0
        self.rss: dict[int, int] = {}
        self.latency: dict[str, list[float]] = defaultdict(list)

    def fail(self, kind: str, why: str, detail: str = "") -> None:
        self.problems[kind][why] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {why} {detail[:200]}")
        if kind in ("valid", "slow_reader", "slow_sender"):
            self.valid_failed += 1

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=limits) as http:
            await asyncio.gather(*(self.client(http, c) for c in range(self.clients)))

    async def client(self, http: httpx.AsyncClient, c: int) -> None:
        while self.next < self.total and time.monotonic() < self.deadline:
            i = self.next
            self.next += 1
            rng = random.Random(i)
            kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            t0 = time.perf_counter()
            try:
                await getattr(self, kind)(http, rng)
            except (httpx.TransportError, httpx.StreamError) as e:
                self.statuses[kind]["transport error"] += 1
                self.fail(kind, f"transport error {type(e).__name__}", str(e))
            self.latency[kind].append(time.perf_counter() - t0)
            self.done += 1
            if self.done % 1000 == 0:
                self.rss[self.done] = self.proc.memory_info().rss
                print(f"  {self.done:,} requests, server RSS {self.rss[self.done] / 2**20:.0f} MiB", flush=True)

    def status(self, kind: str, code: int) -> None:
        self.statuses[kind][code] += 1
        if code >= 500:
            self.server_errors += 1

    # ------------------------------------------------------------------ the kinds

    async def valid(self, http, rng, stream: bool | None = None, slow: bool = False) -> None:
        k = rng.randrange(len(self.pool))
        path, body = self.pool[k]
        stream = rng.random() < 0.4 if stream is None else stream
        kind = "slow_reader" if slow else "valid"
        if not stream:
            r = await http.post(path, json=body, headers=AUTH)
            self.status(kind, r.status_code)
            if r.status_code != 200:
                return self.fail(kind, f"status {r.status_code}", r.text)
            got = [c["message"]["content"] if "message" in c else c["text"] for c in r.json()["choices"]]
        else:
            texts: dict[int, list[str]] = defaultdict(list)
            async with http.stream("POST", path, json={**body, "stream": True}, headers=AUTH) as r:
                self.status(kind, r.status_code)
                if r.status_code != 200:
                    await r.aread()
                    return self.fail(kind, f"status {r.status_code}", r.text)
                async for line in r.aiter_lines():
                    if slow:
                        await asyncio.sleep(rng.uniform(0.01, 0.08))
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        self.server_errors += 1
                        return self.fail(kind, "error event", line)
                    for c in event["choices"]:
                        texts[c["index"]].append(c.get("delta", {}).get("content") or c.get("text") or "")
            got = ["".join(texts[j]) for j in sorted(texts)]
        if got != self.refs[k]:
            self.fail(kind, "answer differs from the request sent alone", f"{body} {got} != {self.refs[k]}")

    async def slow_reader(self, http, rng) -> None:
        await self.valid(http, rng, stream=True, slow=True)

    async def slow_sender(self, http, rng) -> None:
        k = rng.randrange(len(self.pool))
        path, body = self.pool[k]
        data = json.dumps(body).encode()
        cuts = sorted(rng.sample(range(1, len(data)), 3))

        async def trickle():
            for a, b in zip([0, *cuts], [*cuts, len(data)]):
                yield data[a:b]
                await asyncio.sleep(rng.uniform(0.05, 0.3))
        r = await http.post(path, content=trickle(), headers={**AUTH, "Content-Type": "application/json"})
        self.status("slow_sender", r.status_code)
        if r.status_code != 200:
            return self.fail("slow_sender", f"status {r.status_code}", r.text)
        got = [c["message"]["content"] if "message" in c else c["text"] for c in r.json()["choices"]]
        if got != self.refs[k]:
            self.fail("slow_sender", "answer differs from the request sent alone", f"{got} != {self.refs[k]}")

    async def malformed(self, http, rng) -> None:
        path, body, headers = malformed(rng)
        r = await http.post(path, content=body, headers=headers)
        self._refused("malformed", r, range(400, 500))

    async def oversized(self, http, rng) -> None:
        body = b'{"model": "ada", "prompt": "' + b"a" * (MAX_BODY + rng.randrange(1, 1 << 18)) + b'"}'
        r = await http.post("/v1/completions", content=body, headers={**AUTH, "Content-Type": "application/json"})
        self._refused("oversized", r, (413,))

    async def oversized_chunked(self, http, rng) -> None:
        async def body():
            yield b'{"model": "ada", "prompt": "'
            for _ in range(MAX_BODY // 65536 + 2):
                yield b"a" * 65536
            yield b'"}'
        r = await http.post("/v1/completions", content=body(), headers={**AUTH, "Content-Type": "application/json"})
        self._refused("oversized_chunked", r, (413,))

    async def disconnect(self, http, rng) -> None:
        target = rng.choice([*ADAPTERS])
        async with http.stream("POST", "/v1/chat/completions", headers=AUTH, json={
                "model": target, "messages": [{"role": "user", "content": "Greet Lou."}], "max_tokens": 200,
                "temperature": 1.0, "stream": True}) as r:
            self.status("disconnect", r.status_code)
            async for _ in r.aiter_lines():
                break   # the first event, then the client goes away mid-stream

    def _refused(self, kind: str, r: httpx.Response, want) -> None:
        self.status(kind, r.status_code)
        if r.status_code not in want:
            return self.fail(kind, f"status {r.status_code}", r.text)
        try:
            error = r.json()["error"]
            assert {"message", "type", "param", "code"} <= set(error) and error["message"]
        except Exception:
            self.fail(kind, "not OpenAI's error shape", r.text)


async def references(url: str, pool: list) -> list:
    refs = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for path, body in pool:
            r = await http.post(path, json=body, headers=AUTH)
            r.raise_for_status()
            refs.append([c["message"]["content"] if "message" in c else c["text"] for c in r.json()["choices"]])
    return refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--model", default="tiny-test")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=780, help="the soak stops sending after this")
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tailor-soak-"))
    print(f"training {len(ADAPTERS)} LoRA adapters of {args.model} ...", flush=True)
    arms = train_adapters(work, args.model)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(ROOT / ".venv" / "bin" / "tailor"), "serve", "--base", args.model, "--dtype", "fp32", "--device", "cpu",
            "--host", "127.0.0.1", "--port", str(port), "--batch-size", str(args.batch_size), "--api-key", KEY,
            *[f"--adapter={name}={folder}" for name, folder in arms.items()]]
    log = work / "server.log"
    server = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        pool = valid_pool(args.model)
        t0 = time.perf_counter()
        refs = asyncio.run(references(url, pool))
        print(f"{len(pool)} reference answers, each request alone, in {time.perf_counter() - t0:.1f} s", flush=True)
        soak = Soak(url, refs, pool, args.requests, args.clients, args.max_seconds, server.pid)
        t0 = time.perf_counter()
        asyncio.run(soak.run())
        wall = time.perf_counter() - t0
        rss_end = soak.proc.memory_info().rss
        # alive: health, and a valid request still answered as it was alone
        alive = server.poll() is None
        if alive:
            try:
                health = httpx.get(url + "/health", timeout=10).json()
                r = httpx.post(url + pool[0][0], json=pool[0][1], headers=AUTH, timeout=60).json()
                got = [c["message"]["content"] if "message" in c else c["text"] for c in r["choices"]]
                alive = health["status"] == "ok" and got == refs[0]
                waiting = health["waiting"]
            except Exception as e:   # noqa: BLE001 (reported as not alive)
                print(f"the server did not answer at the end: {e!r}")
                alive, waiting = False, None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    tracebacks = log.read_text().count("Traceback")
    first = soak.rss.get(1000) or min(soak.rss.values(), default=rss_end)
    growth = (rss_end - first) / first
    print(f"\n{args.requests:,} requests from {args.clients} clients over {len(ADAPTERS)} adapters and the base "
          f"({args.model}), {wall:.0f} s, {soak.done / wall:.1f} requests/s")
    print(f"{'kind':<18} {'sent':>6} {'failed':>6} {'p50 s':>6}  statuses")
    for kind in KINDS:
        lat = sorted(soak.latency[kind])
        p50 = f"{lat[len(lat) // 2]:.2f}" if lat else "-"
        print(f"{kind:<18} {len(lat):>6} {sum(soak.problems[kind].values()):>6} {p50:>6}  "
              + ", ".join(f"{k}: {v}" for k, v in sorted(soak.statuses[kind].items(), key=str)))
    for line in soak.examples:
        print("  e.g.", line)
    print(f"server RSS: {first / 2**20:.0f} MiB after the first 1,000 requests, {rss_end / 2**20:.0f} MiB at the end "
          f"({growth:+.1%}); tracebacks in its log: {tracebacks}; waiting at the end: {waiting}")
    print(json.dumps({"requests": soak.done, "server_errors": soak.server_errors, "valid_failed": soak.valid_failed,
                      "rss_growth": round(growth, 4), "alive": alive, "clients": args.clients, "model": args.model,
                      "wall_s": round(wall, 1), "total_s": round(time.perf_counter() - t_start, 1),
                      "kinds": {k: len(soak.latency[k]) for k in KINDS},
                      "problems": {k: dict(v) for k, v in soak.problems.items() if v},
                      "rss_mib": {str(k): round(v / 2**20) for k, v in {**soak.rss, "end": rss_end}.items()},
                      "server_tracebacks": tracebacks}))


if __name__ == "__main__":
    main()
