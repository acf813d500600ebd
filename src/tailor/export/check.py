"""The proof that an exported GGUF answers as the arm did (issue: exports that silently answer
otherwise are among peers' most reported problems).

The GGUF is read back by transformers (`from_pretrained(..., gguf_file=)`: its own dequantiser,
tensor un-permutation and tokenizer rebuild, not ours) and measured through Tailor's measurement
path (`Adapted.predict`: the arm's recipe, shots, passages and calibration, option scoring or
generation through the one engine) on the same rows as the arm and the merged safetensors model.
Where llama-cpp-python is installed, llama.cpp itself answers the same prompts: its own tokenizer
(token ids compared with the arm's), option log-likelihoods from its logits, greedy generation.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..calibration import calibrated
from ..evaluate import Prediction, score_predictions
from ..task import Example, Task, primary_metric


def reload_gguf(path: Path):
    """(model, tokenizer, seconds) as transformers loads the file, dequantised to fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok, time.perf_counter() - t0


def as_model(adapted, model, tokenizer, weights_id: str):
    """The arm's recipe (builder, shots, passages, calibration) over another model and tokenizer."""
    from ..methods.base import recipe_builder
    return dataclasses.replace(adapted, model=model, tokenizer=tokenizer, weights_id=weights_id,
                               builder=recipe_builder(adapted.recipe, tokenizer))


def predictions(adapted, task: Task, rows: list[Example], max_new_tokens: int = 64) -> list[Prediction]:
    # no result cache: every answer here is computed by the model named, never replayed
    return adapted.predict(adapted.engine(None, progress=False), task, rows, max_new_tokens)


def agreement(a: list[Prediction], b: list[Prediction]) -> float:
    return sum(x.prediction == y.prediction for x, y in zip(a, b)) / max(len(a), 1)


def metric(task: Task, preds: list[Prediction]) -> float:
    return score_predictions(task, preds).metrics[primary_metric(task.kind)]


def max_prob_gap(a: list[Prediction], b: list[Prediction]) -> float | None:
    """The largest difference in any option's probability between two runs (classify / choice)."""
    gaps = [abs(x.probs[k] - y.probs.get(k, 0.0)) for x, y in zip(a, b) if x.probs and y.probs for k in x.probs]
    return max(gaps) if gaps else None


def token_mismatches(prompts: list[str], tok_a, tok_b) -> int:
    """Prompts the two tokenizers split into different ids (Tailor's prompts carry their special tokens)."""
    return sum(tok_a(p, add_special_tokens=False).input_ids != tok_b(p, add_special_tokens=False).input_ids
               for p in prompts)


# ---------------------------------------------------------------- llama.cpp itself


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot be asked here, or None."""
    try:
        import llama_cpp  # noqa: F401  (optional: compiled from source by pip, see README)
    except ImportError as e:
        return f"llama-cpp-python is not installed ({e}); `pip install llama-cpp-python` compiles llama.cpp"
    return None


def llama_cpp_predictions(path: Path, adapted, task: Task, rows: list[Example],
                          max_new_tokens: int = 64, threads: int | None = None) -> dict:
    """llama.cpp's answers to the arm's prompts: option scoring by the sum of the option tokens'
    log-probabilities (as the engine scores), or greedy generation to the end-of-sequence token.
    Returns {"predictions", "token_mismatches" (prompts llama.cpp tokenised otherwise than the
    arm's tokenizer), "load_s", "s"}."""
    import llama_cpp
    import numpy as np
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_batch=512, logits_all=True, verbose=False,
                          n_threads=threads)
    load_s = time.perf_counter() - t0
    builder, ours = adapted.builder, adapted.builder.encode
    prompts = adapted.prompts(rows)
    eos = llm.token_eos()
    preds, mismatches, t0 = [], 0, time.perf_counter()

    def tokens(text: str) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def logprobs(row: int) -> np.ndarray:
        x = llm.scores[row].astype(np.float64)
        return x - (np.log(np.exp(x - x.max()).sum()) + x.max())

    for ex, prompt in zip(rows, prompts):
        ids = tokens(prompt)
        mismatches += ids != ours(prompt)
        llm.reset()
        llm.eval(ids)
        if task.kind in ("classify", "choice"):
            opts = task.labels if task.kind == "classify" else ex.choices
            sums = []
            for o in opts:
                o_ids = tokens(builder.target_text(o))
                llm.n_tokens = len(ids)   # rewind to the end of the prompt (eval drops the cache past it)
                llm.eval(o_ids)
                sums.append(sum(float(logprobs(len(ids) - 1 + j)[t]) for j, t in enumerate(o_ids)))
            cal = adapted.recipe.calibration
            lps = calibrated(opts, sums, cal["log_prior"]) if cal else sums
            top = max(lps)
            weights = [float(np.exp(v - top)) for v in lps]
            probs = {o: w / sum(weights) for o, w in zip(opts, weights)}
            preds.append(Prediction(ex.id, opts[max(range(len(opts)), key=lambda j: lps[j])], ex.target, len(ids),
                                    0, 0.0, probs=probs))
        else:
            out = []
            for _ in range(max_new_tokens):
                t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                if t == eos:
                    break
                out.append(t)
                llm.eval([t])
            text = llm.detokenize(out, special=False).decode("utf-8", errors="replace")
            preds.append(Prediction(ex.id, text.strip(), ex.target, len(ids), len(out), 0.0))
    llm.close()
    return {"predictions": preds, "token_mismatches": mismatches, "load_s": load_s, "s": time.perf_counter() - t0}


# ---------------------------------------------------------------- the whole check


def check_export(adapted, merged, path: Path, task: Task, rows: list[Example], max_new_tokens: int = 64,
                 llama_cpp: bool = True) -> dict:
    """The arm (as loaded, unmerged), the merged model, the GGUF read back by transformers and, where
    installed, by llama.cpp, each answering `rows` as Tailor measures; agreement with the arm and
    with the merged model, the metric, the largest option-probability gap, load times."""
    arm = predictions(adapted, task, rows, max_new_tokens)
    merged_arm = dataclasses.replace(adapted, model=merged, weights_id=f"{adapted.weights_id}+merged")
    ref = predictions(merged_arm, task, rows, max_new_tokens)
    model, tok, load_s = reload_gguf(path)
    exported = as_model(adapted, model, tok, f"gguf:{path.name}")
    got = predictions(exported, task, rows, max_new_tokens)
    prompts = adapted.prompts(rows)

    def row(name: str, preds: list[Prediction], load: float | None) -> dict:
        return {"model": name, "metric": metric(task, preds), "agree_arm": agreement(preds, arm),
                "agree_merged": agreement(preds, ref), "max_prob_gap": max_prob_gap(preds, ref), "load_s": load,
                "differ_from_merged": [p.id for p, r in zip(preds, ref) if p.prediction != r.prediction],
                "predictions": [p.prediction for p in preds]}

    out = {"rows": len(rows), "metric": primary_metric(task.kind), "token_mismatches": token_mismatches(prompts,
           adapted.tokenizer, tok), "models": [row("arm", arm, None), row("merged safetensors", ref, None),
                                               row(f"GGUF {path.name} (transformers)", got, load_s)]}
    del model
    if llama_cpp and llama_cpp_missing() is None:
        lc = llama_cpp_predictions(path, adapted, task, rows, max_new_tokens)
        out["models"].append(row(f"GGUF {path.name} (llama.cpp)", lc["predictions"], lc["load_s"]))
        out["llama_cpp_token_mismatches"] = lc["token_mismatches"]
    out["verdict"] = verdict(out)
    return out


def verdict(c: dict) -> str:
    """One sentence per exported model: the same answers as the merged model, or how many differ
    and what that does to the metric."""
    ref = c["models"][1]
    parts = []
    for r in c["models"][2:]:
        n = len(r["differ_from_merged"])
        if n == 0:
            parts.append(f"{r['model']} answers every one of the {c['rows']} rows as the merged model does")
        else:
            parts.append(f"{r['model']} answers {n} of {c['rows']} rows otherwise than the merged model "
                         f"({r['agree_merged']:.1%} agree; {c['metric']} {ref['metric']:.3f} -> {r['metric']:.3f}, "
                         f"{r['metric'] - ref['metric']:+.3f})")
    return "; ".join(parts) + "."
