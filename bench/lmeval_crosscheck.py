"""Cross-check Tailor's general-suite scoring against lm-evaluation-harness on the SAME items.

Both score the same prompts (rendered once by Tailor's prompt builder) and the same answer
continuations (builder.target_text(option)) with the same model object in the same dtype; lm-eval
reads them through a local task file (`output_type: multiple_choice`, no few-shot, empty target
delimiter), so any difference in accuracy comes from the scoring code, not the prompt.

lm-eval is a bench-only dependency:
    uv pip install -p .venv/bin/python --find-links "$PIP_FIND_LINKS" lm-eval

Run (heavy: take the CPU lock):
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/lmeval_crosscheck.py --benchmark mmlu --size 300

The last printed line is one JSON object: accuracy_tailor and accuracy_lm_eval (both ranking
options by summed log-probability, lm-eval's `acc`), the length-normalised variants (Tailor's
suite ranks per token, lm-eval's acc_norm per byte: not the same rule), items_per_s_ratio
(Tailor items/s ÷ lm-eval items/s; goal >= 3), agreement (share of items where both pick the same
option), wall times.

Where the speed comes from: lm-eval runs every (prompt, option) pair as its own sequence, so a
4-option item costs four prompt passes; Tailor's engine runs each prompt once, in one row with
all of its options under a tree attention mask, projects only the positions that predict option
tokens onto the vocabulary, and runs the system prompt shared by all items once per call.
lm-eval moves trailing whitespace of the prompt ('\\n' after 'assistant') into the
continuation, which adds the same log P('\\n') to every option of an item: the argmax, hence the
accuracy, is unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tailor.benchmarks.suite import LENGTH_NORM, suite_items  # noqa: E402
from tailor.engine import Engine, ResultCache  # noqa: E402
from tailor.evaluate import predict  # noqa: E402
from tailor.models import load_base  # noqa: E402

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: prompt
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", default="mmlu")
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on this CPU) | fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        sys.exit("lm-eval is not installed (bench-only dependency): "
                 "uv pip install -p .venv/bin/python --find-links \"$PIP_FIND_LINKS\" lm-eval")

    base = load_base(args.model, args.dtype)
    task, items, builder = suite_items(args.benchmark, base.tokenizer, base.model.config, args.size, args.seed)
    prompts = [builder.build(ex).text for ex in items]
    options = [[builder.target_text(o) for o in ex.choices] for ex in items]
    golds = [ex.choices.index(ex.target) for ex in items]
    print(f"{args.benchmark}: {len(items)} items, model {base.weights_id} ({base.dtype}, {base.device}), "
          f"{torch.get_num_threads()} threads", flush=True)

    # --- Tailor: a fresh result cache, so every item is computed once (timed, as the suite runs
    # it: options ranked per token); the sum-ranked picks, which lm-eval's `acc` uses, then come
    # from the same scores in the cache.
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(base.model, base.tokenizer, base.weights_id, cache=ResultCache(Path(tmp) / "c.sqlite"),
                        batch_size=args.batch_size, progress=False)
        t0 = time.perf_counter()
        suite_preds = predict(engine, builder, task, items, length_norm=LENGTH_NORM)
        wall_tailor = time.perf_counter() - t0
        preds = predict(engine, builder, task, items, length_norm=False)
        assert all(p.cached for p in preds)
    acc_suite = sum(p.prediction == p.target for p in suite_preds) / len(items)
    tailor_pick = [ex.choices.index(p.prediction) for ex, p in zip(items, preds)]
    acc_tailor = sum(p == g for p, g in zip(tailor_pick, golds)) / len(items)
    print(f"tailor:  accuracy {acc_tailor:.4f} (summed log-probs; per token, as in the suite: {acc_suite:.4f})"
          f"  {wall_tailor:.1f} s  {len(items) / wall_tailor:.2f} items/s", flush=True)

    # --- lm-eval: the same model object and tokenizer, the same texts through a local task file.
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "items.jsonl"
        data.write_text("".join(json.dumps({"prompt": p, "choices": o, "gold": g}) + "\n"
                                for p, o, g in zip(prompts, options, golds)))
        name = f"tailor_crosscheck_{args.benchmark}"
        (Path(tmp) / f"{name}.yaml").write_text(TASK_YAML.format(task=name, data=data))
        lm = HFLM(pretrained=base.model, tokenizer=base.tokenizer, batch_size=args.batch_size,
                  add_bos_token=False, max_length=2048)
        manager = TaskManager(include_path=tmp)
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, num_fewshot=0,
                                      log_samples=True, bootstrap_iters=0)
        wall_lm = time.perf_counter() - t0
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    lm_pick = [max(range(len(s["filtered_resps"])), key=lambda j: s["filtered_resps"][j][0]) for s in samples]
    acc_lm = out["results"][name]["acc,none"]
    acc_lm_norm = out["results"][name]["acc_norm,none"]
    agreement = sum(a == b for a, b in zip(tailor_pick, lm_pick)) / len(items)
    # Option log-probabilities normalised within each item (which removes lm-eval's shared
    # log P('\\n') term): equal up to float rounding when both score the same texts.
    gap = max(abs(a - b) for p, s in zip(preds, samples)
              for a, b in zip(_log_normalise([s_[0] for s_ in s["filtered_resps"]]),
                              [math.log(max(v, 1e-300)) for v in p.probs.values()]))
    print(f"lm-eval: accuracy {acc_lm:.4f} (acc_norm, per byte: {acc_lm_norm:.4f})  {wall_lm:.1f} s  "
          f"{len(items) / wall_lm:.2f} items/s", flush=True)
    print(f"same option picked on {agreement:.1%} of items; largest gap of normalised option "
          f"log-probabilities {gap:.3g}", flush=True)

    print(json.dumps({
        "benchmark": args.benchmark, "items": len(items), "model": base.weights_id,
        "dtype": str(base.dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "accuracy_tailor": round(acc_tailor, 4), "accuracy_lm_eval": round(acc_lm, 4),
        "accuracy_tailor_per_token": round(acc_suite, 4), "accuracy_lm_eval_norm": round(acc_lm_norm, 4),
        "agreement": round(agreement, 4), "max_logprob_gap": float(f"{gap:.3g}"),
        "wall_s_tailor": round(wall_tailor, 2), "wall_s_lm_eval": round(wall_lm, 2),
        "items_per_s_tailor": round(len(items) / wall_tailor, 3),
        "items_per_s_lm_eval": round(len(items) / wall_lm, 3),
        "items_per_s_ratio": round(wall_lm / wall_tailor, 2),
        "lm_eval_version": getattr(lm_eval, "__version__", "?"),
    }))


def _log_normalise(logprobs: list[float]) -> list[float]:
    m = max(logprobs)
    z = m + math.log(sum(math.exp(x - m) for x in logprobs))
    return [x - z for x in logprobs]


if __name__ == "__main__":
    main()
