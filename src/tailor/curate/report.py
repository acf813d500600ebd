"""The curation report: JSON for machines, a table for the terminal, an HTML section for the
ladder report, and the reasons that should stop a ladder run."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..task import Example
from .html import render_section

MAX_LISTED = 50  # ids listed per finding in curation.json (the counts are always complete)


@dataclass
class CurationReport:
    task: dict
    options: dict
    duplicates: dict
    leakage: dict
    conflicts: dict
    outputs: dict
    balance: dict | None = None
    lengths: dict | None = None
    noise: dict | None = None
    augmentation: dict | None = None
    skipped: list[str] = field(default_factory=list)   # checks not run, and why
    timings: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    synthetic: list[Example] = field(default_factory=list)  # rows apply_fixes adds
    components: dict[str, int] = field(default_factory=dict, repr=False)  # id -> near group

    # ------------------------------------------------------------ headline numbers

    def counts(self) -> dict:
        train = self.duplicates.get("train", {})
        tt = self.leakage.get("train-test", {})
        out = {
            "rows": self.task["rows"],
            "exact_duplicates": sum(d["exact"] for d in self.duplicates.values()),
            "near_duplicates": sum(d["near"] for d in self.duplicates.values()),
            "train_exact_duplicates": train.get("exact", 0),
            "train_near_duplicates": train.get("near", 0),
            "leaked_test_rows": tt.get("exact", 0) + tt.get("near", 0),
            "leaked_test_exact": tt.get("exact", 0),
            "leaked_test_share": tt.get("share", 0.0),
            "leaked_dev_rows": sum(self.leakage.get(k, {}).get(x, 0) for k in ("train-dev",) for x in ("exact", "near")),
            "conflict_groups": self.conflicts["groups"],
            "conflict_rows": self.conflicts["rows"],
            "conflict_train_rows": self.conflicts["train_rows"],
            "blank_outputs": self.outputs["blank"],
            "near_empty_outputs": self.outputs["near_empty"],
            "padded_outputs": self.outputs["padded"],
            "label_variant_rows": self.outputs["variants"]["rows"],
        }
        if self.lengths:
            out["over_max_tokens"] = self.lengths["over"]
        if self.balance and self.balance.get("kind") == "labels":
            out["imbalanced_labels"] = len(self.balance["flagged"])
        if self.outputs.get("dominant"):
            out["refusal_outputs"] = self.outputs["dominant"]["refusals"]
        if self.noise:
            out["noise_candidates"] = self.noise["candidates"]
        if self.augmentation:
            out["synthetic_rows"] = self.augmentation["kept"]
        return out

    def blocking(self) -> list[str]:
        """One-line reasons to stop a ladder run, at the limits of the options it was checked
        with (`max_leakage`, `max_conflicts`)."""
        max_leakage, max_conflicts = self.options["max_leakage"], self.options["max_conflicts"]
        reasons = []
        tt = self.leakage.get("train-test")
        if tt:
            leaked = tt["exact"] + tt["near"]
            if _over(leaked, tt["rows"], max_leakage):
                reasons.append(f"train/test leakage: {leaked} of {tt['rows']} test rows ({leaked / tt['rows']:.1%}) "
                               f"have a (near-)identical input in train ({tt['exact']} exact); "
                               f"limit {_limit(max_leakage)}; fix with tailor curate --write")
        n_train = self.duplicates.get("train", {}).get("rows", 0)
        conflicted = self.conflicts["train_rows"]
        if n_train and _over(conflicted, n_train, max_conflicts):
            reasons.append(f"conflicting labels: {conflicted} of {n_train} train rows ({conflicted / n_train:.1%}) "
                           f"share a (near-)identical input with a different target in "
                           f"{self.conflicts['groups']} groups; limit {_limit(max_conflicts)}")
        return reasons

    # ------------------------------------------------------------ views

    def to_json(self) -> dict:
        return {"task": self.task, "model": self.model, "counts": self.counts(), "options": self.options,
                "duplicates": {s: _trim(d) for s, d in self.duplicates.items()},
                "leakage": {s: _trim(d) for s, d in self.leakage.items()},
                "conflicts": {**{k: v for k, v in self.conflicts.items() if k != "list"},
                              "list": [{**g, "ids": g["ids"][:MAX_LISTED], "splits": _split_counts(g["splits"])}
                                       for g in self.conflicts["list"][:MAX_LISTED]]},
                "lengths": _trim({k: v for k, v in self.lengths.items() if not k.startswith("_")})
                if self.lengths else None,
                "balance": self.balance, "outputs": _trim(self.outputs),
                "noise": _trim(self.noise) if self.noise else None,
                "augmentation": self.augmentation, "skipped": self.skipped,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def summary_rows(self) -> list[tuple[str, str]]:
        c = self.counts()
        splits = ", ".join(f"{s} {d['rows']}" for s, d in self.duplicates.items())
        rows = [("rows", f"{c['rows']} ({splits})"),
                ("exact duplicates", _per_split(self.duplicates, "exact")),
                ("near duplicates", _per_split(self.duplicates, "near") +
                 f" (Jaccard >= {self.options['near_threshold']})")]
        for pair, d in self.leakage.items():
            rows.append((f"leakage {pair.replace('-', '->')}",
                         f"{d['exact'] + d['near']} of {d['rows']} {pair.split('-')[1]} rows "
                         f"({d['share']:.1%}; {d['exact']} exact, {d['near']} near)"))
        rows.append(("conflicting targets", f"{c['conflict_groups']} groups, {c['conflict_rows']} rows "
                     f"({c['conflict_train_rows']} in train; {self.conflicts['exact_groups']} exact-input groups)"))
        if self.lengths:
            L = self.lengths
            rows.append(("tokens per row", f"p50 {L['total']['p50']}, p95 {L['total']['p95']}, max {L['total']['max']} "
                         f"(prompt + answer, {self.model})"))
            pol = L["policies"]["truncate_end"]
            rows.append((f"over {L['max_tokens']} tokens", f"{L['over']} rows; truncating the end would lose the "
                         f"answer of {pol['answer_lost']}, dropping loses {L['policies']['drop']['tokens_lost']} tokens"))
        if self.balance and self.balance["kind"] == "labels":
            shares = ", ".join(f"{r['label']} {r['share']:.1%}" for r in self.balance["labels"])
            flag = f"; off expected: {', '.join(self.balance['flagged'])}" if self.balance["flagged"] else ""
            rows.append(("label balance (train)", shares + flag))
        elif self.balance:
            rows.append(("answer positions (train)", ", ".join(f"{k}: {v}" for k, v in self.balance["positions"].items())))
        o = self.outputs
        rows.append(("blank / near-empty outputs", f"{o['blank']} / {o['near_empty']}"))
        rows.append(("outputs with stray whitespace", f"{o['padded']} around, {o['inner_whitespace']} inside"))
        if o["variants"]["rows"]:
            rows.append(("label spelling variants", f"{o['variants']['rows']} rows: " +
                         ", ".join(f"{k!r}->{v!r}" for k, v in list(o["variants"]["map"].items())[:5])))
        if o.get("dominant"):
            d = o["dominant"]
            rows.append(("dominant output", f"{d['top'][0]['share']:.1%} '{d['top'][0]['output'][:40]}'; "
                         f"refusals {d['refusals']} ({d['refusal_share']:.1%})" if d["top"] else "-"))
            if o["styles"]["mixed"]:
                rows.append(("mixed output styles", ", ".join(o["styles"]["mixed"])))
        if self.noise:
            n = self.noise
            if n["kind"] == "disagreement":
                rows.append(("label-noise candidates", f"{n['candidates']} of {n['scored']} scored rows (model "
                             f"p >= {n['confidence']} on another label; agreement {n['agreement']:.1%})"))
            else:
                rows.append(("unlikely outputs listed", f"{n['candidates']} of {n['scored']} scored rows"))
        if self.augmentation:
            a = self.augmentation
            rows.append(("synthetic paraphrases", f"{a['kept']} kept of {a['attempted']} ({a['rejected'] or 'none rejected'})"))
        for s in self.skipped:
            rows.append(("skipped", s))
        rows.append(("time", f"{self.timings.get('total', 0.0):.1f} s"))
        return rows

    def html_section(self) -> str:
        return render_section(self)


def _over(n: int, total: int, limit: float) -> bool:
    return n / total > limit if limit < 1 else n > limit


def _limit(limit: float) -> str:
    return f"{limit:.1%}" if limit < 1 else f"{int(limit)} rows"


def _per_split(d: dict, key: str) -> str:
    return ", ".join(f"{s} {v[key]}" for s, v in d.items())


def _split_counts(splits: list[str]) -> dict:
    out: dict[str, int] = {}
    for s in splits:
        out[s] = out.get(s, 0) + 1
    return out


def _trim(d: dict) -> dict:
    """Long id lists are cut to MAX_LISTED in JSON (their counts stay complete)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, list) and len(v) > MAX_LISTED and (k.endswith("_ids") or k.endswith("_pairs")):
            out[k] = v[:MAX_LISTED]
            out[f"{k}_listed"] = f"{MAX_LISTED} of {len(v)}"
        elif isinstance(v, dict) and k != "map":
            out[k] = _trim(v)
        else:
            out[k] = v
    return out
