"""Applying the chosen fixes: a new list of examples (nothing is modified in place), written
atomically as CLEAN.jsonl. Only train rows are changed; dev and test rows are kept as they are,
so a model trained on the clean set is measured on the same held-out rows as before."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from ..errors import TailorError
from ..task import Example, Task
from ..utils import atomic_write_text
from .options import CurateOptions
from .outputs import standardize
from .report import CurationReport
from .text import split_rows, target_key


def apply_fixes(task: Task, report: CurationReport, options: CurateOptions | None = None) -> list[Example]:
    return apply_fixes_logged(task, report, options)[0]


def apply_fixes_logged(task: Task, report: CurationReport, options: CurateOptions | None = None,
                       builder=None) -> tuple[list[Example], dict]:
    """All rows (each with meta 'split'), and how many train rows each fix removed or changed.
    A row removed for several reasons is counted under the first one (in the order below)."""
    opts = options or CurateOptions(**report.options)
    rows = split_rows(task)
    drop: dict[str, str] = {}

    def mark(ids, reason: str, enabled: bool = True):
        if enabled:
            for i in ids:
                drop.setdefault(i, reason)

    out_ = report.outputs
    mark(out_["blank_ids"] + out_["near_empty_ids"], "blank or near-empty output", opts.drop_blank)
    # Leaked: train rows in the same (near-)input group as a dev or test row.
    held = {report.components[ex.id] for s, ex in rows if s != "train" and ex.id in report.components}
    mark([ex.id for s, ex in rows if s == "train" and report.components.get(ex.id) in held],
         "input also in dev/test", opts.drop_leaked)
    if opts.conflicts != "keep":
        mark(_conflict_drops(report, rows, opts.conflicts), "conflicting targets")
    train_dups = report.duplicates.get("train", {})
    mark([a for a, _ in train_dups.get("exact_pairs", [])], "exact duplicate", opts.drop_exact_duplicates)
    mark([a for a, _ in train_dups.get("near_pairs", [])], "near duplicate", opts.drop_near_duplicates)
    if report.lengths and opts.length_policy == "drop":
        mark([i for i, s, _ in report.lengths["over_ids"] if s == "train"], "over max tokens")
    if report.noise and opts.drop_noise:
        mark(report.noise["candidate_ids"], "label-noise candidate")

    over = {i for i, s, _ in report.lengths["over_ids"]} if report.lengths else set()
    variants = out_["variants"]["map"]
    log = Counter()
    kept: list[Example] = []
    for split, ex in rows:
        new = replace(ex, meta={**{k: v for k, v in ex.meta.items() if k != "_line"}, "split": split})
        if split != "train":
            kept.append(new)
            continue
        if ex.id in drop:
            log[drop[ex.id]] += 1
            continue
        if ex.id in over and opts.length_policy == "truncate_input":
            new = _truncate(new, report, builder, opts)
            if new is None:
                log["over max tokens (input cannot be cut enough)"] += 1
                continue
            log["input truncated"] += 1
        if opts.standardize_outputs:
            target = standardize(new.target, variants)
            if target != new.target:
                log["output standardized"] += 1
                new = replace(new, target=target)
        kept.append(new)
    if opts.balance == "downsample" and task.kind == "classify":
        kept = _downsample(kept, report, opts.seed, log)
    sources = {ex.id for ex in kept if ex.meta.get("split") == "train"}
    synthetic = [s for s in report.synthetic if s.meta.get("source_id") in sources]
    log["synthetic rows added"] = len(synthetic)
    if len(synthetic) < len(report.synthetic):
        log["synthetic rows dropped with their source"] = len(report.synthetic) - len(synthetic)
    kept += synthetic
    return kept, dict(log)


def _conflict_drops(report: CurationReport, rows, policy: str) -> list[str]:
    """Train rows to remove from conflicting groups: all of them ('drop'), or those not carrying
    the group's majority target ('majority'; a tie keeps none)."""
    split_of = {ex.id: s for s, ex in rows}
    target_of = {ex.id: target_key(ex) for _, ex in rows}
    out = []
    for g in report.conflicts["list"]:
        train_ids = [i for i in g["ids"] if split_of.get(i) == "train"]
        if policy == "drop":
            out += train_ids
            continue
        votes = Counter(target_of[i] for i in g["ids"])
        (best, n), *rest = votes.most_common()
        tie = bool(rest) and rest[0][1] == n
        out += [i for i in train_ids if tie or target_of[i] != best]
    return out


def _truncate(ex: Example, report: CurationReport, builder, opts: CurateOptions) -> Example | None:
    if builder is None:
        raise TailorError("length_policy truncate_input needs the prompt builder (pass builder=)")
    from .lengths import truncate_input
    prompt_n, answer_n = report.lengths["_per_row"][ex.id]
    return truncate_input(ex, builder, prompt_n, answer_n, report.lengths["max_tokens"])


def _downsample(rows: list[Example], report: CurationReport, seed: int, log: Counter) -> list[Example]:
    """Train rows sampled down so label shares match the expected shares (the scarcest label,
    relative to its expected share, keeps all its rows)."""
    expected = {r["label"]: r["expected"] for r in report.balance["labels"]}
    by_label = defaultdict(list)
    for ex in rows:
        if ex.meta["split"] == "train":
            by_label[ex.target].append(ex)
    scale = min(len(by_label[l]) / share for l, share in expected.items() if share > 0 and by_label[l])
    keep = set()
    rng = random.Random(seed)
    for label, items in by_label.items():
        n = min(len(items), int(round(scale * expected.get(label, 0))))
        keep |= {ex.id for ex in rng.sample(items, n)}
    out = [ex for ex in rows if ex.meta["split"] != "train" or ex.id in keep]
    log["downsampled for balance"] = len(rows) - len(out)
    return out


# ---------------------------------------------------------------- writing


def to_record(ex: Example, kind: str) -> dict:
    """One JSONL record in the format Tailor loads back (text_label, prompt_completion, chat,
    choice), with the split and the meta fields alongside."""
    if isinstance(ex.input, list):   # a reinforcement fine-tuning row stays one: no answer turn is added
        rec = {"messages": ex.input + ([] if ex.meta.get("_rft") else [{"role": "assistant", "content": ex.target}])}
    elif kind == "classify":
        rec = {"text": ex.input, "label": ex.target}
    elif kind == "choice":
        rec = {"question": ex.input, "choices": ex.choices, "answer": ex.target}
    else:
        rec = {"prompt": ex.input, "completion": ex.target}
    meta = {k: v for k, v in ex.meta.items() if not k.startswith("_") and k not in rec}
    return {"id": ex.id, **rec, **meta}


def write_clean(path: str | Path, rows: list[Example], task: Task) -> Path:
    path = Path(path)
    if task.source and Path(task.source).exists() and path.resolve() == Path(task.source).resolve():
        raise TailorError(f"{path}: refusing to overwrite the input file; write the clean set elsewhere")
    text = "".join(json.dumps(to_record(ex, task.kind), ensure_ascii=False, default=str) + "\n" for ex in rows)
    atomic_write_text(path, text)
    return path


def curated_task(task: Task, rows: list[Example]) -> Task:
    """The same task (name, kind, instruction, labels, metrics) over the fixed rows, with the
    splits the rows name, so dev and test are the original ones."""
    splits = {"train": [], "dev": [], "test": []}
    for ex in rows:
        splits[ex.meta.get("split", "train")].append(ex)
    new = Task(task.name + "-curated", task.kind, task.instruction, rows, labels=task.labels,
               metrics=list(task.metrics), source=task.source, notes=list(task.notes))
    new.splits = splits
    return new
