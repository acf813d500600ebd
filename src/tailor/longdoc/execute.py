"""Plan execution (PEARL, Sun et al. 2023): each step is one model call. A step whose argument is
`document` sees the chunks of the question's document that best match its other arguments (the
RAG feature's search, inside that document only); its output is bound to its variable, and later
steps read it. Questions run in lockstep, so step s of every plan is one batched engine call.
The final answer is mapped to the task's output space: generated text as it is, a label or a
choice by the likelihood of each option given the plan's answer (one more call, counted)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from ..task import Example
from .plan import Plan, Step


@dataclass
class Trace:
    """One question's execution: what it cost and what each variable held."""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    values: dict[str, str] = field(default_factory=dict)
    empty_outputs: int = 0       # steps whose output was empty (bound as "", counted)
    passages_dropped: int = 0    # chunks left out of a step's prompt to fit its budget
    computed: int = 0            # calls the engine computed (not replayed from its cache)
    answer: str = ""
    scores: dict[str, float] = field(default_factory=dict)   # label or choice tasks: option -> log-likelihood

    def to_json(self) -> dict:
        return asdict(self)


class Executor:
    """Runs plans over documents. `engine`: generate(prompts, max_new_tokens=, stop=) and, for
    label or choice tasks, score(prompts, options); `builder`: the executor model's prompt builder;
    `context(doc_id, query)`: the passages of the document a step's query gets."""

    def __init__(self, engine, builder, actions: dict, context, kind: str = "generate", instruction: str = "",
                 step_tokens: int = 48, answer_tokens: int = 64):
        self.engine, self.builder, self.actions, self.context = engine, builder, actions, context
        self.kind, self.instruction = kind, instruction
        self.step_tokens, self.answer_tokens = step_tokens, answer_tokens

    def _builder(self, meaning: str, final: bool):
        b = copy.copy(self.builder)
        b.instruction = f"Write {meaning}. " + (self.instruction if final else "Reply in one or two short sentences.")
        return b

    def _prompt(self, step: Step, values: dict[str, str], question: str, doc_id: str, final: bool):
        action = self.actions[step.action]
        lines, query, retrieve = [], [], False
        for param, arg in zip(action.params, step.args):
            if arg.kind == "input" and arg.value == "document":
                retrieve = True
                continue
            value = question if arg.value == "question" and arg.kind == "input" else (
                values.get(arg.value, "") if arg.kind == "var" else arg.value)
            lines.append(f"{param}: {value}")
            query.append(value)
        passages = self.context(doc_id, " ".join(query) or question) if retrieve else []
        return self._builder(action.meaning, final).build(Example("step", "\n".join(lines), ""), (), passages)

    def run(self, plans: list[Plan], questions: list[str], doc_ids: list[str],
            options: list[list[str]] | None = None) -> list[Trace]:
        traces = [Trace() for _ in plans]
        for s in range(max((len(p.steps) for p in plans), default=0)):
            todo = [i for i, p in enumerate(plans) if s < len(p.steps)]
            for final in (False, True):   # final steps get the answer's token budget
                rows = [i for i in todo if (s == len(plans[i].steps) - 1) == final]
                if not rows:
                    continue
                prompts = [self._prompt(plans[i].steps[s], traces[i].values, questions[i], doc_ids[i], final)
                           for i in rows]
                gens = self.engine.generate([p.text for p in prompts],
                                            max_new_tokens=self.answer_tokens if final else self.step_tokens)
                for i, p, g in zip(rows, prompts, gens):
                    t = traces[i]
                    text = _first_paragraph(g.text)
                    t.values[plans[i].steps[s].var] = text
                    t.calls += 1
                    t.prompt_tokens += g.prompt_tokens
                    t.completion_tokens += g.completion_tokens
                    t.computed += not g.cached
                    t.empty_outputs += not text
                    t.passages_dropped += p.passages_dropped
        for t, p in zip(traces, plans):
            t.answer = t.values.get(p.answer, "") if p.steps else ""
        if options is not None and self.kind in ("classify", "choice"):
            self._map_to_options(traces, questions, options)
        return traces

    def _map_to_options(self, traces, questions, options) -> None:
        b = self._builder("the option that matches the answer", True)
        prompts = [b.build(Example("answer", q, "", choices=opts), (), [t.answer]).text
                   for t, q, opts in zip(traces, questions, options)]
        scores = self.engine.score(prompts, [[b.target_text(o) for o in opts] for opts in options])
        for t, opts, s in zip(traces, options, scores):
            t.answer = opts[max(range(len(opts)), key=lambda j: s.logprobs[j])]
            t.scores = dict(zip(opts, s.logprobs))
            t.calls += 1
            t.prompt_tokens += s.prompt_tokens
            t.completion_tokens += sum(s.n_tokens)
            t.computed += not s.cached


def _first_paragraph(text: str) -> str:
    """A step's output up to its first blank line: small models ramble on after the answer."""
    return text.strip().split("\n\n", 1)[0].strip()
