"""`tailor debug RUN [--arm NAME]`: debug the training data from the model's bad outputs.

Meta's guide to adapting LLMs ends its data-curation advice with this practice: when the adapted
model still fails, look at the failures, check whether the training data teaches the same mistake
(a wrong label, an ambiguous guideline), add examples that show the right behaviour where the data
has none, and check the balance of output kinds. Here, for one arm's test predictions:

- failures are grouped into clusters (spherical k-means over the bundled MiniLM embedder), each
  with its size, typical inputs (nearest the centre) and the confusion it shows;
- every failure gets its nearest training rows (among the rows the arm learned from); a close
  neighbour (cosine >= `near`) whose label is the model's wrong answer is a likely label error or
  ambiguous guidance, and the training row is flagged for review;
- a cluster whose failures have few training rows nearby, compared with the test rows the model
  gets right, is a coverage gap, with the number of examples that would bring it to their density;
- output kinds (labels; for generate tasks first words) in training, in the gold test answers and
  in the predictions, with kinds the model over-produces flagged.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .errors import TailorError
from .jsonl import read_jsonl
from .methods.base import method_class
from .utils import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class DebugOptions:
    neighbours: int = 5      # training rows shown per failure
    near: float = 0.85       # cosine at which a training row is "the same case" as a failure
    gap: float = 0.6         # cosine that counts as "nearby" for coverage
    over: float = 0.10       # a kind predicted this much more often than the gold answers is flagged
    seed: int = 0


@dataclass
class Source:
    arm: str
    folder: Path             # the arm folder (recipe, pool, weights)
    predictions: Path
    run: Path
    ladder: bool


def locate(run: str | Path, arm: str | None) -> Source:
    run = Path(run)
    if (run / "results.json").exists():
        from .ladder import slug
        from .results import read_results
        results = read_results(run)
        names = [a.name for a in results.arms if a.ok]
        name = arm or results.recommendation.arm or (names[-1] if names else None)
        found = next((a for a in results.arms if a.name == name and a.ok), None)
        if found is None or not found.arm_dir:
            raise TailorError(f"{run}: no finished arm named {name!r} (arms: {', '.join(names) or 'none'})")
        return Source(name, Path(found.arm_dir), run / f"predictions-{slug(name)}.jsonl", run, True)
    if (run / "predictions.jsonl").exists() and (run / "recipe.json").exists():
        if arm:
            raise TailorError(f"{run}: a single-arm run has no arm to choose (--arm {arm})")
        return Source(run.name, run, run / "predictions.jsonl", run, False)
    raise TailorError(f"{run}: neither a ladder run (results.json) nor a `tailor train`/`tailor eval` run with "
                      "predictions (predictions.jsonl, recipe.json)")


def run_task(run: Path):
    """The task as the run loaded it (its file, options and seed from the run's config)."""
    from .config import TaskOptions
    from .datasets import load_task
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TailorError(f"{run}/config.json: cannot read the run's config ({e})") from None
    options = {k: v for k, v in (cfg.get("task_options") or {}).items() if k != "seed"}
    return load_task(cfg["task"], **TaskOptions.model_validate(options).loader_options(cfg.get("seed", 0)))


def learned_rows(task, recipe, pool) -> list:
    """The rows the arm learned from: a training arm's sampled train rows, a prompting arm's pool.
    A pool-trained arm that stopped short of one pass (the demo's 40 steps of 16 over a 2,000-row
    sample) learned only from the rows its steps consumed, so only those count."""
    if recipe.train is not None:   # a training arm
        from .train.data import step_examples
        from .train.loop import train_pool
        cfg = SimpleNamespace(max_train_examples=recipe.options.get("max_train_examples"),
                              seed=recipe.options.get("seed", 0))
        rows = train_pool(task, cfg)
        data = recipe.train.get("data") or {}
        dropped = set(data.get("dropped_too_long_ids") or [])
        encoded = [ex for ex in rows if ex.id not in dropped and ex.target.strip()]   # as encode_examples keeps
        steps, batch = recipe.train.get("steps") or 0, recipe.options.get("batch_size") or 0
        if (method_class(recipe.method).trains_on_pool and data.get("kept") == len(encoded) and batch
                and 0 < steps * batch < len(encoded)):
            seen = {ex.id for step in range(steps) for ex in step_examples(encoded, batch, cfg.seed, step)}
            rows = [ex for ex in encoded if ex.id in seen]
        return rows
    return list(pool) or list(task.splits.get("train") or [])


def debug_run(run: str | Path, arm: str | None = None, options: DebugOptions = DebugOptions(),
              write_fixes: str | Path | None = None) -> dict:
    from .ladder import slug
    from .recipe import read_recipe
    from .selectors import Embedder
    src = locate(run, arm)
    task = run_task(src.run)
    recipe, pool = read_recipe(src.folder)
    preds = [p for _, p in read_jsonl(src.predictions)]
    test = {ex.id: ex for split in task.splits.values() for ex in split}
    missing = [p["id"] for p in preds if p["id"] not in test]
    if missing:
        raise TailorError(f"{src.predictions}: {len(missing)} predicted rows are not in the task as reloaded "
                          f"(first: {missing[0]}); was the task file changed since the run?")
    train = learned_rows(task, recipe, pool)
    if not train:
        raise TailorError(f"{src.folder}: the arm learned from no rows; there is nothing to debug against")
    failed = _failed(task.kind, preds)
    embed = Embedder().embed
    T = embed([ex.input_text for ex in train])
    Q = embed([test[p["id"]].input_text for p in preds])
    sims = Q @ T.T                                            # [predictions, training rows]
    density = (sims >= options.gap).sum(1)                    # training rows near each test row
    good = [i for i in range(len(preds)) if i not in set(failed)]
    typical_density = float(np.median(density[good])) if good else 0.0

    failures, implicated = [], {}
    for i in failed:
        p = preds[i]
        order = np.argsort(-sims[i])[: options.neighbours]
        near = [{"id": train[j].id, "label": train[j].target, "similarity": round(float(sims[i, j]), 3)}
                for j in order]
        teaches = [n for n in near if n["similarity"] >= options.near and _same(n["label"], p["prediction"])
                   and not _same(n["label"], p["target"])]
        for n in teaches:
            row = implicated.setdefault(n["id"], {"id": n["id"], "label": n["label"], "failures": [],
                                                  "suggested": Counter(), "similarity": 0.0})
            row["failures"].append(p["id"])
            row["suggested"][p["target"]] += 1
            row["similarity"] = max(row["similarity"], n["similarity"])
        failures.append({"id": p["id"], "input": _clip(test[p["id"]].input_text), "target": p["target"],
                         "prediction": p["prediction"], "neighbours": near, "teaches_the_mistake": bool(teaches)})

    clusters = _clusters([Q[i] for i in failed], failures, density[failed] if failed else np.array([]),
                         typical_density, options)
    by_id = {ex.id: ex for ex in train}
    flagged = sorted(implicated.values(), key=lambda r: (-len(r["failures"]), -r["similarity"]))
    for r in flagged:
        r["input"] = _clip(by_id[r["id"]].input_text)
        r["suggested"] = r["suggested"].most_common(1)[0][0]
    report = {"arm": src.arm, "method": recipe.method, "task": task.name, "kind": task.kind,
              "predictions": len(preds), "failures": len(failed), "training_rows": len(train),
              "options": {k: getattr(options, k) for k in DebugOptions.__dataclass_fields__},
              "typical_density": typical_density,
              "clusters": clusters, "likely_label_errors": flagged,
              "coverage_gaps": [c["id"] for c in clusters if c["gap"]],
              "output_kinds": _kinds(task.kind, train, preds, options.over), "failed_rows": failures}
    out = src.run / f"debug-{slug(src.arm)}.json"
    atomic_write_json(out, report)
    report["json"] = str(out)
    if write_fixes:
        atomic_write_text(Path(write_fixes), "".join(
            json.dumps({"id": r["id"], "input": by_id[r["id"]].input, "label": r["label"],
                        "suggested_label": r["suggested"], "implicated_by": r["failures"],
                        "similarity": r["similarity"]}, ensure_ascii=False) + "\n" for r in flagged))
        report["fixes"] = str(write_fixes)
    if src.ladder:
        report["report"] = _update_report(src.run, report)
    return report


# ---------------------------------------------------------------- pieces


def _failed(kind: str, preds: list[dict]) -> list[int]:
    """Indexes of the bad outputs: wrong answers, or for generate tasks the worst quarter by ROUGE-L."""
    if kind != "generate":
        return [i for i, p in enumerate(preds) if not _same(p["prediction"], p["target"])]
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(p["target"], p["prediction"])["rougeL"].fmeasure for p in preds]
    cut = float(np.quantile(scores, 0.25)) if scores else 0.0
    return [i for i, s in enumerate(scores) if s <= cut]


def _same(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def _clusters(vecs: list, failures: list[dict], density: np.ndarray, typical: float, o: DebugOptions) -> list[dict]:
    if not vecs:
        return []
    X = np.stack(vecs)
    k = max(1, min(12, round(math.sqrt(len(X) / 2))))
    labels, centres = _kmeans(X, k, o.seed)
    out = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        closest = members[np.argsort(-(X[members] @ centres[c]))][:3]
        near = float(np.median(density[members]))
        confusion = Counter(f"{failures[i]['target']} -> {failures[i]['prediction']}" for i in members)
        out.append({"size": int(len(members)), "typical": [failures[i]["input"] for i in closest],
                    "confusion": confusion.most_common(3), "rows": [failures[i]["id"] for i in members],
                    "nearby_training_rows": near, "teaching_the_mistake": sum(failures[i]["teaches_the_mistake"]
                                                                             for i in members),
                    # a gap: under a quarter of the density around the rows the model gets right
                    "gap": near < max(1.0, typical / 4)})
        out[-1]["add"] = max(1, math.ceil(typical - near)) if out[-1]["gap"] else 0
    out.sort(key=lambda c: -c["size"])
    for i, c in enumerate(out):
        c["id"] = i
    return out


def _kmeans(X: np.ndarray, k: int, seed: int, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (rows are unit vectors) with k-means++ seeding."""
    rng = np.random.default_rng(seed)
    centres = [X[rng.integers(len(X))]]
    for _ in range(1, k):
        d = 1 - np.max(X @ np.stack(centres).T, 1)
        d = np.clip(d, 0, None)
        centres.append(X[rng.choice(len(X), p=d / d.sum())] if d.sum() > 0 else X[rng.integers(len(X))])
    C = np.stack(centres)
    for _ in range(iters):
        labels = np.argmax(X @ C.T, 1)
        new = np.stack([X[labels == c].sum(0) if (labels == c).any() else C[c] for c in range(k)])
        new /= np.linalg.norm(new, axis=1, keepdims=True) + 1e-12
        if np.allclose(new, C):
            break
        C = new
    return np.argmax(X @ C.T, 1), C


def _kind(kind: str, text: str) -> str:
    if kind != "generate":
        return text.strip()
    words = re.findall(r"\w+", text.lower())
    return words[0] if words else "(empty)"


def _kinds(kind: str, train: list, preds: list[dict], over: float) -> list[dict]:
    counts = {"training": Counter(_kind(kind, ex.target) for ex in train),
              "gold": Counter(_kind(kind, p["target"]) for p in preds),
              "predicted": Counter(_kind(kind, p["prediction"]) for p in preds)}
    totals = {k: max(1, sum(c.values())) for k, c in counts.items()}
    keys = sorted(set().union(*counts.values()), key=lambda k: -(counts["predicted"][k] + counts["gold"][k]))[:12]
    rows = []
    for key in keys:
        share = {k: counts[k][key] / totals[k] for k in counts}
        rows.append({"kind": key, **{f"{k}_share": round(v, 4) for k, v in share.items()},
                     "over_predicted": share["predicted"] - share["gold"] > over,
                     "over_taught": share["training"] - share["gold"] > over})
    return rows


def _clip(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _update_report(run: Path, report: dict) -> dict:
    """The debug summary goes into the ladder's results.json and its report gets the section."""
    from .report import write_report
    from .results import read_results
    results = read_results(run)
    results.debug[report["arm"]] = {k: v for k, v in report.items() if k not in ("failed_rows", "json", "report")}
    atomic_write_json(run / "results.json", results.to_json())
    return {"html": str(write_report(results, run))}
