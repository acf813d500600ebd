"""Model-in-the-loop checks, all through THE engine: label-noise candidates (rows where the
model confidently disagrees with the label) and paraphrase augmentation (synthetic rows)."""

from __future__ import annotations

import random
from collections import Counter

from ..engine import Engine
from ..evaluate import predict
from ..prompts import PromptBuilder
from ..task import Example, Task
from .text import normalize

PARAPHRASE_INSTRUCTION = (
    "Rewrite the user's text in different words. Keep its meaning, tone and language, keep names, "
    "hashtags and numbers. Reply with the rewritten text only.")


def _sample(rows: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(rows):
        return list(rows)
    return random.Random(seed).sample(rows, n)


def label_noise(task: Task, train: list[Example], builder: PromptBuilder, engine: Engine,
                sample: int | None, confidence: float, top: int, seed: int) -> dict:
    rows = _sample(train, sample, seed)
    if task.kind == "generate":
        return _unlikely_outputs(rows, builder, engine, top)
    preds = predict(engine, builder, task, rows)
    agree = sum(p.prediction == p.target for p in preds)
    cands = []
    for ex, p in zip(rows, preds):
        p_model = p.probs[p.prediction]
        if p.prediction != p.target and p_model >= confidence:
            cands.append({"id": ex.id, "input": ex.input_text[:200], "label": ex.target,
                          "model_label": p.prediction, "model_prob": round(p_model, 4),
                          "label_prob": round(p.probs.get(ex.target, 0.0), 4)})
    cands.sort(key=lambda c: (c["label_prob"], -c["model_prob"]))
    confusion = Counter(f"{c['label']} -> {c['model_label']}" for c in cands)
    return {"kind": "disagreement", "scored": len(rows), "agreement": round(agree / max(len(rows), 1), 4),
            "confidence": confidence, "candidates": len(cands), "pairs": dict(confusion.most_common()),
            "list": cands[:top], "candidate_ids": [c["id"] for c in cands],
            "caveat": ("the base model agrees with only {:.0%} of the sampled labels; its disagreements "
                       "are weak evidence: review them, do not drop them blindly").format(agree / max(len(rows), 1))
            if agree / max(len(rows), 1) < 0.7 else ""}


def _unlikely_outputs(rows: list[Example], builder: PromptBuilder, engine: Engine, top: int) -> dict:
    """Generation: the outputs the model finds least likely per token, for a person to review."""
    prompts = [builder.build(ex).text for ex in rows]
    scores = engine.score(prompts, [[builder.target_text(ex.target)] for ex in rows])
    ranked = sorted(zip(rows, scores), key=lambda r: r[1].mean_logprobs[0])
    cands = [{"id": ex.id, "input": ex.input_text[:200], "label": ex.target[:200],
              "mean_logprob": round(s.mean_logprobs[0], 4)} for ex, s in ranked[:top]]
    return {"kind": "unlikely_outputs", "scored": len(rows), "candidates": len(cands), "list": cands,
            "candidate_ids": [c["id"] for c in cands], "caveat": "lowest model likelihood per token; not a verdict"}


def paraphrase(task: Task, train: list[Example], engine: Engine, n: int, temperature: float,
               seed: int, prefer: list[str] | None = None) -> tuple[list[Example], dict]:
    """Paraphrase the inputs of `n` train rows (rows of the `prefer`red labels first, e.g. the
    under-represented ones). Each synthetic row keeps its source's target and is marked
    meta synthetic: true, source_id."""
    pool = [ex for ex in train if isinstance(ex.input, str) and ex.input.strip()]
    rng = random.Random(seed)
    rng.shuffle(pool)
    if prefer:
        pool.sort(key=lambda ex: ex.target not in prefer)  # stable: random within each group
    chosen = pool[:n]
    builder = PromptBuilder(engine.tok, "generate", PARAPHRASE_INSTRUCTION)
    prompts = [builder.build(Example(ex.id, ex.input, "")).text for ex in chosen]
    # Room for a paraphrase a bit longer than its source.
    longest = max((len(engine.encode(ex.input)) for ex in chosen), default=16)
    gens = engine.generate(prompts, max_new_tokens=min(256, int(longest * 1.5) + 16),
                           temperature=temperature, top_p=0.95, seed=seed)
    out, rejected = [], Counter()
    seen = {normalize(ex.input_text) for ex in train}
    for ex, g in zip(chosen, gens):
        text = g.text.strip().strip('"').strip()
        reason = _reject(ex.input, text, g.finish_reason, seen)
        if reason:
            rejected[reason] += 1
            continue
        seen.add(normalize(text))
        out.append(synthetic_row(ex, text))
    info = {"asked": n, "attempted": len(chosen), "kept": len(out), "rejected": dict(rejected),
            "temperature": temperature, "by_label": dict(Counter(ex.target for ex in out)) if task.kind == "classify" else {},
            "samples": [{"source_id": s.meta["source_id"], "input": s.input[:200],
                         "source": next(ex.input[:200] for ex in chosen if ex.id == s.meta["source_id"])}
                        for s in out[:10]]}
    return out, info


def synthetic_row(source: Example, text: str, n: int = 0) -> Example:
    """A generated train row: the source's target, marked synthetic with its source row."""
    meta = {k: v for k, v in source.meta.items() if not k.startswith("_")}
    meta.update({"synthetic": True, "source_id": source.id, "split": "train"})
    return Example(f"{source.id}-para{n or ''}", text, source.target, source.choices, meta)


def _reject(source: str, text: str, finish: str, seen: set[str]) -> str:
    if not text:
        return "empty"
    if finish == "length":
        return "did not finish"
    if normalize(text) in seen:
        return "same as an existing input"
    ratio = len(text) / max(len(source), 1)
    if ratio < 0.3 or ratio > 3:
        return "length far from the source"
    return ""
