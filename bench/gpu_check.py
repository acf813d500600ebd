"""Tailor's CUDA paths, each run once on the GPU and checked: what a team uses, in one script of a few
minutes (under 8 on one H200), every path in its own try block so one failure does not hide the others.

Paths (smollm2-135m, bf16, the bundled factual-summary-pairs task: sentences and their summaries):
- device: `--device auto` (every command's default, models.pick_device) picks CUDA, and the base
  loads there in the dtype asked for;
- lora: a ladder step: a lora (SFT) arm fitted on the task's train split, saved as an arm folder,
  measured on its test rows (tailor.measure: batched generation, preference accuracy, latency);
- dpo: a DPO arm from that SFT arm (its adapter, frozen, the precomputed reference), a few steps;
- ppo: a reward-model arm (Bradley-Terry, a few steps), then PPO from the SFT arm against it: a few
  iterations of rollouts through the engine, rewards, GAE and clipped updates;
- mixed-adapters: the SFT and DPO adapters and the bare base, rows of all three in one batch through
  the engine (lora_rows), each row's text compared with its adapter's engine alone. Exact equality is
  asked in fp32 (a second fp32 copy of the base); in bf16 a different batch can round differently,
  so the bf16 agreement is reported and its tokens/s is the path's;
- serve: `tailor serve` of the base with both adapters in a subprocess on loopback, driven with the
  `openai` client: the model list, streaming equal to non-streaming at temperature 0, then a load of
  concurrent chat requests over the three models (all must succeed), and /health;
- predict: `tailor predict` (a subprocess) of the SFT arm over a small prompt file (generation) and of
  a zero-shot tweet-sentiment arm over a small labelled file (option scoring): every row back, in order.

Peak CUDA memory: for paths in this process, torch's peak allocated bytes of the path; for the
subprocesses, the most nvidia-smi showed for the process (CUDA context and allocator cache included),
or, where nvidia-smi lists no processes (some containers), the growth of the GPU's used memory.

Without CUDA it says so and exits 0, having run nothing. `--device cpu` runs the same paths in a tiny
configuration (default model tiny-test; smollm2-135m works too): the check of this script itself.

    python bench/gpu_check.py                       # on a machine with a GPU
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/gpu_check.py --device cpu [--model smollm2-135m]

It prints a table and, last, one JSON line: per path ok, tokens/s, peak CUDA memory (MiB), seconds, a
note, and the error line if it failed. The exit status is 1 when a path failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TASK = "factual-summary-pairs"
# what each path runs: on a GPU what a team would run, kept to minutes; tiny: the same paths on a CPU
SIZES = {
    "gpu": {"lora_steps": 60, "batch_size": 16, "lora_lr": 1e-3, "dpo_steps": 20, "dpo_batch": 8, "train_rows": None,
            "eval_rows": 92, "mixed_prompts": 32, "new_tokens": 32, "engine_batch": 64, "requests": 128,
            "concurrency": 32, "predict_rows": 92, "classify_rows": 300, "ready_s": 300, "subprocess_s": 300,
            "rm_steps": 10, "ppo_steps": 3, "rollout_prompts": 16, "minibatch_prompts": 8},
    "tiny": {"lora_steps": 3, "batch_size": 4, "lora_lr": 2e-2, "dpo_steps": 2, "dpo_batch": 2, "train_rows": 16,
             "eval_rows": 3, "mixed_prompts": 3, "new_tokens": 8, "engine_batch": 16, "requests": 9,
             "concurrency": 3, "predict_rows": 4, "classify_rows": 6, "ready_s": 240, "subprocess_s": 300,
             "rm_steps": 2, "ppo_steps": 2, "rollout_prompts": 2, "minibatch_prompts": 1},
}


class CheckFailed(Exception):
    """A path ran but gave the wrong answer."""


@dataclass
class PathResult:
    path: str
    ok: bool = False
    tokens_per_s: float | None = None
    peak_cuda_mem_mb: float | None = None
    mem_source: str | None = None
    seconds: float = 0.0
    note: str = ""
    error: str | None = None


def error_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:400]


# ------------------------------------------------------------------ GPU memory of a subprocess


def _smi(query: str) -> list[list[str]] | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{query}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return [[x.strip() for x in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


class GpuMemPoller:
    """The most GPU memory a subprocess held while it ran, from nvidia-smi every half second."""

    def __init__(self, pid: int):
        self.pid, self.by_pid, self.growth = pid, None, None
        total = _smi("gpu=memory.used")
        self.before = sum(float(r[0]) for r in total) if total else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            apps = _smi("compute-apps=pid,used_memory") or []
            mine = [float(mem) for pid, mem in apps if pid == str(self.pid) and mem.replace(".", "").isdigit()]
            if mine:
                self.by_pid = max(self.by_pid or 0.0, sum(mine))
            total = _smi("gpu=memory.used")
            if total and self.before is not None:
                self.growth = max(self.growth or 0.0, sum(float(r[0]) for r in total) - self.before)
            self._stop.wait(0.5)

    def stop(self) -> tuple[float | None, str | None]:
        self._stop.set()
        self._thread.join(timeout=15)
        if self.by_pid is not None:
            return self.by_pid, "nvidia-smi (the process)"
        if self.growth is not None:
            return self.growth, "nvidia-smi (GPU used memory, growth while it ran)"
        return None, None


# ------------------------------------------------------------------ the check


class Check:
    def __init__(self, args):
        import torch
        self.torch, self.args = torch, args
        self.device = args.device
        self.cuda = self.device.startswith("cuda")
        self.size = SIZES["gpu" if self.cuda else "tiny"]
        self.dtype = args.dtype or ("bf16" if self.cuda else "fp32")
        self.precision = "bf16" if self.dtype == "bf16" else "fp32"
        self.work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.base = self.task = None
        self.arms: dict[str, Path] = {}   # arm folders the paths made: sft, dpo
        self.results: list[PathResult] = []
        self.env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}

    # ---- running paths
    def run(self, name: str, fn) -> PathResult:
        torch = self.torch
        r = PathResult(name)
        print(f"\n== {name}", flush=True)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            fn(r)
            r.ok = True
        except Exception as e:   # every path is reported, whatever it raised
            r.ok, r.error = False, error_line(e)
            traceback.print_exc()
        if self.cuda:
            try:
                torch.cuda.synchronize()
                if r.peak_cuda_mem_mb is None:
                    r.peak_cuda_mem_mb = torch.cuda.max_memory_allocated() / 2 ** 20
                    r.mem_source = "torch allocated (this process)"
            except Exception as e:   # a broken CUDA context: say so on the path, keep going
                r.note += f" [CUDA after the path: {error_line(e)}]"
        r.seconds = time.perf_counter() - t0
        print(f"   {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s" + (f": {r.note}" if r.note else "")
              + (f"\n   error: {r.error}" if r.error else ""), flush=True)
        self.results.append(r)
        return r

    def need_base(self):
        if self.base is None:
            raise CheckFailed("the base did not load (see the device path)")
        return self.base

    def sft_and_dpo(self, r: PathResult) -> dict[str, Path]:
        """The SFT and DPO arms of the paths above; where one failed, a quick lora arm stands in
        (said in the note), so the paths after it still run."""
        from tailor.methods import make_method, save_adapted
        out = {}
        for i, name in enumerate(("sft", "dpo")):
            if name in self.arms:
                out[name] = self.arms[name]
                continue
            folder = self.work / f"stand-in-{name}"
            if not (folder / "recipe.json").exists():
                opts = {"steps": 2, "batch_size": self.size["batch_size"], "lr": 2e-2, "seed": 10 + i,
                        "precision": self.precision, "max_train_examples": self.size["train_rows"] or 64}
                save_adapted(make_method("lora", opts).fit(self.task_of(), self.need_base(), folder, progress=False), folder)
            out[name] = folder
            r.note += f"[{name} failed above: a 2-step lora arm stands in] "
        return out

    def task_of(self):
        from tailor.datasets import load_task
        if self.task is None:
            self.task = load_task(TASK)
        return self.task

    def tailor(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tailor.cli", *args]

    # ---- the paths
    def device_path(self, r: PathResult) -> None:
        from tailor.models import load_base, pick_device
        auto = pick_device(None)   # what --device auto, every command's default, picks
        torch = self.torch
        r.note = f"pick_device(auto) -> {auto}"
        self.base = base = load_base(self.args.model, self.dtype, self.device)
        param = next(base.model.parameters())
        r.note += f"; {self.args.model} on {param.device} in {str(param.dtype).removeprefix('torch.')}"
        if self.cuda:
            r.note += f"; {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}"
            if auto.type != "cuda":
                raise CheckFailed(f"pick_device(auto) chose {auto} although torch.cuda.is_available()")
        if param.device.type != torch.device(self.device).type:
            raise CheckFailed(f"the base's weights are on {param.device}, not {self.device}")

    def lora_path(self, r: PathResult) -> None:
        from tailor.measure import measure
        from tailor.methods import make_method, save_adapted
        s, task, base = self.size, self.task_of(), self.need_base()
        folder = self.work / "sft"
        arm = make_method("lora", {"steps": s["lora_steps"], "batch_size": s["batch_size"], "lr": s["lora_lr"],
                                   "max_train_examples": s["train_rows"], "precision": self.precision, "seed": 0})
        adapted = arm.fit(task, base, folder, progress=False)
        save_adapted(adapted, folder)
        train = adapted.recipe.train
        r.tokens_per_s = train["train_tokens"] / train["train_time_s"]
        if train["steps"] != s["lora_steps"] or not math.isfinite(train["final_loss"]):
            raise CheckFailed(f"trained {train['steps']} of {s['lora_steps']} steps, final loss {train['final_loss']}")
        rows = task.splits["test"][:s["eval_rows"]]
        m = measure(adapted, task, rows, cache=None, batch_size=s["engine_batch"], max_new_tokens=s["new_tokens"],
                    progress=False, latency_requests=2)
        gen = m.cost.completion_tokens_per_request * len(rows) / max(m.cost.eval_wall_s, 1e-9)
        r.note = (f"{train['steps']} steps of {s['batch_size']}, final loss {train['final_loss']:.3f}, "
                  f"{train['train_tokens']:,} tokens (training tokens/s); measured {len(rows)} test rows: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in m.metrics.items() if isinstance(v, float))
                  + f"; {gen:,.0f} generated tokens/s, latency p50 {m.cost.latency_p50_s or 0:.3f} s")
        if not m.predictions or len(m.predictions) != len(rows):
            raise CheckFailed(f"measured {len(m.predictions)} of {len(rows)} rows")
        self.arms["sft"] = folder

    def dpo_path(self, r: PathResult) -> None:
        from tailor.methods import make_method, save_adapted
        s, task, base = self.size, self.task_of(), self.need_base()
        opts = {"steps": s["dpo_steps"], "batch_size": s["dpo_batch"], "max_train_examples": s["train_rows"],
                "precision": self.precision, "beta": 0.1}
        if "sft" in self.arms:
            opts["init_adapter"] = str(self.arms["sft"])
        folder = self.work / "dpo"
        adapted = make_method("dpo", opts).fit(task, base, folder, progress=False)
        save_adapted(adapted, folder)
        train = adapted.recipe.train
        r.tokens_per_s = train["train_tokens"] / train["train_time_s"]
        r.note = (f"{train['steps']} steps of {s['dpo_batch']} pairs from "
                  f"{'the SFT arm (reference precomputed)' if 'init_adapter' in opts else 'a fresh adapter'}, "
                  f"final loss {train['final_loss']:.4f} (ln 2 = 0.6931 at the start)")
        if train["steps"] != s["dpo_steps"] or not math.isfinite(train["final_loss"]):
            raise CheckFailed(f"trained {train['steps']} of {s['dpo_steps']} steps, final loss {train['final_loss']}")
        self.arms["dpo"] = folder

    def ppo_path(self, r: PathResult) -> None:
        from tailor.methods import make_method, save_adapted
        s, task, base = self.size, self.task_of(), self.need_base()
        rm_folder = self.work / "rm"
        rm = make_method("reward-model", {"steps": s["rm_steps"], "batch_size": s["dpo_batch"],
                                          "max_train_examples": s["train_rows"], "precision": self.precision})
        save_adapted(rm.fit(task, base, rm_folder, progress=False), rm_folder)
        opts = {"reward_model": str(rm_folder), "steps": s["ppo_steps"], "rollout_prompts": s["rollout_prompts"],
                "minibatch_prompts": s["minibatch_prompts"], "max_new_tokens": s["new_tokens"],
                "max_train_examples": s["train_rows"], "precision": self.precision}
        if "sft" in self.arms:
            opts["init_adapter"] = str(self.arms["sft"])
        adapted = make_method("ppo", opts).fit(task, base, self.work / "ppo", progress=False)
        train = adapted.recipe.train
        r.tokens_per_s = train["train_tokens"] / train["train_time_s"]
        hist = train["history"]
        r.note = (f"{train['iterations']} iterations of {s['rollout_prompts']} rollouts from "
                  f"{'the SFT arm' if 'init_adapter' in opts else 'a fresh adapter'} (tokens/s: optimised tokens over "
                  f"the whole time, rollouts included): reward {hist[0]['reward']:+.3f} -> {hist[-1]['reward']:+.3f}, "
                  f"KL {hist[-1]['kl']:.4f}, first minibatch ratio - 1 at most {hist[0]['first_ratio_max_dev']:.2e}")
        bad = [k for h in hist for k in ("reward", "kl", "policy_loss", "value_loss") if not math.isfinite(h[k])]
        if train["iterations"] != s["ppo_steps"] or train["stopped"] != "steps" or bad:
            raise CheckFailed(f"{train['iterations']} of {s['ppo_steps']} iterations (stopped: {train['stopped']}), "
                              f"non-finite: {sorted(set(bad))}")

    def mixed_path(self, r: PathResult) -> None:
        from tailor.models import load_base
        s, base = self.size, self.need_base()
        arms = self.sft_and_dpo(r)
        rows = self.task_of().splits["test"][:s["mixed_prompts"]]
        runs = {self.dtype: base}
        if self.dtype != "fp32":   # exact equality is asked in fp32: a second copy of the base
            runs["fp32"] = load_base(self.args.model, "fp32", self.device)
        notes, exact = [], None
        for dtype, b in runs.items():
            same, n, differ, tps = self._mixed_once(b, arms, rows)
            notes.append(f"{dtype}: {same}/{n} rows equal alone")
            if dtype == self.dtype:
                r.tokens_per_s = tps
            if dtype == "fp32":
                exact = (same, n, differ)
        same, n, differ = exact
        r.note += (f"{n} rows ({len(rows)} prompts x sft, dpo, base) in mixed batches of {s['engine_batch']}: "
                   + "; ".join(notes) + f"; sft differs from the base on {differ}/{len(rows)} prompts (fp32)")
        if same != n:
            raise CheckFailed(f"fp32: {n - same} of {n} rows of a mixed batch differ from their adapter alone")
        if not differ:
            raise CheckFailed("the sft adapter gave the base's text on every prompt: equality proves nothing")

    def _mixed_once(self, b, arms: dict[str, Path], rows) -> tuple[int, int, int, float]:
        from tailor.engine import Engine
        from tailor.methods import load_adapted
        from tailor.methods.finetune import lora_stack
        s = self.size
        alone_arms = {name: load_adapted(folder, b) for name, folder in arms.items()}
        names, prompts = [], []
        for ex in rows:   # each prompt under sft, dpo and the bare base (the sft arm's prompt)
            for name in ("sft", "dpo", None):
                names.append(name)
                prompts.append(alone_arms[name or "sft"].builder.build(ex).text)
        model, ids = lora_stack(b, arms)
        mixed = Engine(model, b.tokenizer, b.weights_id, None, batch_size=s["engine_batch"], progress=False, adapters=ids)
        self._sync()
        t0 = time.perf_counter()
        got = mixed.generate(prompts, max_new_tokens=s["new_tokens"], adapters=names)
        self._sync()
        wall = time.perf_counter() - t0
        alone: dict[int, str] = {}
        for name in ("sft", "dpo", None):
            idx = [i for i, a in enumerate(names) if a == name]
            engine = (alone_arms[name].engine(None, batch_size=s["engine_batch"], progress=False) if name else
                      Engine(b.model, b.tokenizer, b.weights_id, None, batch_size=s["engine_batch"], progress=False))
            for i, g in zip(idx, engine.generate([prompts[i] for i in idx], max_new_tokens=s["new_tokens"])):
                alone[i] = g.text
        wrong = [i for i, g in enumerate(got) if g.text != alone[i]]
        for i in wrong[:3]:
            print(f"   {b.dtype} row {i} ({names[i] or 'base'}): mixed {got[i].text[:60]!r} alone {alone[i][:60]!r}")
        differ = sum(got[3 * k].text != got[3 * k + 2].text for k in range(len(rows)))
        return len(got) - len(wrong), len(got), differ, sum(g.completion_tokens for g in got) / wall

    def serve_path(self, r: PathResult) -> None:
        import httpx
        import openai
        s = self.size
        arms = self.sft_and_dpo(r)
        model = self.args.model
        port = _free_port()
        log = self.work / "serve.log"
        argv = self.tailor("serve", "--base", model, "--adapter", f"sft={arms['sft']}", "--adapter",
                           f"dpo={arms['dpo']}", "--port", str(port), "--dtype", self.dtype, "--device", self.device,
                           "--batch-size", str(s["concurrency"]))
        proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                env=self.env)
        poller = GpuMemPoller(proc.pid) if self.cuda else None
        url = f"http://127.0.0.1:{port}"
        try:
            t0 = time.perf_counter()
            while True:
                if proc.poll() is not None:
                    raise CheckFailed(f"tailor serve exited ({proc.returncode}): {_last_line(log)}")
                try:
                    if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > s["ready_s"]:
                    raise CheckFailed(f"tailor serve not ready after {s['ready_s']} s: {_last_line(log)}")
                time.sleep(0.5)
            ready = time.perf_counter() - t0
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=180)
            listed = {m.id for m in client.models.list().data}
            if not {"sft", "dpo", model} <= listed:
                raise CheckFailed(f"/v1/models lists {sorted(listed)}, not sft, dpo and {model}")
            rows = self.task_of().splits["test"]
            ask = dict(model="sft", messages=[{"role": "user", "content": rows[0].input}], max_tokens=s["new_tokens"],
                       temperature=0)
            whole = client.chat.completions.create(**ask).choices[0].message.content
            streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True)
                               if c.choices)
            if streamed != whole:
                raise CheckFailed(f"streamed {streamed[:60]!r} != non-streamed {whole[:60]!r} at temperature 0")
            models = ("sft", "dpo", model)
            requests = [dict(model=models[i % 3], messages=[{"role": "user", "content": rows[i % len(rows)].input}],
                             max_tokens=s["new_tokens"], temperature=0) for i in range(s["requests"])]

            def one(req):
                start = time.perf_counter()
                try:
                    done = client.chat.completions.create(**req)
                    return done.usage.completion_tokens, time.perf_counter() - start, None
                except Exception as e:   # counted: the check is that none fails
                    return 0, time.perf_counter() - start, error_line(e)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(s["concurrency"]) as pool:
                answers = list(pool.map(one, requests))
            wall = time.perf_counter() - t0
            failed = [e for _, _, e in answers if e]
            tokens = sum(t for t, _, _ in answers)
            latencies = sorted(x for _, x, e in answers if not e)
            p50 = latencies[len(latencies) // 2] if latencies else 0.0
            health = httpx.get(f"{url}/health", timeout=10).json()
            r.tokens_per_s = tokens / wall
            r.note = (f"ready in {ready:.1f} s; stream == non-stream; {len(requests)} chat requests at concurrency "
                      f"{s['concurrency']} over sft, dpo and the base: {len(requests) - len(failed)} answered, "
                      f"{tokens:,} completion tokens in {wall:.1f} s, p50 {p50:.2f} s; "
                      f"/health {health.get('status')}, prompt tokens {health.get('prompt_tokens')}")
            if failed:
                raise CheckFailed(f"{len(failed)} of {len(requests)} requests failed, first: {failed[0]}")
            if health.get("status") != "ok":
                raise CheckFailed(f"/health says {health}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if poller:
                r.peak_cuda_mem_mb, r.mem_source = poller.stop()
            print(f"   server log: {log}", flush=True)

    def predict_path(self, r: PathResult) -> None:
        from tailor.datasets import load_task
        from tailor.methods import make_method, save_adapted
        s = self.size
        arms = self.sft_and_dpo(r)
        rows = self.task_of().splits["test"][:s["predict_rows"]]
        gen = _write_jsonl(self.work / "predict-prompts.jsonl",
                           [{"id": ex.id, "prompt": ex.input, "completion": ex.target} for ex in rows])
        summary, peak = self._predict(arms["sft"], gen, "predict-prompts.out.jsonl", [ex.id for ex in rows])
        r.tokens_per_s = summary["tokens_per_s"]
        r.note = (f"sft arm: {summary['written']} of {len(rows)} prompts, {summary['tokens_per_s'] or 0:,.0f} tokens/s "
                  f"(prompt + completion, as tailor predict counts)")
        tweets = load_task("tweet-sentiment")
        zero = self.work / "zero-shot-tweets"
        if not (zero / "recipe.json").exists():
            save_adapted(make_method("zero-shot", {}).fit(tweets, self.need_base(), zero, progress=False), zero)
        rows = tweets.splits["test"][:s["classify_rows"]]
        labelled = _write_jsonl(self.work / "predict-tweets.jsonl",
                                [{"id": ex.id, "text": ex.input, "label": ex.target} for ex in rows])
        summary, peak2 = self._predict(zero, labelled, "predict-tweets.out.jsonl", [ex.id for ex in rows])
        r.note += (f"; zero-shot classify arm: {summary['written']} of {len(rows)} tweets, {summary['rows_per_s'] or 0:,.1f} "
                   f"rows/s, " + ", ".join(f"{k} {v:.3f}" for k, v in (summary.get("metrics") or {}).items()
                                           if isinstance(v, float)))
        peaks = [p for p in (peak, peak2) if p[0] is not None]
        if peaks:
            r.peak_cuda_mem_mb, r.mem_source = max(peaks)

    def _predict(self, arm: Path, input_path: Path, output: str, ids: list[str]):
        s = self.size
        out = self.work / output
        argv = self.tailor("predict", str(arm), "--input", str(input_path), "--output", str(out), "--batch-size",
                           str(s["engine_batch"]), "--max-new-tokens", str(s["new_tokens"]), "--dtype", self.dtype,
                           "--device", self.device, "--no-cache", "--runs-dir", str(self.work / "runs"))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                                start_new_session=True)
        poller = GpuMemPoller(proc.pid) if self.cuda else None
        try:
            text, _ = proc.communicate(timeout=s["subprocess_s"])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
            raise CheckFailed(f"tailor predict did not finish in {s['subprocess_s']} s") from None
        finally:
            peak = poller.stop() if poller else (None, None)
        (self.work / f"{output}.log").write_text(text)
        if proc.returncode:
            raise CheckFailed(f"tailor predict exited {proc.returncode}: {_last_line_of(text)}")
        lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        if [line.get("id") for line in lines] != ids or not all("prediction" in line for line in lines):
            raise CheckFailed(f"{out}: {len(lines)} lines, not the input's {len(ids)} rows in order with a prediction")
        found = re.search(r"run directory: (\S+)", text)
        if not found:
            raise CheckFailed(f"tailor predict printed no run directory: {_last_line_of(text)}")
        summary = json.loads((Path(found.group(1)) / "predict.json").read_text())
        if summary["failed"]:
            raise CheckFailed(f"{summary['failed']} rows failed ({summary['errors']})")
        return summary, peak

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _last_line_of(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:400] if lines else "(no output)"


def _last_line(path: Path) -> str:
    return _last_line_of(path.read_text(errors="replace")) if path.exists() else "(no log)"


def table(results: list[PathResult]) -> str:
    rows = [f"{'path':<15} {'result':<7} {'tokens/s':>10} {'peak CUDA MiB':>14} {'seconds':>8}  note / error"]
    for r in results:
        tps = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s is not None else "-"
        mem = f"{r.peak_cuda_mem_mb:,.0f}" if r.peak_cuda_mem_mb is not None else "-"
        rows.append(f"{r.path:<15} {'ok' if r.ok else 'FAILED':<7} {tps:>10} {mem:>14} {r.seconds:>8.1f}  "
                    + (r.error if r.error else r.note))
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (cpu: the same paths, tiny)")
    ap.add_argument("--model", default=None, help="default: smollm2-135m on CUDA, tiny-test on CPU")
    ap.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--work", default=None, help="folder for arms, logs and outputs (default: a new temporary one)")
    args = ap.parse_args()

    import torch
    cuda = torch.cuda.is_available()
    versions = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if args.device == "auto":
        args.device = "cuda" if cuda else "none"
    if args.device.startswith("cuda") and not cuda:
        args.device = "none"
    if args.device == "none":
        print(f"no CUDA device here (torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'}): "
              "nothing was run. --device cpu runs the same paths, tiny, on the CPU.")
        print(json.dumps({"cuda": False, "ran": False, **versions, "paths": {}}))
        return 0
    args.model = args.model or ("smollm2-135m" if args.device.startswith("cuda") else "tiny-test")
    check = Check(args)
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if check.cuda else None
    print(f"gpu_check: {args.model} in {check.dtype} on {args.device}{f' ({gpu})' if gpu else ''}, "
          f"{'GPU' if check.cuda else 'tiny CPU'} sizes; work folder {check.work}", flush=True)
    t0 = time.perf_counter()
    for name, fn in (("device", check.device_path), ("lora", check.lora_path), ("dpo", check.dpo_path),
                     ("ppo", check.ppo_path), ("mixed-adapters", check.mixed_path), ("serve", check.serve_path),
                     ("predict", check.predict_path)):
        check.run(name, fn)
    wall = time.perf_counter() - t0
    print("\n" + table(check.results), flush=True)
    summary = {"cuda": check.cuda, "ran": True, "device": args.device, "gpu": gpu, "model": args.model,
               "dtype": check.dtype, **versions, "wall_s": round(wall, 1),
               "all_ok": all(r.ok for r in check.results),
               "paths": {r.path: {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(r).items()
                                  if k != "path"} for r in check.results}}
    print(json.dumps(summary), flush=True)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
