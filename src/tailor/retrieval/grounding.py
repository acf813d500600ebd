"""Deterministic measures of retrieval and grounding (no LLM judge: judges built for large API
models are unreliable on a small local model's answers).

- retrieval, against the gold document ids a row names (`gold_passages`): recall@k (share of a
  row's gold documents among its top k), hit@k (at least one), MRR (1 / rank of the first);
- citations, for generate tasks: a cited `[n]` is *supported* when passage n contains the gold
  answer (normalised, as whole words) or at least half of the gold answer's key words (words of
  3+ letters that are not stopwords). Citation precision = supported citations / citations;
  citation recall = rows citing a supporting passage / rows where a supporting passage was shown;
- abstention: a row whose gold is the task's no-answer output must get exactly that output;
- per row against a closed-book arm: helped (wrong -> right), hurt (right -> wrong), unchanged.
"""

from __future__ import annotations

import re

from ..evaluate import normalize, strip_citations

_STOP = frozenset("the a an and or of to in on for with by from at as is are was were be been it its this that "
                  "these those which who whom what when where why how not no yes".split())


def key_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) >= 3 and w not in _STOP}


def supports(passage: str, answer: str) -> bool:
    """Does the passage carry the answer: the whole answer as words, or half its key words."""
    p, a = _words_only(passage), _words_only(answer)
    if a and f" {a} " in f" {p} ":
        return True
    keys = key_words(answer)
    return bool(keys) and len(keys & key_words(passage)) >= len(keys) / 2


def _words_only(text: str) -> str:
    return normalize(re.sub(r"[^\w\s]", " ", text))


def item_correct(kind: str, prediction: str, target: str) -> bool:
    """Per-row correctness for helped/hurt: the label or choice itself; for generated text, exact
    match after normalisation (citations removed)."""
    if kind in ("classify", "choice"):
        return prediction == target
    return normalize(strip_citations(prediction)) == normalize(target)


def retrieval_scores(gold: list[set[str]], retrieved: list[list[str]], k: int) -> dict:
    """recall@k, hit@k and MRR over the rows that name gold documents (`retrieved`: document
    ids in rank order, one list per row)."""
    rows = [(g, r) for g, r in zip(gold, retrieved) if g]
    if not rows:
        return {"gold_rows": 0, "recall_at_k": None, "hit_at_k": None, "mrr": None}
    recall = hit = mrr = 0.0
    for g, r in rows:
        top = r[:k]
        recall += len(g & set(top)) / len(g)
        hit += bool(g & set(top))
        first = next((i for i, d in enumerate(r, 1) if d in g), None)
        mrr += 1 / first if first else 0.0
    n = len(rows)
    return {"gold_rows": n, "recall_at_k": recall / n, "hit_at_k": hit / n, "mrr": mrr / n}


def citation_scores(rows: list[tuple[list[str], list[str], str]], text_of, no_answer: str | None = None) -> dict:
    """rows: (cited chunk ids, shown chunk ids, gold answer); `text_of(chunk id)` gives a passage's
    text. Rows whose gold is the no-answer output are left out: there is nothing to cite."""
    cited_total = supported = recall_rows = recall_hits = 0
    for cited, shown, gold in rows:
        if no_answer is not None and normalize(gold) == normalize(no_answer):
            continue
        good = {c for c in shown if supports(text_of(c), gold)}
        cited_total += len(cited)
        supported += sum(c in good for c in cited)
        if good:
            recall_rows += 1
            recall_hits += any(c in good for c in cited)
    return {"citations": cited_total, "citation_precision": supported / cited_total if cited_total else None,
            "citation_recall": recall_hits / recall_rows if recall_rows else None}


def abstention_scores(preds: list[str], golds: list[str], no_answer: str) -> dict:
    na = normalize(no_answer)
    said = [normalize(strip_citations(p)) == na for p in preds]
    should = [normalize(g) == na for g in golds]
    n_should = sum(should)
    return {"unanswerable": n_should,
            "abstained_when_unanswerable": sum(s and w for s, w in zip(said, should)) / n_should if n_should else None,
            "abstained_when_answerable": sum(s and not w for s, w in zip(said, should)) / max(len(golds) - n_should, 1)}


def helped_hurt(closed: dict[str, bool], arm: dict[str, bool]) -> dict:
    """Per-row change against the closed-book arm, over the rows both answered."""
    both = [i for i in arm if i in closed]
    helped = sum(not closed[i] and arm[i] for i in both)
    hurt = sum(closed[i] and not arm[i] for i in both)
    right_before = sum(closed[i] for i in both)
    return {"rows": len(both), "helped": helped, "hurt": hurt, "unchanged": len(both) - helped - hurt,
            # the share of the closed-book arm's right answers that the context erased
            "erased_share": hurt / right_before if right_before else None}


def summarize(task, preds, retriever) -> dict:
    """An arm's retrieval and grounding on its predictions (what the report's retrieval section shows)."""
    shown = [[r["doc"] for r in (p.retrieved or [])] for p in preds]
    by_id = {ex.id: ex for split in task.splits.values() for ex in split}
    gold = [set(by_id[p.id].meta.get("gold_passages") or []) if p.id in by_id else set() for p in preds]
    n = max(len(preds), 1)
    out = {"kb": retriever.spec()["kb"], "kb_chunks": len(retriever.kb.chunks), "kb_bytes": retriever.kb.bytes,
           "retriever": retriever.kind, "k": retriever.k, "dense": retriever.kb.dense.kind,
           "ms_per_query": retriever.ms_per_query, "queries": retriever.queries,
           "passages_per_request": sum(len(s) for s in shown) / n,
           "passages_dropped": sum(p.passages_dropped for p in preds),
           **retrieval_scores(gold, shown, retriever.k)}
    if task.kind == "generate":
        text = {c.id: c.text for c in retriever.kb.chunks}
        rows = [(p.cited or [], [r["id"] for r in (p.retrieved or [])], p.target) for p in preds]
        out.update(citation_scores(rows, lambda cid: text.get(cid, ""), task.no_answer))
        out["cited_out_of_range"] = sum(p.cited_out_of_range for p in preds)
    if task.no_answer:
        out.update(abstention_scores([p.prediction for p in preds], [p.target for p in preds], task.no_answer))
    return out
