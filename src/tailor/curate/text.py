"""Duplicates, leakage and conflicts, found on normalised text.

Inputs are normalised (case and whitespace) and grouped: exact groups share a normalised input;
near groups join inputs whose character-shingle Jaccard similarity reaches a threshold. MinHash
LSH (datasketch) proposes candidate pairs and every candidate is verified with the exact
Jaccard of its shingle sets, so counts do not depend on hash luck. Near groups are the connected
components of verified pairs (single linkage: A~B and B~C put A and C together).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

from ..task import Example, Task

SPLIT_ORDER = ("train", "dev", "test")
LEAK_PAIRS = (("train", "test"), ("train", "dev"), ("dev", "test"))


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def input_key(ex: Example) -> str:
    key = normalize(ex.input_text)
    if ex.choices:  # the same question with other options is another question
        key += "\x1f" + "\x1f".join(normalize(c) for c in ex.choices)
    return key


def target_key(ex: Example) -> str:
    return normalize(ex.target)


def split_rows(task: Task) -> list[tuple[str, Example]]:
    """(split, example) in split order; a task without splits is all train."""
    if not task.splits or not any(task.splits.values()):
        return [("train", ex) for ex in task.examples]
    return [(name, ex) for name in SPLIT_ORDER for ex in task.splits.get(name, [])]


# ---------------------------------------------------------------- near-duplicate groups


def shingle_sets(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct character k-grams (UTF-8 bytes) of every text, vectorised over the corpus:
    (values, offsets), text i owning values[offsets[i]:offsets[i+1]], sorted. A k-gram of up
    to 7 bytes is packed into an integer exactly, so equal values mean equal k-grams; a text
    shorter than k is one shingle of its own."""
    k = min(k, 7)
    data = [t.encode("utf-8") for t in texts]
    lengths = np.fromiter((len(d) for d in data), dtype=np.int64, count=len(data))
    buf = np.frombuffer(b"".join(data), dtype=np.uint8).astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(data) else np.zeros(0, np.int64)
    n_grams = np.maximum(lengths - k + 1, 0)
    owner = np.repeat(np.arange(len(data)), n_grams)
    pos = np.arange(len(owner)) - np.repeat(np.cumsum(n_grams) - n_grams, n_grams) + starts[owner]
    values = np.zeros(len(owner), dtype=np.uint64)
    for j in range(k):
        values = (values << np.uint64(8)) | buf[pos + j]
    short = np.flatnonzero(lengths < k)  # tagged with a high bit and the length: never a k-gram
    short_values = []
    for i in short:
        v = 0
        for byte in data[i]:
            v = (v << 8) | byte
        short_values.append(v | (1 << 62) | (int(lengths[i]) << 56))
    owner = np.concatenate([owner, short]).astype(np.int64)
    values = np.concatenate([values, np.array(short_values, dtype=np.uint64)])
    order = np.lexsort((values, owner))
    owner, values = owner[order], values[order]
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = (owner[1:] != owner[:-1]) | (values[1:] != values[:-1])
    owner, values = owner[keep], values[keep]
    offsets = np.searchsorted(owner, np.arange(len(data) + 1))
    return values, offsets


def minhash_signatures(values: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1) -> np.ndarray:
    """One MinHash signature per text (rows), computed for all texts at once with datasketch's
    own permutation parameters: min over shingles of (a * h + b) mod 2^32."""
    from datasketch import MinHash
    a, b = (x.astype(np.uint32) for x in MinHash(num_perm=num_perm, seed=seed).permutations)
    h = values * np.uint64(0x9E3779B97F4A7C15)  # spread the packed bytes over all bits
    h = (h >> np.uint64(32)).astype(np.uint32)
    sig = np.empty((len(offsets) - 1, num_perm), dtype=np.uint32)
    chunk = max(1, (1 << 22) // num_perm)  # bounds the temporary (chunk x num_perm) array
    rows = np.arange(len(offsets) - 1)
    for lo in range(0, len(rows), 1024):
        hi = min(lo + 1024, len(rows))
        seg = slice(offsets[lo], offsets[hi])
        if offsets[hi] - offsets[lo] > chunk * 8:
            for r in range(lo, hi):
                sig[r] = (h[offsets[r]:offsets[r + 1], None] * a + b).min(0)
            continue
        perm = h[seg, None] * a + b
        sig[lo:hi] = np.minimum.reduceat(perm, offsets[lo:hi] - offsets[lo], axis=0)
    return sig


def near_groups(keys: list[str], threshold: float, k: int = 5, num_perm: int = 64,
                tails: list[str] | None = None) -> tuple[list[int], int]:
    """Component id of each distinct key, and the number of verified near pairs. With `tails`
    (the last paragraph of each input, where the question of a context + question input sits),
    a pair must also have near-identical tails: two questions about one passage are different
    rows, not duplicates."""
    from datasketch import LeanMinHash, MinHashLSH
    parent = list(range(len(keys)))
    if len(keys) < 2 or threshold >= 1.0:
        return parent, 0

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    values, offsets = shingle_sets(keys, k)
    sig = minhash_signatures(values, offsets, num_perm)
    # Candidates are proposed a little below the threshold so that pairs near it are not missed;
    # each is then verified with the exact Jaccard similarity of its shingle sets.
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm)
    hashes = [LeanMinHash(seed=1, hashvalues=row, scheme="affine32") for row in sig]
    for i, mh in enumerate(hashes):
        lsh.insert(i, mh, check_duplication=False)
    pairs = 0
    for i, mh in enumerate(hashes):
        a = values[offsets[i]:offsets[i + 1]]
        for j in lsh.query(mh):
            if j <= i:
                continue
            b = values[offsets[j]:offsets[j + 1]]
            inter = len(np.intersect1d(a, b, assume_unique=True))
            if inter >= threshold * (len(a) + len(b) - inter) and _tails_match(tails, keys, i, j, k, threshold):
                pairs += 1
                ra, rb = find(i), find(j)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(len(keys))], pairs


def _tails_match(tails, keys, i: int, j: int, k: int, threshold: float) -> bool:
    if tails is None or (tails[i] is None and tails[j] is None):  # single-paragraph inputs
        return True
    a = keys[i] if tails[i] is None else tails[i]
    b = keys[j] if tails[j] is None else tails[j]
    return _similar(a, b, k, threshold)


def _similar(a: str, b: str, k: int, threshold: float) -> bool:
    if a == b:
        return True
    sa = {a[i:i + k] for i in range(max(1, len(a) - k + 1))}
    sb = {b[i:i + k] for i in range(max(1, len(b) - k + 1))}
    return len(sa & sb) >= threshold * len(sa | sb)


def last_paragraph(text: str) -> str:
    return normalize(re.split(r"\n\s*\n", text.strip())[-1])


# ---------------------------------------------------------------- the checks


def text_checks(task: Task, threshold: float, k: int = 5, num_perm: int = 64) -> dict:
    rows = split_rows(task)
    ikeys = [input_key(ex) for _, ex in rows]
    tkeys = [target_key(ex) for _, ex in rows]
    distinct = list(dict.fromkeys(ikeys))
    index = {key: i for i, key in enumerate(distinct)}
    tail_of = {}
    for key, (_, ex) in zip(ikeys, rows):
        tail_of.setdefault(key, last_paragraph(ex.input_text))
    tails = [None if tail_of[key] == key else tail_of[key] for key in distinct]
    comp_of_key, near_pairs = near_groups(distinct, threshold, k, num_perm, tails)
    comp = [comp_of_key[index[key]] for key in ikeys]
    return {"rows": len(rows), "distinct_inputs": len(distinct), "near_pairs": near_pairs,
            "duplicates": _duplicates(rows, ikeys, tkeys, comp),
            "leakage": _leakage(rows, ikeys, comp),
            "conflicts": _conflicts(rows, ikeys, tkeys, comp),
            "_comp": {ex.id: c for (_, ex), c in zip(rows, comp)}}


def _duplicates(rows, ikeys, tkeys, comp) -> dict:
    """Per split: rows that repeat an earlier row of the same split. `exact`: same normalised
    input and target; `near`: a near-identical input with the same target."""
    out = {}
    for split in SPLIT_ORDER:
        seen_exact: dict = {}
        seen_group: dict = {}
        exact, near = [], []
        for (s, ex), ik, tk, c in zip(rows, ikeys, tkeys, comp):
            if s != split:
                continue
            if (ik, tk) in seen_exact:
                exact.append([ex.id, seen_exact[(ik, tk)]])
            elif (c, tk) in seen_group:
                near.append([ex.id, seen_group[(c, tk)]])
            seen_exact.setdefault((ik, tk), ex.id)
            seen_group.setdefault((c, tk), ex.id)
        n = sum(1 for s, _ in rows if s == split)
        if n:
            out[split] = {"rows": n, "exact": len(exact), "near": len(near),
                          "exact_pairs": exact, "near_pairs": near}
    return out


def _leakage(rows, ikeys, comp) -> dict:
    """Rows of a held-out split whose input (near-)matches a row of an earlier split."""
    by_split_key = defaultdict(dict)
    by_split_comp = defaultdict(dict)
    for (s, ex), ik, c in zip(rows, ikeys, comp):
        by_split_key[s].setdefault(ik, ex.id)
        by_split_comp[s].setdefault(c, ex.id)
    out = {}
    for src, dst in LEAK_PAIRS:
        n_dst = sum(1 for s, _ in rows if s == dst)
        if not n_dst or not by_split_key[src]:
            continue
        exact, near = [], []
        for (s, ex), ik, c in zip(rows, ikeys, comp):
            if s != dst:
                continue
            if ik in by_split_key[src]:
                exact.append([ex.id, by_split_key[src][ik]])
            elif c in by_split_comp[src]:
                near.append([ex.id, by_split_comp[src][c]])
        out[f"{src}-{dst}"] = {"rows": n_dst, "exact": len(exact), "near": len(near),
                               "share": (len(exact) + len(near)) / n_dst,
                               "exact_pairs": exact, "near_pairs": near}
    return out


def _conflicts(rows, ikeys, tkeys, comp) -> dict:
    """Groups of (near-)identical inputs with more than one distinct target. `exact` groups share
    one normalised input; `near` groups span near-identical inputs."""
    members = defaultdict(list)
    for i, c in enumerate(comp):
        members[c].append(i)
    groups = []
    for idx in members.values():
        targets = Counter(tkeys[i] for i in idx)
        if len(targets) < 2:
            continue
        raw = Counter(rows[i][1].target for i in idx)
        groups.append({"kind": "exact" if len({ikeys[i] for i in idx}) == 1 else "near",
                       "rows": len(idx), "targets": dict(raw.most_common()),
                       "ids": [rows[i][1].id for i in idx], "splits": [rows[i][0] for i in idx],
                       "input": rows[idx[0]][1].input_text[:200]})
    groups.sort(key=lambda g: -g["rows"])
    return {"groups": len(groups), "rows": sum(g["rows"] for g in groups),
            "exact_groups": sum(g["kind"] == "exact" for g in groups),
            "near_groups": sum(g["kind"] == "near" for g in groups),
            "train_rows": sum(s == "train" for g in groups for s in g["splits"]),
            "list": groups}
