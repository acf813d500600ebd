"""Targets: label balance, dominant outputs and boilerplate, format consistency."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from ..task import Example, Task
from .text import normalize

# Boilerplate that makes a model refuse or dodge (Meta's guide: if 60% of answers refuse, the model will refuse too often).
REFUSAL = re.compile(
    r"^\s*(i('m| am) sorry|sorry,|i (can('|no)?t|cannot|am unable to|'m unable to|am not able to|"
    r"don'?t know)|as an ai|i do not (know|have)|unfortunately,? i|n/?a\b|none\b|no answer)", re.I)
MARKDOWN = re.compile(r"^\s*([-*+] |\d+[.)] |#{1,6} )|\*\*|```", re.M)


def balance(task: Task, rows: list[tuple[str, Example]], expected: dict | None, tolerance: float) -> dict | None:
    """Label shares per split against the expected shares (default: uniform). A label is flagged
    when its train share is more than `tolerance` times off its expected share, either way."""
    if task.kind == "choice":
        return _answer_positions(rows)
    if task.kind != "classify":
        return None
    labels = list(task.labels or sorted({ex.target for _, ex in rows}))
    if expected:
        unknown = sorted(set(expected) - set(labels))
        expected = {l: expected.get(l, 0.0) for l in labels}
    else:
        unknown, expected = [], {l: 1 / len(labels) for l in labels}
    counts = defaultdict(Counter)
    for split, ex in rows:
        counts[split][ex.target] += 1
    train = counts.get("train") or Counter(ex.target for _, ex in rows)
    n = sum(train.values())
    table, flagged = [], []
    for label in labels:
        share = train[label] / n if n else 0.0
        want = expected[label]
        ratio = share / want if want else (float("inf") if share else 1.0)
        off = ratio > tolerance or ratio < 1 / tolerance
        table.append({"label": label, "count": train[label], "share": round(share, 4),
                      "expected": round(want, 4), "ratio": round(ratio, 3) if ratio != float("inf") else None,
                      "flagged": off, **{f"{s}_count": counts[s][label] for s in ("dev", "test") if s in counts}})
        if off:
            flagged.append(label)
    nonzero = [train[l] for l in labels if train[l]]
    return {"kind": "labels", "labels": table, "flagged": flagged, "unknown_expected": unknown,
            "imbalance_ratio": round(max(nonzero) / min(nonzero), 3) if nonzero else None,
            "missing": [l for l in labels if not train[l]]}


def _answer_positions(rows) -> dict:
    """Choice tasks: where the right answer sits. A model can learn 'always B'."""
    pos = Counter()
    for split, ex in rows:
        if split == "train" and ex.choices and ex.target in ex.choices:
            pos[ex.choices.index(ex.target)] += 1
    n = sum(pos.values())
    width = max(pos) + 1 if pos else 0
    return {"kind": "answer_position", "positions": {str(p): pos[p] for p in range(width)},
            "top_share": round(max(pos.values()) / n, 4) if n else None}


def output_checks(task: Task, rows: list[tuple[str, Example]], min_chars: int, max_output_share: float,
                  max_refusal_share: float) -> dict:
    targets = [(s, ex) for s, ex in rows]
    blank = [ex.id for _, ex in targets if not ex.target.strip()]
    near_empty = []
    if task.kind == "generate":
        near_empty = [ex.id for _, ex in targets
                      if ex.target.strip() and len(re.sub(r"[\W_]", "", ex.target)) < min_chars]
    padded = [ex.id for _, ex in targets if ex.target.strip() and ex.target != ex.target.strip()]
    inner = [ex.id for _, ex in targets if re.search(r"[ \t]{2,}|\n{3,}", ex.target.strip())]
    out = {"rows": len(targets), "blank": len(blank), "blank_ids": blank,
           "near_empty": len(near_empty), "near_empty_ids": near_empty,
           "padded": len(padded), "padded_ids": padded,
           "inner_whitespace": len(inner), "inner_whitespace_ids": inner,
           "variants": _label_variants(task, targets)}
    if task.kind == "generate":
        out["dominant"] = _dominant(targets, max_output_share, max_refusal_share)
        out["styles"] = _styles(targets)
    return out


def _label_variants(task: Task, targets) -> dict:
    """Targets that differ only in case or whitespace ('Positive', ' positive'): each maps to
    the most common spelling of its group."""
    if task.kind == "generate":
        return {"rows": 0, "map": {}}
    spellings = defaultdict(Counter)
    for _, ex in targets:
        spellings[normalize(ex.target)][ex.target] += 1
    mapping = {}
    for forms in spellings.values():
        if len(forms) > 1:
            canon = forms.most_common(1)[0][0]
            if task.labels:  # prefer a spelling the task declares
                canon = next((f for f, _ in forms.most_common() if f in task.labels), canon)
            mapping.update({f: canon for f in forms if f != canon})
    return {"rows": sum(1 for _, ex in targets if ex.target in mapping), "map": mapping}


def _dominant(targets, max_share: float, max_refusal: float) -> dict:
    counts = Counter(normalize(ex.target) for _, ex in targets)
    n = max(len(targets), 1)
    refusals = [ex.id for _, ex in targets if REFUSAL.search(ex.target)]
    top = [{"output": o[:120], "count": c, "share": round(c / n, 4)} for o, c in counts.most_common(5)]
    flags = []
    if top and top[0]["share"] > max_share and top[0]["count"] > 1:
        flags.append(f"{top[0]['share']:.0%} of outputs are the same text")
    if len(refusals) / n > max_refusal:
        flags.append(f"{len(refusals) / n:.0%} of outputs are refusal/boilerplate (limit {max_refusal:.0%})")
    return {"top": top, "distinct": len(counts), "refusals": len(refusals),
            "refusal_share": round(len(refusals) / n, 4), "refusal_ids": refusals, "flags": flags}


def _styles(targets) -> dict:
    """Share of outputs with each surface feature; a feature held by 10-90% of outputs is
    'mixed' (e.g. some answers end with a period, some do not)."""
    feats = {
        "ends_with_period": lambda t: t.rstrip().endswith("."),
        "starts_upper": lambda t: t.lstrip()[:1].isupper(),
        "multiline": lambda t: "\n" in t.strip(),
        "markdown": lambda t: bool(MARKDOWN.search(t)),
        "json": lambda t: t.strip()[:1] in "{[" and t.strip()[-1:] in "}]",
    }
    n = max(len(targets), 1)
    shares = {name: round(sum(1 for _, ex in targets if f(ex.target)) / n, 4) for name, f in feats.items()}
    return {"shares": shares, "mixed": [k for k, v in shares.items() if 0.1 <= v <= 0.9]}


def standardize(target: str, variants: dict[str, str]) -> str:
    """One spelling per label, and no stray whitespace around or inside outputs."""
    target = variants.get(target, target).strip()
    target = re.sub(r"[ \t]{2,}", " ", target)
    return re.sub(r"\n{3,}", "\n\n", target)
