"""An arm exported as GGUF at several precisions, each read back by transformers and by llama.cpp
(where llama-cpp-python is installed) and measured on the task's test rows against the arm.

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/export_gguf.py RUN/arms/lora-640 \
        [--quant f16 q8_0] [--rows 300] [--out /tmp/gguf-bench]

The arm is loaded on its base in fp32 (the demo measured it in the base's automatic dtype; where its
run directory holds predictions-NAME.jsonl, those answers are compared too). The last line is one
JSON object: per precision the file's bytes, write and load seconds, and per model (arm, merged
safetensors, GGUF through transformers, GGUF through llama.cpp) the metric and the agreement with
the arm and with the merged model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tailor.commands.export import _check_rows
from tailor.export.arm import export_arm
from tailor.export.check import check_export
from tailor.jsonl import read_jsonl
from tailor.models import load_base, recipe_base
from tailor.recipe import find_arm, read_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arm")
    ap.add_argument("--quant", nargs="+", default=["f16", "q8_0"])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--out", default="/tmp/gguf-bench")
    ap.add_argument("--reference", nargs=2, metavar=("BASE_ARM", "GGUF"),
                    help="also export BASE_ARM (an arm of the unchanged base, e.g. zero-shot) as f32 and compare it "
                         "tensor by tensor with GGUF, the file llama.cpp's converter wrote that the base came from")
    args = ap.parse_args()
    folder = find_arm(args.arm)
    recipe, _ = read_recipe(folder)
    rows, task = _check_rows(folder, recipe, args.rows, None)
    base = load_base(recipe_base(recipe, folder), "fp32", "cpu")
    measured = folder.parent.parent / f"predictions-{folder.name}.jsonl"
    demo = {r["id"]: r["prediction"] for _, r in read_jsonl(measured)} if measured.is_file() else {}
    results = {}
    if args.reference:
        results["reference"] = against_reference(Path(args.reference[0]), Path(args.reference[1]), base,
                                                 Path(args.out))
    for quant in args.quant:
        t0 = time.perf_counter()
        done, adapted, merged = export_arm(folder, base, Path(args.out) / f"{folder.name}-{quant}.gguf", quant)
        c = check_export(adapted, merged, done.gguf.path, task, rows)
        g = done.gguf
        results[quant] = {"bytes": g.bytes, "by_type": g.by_type, "merge_s": round(done.merge_s, 2),
                          "write_s": round(done.write_s, 2), "pre_tokenizer": g.pre_tokenizer,
                          "token_mismatches": c["token_mismatches"],
                          "llama_cpp_token_mismatches": c.get("llama_cpp_token_mismatches"), "models": []}
        print(f"\n{quant}: {g.path} {g.bytes / 1e6:.1f} MB, merge {done.merge_s:.1f} s, write {done.write_s:.1f} s, "
              f"{c['rows']} rows, check {time.perf_counter() - t0:.0f} s; prompts tokenised otherwise: transformers "
              f"{c['token_mismatches']}, llama.cpp {c.get('llama_cpp_token_mismatches', 'not run')}")
        print(f"{'model':45} {c['metric']:>9} {'=arm':>7} {'=merged':>8} {'=demo':>7} {'max dp':>8} {'load s':>7}")
        for m in c["models"]:
            agree_demo = (sum(demo.get(r.id) == p for r, p in zip(rows, m.pop("predictions"))) / len(rows)
                          if demo else None)
            m["agree_demo"] = agree_demo
            m["differ_from_merged"] = len(m["differ_from_merged"])
            gap = "" if m["max_prob_gap"] is None else f"{m['max_prob_gap']:.4f}"
            shown = "" if agree_demo is None else f"{agree_demo:.1%}"
            load = "" if m["load_s"] is None else f"{m['load_s']:.1f}"
            print(f"{m['model']:45} {m['metric']:9.3f} {m['agree_arm']:7.1%} {m['agree_merged']:8.1%} "
                  f"{shown:>7} {gap:>8} {load:>7}")
            results[quant]["models"].append(m)
        print(c["verdict"])
    print(json.dumps({"arm": str(folder), "task": task.name, "rows": len(rows), "demo_predictions": bool(demo),
                      "results": results}))


def against_reference(arm: Path, reference: Path, base, out: Path) -> dict:
    """Names, shapes and values of our f32 export of the unchanged base against the GGUF llama.cpp's
    converter wrote (which the bundled base was dequantised from): every tensor llama.cpp would
    load must be there, laid out the same (q/k permuted), with the same values."""
    import gguf
    import numpy as np
    done, _, _ = export_arm(arm, base, out / "base-f32.gguf", "f32")
    ours = {t.name: t for t in gguf.GGUFReader(done.gguf.path).tensors}
    ref = {t.name: t for t in gguf.GGUFReader(reference).tensors}
    worst, shapes = 0.0, 0
    for name, t in ref.items():
        if name not in ours:
            continue
        a = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        b = np.asarray(ours[name].data, dtype=np.float32).reshape(a.shape)
        shapes += list(t.shape) == list(ours[name].shape)
        worst = max(worst, float(np.abs(a - b).max()))
    keys = lambda path: {k for k in gguf.GGUFReader(path).fields if not k.startswith("general.")}  # noqa: E731
    r = {"tensors_ours": len(ours), "tensors_reference": len(ref), "missing": sorted(set(ref) - set(ours)),
         "extra": sorted(set(ours) - set(ref)), "same_shape": shapes, "max_abs_diff": worst,
         "keys_missing": sorted(keys(reference) - keys(done.gguf.path)),
         "keys_extra": sorted(keys(done.gguf.path) - keys(reference))}
    print(f"against {reference.name}: {r}")
    return r


if __name__ == "__main__":
    main()
