"""Long-document arms, over the RAG feature's knowledge base (each row names its document):

- `truncated`: zero-shot with the question's document in the prompt, cut to `context_tokens`
  (the floor: what a small model sees of a document that does not fit; cuts counted);
- `extract`: entities and their attributes extracted into JSON records validated by a schema
  (the team's file, or the default), which stand in for the document: lossy compression of a
  context that does not fit, measured by the context it saves and what it does to the metric;
- `pearl`: plan-and-execute (PEARL, Sun et al. 2023): actions mined from training questions, a
  plan per question in a small grammar (parser errors go back to the model, retries counted),
  executed one model call per action over the document's best chunks. `planner` names another
  base (e.g. `openai:http://127.0.0.1:8000/v1#MODEL`, a stronger model behind an endpoint).

Everything runs through the one engine (cached, costed). The recipe holds the retriever and, for
pearl, the mined action list and the plan demonstrations, so a saved arm reloads and predicts
exactly as it was measured.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import TailorError
from ..recipe import Recipe
from .base import Adapted, base_recipe, recipe_builder
from .prompting import _Prompting, train_pool
from .retrieval import Retrieval, open_retriever

_PLANNERS: dict[str, Any] = {}   # planner spec -> loaded base, once per process (predict runs many times)


@dataclass
class LongDocAdapted(Adapted):
    runner: Any = None
    fit_stats: dict = field(default_factory=dict)   # what fitting spent and found (mining, demonstrations)

    def predict(self, engine, task, examples, max_new_tokens: int = 64):
        return self.runner.predict(engine, task, examples, max_new_tokens)

    def check_request(self, example) -> None:
        self.runner.docs.of(example, "the request's metadata")   # the question's document, in this knowledge base

    @property
    def measured(self) -> dict:
        """What the last predict measured (plans, calls, compression), for the arm's result."""
        return {**self.runner.measured, **self.fit_stats}


class _LongDoc(_Prompting):
    own_predict: ClassVar[bool] = True   # a program over the document's chunks, not one prompt
    kb: str | None = None                       # a knowledge base folder, or the task's bundled one
    retriever: Retrieval = "hybrid"
    context_tokens: int = Field(512, gt=0)      # the document context one prompt may carry

    def _recipe(self, task, base, **fields) -> Recipe:
        from ..prompts import builder_for
        retriever = open_retriever(self.kb, task, base, 1, self.retriever)
        builder = builder_for(task, base.tokenizer, getattr(base.model, "config", None))
        return base_recipe(self, task, base, builder, retriever=retriever.spec(), **fields)

    @classmethod
    def _parts(cls, recipe: Recipe, base):
        from ..longdoc.documents import Documents
        from ..retrieval import Retriever
        options = cls.model_validate(recipe.options)
        docs = Documents(Retriever.from_spec(recipe.retriever).kb, options.retriever)
        return options, docs, recipe_builder(recipe, base.tokenizer)

    @classmethod
    def _make(cls, recipe, base, builder, runner, fit_stats=None) -> LongDocAdapted:
        return LongDocAdapted(recipe, base.model, base.tokenizer, base.weights_id, builder, runner=runner,
                              fit_stats=fit_stats or {})


class Truncated(_LongDoc):
    method: ClassVar[str] = "truncated"

    def fit(self, task, base, out=None, **_) -> Adapted:
        return self.load(self._recipe(task, base), [], None, base)

    @classmethod
    def load(cls, recipe, pool, folder, base) -> Adapted:
        from ..longdoc.run import TruncatedRun
        options, docs, builder = cls._parts(recipe, base)
        return cls._make(recipe, base, builder, TruncatedRun(docs, builder, options.context_tokens,
                                                                recipe.task.get("name", "the task")))


class Extract(_LongDoc):
    method: ClassVar[str] = "extract"
    schema_file: str | None = None              # the team's schema (JSON or YAML); none: the default
    propose_schema: bool = False                # the model proposes one from training documents and questions
    propose_documents: int = Field(3, gt=0)
    propose_questions: int = Field(8, gt=0)
    select: Literal["all", "top"] = "all"       # all records (prompting), or the `top` matching the question (RAG)
    top: int = Field(8, gt=0)
    extract_tokens: int = Field(160, gt=0)
    seed: int = 0

    def fit(self, task, base, out=None, *, progress: bool = True, cache=None, **_) -> Adapted:
        from ..longdoc.extract import Schema
        if self.propose_schema and self.schema_file:
            raise TailorError("extract: give schema_file (a confirmed schema) or propose_schema: true, not both")
        if not self.propose_schema:
            schema = Schema.read(self.schema_file)   # checked before anything runs; its content goes in the recipe
            return self.load(self._recipe(task, base, program={"schema": schema.spec, "schema_source": schema.source}),
                             [], None, base)
        recipe = self._recipe(task, base)
        proposal = self._propose(task, base, recipe, out, progress, cache)
        program = {"schema": proposal.schema.spec, "schema_source": proposal.schema.source,
                   "proposal": {k: v for k, v in proposal.to_json().items() if k != "schema"}}
        return self.load(recipe.model_copy(update={"program": program}), [], None, base)

    def _propose(self, task, base, recipe, out, progress: bool, cache):
        """The model's schema from a few training documents' openings and their questions, written
        to ARM/proposed-schema.yaml for the team to review and confirm."""
        from ..longdoc.propose import propose
        from ..longdoc.run import engine_for, question_of
        from ..utils import atomic_write_text
        _, docs, builder = self._parts(recipe, base)
        by_doc: dict[str, list] = {}
        for ex in train_pool(task):
            by_doc.setdefault(docs.of(ex, task.name), []).append(ex)
        chosen = random.Random(self.seed).sample(sorted(by_doc), min(self.propose_documents, len(by_doc)))
        openings = {d: builder.tok.decode(builder.encode(docs.text(d))[:160]) for d in chosen}
        asked = [(d, question_of(ex)) for d in chosen for ex in by_doc[d]]
        asked = random.Random(self.seed).sample(asked, min(self.propose_questions, len(asked)))
        where = f"{out / 'proposed-schema.yaml'}" if out else "the arm's recipe"
        proposal = propose(engine_for(base, cache, progress=progress), builder, base.name, openings, asked,
                           f"proposed by {base.name}, unconfirmed (review {where}, then pass it as schema_file)")
        if out:
            atomic_write_text(out / "proposed-schema.yaml", proposal.yaml())
        return proposal

    @classmethod
    def load(cls, recipe, pool, folder, base) -> Adapted:
        from ..longdoc.extract import Schema
        from ..longdoc.run import ExtractRun
        options, docs, builder = cls._parts(recipe, base)
        schema = Schema(recipe.program["schema"], recipe.program.get("schema_source", "the recipe's schema"))
        proposal = recipe.program.get("proposal")
        return cls._make(recipe, base, builder, ExtractRun(docs, builder, schema, options.context_tokens,
                                                              options.select, options.top, options.extract_tokens,
                                                              recipe.task.get("name", "the task")),
                         {"proposal": proposal} if proposal else None)


class Pearl(_LongDoc):
    method: ClassVar[str] = "pearl"
    planner: str = ""                           # a base spec to plan with; empty: the arm's own base
    k: int = Field(2, gt=0)                     # chunks of the document a step reads
    mine_questions: int = Field(12, ge=0)       # training questions actions are mined from
    max_mined: int = Field(3, ge=0)
    demo_questions: int = Field(12, ge=0)       # training questions whose executed plans may become demonstrations
    demos: int = Field(2, ge=0)
    demo_min_rouge: float = Field(0.4, ge=0, le=1)   # ROUGE-L F1 that counts as reaching the answer (generate)
    max_retries: int = Field(2, ge=0)
    plan_tokens: int = Field(96, gt=0)
    step_tokens: int = Field(48, gt=0)
    seed: int = 0

    def fit(self, task, base, out=None, *, progress: bool = True, cache=None, **_) -> Adapted:
        from ..evaluate import rouge_pair
        from ..longdoc.actions import STARTING_ACTIONS, merge, mining_messages, parse_proposal
        from ..longdoc.planning import WRITTEN_DEMOS
        from ..longdoc.run import engine_for, question_of
        pool = train_pool(task)
        rng = random.Random(self.seed)
        recipe = self._recipe(task, base, program={"actions": [a.to_json() for a in STARTING_ACTIONS],
                                                   "demonstrations": list(WRITTEN_DEMOS)})
        adapted = self.load(recipe, [], None, base)
        runner = adapted.runner
        engine = engine_for(base, cache, progress=progress)   # the run's cache: off when the run says so
        planner = runner.planner_engine(engine)
        # 1. action mining: the planner proposes one action per training question
        mine = rng.sample(pool, min(self.mine_questions, len(pool)))
        gens = planner.generate([runner.planner_builder.render(mining_messages(STARTING_ACTIONS, question_of(ex)))
                                 for ex in mine], max_new_tokens=48, stop=["\n"]) if mine else []
        actions, mining = merge([parse_proposal(g.text) for g in gens], STARTING_ACTIONS, self.max_mined)
        mining.examples = [g.text.strip()[:160] for g in gens[:3]]
        runner.actions = actions
        # 2. demonstrations: plans whose execution reached the right answer on training questions
        rows = rng.sample(pool, min(self.demo_questions, len(pool)))
        demos, tried, reached = [], 0, 0
        if rows and self.demos:
            plans, traces = runner.run(engine, task, rows, 64)
            tried = len(rows)
            scored = []
            for ex, p, t in zip(rows, plans, traces):
                score = (rouge_pair(t.answer, ex.target)["rougeL"]["f1"] if task.kind == "generate"
                         else float(t.answer == ex.target))
                if p.valid and score >= (self.demo_min_rouge if task.kind == "generate" else 1.0):
                    scored.append((score, {"question": question_of(ex), "plan": p.text, "id": ex.id,
                                           "score": round(score, 4)}))
            reached = len(scored)
            demos = [d for _, d in sorted(scored, key=lambda sd: -sd[0])[: self.demos]]
        program = {"actions": [a.to_json() for a in actions], "mining": mining.to_json(),
                   "demonstrations": demos or list(WRITTEN_DEMOS),
                   "demonstration_source": "mined" if demos else "written (no training plan reached the answer)",
                   "demonstration_search": {"questions": tried, "reached_answer": reached},
                   "planner": self.planner or base.name}
        return self.load(recipe.model_copy(update={"program": program}), [], None, base)

    @classmethod
    def load(cls, recipe, pool, folder, base) -> Adapted:
        from ..longdoc.actions import Action
        from ..longdoc.run import PearlRun
        from ..prompts import PromptBuilder
        options, docs, builder = cls._parts(recipe, base)
        planner_base = _planner(options.planner)
        tok = (planner_base or base).tokenizer
        runner = PearlRun(docs, builder, [Action.from_json(a) for a in recipe.program["actions"]],
                          recipe.program["demonstrations"], planner_base, PromptBuilder(tok, "generate", ""),
                          options.k, options.max_retries, options.plan_tokens, options.step_tokens, options.planner,
                          recipe.task.get("name", "the task"))
        p = recipe.program
        stats = {"actions": p["actions"], "mining": p.get("mining", {}),
                 "demonstrations": {"source": p.get("demonstration_source", "written"),
                                    **p.get("demonstration_search", {}), "used": len(p["demonstrations"])}}
        return cls._make(recipe, base, builder, runner, stats)


def _planner(spec: str):
    if not spec:
        return None
    if spec not in _PLANNERS:
        from ..models import load_base
        try:
            _PLANNERS[spec] = load_base(spec)
        except TailorError as e:
            raise TailorError(f"pearl planner '{spec}': {e}") from None
    return _PLANNERS[spec]


LONGDOC_METHODS = {cls.method: cls for cls in (Truncated, Extract, Pearl)}
