"""Plan generation (PEARL, Sun et al. 2023): the planner model writes a plan in the grammar of
plan.py from the action list and a few demonstration plans; a plan that does not parse or
validate goes back to the model with the parser's one-line error, up to `max_retries` times
(counted). A question still without a valid plan runs the fallback plan (counted)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .actions import FALLBACK_PLAN, arity
from .plan import MAX_STEPS, Plan, PlanError, read_plan

# Shown until plans that reached the right answer on training questions replace them (a model
# must see the grammar used once; these name no real story).
WRITTEN_DEMOS = (
    {"question": "Who is Anna's brother?",
     "plan": 'anna = FIND_CHARACTER(document, "Anna")\nanswer = ANSWER(question, anna)'},
    {"question": "Why does the captain leave the ship?",
     "plan": 'leaving = FIND_EVENT(document, "the captain leaves the ship")\nanswer = ANSWER(question, leaving)'},
)


@dataclass
class PlanResult:
    plan: Plan
    text: str                      # the plan that runs (the fallback's when none was valid)
    attempts: int = 0              # planner calls for this question
    valid: bool = False            # a valid plan came within the retries
    fallback: bool = False
    errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    computed: int = 0              # planner calls the engine computed (not replayed from its cache)

    @property
    def retries(self) -> int:
        return max(self.attempts - 1, 0)


class Planner:
    def __init__(self, engine, builder, actions, demos=WRITTEN_DEMOS, max_retries: int = 2, plan_tokens: int = 96,
                 max_steps: int = MAX_STEPS):
        self.engine, self.builder, self.actions, self.demos = engine, builder, list(actions), list(demos)
        self.max_retries, self.plan_tokens, self.max_steps = max_retries, plan_tokens, max_steps
        self.arity = arity(self.actions)

    def messages(self, question: str) -> list[dict]:
        listed = "\n".join(f"- {a.line()}" for a in self.actions)
        system = ("Write a plan that answers a question about a document (PEARL, Sun et al. 2023). Use only "
                  f"these actions:\n{listed}\nOne step per line: VAR = ACTION(arguments). An argument is question, "
                  'document, the variable of an earlier line, or a "quoted phrase". The last line\'s variable is the '
                  "answer. Write only the plan.")
        turns = [{"role": "system", "content": system}]
        for d in self.demos:
            turns += [{"role": "user", "content": f"Question: {d['question']}"},
                      {"role": "assistant", "content": d["plan"]}]
        return turns + [{"role": "user", "content": f"Question: {question}"}]

    def plan(self, questions: list[str]) -> list[PlanResult]:
        chats = [self.messages(q) for q in questions]
        results: list[PlanResult | None] = [None] * len(questions)
        counts = [PlanResult(Plan(), "") for _ in questions]
        todo = list(range(len(questions)))
        for _ in range(self.max_retries + 1):
            if not todo:
                break
            gens = self.engine.generate([self.builder.render(chats[i]) for i in todo],
                                        max_new_tokens=self.plan_tokens, stop=["\n\n"])
            again = []
            for i, g in zip(todo, gens):
                c = counts[i]
                c.attempts += 1
                c.prompt_tokens += g.prompt_tokens
                c.completion_tokens += g.completion_tokens
                c.computed += not g.cached
                try:
                    plan = read_plan(g.text, self.arity, self.max_steps)
                except PlanError as e:
                    c.errors.append(str(e))
                    chats[i] = chats[i] + [{"role": "assistant", "content": g.text.strip()},
                                           {"role": "user", "content": f"Error: {e}. Write the whole plan again, "
                                                                       "corrected."}]
                    again.append(i)
                    continue
                c.plan, c.text, c.valid = plan, plan.text(), True
                results[i] = c
            todo = again
        for i in todo:   # no valid plan within the retries: the fallback runs, and is counted
            c = counts[i]
            c.plan, c.text, c.fallback = read_plan(FALLBACK_PLAN, self.arity), FALLBACK_PLAN, True
            results[i] = c
        return results
