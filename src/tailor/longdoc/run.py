"""How the long-document arms answer a batch of rows through the engine they are given, and what
they measured doing it (`measured`, read by the measurement path into the arm's result):

- TruncatedRun: the question's document in the prompt, cut to `context_tokens` (cuts counted);
- ExtractRun: the document's extracted records instead of its text (compression measured);
- PearlRun: a plan per question, executed step by step (plan validity, retries, calls, tokens).
"""

from __future__ import annotations

import math
import re
import time

from ..evaluate import Prediction, predict
from ..retrieval.retriever import Passage
from .documents import Documents
from .execute import Executor
from .extract import ExtractStats, Schema, merge_records, parse_records, render
from .planning import Planner


def question_of(example) -> str:
    return re.sub(r"^\s*question:\s*", "", example.input_text, flags=re.I).strip()


class TruncatedRun:
    def __init__(self, docs: Documents, builder, context_tokens: int, source: str = "the task"):
        self.docs, self.builder, self.context_tokens, self.source = docs, builder, context_tokens, source
        self.measured: dict = {}

    def passages(self, examples) -> list[list[Passage]]:
        out, cut, doc_tokens, shown = [], 0, 0, 0
        for ex in examples:
            doc = self.docs.of(ex, self.source)
            ids = self.builder.encode(self.docs.text(doc))
            cut += len(ids) > self.context_tokens
            doc_tokens += len(ids)
            shown += min(len(ids), self.context_tokens)
            out.append([Passage(f"{doc}#opening", doc, self.builder.tok.decode(ids[:self.context_tokens]), 1.0)])
        n = max(len(examples), 1)
        self.measured = {"method": "truncated", "questions": len(examples), "calls_per_question": 1.0,
                         "truncated": cut, "document_tokens_per_question": doc_tokens / n,
                         "context_tokens_per_question": shown / n, "context_saved": 1 - shown / max(doc_tokens, 1)}
        return out

    def predict(self, engine, task, examples, max_new_tokens: int) -> list[Prediction]:
        preds = predict(engine, self.builder, task, examples, None, self.passages, max_new_tokens)
        _per_question_tokens(self.measured, preds, 0)
        return preds


class ExtractRun:
    """Records are extracted once per document (lazily, for the documents the rows name; the
    engine caches them), then stand in for the document: all of them in reading order, or the
    `top` records that share most words with the question, up to `context_tokens`."""

    def __init__(self, docs: Documents, builder, schema: Schema, context_tokens: int, select: str = "all",
                 top: int = 8, extract_tokens: int = 160, source: str = "the task"):
        self.docs, self.builder, self.schema = docs, builder, schema
        self.context_tokens, self.select, self.top, self.extract_tokens, self.source = (
            context_tokens, select, top, extract_tokens, source)
        self.key = "name" if "name" in schema.spec["fields"] else next(iter(schema.spec["fields"]))
        self.records: dict[str, list[dict]] = {}
        self.stats = ExtractStats()
        self.measured: dict = {}

    def extract(self, engine, doc_ids: list[str]) -> None:
        todo = [d for d in dict.fromkeys(doc_ids) if d not in self.records]
        if not todo:
            return
        chunks = [(d, c) for d in todo for c in self.docs.chunks(d)]
        gens = engine.generate([self.builder.render(self.schema.messages(c)) for _, c in chunks],
                               max_new_tokens=self.extract_tokens)
        found: dict[str, list[dict]] = {d: [] for d in todo}
        s = self.stats
        for (d, _), g in zip(chunks, gens):
            found[d] += parse_records(g.text, self.schema, s)
            s.calls += 1
            s.prompt_tokens += g.prompt_tokens
            s.completion_tokens += g.completion_tokens
        s.documents += len(todo)
        s.chunks += len(chunks)
        for d in todo:
            self.records[d] = merge_records(found[d], self.key, s)
            s.documents_without_records += not self.records[d]

    def passages(self, examples) -> list[list[Passage]]:
        out, dropped, shown_tokens, doc_tokens = [], 0, 0, 0
        for ex in examples:
            doc = self.docs.of(ex, self.source)
            records = self.records[doc]
            doc_tokens += self.builder.count(self.docs.text(doc))
            if self.select == "top":
                words = set(re.findall(r"\w+", question_of(ex).lower()))
                records = sorted(records, key=lambda r: -len(words & set(re.findall(r"\w+", render(r).lower()))))
            texts = [render(r) for r in records][: self.top if self.select == "top" else None]
            if not texts:   # no valid record for this document: its opening instead, counted in the stats
                texts = [self.builder.tok.decode(self.builder.encode(self.docs.text(doc))[:self.context_tokens])]
            kept, used = [], 0
            for t in texts:
                n = self.builder.count(t)
                if used + n > self.context_tokens and kept:
                    break
                kept.append(t)
                used += n
            dropped += len(texts) - len(kept)
            shown_tokens += used
            out.append([Passage(f"{doc}#record{i}", doc, t, 1.0) for i, t in enumerate(kept)])
        n = max(len(examples), 1)
        self.measured = {"method": "extract", "questions": len(examples), "calls_per_question": 1.0,
                         "document_tokens_per_question": doc_tokens / n, "context_tokens_per_question": shown_tokens / n,
                         "context_saved": 1 - shown_tokens / max(doc_tokens, 1), "records_over_budget": dropped,
                         "extraction": self.stats.to_json(), "schema": self.schema.source,
                         "records_per_document": sum(map(len, self.records.values())) / max(len(self.records), 1)}
        return out

    def predict(self, engine, task, examples, max_new_tokens: int) -> list[Prediction]:
        self.extract(engine, [self.docs.of(ex, self.source) for ex in examples])
        preds = predict(engine, self.builder, task, examples, None, self.passages, max_new_tokens)
        _per_question_tokens(self.measured, preds, 0)
        return preds


class PearlRun:
    def __init__(self, docs: Documents, builder, actions, demos, planner_base, planner_builder, k: int,
                 max_retries: int, plan_tokens: int, step_tokens: int, planner: str = "", source: str = "the task"):
        self.docs, self.builder, self.actions, self.demos = docs, builder, list(actions), list(demos)
        self.planner_base, self.planner_builder, self.k = planner_base, planner_builder, k
        self.max_retries, self.plan_tokens, self.step_tokens = max_retries, plan_tokens, step_tokens
        self.planner, self.source = planner, source
        self.measured: dict = {}

    def planner_engine(self, engine):
        """The planner's engine (its own base, local or behind an endpoint), with the executor
        engine's cache; or the executor's engine itself when the arm plans with its own base."""
        if self.planner_base is None:
            return engine
        return engine_for(self.planner_base, engine.cache, progress=getattr(engine, "progress", True))

    def context(self, doc_id: str, query: str) -> list[str]:
        return [self.docs.kb.chunks[i].text for i in self.docs.search(doc_id, [query], self.k)[0]]

    def run(self, engine, task, examples, max_new_tokens: int):
        """Plans and traces for `examples` (also used at fit time to find demonstrations)."""
        questions = [question_of(ex) for ex in examples]
        doc_ids = [self.docs.of(ex, self.source) for ex in examples]
        planner = Planner(self.planner_engine(engine), self.planner_builder, self.actions, self.demos,
                          self.max_retries, self.plan_tokens)
        plans = planner.plan(questions)
        executor = Executor(engine, self.builder, {a.name: a for a in self.actions}, self.context, task.kind,
                            task.instruction, self.step_tokens, max_new_tokens)
        options = [task.labels if task.kind == "classify" else ex.choices for ex in examples] \
            if task.kind in ("classify", "choice") else None
        traces = executor.run([p.plan for p in plans], [ex.input_text if options else q
                                                        for ex, q in zip(examples, questions)], doc_ids, options)
        return plans, traces

    def predict(self, engine, task, examples, max_new_tokens: int) -> list[Prediction]:
        t0 = time.perf_counter()
        plans, traces = self.run(engine, task, examples, max_new_tokens)
        per_row = (time.perf_counter() - t0) / max(len(examples), 1)
        preds = []
        for ex, p, t in zip(examples, plans, traces):
            probs = _probs(t) if task.kind in ("classify", "choice") else None
            cached = p.computed + t.computed == 0   # every call of this question was replayed
            preds.append(Prediction(ex.id, t.answer, ex.target, p.prompt_tokens + t.prompt_tokens,
                                    p.completion_tokens + t.completion_tokens, 0.0 if cached else per_row, cached, probs,
                                    prompt=f"plan ({'valid' if p.valid else 'fallback'}, {p.attempts} planner "
                                           f"calls):\n{p.text}\n\nvalues: {t.values}",
                                    passages_dropped=t.passages_dropped))
        n = max(len(examples), 1)
        self.measured = {
            "method": "pearl", "questions": len(examples), "planner": self.planner or "the arm's own base",
            "calls_per_question": sum(p.attempts + t.calls for p, t in zip(plans, traces)) / n,
            "planner_calls_per_question": sum(p.attempts for p in plans) / n,
            "plans_valid": sum(p.valid for p in plans) / n,
            "plans_valid_first_try": sum(p.valid and p.attempts == 1 for p in plans) / n,
            "mean_retries": sum(p.retries for p in plans) / n, "plan_fallbacks": sum(p.fallback for p in plans),
            "mean_steps": sum(len(p.plan.steps) for p in plans) / n,
            "empty_step_outputs": sum(t.empty_outputs for t in traces),
            "plan_errors": _top_errors([e for p in plans for e in p.errors]),
            "example_plans": [p.text for p in plans if p.valid][:3],
        }
        _per_question_tokens(self.measured, preds, 0)
        return preds


def engine_for(base, cache=None, **options):
    from ..engine import Engine
    from ..remote import RemoteEngine, RemoteModel
    cls = RemoteEngine if isinstance(base.model, RemoteModel) else Engine
    return cls(base.model, base.tokenizer, base.weights_id, cache, **options)


def _per_question_tokens(measured: dict, preds, extra: int) -> None:
    n = max(len(preds), 1)
    measured["tokens_per_question"] = (sum(p.prompt_tokens + p.completion_tokens for p in preds) + extra) / n


def _probs(trace) -> dict[str, float] | None:
    if not trace.scores:
        return None
    m = max(trace.scores.values())
    z = sum(math.exp(v - m) for v in trace.scores.values())
    return {k: math.exp(v - m) / z for k, v in trace.scores.items()}


def _top_errors(errors: list[str], n: int = 5) -> list[str]:
    """The commonest parser errors, with line numbers and quoted text folded, so kinds count together."""
    kinds: dict[str, int] = {}
    for e in errors:
        k = re.sub(r"'[^']*'", "'…'", re.sub(r"line \d+", "line N", e))
        kinds[k] = kinds.get(k, 0) + 1
    return [f"{c}× {k}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1])[:n]]
