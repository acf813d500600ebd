"""LoRA training speed through Tailor's loop: eager, each of Tailor's CPU kernels, all of them,
and torch.compile as the peer, on the same data and settings as `train_vs_trl.py`'s Tailor arm
(smollm2-135m, tweet-sentiment, batch 16, r=16 all-linear, bf16). Configurations:
- eager: `kernels: off` (peft's LoRA layers, sdpa over the packed rows, nn.Dropout);
- each kernel alone (`kernels: [attention]`, `[lora]`, `[dropout]`) and all of them (`kernels: on`);
- compile: the eager configuration with every decoder layer compiled in place
  (`layer.compile(dynamic=True)`, inductor's `fallback_random` on: dropout draws aten's random
  stream, as eager does, and runs a little faster here), from a cold inductor cache. Whole-model
  compilation takes minutes on this machine; flex attention has no CPU backward in this torch.

Every configuration trains for real (`fit`, the loop's per-step metrics log). Its tokens/s is the
steady state: the first steps are left out, and so is any step that compiled. Compile's one-time
seconds are what its compiling steps took beyond their tokens at the steady rate, plus the
loop's probe (a timed forward and backward before step 1) where the probe compiled. Then each is
amortised over two real runs, the demo's LoRA arm (40 steps of 16) and one epoch of the default
2000 examples (125 steps), with the steps compile needs to pay back its compile time against
eager. This VM's speed drifts: the configurations without compile run in interleaved rounds
(`--repeats`) and keep their best round; compile runs once, between the first two rounds.
`--profile` adds a torch.profiler run of `kernels: on`: each kind of operator's share of a step
and the MFU bound (MFU if everything but the matmuls were free).

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/step_profile.py [--steps 24 --repeats 2 --profile]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from tailor.methods import make_method  # noqa: E402
from tailor.methods.finetune import LoRA  # noqa: E402
from train_vs_trl import LORA, tailor_arm, tailor_setup, train_flops  # noqa: E402

CONFIGS = {"eager": "off", "attention only": ["attention"], "lora only": ["lora"], "dropout only": ["dropout"],
           "tailor kernels": "on"}
WARM = 2   # first steps left out of every steady rate (allocator and caches warming up)
RUNS = {"demo LoRA arm": 40, "1 epoch of 2000": 125}   # steps of 16 examples
KINDS = {
    "matmul": {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"},
    "casts and copies": {"aten::copy_", "aten::clone", "aten::_to_copy"},
    "gathers and scatters": {"aten::index_select", "aten::scatter_add_", "aten::index_put_",
                             "aten::_index_put_impl_", "aten::index", "aten::index_add_", "aten::gather"},
    "softmax": {"aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax",
                "aten::_log_softmax_backward_data"},
    "dropout draws": {"aten::uniform_", "aten::log1p", "aten::cumsum_", "aten::bernoulli_"},
}
MARKS: list[tuple[str, int]] = []   # ("forward" | "step", graphs compiled so far): which steps compiled


def compiled_graphs() -> int:
    """Graphs compiled so far: dynamo's frames and inductor's compilations (forward and backward)."""
    c = torch._dynamo.utils.counters
    return c["frames"]["ok"] + sum(c["inductor"][f"fxgraph_cache_{k}"] for k in ("miss", "hit", "bypass"))


class CompiledLoRA(LoRA):
    """The eager arm with each decoder layer compiled in place: still trained by Tailor's loop."""

    def trainable_model(self, task, base):
        model = super().trainable_model(task, base)
        decoder = model.get_base_model().get_decoder()
        for layer in decoder.layers:
            layer.compile(dynamic=True)
        # on the decoder, which is not compiled (a hook on a compiled layer would be traced)
        decoder.register_forward_pre_hook(lambda *a: MARKS.append(("forward", compiled_graphs())))
        return model


class Recompiles(logging.Handler):
    """Dynamo's recompile messages, kept (not printed): how many, and the first guard each failed."""

    def __init__(self):
        super().__init__()
        self.reasons: list[str] = []

    def emit(self, record):
        lines = record.getMessage().splitlines()   # "Recompiling function NAME in FILE", ..., "- GUARD: why"
        self.reasons.append(f"{lines[0].split()[2]}: {lines[2].strip(' -')[:160]}" if len(lines) > 2 else lines[0])


def measure(arm, task, base, on_step=None) -> dict:
    """One real training run: per step (tokens, seconds) from the loop's metrics log, and the probe."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    hook = on_step and register_optimizer_step_post_hook(lambda *a: on_step())
    try:
        with tempfile.TemporaryDirectory() as out:
            train = arm.fit(task, base, Path(out), progress=False).recipe.train
            rows = [json.loads(line) for line in open(Path(out, "train_metrics.jsonl"))]
    finally:
        if hook:
            hook.remove()
    tokens = [0.0] + [r["tokens_per_s"] * r["elapsed_s"] for r in rows]   # both cumulative
    times = [0.0] + [r["elapsed_s"] for r in rows]
    steps = [(round(tokens[i + 1] - tokens[i]), times[i + 1] - times[i]) for i in range(len(rows))]
    return {"steps": steps, "probe_s": train["probe_s_per_step"], "train": train}


def steady(run: dict, skip=frozenset()) -> float:
    kept = [s for k, s in enumerate(run["steps"], 1) if k > WARM and k not in skip]
    return sum(n for n, _ in kept) / sum(t for _, t in kept)


def run_compiled(arm, task, base) -> dict:
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    torch._logging.set_logs(recompiles=True)
    recompile_log = logging.getLogger("torch._dynamo.guards.__recompiles")
    handlers, recompile_log.handlers = recompile_log.handlers, [Recompiles()]
    recompile_log.propagate = False
    MARKS.clear()
    before = compiled_graphs()
    try:
        with tempfile.TemporaryDirectory() as cache, temporary_cache_dir(cache), \
                torch._inductor.config.patch(fallback_random=True):
            run = measure(CompiledLoRA(**arm.model_dump()), task, base,
                          on_step=lambda: MARKS.append(("step", compiled_graphs())))
        run["recompiles"] = recompile_log.handlers[0].reasons
    finally:
        recompile_log.handlers, recompile_log.propagate = handlers, True
        torch._logging.set_logs()
    first = next(i for i, (event, _) in enumerate(MARKS) if event == "step")
    start = MARKS[first // 2][1]   # step 1's first forward: the probe ran as many forwards as step 1
    ends = [start] + [c for event, c in MARKS if event == "step"]
    run["probe_compiled"] = start > before
    run["compiled_steps"] = {k for k in range(1, len(ends)) if ends[k] > ends[k - 1]}
    run["graphs"] = ends[-1] - before
    rate = run["tps"] = steady(run, run["compiled_steps"])
    extra = sum(t - n / rate for k, (n, t) in enumerate(run["steps"], 1) if k in run["compiled_steps"])
    run["compile_s"] = extra + (run["probe_s"] - run["steps"][0][0] / rate if run["probe_compiled"] else 0.0)
    return run


def profile_shares(arm, task, base, active: int) -> tuple[dict, float, float]:
    """Each operator kind's share of the profiled steps' self time, aten calls a step, matmul s a step."""
    from torch.profiler import ProfilerActivity, profile, schedule
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=3, warmup=1, active=active, repeat=1)) as prof:
        measure(arm, task, base, on_step=prof.step)   # one profiler step per training step
    self_us, calls = defaultdict(float), 0
    for event in prof.key_averages():
        kind = "Python and autograd engine" if not event.key.startswith("aten::") else next(
            (k for k, names in KINDS.items() if event.key in names), "other operators (elementwise, norms, ...)")
        self_us[kind] += event.self_cpu_time_total
        calls += event.count if event.key.startswith("aten::") else 0
    total = sum(self_us.values())
    shares = {k: v / total for k, v in sorted(self_us.items(), key=lambda kv: -kv[1])}
    return shares, calls / active, self_us["matmul"] / 1e6 / active


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=24, help="training steps a configuration")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="rounds of the configurations without compile")
    p.add_argument("--profile", action="store_true", help="also profile kernels: on by operator kind")
    p.add_argument("--active", type=int, default=4, help="profiled steps (after 3 skipped and 1 warm-up)")
    args = p.parse_args()
    if args.steps < WARM + 4 or (args.profile and args.steps < 4 + args.active):
        p.error("too few --steps for a steady rate (and the profile's 4 skipped steps plus --active)")
    torch.set_num_threads(os.cpu_count() or 1)
    task, base, enc, _ = tailor_setup(args.steps * args.batch)   # every step sees new examples
    options = {**tailor_arm(args.batch).model_dump(), "steps": args.steps, "log_every": 1}
    arm = {name: make_method("lora", {**options, "kernels": k}) for name, k in CONFIGS.items()}
    rounds: dict[str, list[dict]] = defaultdict(list)
    compiled = None
    for r in range(args.repeats):
        for name in CONFIGS:
            rounds[name].append(run := measure(arm[name], task, base))
            run["tps"] = steady(run)
            print(f"round {r + 1}: {name}: {run['tps']:.0f} tokens/s", flush=True)
        if compiled is None:
            compiled = run_compiled(arm["eager"], task, base)
            print(f"compile: {compiled['tps']:.0f} tokens/s, {compiled['compile_s']:.1f} s compiling", flush=True)
    best = {name: max(runs, key=lambda run: run["tps"]) for name, runs in rounds.items()}
    tps = {name: run["tps"] for name, run in best.items()} | {"compile": compiled["tps"]}
    eager, kernels, per_step = tps["eager"], tps["tailor kernels"], sum(n for n, _ in compiled["steps"]) / args.steps

    print(f"\nLoRA training through Tailor's loop: smollm2-135m, tweet-sentiment, batch {args.batch}, r={LORA['r']} "
          f"all-linear, bf16, {torch.get_num_threads()} threads; {args.steps} steps a configuration (first {WARM} "
          f"left out), {per_step:.0f} tokens a step; best of {args.repeats} rounds, compile once")
    print(f"{'configuration':22}{'tokens/s':>10}{'vs eager':>10}  rounds (tokens/s)")
    for name in tps:
        each = ", ".join(f"{run['tps']:.0f}" for run in rounds[name]) if name in rounds else "once"
        print(f"{name:22}{tps[name]:>10.0f}{tps[name] / eager:>9.2f}x  {each}")
    where = (["probe"] if compiled["probe_compiled"] else []) + [f"step {k}" for k in sorted(compiled["compiled_steps"])]
    reasons = compiled["recompiles"]
    print(f"compile: {compiled['compile_s']:.1f} s one-time ({', '.join(where) or 'nothing'} compiled; "
          f"{compiled['graphs']} graphs), {len(reasons)} recompiles" + "".join(f"\n  - {r}" for r in reasons))

    amortised, payback = {}, None
    if tps["compile"] > eager:   # steps whose saving against eager adds up to the compile seconds
        payback = compiled["compile_s"] / (per_step / eager - per_step / tps["compile"])
    print(f"\n{'whole run (tokens/s)':28}{'eager':>8}{'kernels':>9}{'compile':>9}  compile incl. its compile s")
    for run_name, steps in RUNS.items():
        tokens = steps * per_step
        effective = tokens / (compiled["compile_s"] + tokens / tps["compile"])
        amortised[run_name] = {"steps": steps, "eager": eager, "tailor_kernels": kernels, "compile": effective}
        print(f"{f'{run_name} ({steps} steps)':28}{eager:>8.0f}{kernels:>9.0f}{effective:>9.0f}")
    print("compile pays back its compile time against eager " +
          (f"after {payback:.0f} steps" if payback else "never (not faster than eager in steady state)"))
    for name in ("attention only", "lora only", "dropout only", "tailor kernels"):
        vs = ", ".join(f"{tps[name] / a['compile']:.2f}x compile over {n}" for n, a in amortised.items())
        print(f"  {name:16}{tps[name] / eager:.2f}x eager, {tps[name] / tps['compile']:.2f}x compile steady, {vs}")

    result = {"tokens_per_s_eager": eager, "tokens_per_s_compile": tps["compile"], "compile_s": compiled["compile_s"],
              "tokens_per_s_tailor_kernels": kernels, "tokens_per_s_attention_only": tps["attention only"],
              "tokens_per_s_lora_only": tps["lora only"], "tokens_per_s_dropout_only": tps["dropout only"],
              "kernels_vs_eager": kernels / eager, "compile_vs_eager": tps["compile"] / eager,
              "amortised_tokens_per_s": amortised, "compile_payback_steps": round(payback) if payback else "never",
              "recompiles": len(reasons), "compiled_graphs": compiled["graphs"],
              "compile_probe_compiled": compiled["probe_compiled"],
              "compile_compiled_steps": sorted(compiled["compiled_steps"]), "steps": args.steps,
              "tokens_per_step": per_step, "rounds_tokens_per_s": {n: [r["tps"] for r in v] for n, v in rounds.items()}}
    if args.profile:
        from dtype_matmul import bf16_peak_flops
        shares, calls, matmul_s = profile_shares(arm["tailor kernels"], task, base, args.active)
        t, peak = best["tailor kernels"]["train"], bf16_peak_flops(fresh=True)
        flops_per_token = train_flops(t["train_tokens"], t["target_tokens"], sum(map(len, enc)) / len(enc),
                                      LORA["r"]) / t["train_tokens"]
        mfu, bound = flops_per_token * kernels / peak, flops_per_token * per_step / matmul_s / peak
        print(f"\nkernels on, profiled ({args.active} steps; self times, which add a few microseconds to every "
              f"operator): MFU {mfu:.3f} (bf16 peak {peak / 1e9:.0f} GFLOP/s)")
        for k, share in shares.items():
            print(f"  {k:44}{100 * share:6.1f}%")
        print(f"{calls:.0f} aten operator calls a step (nested calls included); with everything but the matmuls "
              f"free, MFU {bound:.2f}")
        result |= {"mfu": mfu, "mfu_bound_matmuls_only": bound, "op_calls_per_step": calls, "shares": shares}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
